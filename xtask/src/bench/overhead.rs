//! `cargo xtask bench overhead`: the agent's cost to the tree it watches
//! and to the rest of the host, as paired runs without and with it.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Bins, build, median};
use crate::fixtures::{self, ScratchRoot};
use crate::util;

/// Result of one timed run: the workload's own elapsed time and, when it
/// ran under the agent, the agent's summary.
struct Timed {
    elapsed_ns: f64,
    summary: Option<serde_json::Value>,
    syscalls: f64,
}

/// Run `cmd` (a backstop-workload invocation), optionally under
/// `backstop-agent watch --json`, and read its elapsed time from stderr.
fn timed(bins: &Bins, cmd: &[&str], under_agent: bool) -> Result<Timed> {
    let mut c = if under_agent {
        let mut c = Command::new(&bins.agent);
        c.args(["watch", "--json", "--"]).arg(&bins.workload);
        c
    } else {
        Command::new(&bins.workload)
    };
    c.args(cmd);
    let out = c.output().with_context(|| format!("running {cmd:?}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "{cmd:?} (under agent: {under_agent}) failed: {}: {stderr}",
            out.status
        );
    }
    let elapsed_ns = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("elapsed_ns="))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("{cmd:?} printed no elapsed_ns: {stderr}"))?;
    let mut summary = None;
    let mut syscalls = 0.0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            if let Some(s) = v.get("summary") {
                summary = Some(s.clone());
            } else if let Some(n) = v["features"]["syscalls_total"].as_f64() {
                syscalls += n;
            }
        }
    }
    Ok(Timed {
        elapsed_ns,
        summary,
        syscalls,
    })
}

impl Timed {
    /// Lost events the agent reported (0 for runs without it).
    fn lost_events(&self) -> u64 {
        self.summary
            .as_ref()
            .and_then(|s| s["lost_events"].as_u64())
            .unwrap_or(0)
    }
}

struct Row {
    name: &'static str,
    target: f64,
    ratios: Vec<f64>,
    base_ms: Vec<f64>,
}

impl Row {
    fn slowdown(&self) -> f64 {
        median(self.ratios.clone()) - 1.0
    }
}

/// A workload run as a pair: setup (untimed) then the timed command.
fn pairs(
    name: &'static str,
    target: f64,
    reps: usize,
    mut one: impl FnMut(bool) -> Result<Timed>,
    mut on_agent_run: impl FnMut(&Timed),
) -> Result<Row> {
    let mut row = Row {
        name,
        target,
        ratios: Vec::new(),
        base_ms: Vec::new(),
    };
    // One warm-up pair: page cache, binaries, dentries.
    one(false)?;
    one(true)?;
    for i in 0..reps {
        // Alternate which side goes first so drift cancels.
        let (base, with) = if i % 2 == 0 {
            let b = one(false)?;
            (b, one(true)?)
        } else {
            let w = one(true)?;
            (one(false)?, w)
        };
        on_agent_run(&with);
        row.ratios.push(with.elapsed_ns / base.elapsed_ns);
        row.base_ms.push(base.elapsed_ns / 1e6);
        eprintln!(
            "bench {name}: pair {}/{reps}: {:.1} ms -> {:.1} ms",
            i + 1,
            base.elapsed_ns / 1e6,
            with.elapsed_ns / 1e6
        );
    }
    Ok(row)
}

pub(super) fn overhead(reps: usize, stat_calls: u64, json: bool) -> Result<()> {
    if !util::is_root() {
        bail!("bench overhead: needs root (it loads the probes)");
    }
    let bins = build()?;
    let root = fixtures::rootfs()?;
    let debs = fixtures::debs()?;
    let n = stat_calls.to_string();
    let mut lost_total = 0u64;
    let mut peak_events_per_s: f64 = 0.0;
    let mut rows = Vec::new();

    // 1. The syscall-heavy loop, tracked.
    rows.push(pairs(
        "stat loop, tracked",
        0.25,
        reps,
        |agent| timed(&bins, &["stat", &n], agent),
        |t| {
            lost_total += t.lost_events();
            peak_events_per_s = peak_events_per_s.max(t.syscalls / (t.elapsed_ns / 1e9));
        },
    )?);

    // 2. dpkg -i of real packages into a fresh throw-away root each time.
    let files: Vec<PathBuf> = fixtures::DEBS
        .iter()
        .map(|p| fixtures::deb_path(&debs, p).with_context(|| format!("{p}.deb missing")))
        .collect::<Result<_>>()?;
    rows.push(pairs(
        "dpkg -i (hello, cpio, less)",
        0.03,
        reps,
        |agent| {
            let scratch = ScratchRoot::new(&root, "bench-dpkg")?;
            let args = dpkg_args(&scratch, &files)?;
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            timed(&bins, &args, agent)
        },
        |t| lost_total += t.lost_events(),
    )?);

    // 3. A parallel build of a small generated crate.
    let krate = bench_crate()?;
    let manifest = krate.join("Cargo.toml").display().to_string();
    let target = krate.join("target");
    rows.push(pairs(
        "cargo build -j2 (small crate)",
        0.03,
        reps,
        |agent| {
            let _ = std::fs::remove_dir_all(&target);
            timed(
                &bins,
                &[
                    "time",
                    "--",
                    "cargo",
                    "build",
                    "-j2",
                    "--offline",
                    "--quiet",
                    "--manifest-path",
                    &manifest,
                ],
                agent,
            )
        },
        |t| lost_total += t.lost_events(),
    )?);

    // 4. The same stat loop, untracked, while the agent watches another tree.
    rows.push(untracked(&bins, &n, reps)?);

    report(&rows, reps, json, peak_events_per_s, lost_total);
    Ok(())
}

