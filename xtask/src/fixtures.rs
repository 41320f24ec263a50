//! Real things to install into: a cached Debian rootfs (debootstrap
//! minbase) and cached real .deb files, used by tests, the demo and the
//! benchmarks. Built once per checkout under target/xtask/.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

pub const SUITE: &str = "bookworm";
pub const MIRROR: &str = "http://deb.debian.org/debian";

/// Packages fetched with `apt-get download`; each installs into the minbase
/// rootfs with `dpkg -i` alone (their dependencies are all in minbase).
/// hello: tiny, no maintainer scripts. cpio, less: maintainer scripts
/// (update-alternatives, mime), man pages, a few hundred KB each.
pub const DEBS: &[&str] = &["hello", "cpio", "less"];

pub fn rootfs_dir() -> PathBuf {
    util::cache_dir().join(format!("rootfs-{SUITE}-minbase"))
}

pub fn debs_dir() -> PathBuf {
    util::cache_dir().join("debs")
}

const COMPLETE: &str = ".backstop-complete";

/// The cached rootfs, made with debootstrap if absent. Built in a side
/// directory and renamed into place, so an interrupted build is never
/// mistaken for a finished one.
pub fn rootfs() -> Result<PathBuf> {
    let dir = rootfs_dir();
    if dir.join(COMPLETE).exists() {
        eprintln!("fixtures: rootfs ok ({})", dir.display());
        return Ok(dir);
    }
    if !util::is_root() {
        bail!("fixtures: building the Debian rootfs needs root (debootstrap)");
    }
    let partial = dir.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("removing the unfinished {}", partial.display()))?;
    }
    std::fs::create_dir_all(partial.parent().unwrap())?;
    let mut cmd = Command::new("debootstrap");
    cmd.args(["--variant=minbase", SUITE])
        .arg(&partial)
        .arg(MIRROR);
    util::step(
        &format!("debootstrap --variant=minbase {SUITE} (about 30 s)"),
        cmd,
    )?;
    std::fs::write(partial.join(COMPLETE), "")?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&partial, &dir)
        .with_context(|| format!("moving {} into place", partial.display()))?;
    Ok(dir)
}

/// The cached .deb files, downloaded with apt-get if absent.
pub fn debs() -> Result<PathBuf> {
    let dir = debs_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let missing: Vec<&str> = DEBS
        .iter()
        .copied()
        .filter(|p| deb_path(&dir, p).is_none())
        .collect();
    if missing.is_empty() {
        eprintln!("fixtures: debs ok ({})", DEBS.join(", "));
        return Ok(dir);
    }
    let mut cmd = Command::new("apt-get");
    cmd.arg("download").args(&missing).current_dir(&dir);
    if util::step(&format!("apt-get download {}", missing.join(" ")), cmd).is_err() {
        // A fresh machine may not have package lists yet.
        let mut update = Command::new("apt-get");
        update.args(["update", "-q"]);
        util::step("apt-get update", update)?;
        let mut cmd = Command::new("apt-get");
        cmd.arg("download").args(&missing).current_dir(&dir);
        util::step(&format!("apt-get download {}", missing.join(" ")), cmd)?;
    }
    Ok(dir)
}

/// The downloaded file for `pkg` (named `pkg_VERSION_ARCH.deb`).
pub fn deb_path(dir: &Path, pkg: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb"))
        })
}

/// Everything the test suite needs besides the build.
pub fn prepare() -> Result<()> {
    rootfs()?;
    debs()?;
    Ok(())
}

/// A throw-away root: an overlay whose lower layer is the cached rootfs.
/// Unmounted and removed on drop.
pub struct ScratchRoot {
    base: PathBuf,
    pub merged: PathBuf,
}

impl ScratchRoot {
    pub fn new(lower: &Path, name: &str) -> Result<Self> {
        let base = util::cache_dir()
            .join("scratch")
            .join(format!("{name}-{}", std::process::id()));
        let (upper, work, merged) = (base.join("upper"), base.join("work"), base.join("merged"));
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let mut cmd = Command::new("mount");
        cmd.args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&merged);
        util::output(&mut cmd)
            .with_context(|| format!("mounting an overlay at {}", merged.display()))?;
        Ok(ScratchRoot { base, merged })
    }
}

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.merged).status();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

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
        let name = src.file_name().unwrap().to_owned();
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
    let good = std::fs::read(deb_path(&debs, "hello").unwrap())?;
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

/// The shipped catalog run into target/xtask/corpus (resumable).
pub fn corpus() -> Result<PathBuf> {
    if !util::is_root() {
        bail!("corpus: needs root (shadows, chroot for apt)");
    }
    let root = rootfs()?;
    let debs = util::cache_dir().join("corpus-debs");
    let mut fetch = Command::new("bash");
    fetch
        .arg(util::root().join("corpus/fetch.sh"))
        .arg(&debs)
        .env("ROOTFS", &root);
    util::step("corpus/fetch.sh (the packages' closures, cached)", fetch)?;
    let bin = crate::ebpf::release(&["backstop-agent", "backstop-controller"])?;
    let out = util::cache_dir().join("corpus");
    let mut run = Command::new(bin.join("backstop"));
    run.args(["corpus", "run", "--catalog"])
        .arg(util::root().join("corpus/catalog.toml"))
        .arg("--root")
        .arg(&root)
        .arg("--debs")
        .arg(debs.join("closures"))
        .arg("--out")
        .arg(&out)
        .arg("--agent")
        .arg(bin.join("backstop-agent"));
    util::step(
        "backstop corpus run (every scenario of corpus/catalog.toml)",
        run,
    )?;
    Ok(out)
}

/// The default model, trained from the shipped catalog's corpus.
pub fn train_default() -> Result<()> {
    let corpus = corpus()?;
    let out = util::root().join("models/default");
    let mut train = Command::new(util::target_dir().join("release/backstop"));
    train
        .args(["train", "--seed", "1", "--corpus"])
        .arg(&corpus)
        .arg("--out")
        .arg(&out);
    util::step("backstop train (the default model)", train)?;
    eprintln!("train-default: {} (commit it)", out.display());
    Ok(())
}

/// Cross-validation of the shipped catalog's corpus, once per seed.
pub fn crossval(seeds: &[u64]) -> Result<()> {
    let corpus = corpus()?;
    for seed in seeds {
        let mut cv = Command::new(util::target_dir().join("release/backstop"));
        cv.args(["crossval", "--seed", &seed.to_string(), "--corpus"])
            .arg(&corpus);
        util::step(&format!("backstop crossval --seed {seed}"), cv)?;
    }
    Ok(())
}
