//! `cargo xtask bench rollback`: snapshot and restore against cp -a and
//! rsync.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{median, time_cmd};
use crate::fixtures;
use crate::util;

pub(super) fn rollback(reps: usize) -> Result<()> {
    if !util::is_root() {
        bail!("bench rollback: needs root (chroot, dpkg, ownership)");
    }
    let bin = crate::ebpf::release(&["backstop-agent"])?;
    let agent = bin.join("backstop-agent");
    let rootfs = fixtures::rootfs()?;
    let debs = fixtures::debs()?;
    let base = util::cache_dir().join("bench-rollback");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base)?;
    let root = base.join("root");
    util::output(Command::new("cp").args(["-a"]).arg(&rootfs).arg(&root))?;
    let files: Vec<String> = fixtures::DEBS
        .iter()
        .map(|p| {
            let src = fixtures::deb_path(&debs, p).with_context(|| format!("{p}.deb missing"))?;
            let name = src.file_name().context("a .deb path has a file name")?;
            let name = name.to_string_lossy().into_owned();
            std::fs::copy(&src, root.join("tmp").join(&name))?;
            Ok(format!("/tmp/{name}"))
        })
        .collect::<Result<_>>()?;
    let bench = Bench {
        agent,
        base: base.clone(),
        root,
        files,
    };
    let mut times = Times::default();
    for i in 0..reps {
        bench.rep(i, &mut times)?;
        eprintln!(
            "bench rollback: rep {}/{reps}: cp {:.2}s first {:.2}s second {:.3}s restore {:.3}s restore --changes {:.4}s rsync {:.3}s",
            i + 1,
            times.cp[i],
            times.first[i],
            times.second[i],
            times.restore[i],
            times.tracked[i],
            times.rsync[i]
        );
    }
    report(&bench.root, reps, times);
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}

/// What every repetition works on.
struct Bench {
    agent: PathBuf,
    base: PathBuf,
    root: PathBuf,
    /// The .debs, as paths inside the root.
    files: Vec<String>,
}

/// Seconds per repetition, one list per measurement.
#[derive(Default)]
struct Times {
    cp: Vec<f64>,
    first: Vec<f64>,
    second: Vec<f64>,
    restore: Vec<f64>,
    tracked: Vec<f64>,
    rsync: Vec<f64>,
}

impl Bench {
    /// `backstop-agent snapshot --json --data DATA ARGS...`
    fn snap(&self, data: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(&self.agent);
        c.args(["snapshot", "--json", "--data"])
            .arg(data)
            .args(args);
        c
    }

    /// A real install of the .debs into the root.
    fn install(&self) -> Result<()> {
        let mut c = Command::new("chroot");
        c.arg(&self.root).args(["dpkg", "-i"]).args(&self.files);
        util::output(&mut c).map(|_| ())
    }

    fn rep(&self, i: usize, t: &mut Times) -> Result<()> {
        let (base, root) = (&self.base, &self.root);
        let root_s = root.display().to_string();
        // 1. first snapshot into an empty store, against cp -a of the scope.
        let copy = base.join(format!("copy-{i}"));
        std::fs::create_dir_all(&copy)?;
        t.cp.push(time_cmd(
            "cp -a",
            Command::new("cp")
                .arg("-a")
                .arg(root.join("usr"))
                .arg(&copy),
        )?);
        let data = base.join(format!("data-{i}"));
        t.first.push(time_cmd(
            "first snapshot",
            &mut self.snap(&data, &["create", "--root", &root_s, "--scope", "/usr"]),
        )?);
        // 2. the same scope again, unchanged.
        let t0 = std::time::Instant::now();
        let out =
            util::output(&mut self.snap(&data, &["create", "--root", &root_s, "--scope", "/usr"]))?;
        t.second.push(t0.elapsed().as_secs_f64());
        let id: serde_json::Value = serde_json::from_str(out.trim())?;
        let id = id["id"]
            .as_str()
            .context("create printed no id")?
            .to_string();
        // 3. a real install, then restore; the same install, then rsync.
        self.install()?;
        t.restore.push(time_cmd(
            "restore",
            &mut self.snap(&data, &["restore", &id]),
        )?);
        // The same install watched by the probes, its changes logged; the
        // restore then looks only at what the log names.
        let log = base.join("install.changes");
        let mut w = Command::new(&self.agent);
        w.arg("watch")
            .arg("--changes")
            .arg(&log)
            .arg("--")
            .arg("chroot")
            .arg(root)
            .args(["dpkg", "-i"])
            .args(&self.files);
        util::output(&mut w)?;
        let log_s = log.display().to_string();
        t.tracked.push(time_cmd(
            "restore --changes",
            &mut self.snap(&data, &["restore", &id, "--changes", &log_s]),
        )?);
        self.install()?;
        let mut rs = Command::new("rsync");
        rs.args(["-a", "--delete"])
            .arg(format!("{}/usr/", copy.display()))
            .arg(format!("{root_s}/usr/"));
        t.rsync.push(time_cmd("rsync -a --delete", &mut rs)?);
        let _ = std::fs::remove_dir_all(&copy);
        let _ = std::fs::remove_dir_all(&data);
        Ok(())
    }
}

/// The medians, each against what it is compared with.
fn report(root: &Path, reps: usize, t: Times) {
    let (cp, first, second, restore, tracked, rsync) = (
        median(t.cp),
        median(t.first),
        median(t.second),
        median(t.restore),
        median(t.tracked),
        median(t.rsync),
    );
    let entries = walk_count(&root.join("usr"));
    println!(
        "\nbackstop rollback: scope /usr of the Debian rootfs ({entries} entries), median of {reps}\n"
    );
    println!(
        "first snapshot            {first:>8.3} s   vs cp -a {cp:>8.3} s     ratio {:.2}",
        first / cp
    );
    println!(
        "second, unchanged scope   {second:>8.3} s   vs first {first:>8.3} s     ratio {:.3}   (target <= 0.05)",
        second / first
    );
    println!(
        "restore after dpkg -i     {restore:>8.3} s   vs rsync {rsync:>8.3} s     rsync/restore {:.1}x   (whole scope walked)",
        rsync / restore
    );
    println!(
        "  ... with --changes      {tracked:>8.4} s   vs rsync {rsync:>8.3} s     rsync/restore {:.1}x   (targets: < 1 s, >= 10x)",
        rsync / tracked
    );
}

pub(super) fn walk_count(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                n += 1;
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    n
}
