//! `cargo xtask demo`: a real install watched, a broken one, and the same
//! install through the controller.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::fixtures::{DEBS, SUITE, ScratchRoot, deb_path, debs, rootfs};
use crate::util;

/// `cargo xtask demo`: watch a real `dpkg -i` of real packages into a
/// throw-away Debian root, then a broken one, and show the windows.
pub fn demo() -> Result<()> {
    if !util::is_root() {
        bail!("demo: needs root (eBPF probes, overlay mounts); run it with sudo");
    }
    crate::ebpf::release(&["backstop-agent", "backstop-controller"])?;
    let root = rootfs()?;
    let debs = debs()?;
    let agent = util::target_dir().join("release/backstop-agent");

    let scratch = ScratchRoot::new(&root, "demo")?;
    let mut files = Vec::new();
    for pkg in DEBS {
        let src = deb_path(&debs, pkg)
            .with_context(|| format!("{pkg}.deb missing from {}", debs.display()))?;
        let name = src
            .file_name()
            .context("a .deb path has a file name")?
            .to_owned();
        std::fs::copy(&src, scratch.merged.join("tmp").join(&name))?;
        files.push(format!("/tmp/{}", name.to_string_lossy()));
    }
    eprintln!(
        "\n== 1. a healthy install: dpkg -i {} into a throw-away {SUITE} root\n",
        DEBS.join(" ")
    );
    let mut cmd = Command::new(&agent);
    cmd.args(["watch", "--window-ms", "250", "--events", "--"])
        .arg("chroot")
        .arg(&scratch.merged)
        .args(["dpkg", "-i"])
        .args(&files);
    let status = cmd.status().context("running backstop-agent")?;
    eprintln!("\nbackstop-agent exited {status}");

    eprintln!("\n== 2. a broken install: a truncated .deb\n");
    let good = std::fs::read(deb_path(&debs, "hello").context("hello.deb missing")?)?;
    std::fs::write(
        scratch.merged.join("tmp/broken.deb"),
        &good[..good.len() / 2],
    )?;
    let mut cmd = Command::new(&agent);
    cmd.args(["watch", "--window-ms", "250", "--events", "--"])
        .arg("chroot")
        .arg(&scratch.merged)
        .args(["dpkg", "-i", "/tmp/broken.deb"]);
    let status = cmd.status().context("running backstop-agent")?;
    eprintln!("\nbackstop-agent exited {status} (the install's own exit code)");
    drop(scratch);
    fleet_demo(&root, &debs)
}

/// Part 3: the same install through the controller, as a fleet runs it.
fn fleet_demo(root: &Path, debs: &Path) -> Result<()> {
    let bin = util::target_dir().join("release");
    let backstop = bin.join("backstop");
    let data = util::cache_dir().join("demo-fleet");
    let _ = std::fs::remove_dir_all(&data);
    let cli = |args: &[&str]| {
        let mut c = Command::new(&backstop);
        c.arg("--data").arg(&data).args(args);
        c
    };
    eprintln!(
        "\n== 3. through the controller: backstop init, serve, backstop-agent run, backstop exec\n"
    );
    util::output(&mut cli(&["init", "--host", "demo-host"]))?;
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let serve = Daemon(cli(&["--log", "warn", "serve", "--listen", &addr]).spawn()?);
    let mut agent = Command::new(bin.join("backstop-agent"));
    agent
        .args(["--log", "warn", "run", "--controller", &addr, "--bundle"])
        .arg(data.join("pki/agents/demo-host.bundle"))
        .arg("--data")
        .arg(data.join("agent"));
    let agent = Daemon(agent.spawn()?);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let hosts = util::output(&mut cli(&["hosts", "--json"])).unwrap_or_default();
        if hosts.contains("\"connected\":true") {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("demo: the agent did not connect within 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    util::step("backstop hosts", cli(&["hosts"]))?;
    let scratch = ScratchRoot::new(root, "demo-fleet")?;
    let hello = deb_path(debs, "hello").context("hello.deb missing")?;
    std::fs::copy(&hello, scratch.merged.join("tmp/hello.deb"))?;
    let merged = scratch.merged.display().to_string();
    let out = util::output(&mut cli(&[
        "exec",
        "--host",
        "demo-host",
        "--window-ms",
        "100",
        "--json",
        "--",
        "chroot",
        &merged,
        "dpkg",
        "-i",
        "/tmp/hello.deb",
    ]))?;
    eprintln!("backstop exec: {}", out.trim());
    let v: serde_json::Value = serde_json::from_str(out.trim())?;
    let id = v["deployment"]
        .as_str()
        .context("exec printed no deployment id")?
        .to_string();
    util::step("backstop deployments", cli(&["deployments"]))?;
    util::step("backstop windows", cli(&["windows", &id]))?;
    util::step("backstop events", cli(&["events", &id]))?;
    drop(agent);
    drop(serve);
    eprintln!(
        "\nThe store is {}; --json on any of these gives machine-readable output (see README.md).",
        data.join("backstop.db").display()
    );
    Ok(())
}

/// A background process stopped with SIGTERM (then waited for) on drop.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}