/// The stat loop untracked, paired without and with an agent that watches
/// another tree: what the agent costs the rest of the host.
fn untracked(bins: &Bins, n: &str, reps: usize) -> Result<Row> {
    pairs(
        "stat loop, untracked (agent watching another tree)",
        0.02,
        reps,
        |agent| {
            let watcher = if agent {
                Some(Watcher::start(&bins.agent)?)
            } else {
                None
            };
            let t = timed(bins, &["stat", n], false);
            drop(watcher);
            t
        },
        |_| {},
    )
}

/// `time -- chroot ROOT dpkg -i ...`, with the .debs copied into ROOT/tmp.
fn dpkg_args(scratch: &ScratchRoot, files: &[PathBuf]) -> Result<Vec<String>> {
    let mut args = vec![
        "time".to_string(),
        "--".into(),
        "chroot".into(),
        scratch.merged.display().to_string(),
        "dpkg".into(),
        "-i".into(),
    ];
    for f in files {
        let name = f.file_name().context("a .deb path has a file name")?;
        let name = name.to_string_lossy().into_owned();
        std::fs::copy(f, scratch.merged.join("tmp").join(&name))?;
        args.push(format!("/tmp/{name}"));
    }
    Ok(args)
}

/// The overhead table, or one JSON object.
fn report(rows: &[Row], reps: usize, json: bool, peak_events_per_s: f64, lost_total: u64) {
    if json {
        let out: Vec<_> = rows
        .iter()
        .map(|r| serde_json::json!({"workload": r.name, "median_slowdown": r.slowdown(), "target": r.target, "ratios": r.ratios, "baseline_ms": r.base_ms}))
        .collect();
        println!(
            "{}",
            serde_json::json!({"bench": "overhead", "reps": reps, "workloads": out, "peak_events_per_s": peak_events_per_s, "lost_events": lost_total})
        );
    } else {
        println!(
            "\nbackstop overhead: median of {reps} paired runs (with agent / without), measured side by side\n"
        );
        println!(
            "{:<52} {:>10} {:>10} {:>8} {:>6}",
            "workload", "base ms", "slowdown", "target", ""
        );
        for r in rows {
            let s = r.slowdown();
            println!(
                "{:<52} {:>10.1} {:>9.1}% {:>7.0}% {:>6}",
                r.name,
                median(r.base_ms.clone()),
                s * 100.0,
                r.target * 100.0,
                if s <= r.target { "ok" } else { "MISSED" }
            );
        }
        println!(
            "\nevents/s at the heaviest load (tracked stat loop): {peak_events_per_s:.0} syscalls/s"
        );
        println!("lost events over every agent run: {lost_total}");
    }
}

/// An agent watching `sleep` in the background; stopped on drop.
struct Watcher(std::process::Child);

impl Watcher {
    fn start(agent: &Path) -> Result<Self> {
        let mut child = Command::new(agent)
            .args([
                "watch",
                "--json",
                "--window-ms",
                "100",
                "--",
                "sleep",
                "3600",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        // The first window means the probes are attached.
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout is piped above"))
            .read_line(&mut first)?;
        if first.is_empty() {
            bail!("the background agent exited before its first window");
        }
        Ok(Watcher(child))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // SIGTERM: the agent passes it to `sleep` and exits cleanly.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A dependency-free crate with enough code to keep two jobs busy for a
/// few seconds (a lib and a bin compile in parallel).
fn bench_crate() -> Result<PathBuf> {
    let dir = util::cache_dir().join("bench-crate");
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"bench-crate\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )?;
    let mut lib = String::new();
    for i in 0..300 {
        writeln!(
            lib,
            "pub fn f{i}(x: &[u64]) -> u64 {{ x.iter().map(|v| v.wrapping_mul({i}) ^ (v >> 3)).fold({i}, |a, b| a.rotate_left(5) ^ b) }}"
        )?;
    }
    std::fs::write(dir.join("src/lib.rs"), lib)?;
    let mut main = String::from(
        "fn main() {\n    let v: Vec<u64> = (0..100).collect();\n    let mut s = 0u64;\n",
    );
    for i in 0..300 {
        writeln!(main, "    s ^= bench_crate::f{i}(&v);")?;
    }
    main.push_str("    println!(\"{s}\");\n}\n");
    std::fs::write(dir.join("src/main.rs"), main)?;
    Ok(dir)
}
