//! `cargo xtask bench`: slowdowns measured side by side in one run.
//!
//! Each workload runs alternately without and with the agent, several
//! times, and the median of the paired ratios is reported, so a noisy
//! neighbour on this shared machine moves both sides of a pair alike. What
//! is timed is the workload itself (`backstop-workload` reports its own
//! elapsed time), never the agent's start-up.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use crate::fixtures::{self, ScratchRoot};
use crate::util;

#[derive(Subcommand, Clone)]
pub enum Which {
    /// Shadow cost: create+start+wait+delete of /bin/true in a shadow vs
    /// unshare+chroot on an overlay; then dpkg -i in a shadow vs a chroot.
    Shadow {
        #[arg(long, default_value_t = 20)]
        reps: usize,
    },
    /// The model: inference per window on one core, and its size on disk
    /// (a model trained on a generated corpus of the same shape).
    Predict,
    /// Snapshots and restore of /usr of the Debian rootfs against cp -a and
    /// rsync -a --delete.
    Rollback {
        #[arg(long, default_value_t = 3)]
        reps: usize,
    },
    /// Simulated agents (real QUIC + mTLS connections) streaming windows to
    /// a real controller: windows stored per second, p99 delay from a
    /// window's send to its commit, controller RSS.
    Ingest {
        /// Agent counts to run, one after another.
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
        agents: Vec<usize>,
        #[arg(long, default_value_t = 10)]
        hz: u32,
        #[arg(long, default_value_t = 15)]
        seconds: u64,
    },
    /// The agent's cost to the tree it watches and to the rest of the host.
    Overhead {
        /// Pairs (without, with) per workload.
        #[arg(long, default_value_t = 7)]
        reps: usize,
        /// stat() calls in the syscall-heavy loop.
        #[arg(long, default_value_t = 1_000_000)]
        stat_calls: u64,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(which: Which) -> Result<()> {
    match which {
        Which::Overhead {
            reps,
            stat_calls,
            json,
        } => overhead(reps.max(1), stat_calls, json),
        Which::Rollback { reps } => rollback(reps.max(1)),
        Which::Shadow { reps } => shadow(reps.max(1)),
        Which::Predict => predict(),
        Which::Ingest {
            agents,
            hz,
            seconds,
        } => ingest(&agents, hz, seconds),
    }
}

struct Bins {
    agent: PathBuf,
    workload: PathBuf,
}

fn build() -> Result<Bins> {
    let dir = crate::ebpf::release(&["backstop-agent", "backstop-tests"])?;
    Ok(Bins {
        agent: dir.join("backstop-agent"),
        workload: dir.join("backstop-workload"),
    })
}

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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
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

fn overhead(reps: usize, stat_calls: u64, json: bool) -> Result<()> {
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
            let mut args = vec![
                "time".to_string(),
                "--".into(),
                "chroot".into(),
                scratch.merged.display().to_string(),
                "dpkg".into(),
                "-i".into(),
            ];
            for f in &files {
                let name = f.file_name().unwrap().to_string_lossy().into_owned();
                std::fs::copy(f, scratch.merged.join("tmp").join(&name))?;
                args.push(format!("/tmp/{name}"));
            }
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
    rows.push(pairs(
        "stat loop, untracked (agent watching another tree)",
        0.02,
        reps,
        |agent| {
            let watcher = if agent {
                Some(Watcher::start(&bins.agent)?)
            } else {
                None
            };
            let t = timed(&bins, &["stat", &n], false);
            drop(watcher);
            t
        },
        |_| {},
    )?);

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
        for r in &rows {
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
    Ok(())
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
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first)?;
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
        lib.push_str(&format!(
            "pub fn f{i}(x: &[u64]) -> u64 {{ x.iter().map(|v| v.wrapping_mul({i}) ^ (v >> 3)).fold({i}, |a, b| a.rotate_left(5) ^ b) }}\n"
        ));
    }
    std::fs::write(dir.join("src/lib.rs"), lib)?;
    let mut main = String::from(
        "fn main() {\n    let v: Vec<u64> = (0..100).collect();\n    let mut s = 0u64;\n",
    );
    for i in 0..300 {
        main.push_str(&format!("    s ^= bench_crate::f{i}(&v);\n"));
    }
    main.push_str("    println!(\"{s}\");\n}\n");
    std::fs::write(dir.join("src/main.rs"), main)?;
    Ok(dir)
}

fn ingest(agents: &[usize], hz: u32, seconds: u64) -> Result<()> {
    util::step(
        "cargo build --release (controller, loadgen)",
        util::cargo(&[
            "build",
            "--release",
            "-p",
            "backstop-controller",
            "-p",
            "backstop-tests",
        ]),
    )?;
    let bin = util::target_dir().join("release");
    let data = util::cache_dir().join("bench-ingest");
    let _ = std::fs::remove_dir_all(&data);
    let mut init = Command::new(bin.join("backstop"));
    init.arg("--data")
        .arg(&data)
        .args(["init", "--host", "bench"]);
    util::output(&mut init)?;
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut rows = Vec::new();
    for &n in agents {
        // A fresh controller (and database) per size, so RSS is per size.
        for f in ["backstop.db", "backstop.db-wal", "backstop.db-shm"] {
            let _ = std::fs::remove_file(data.join(f));
        }
        let mut serve = Command::new(bin.join("backstop"))
            .arg("--data")
            .arg(&data)
            .args(["--log", "warn", "serve", "--listen", &addr])
            .stderr(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(serve.stderr.take().unwrap()).read_line(&mut line)?;
        let mut loadgen = Command::new(bin.join("backstop-loadgen"));
        loadgen.arg("--data").arg(&data).args([
            "--controller",
            &addr,
            "--agents",
            &n.to_string(),
            "--hz",
            &hz.to_string(),
            "--seconds",
            &seconds.to_string(),
        ]);
        let out = util::output(&mut loadgen);
        let rss_kb = std::fs::read_to_string(format!("/proc/{}/status", serve.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .unwrap_or(0);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
        let _ = serve.wait();
        let v: serde_json::Value = serde_json::from_str(out?.trim())?;
        eprintln!("bench ingest: {n} agents: {v}");
        rows.push((n, v, rss_kb));
    }
    println!(
        "\nbackstop ingest: simulated agents at {hz} Hz for {seconds} s each, real QUIC + mTLS on loopback; controller and load generator share this 2-core machine\n"
    );
    println!(
        "{:>7} {:>10} {:>10} {:>11} {:>9} {:>9} {:>12} {:>7}",
        "agents", "sent", "stored", "windows/s", "p50 ms", "p99 ms", "ctrl RSS MB", "errors"
    );
    for (n, v, rss) in &rows {
        println!(
            "{:>7} {:>10} {:>10} {:>11.0} {:>9.2} {:>9.2} {:>12.1} {:>7}",
            n,
            v["windows_sent"].as_u64().unwrap_or(0),
            v["windows_acked"].as_u64().unwrap_or(0),
            v["windows_per_s"].as_f64().unwrap_or(0.0),
            v["p50_ms"].as_f64().unwrap_or(0.0),
            v["p99_ms"].as_f64().unwrap_or(0.0),
            *rss as f64 / 1024.0,
            v["errors"].as_u64().unwrap_or(0),
        );
    }
    println!("\ntarget: 1000 agents at 10 Hz, every window stored (stored = sent), p99 < 250 ms");
    Ok(())
}

/// Removes a bench's directory however the bench ends.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Write out every dirty page, so the next timed run does not pay for
/// the writeback of what came before it.
fn sync() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Time a command; fail with its output if it fails.
fn time_cmd(what: &str, cmd: &mut Command) -> Result<f64> {
    let start = std::time::Instant::now();
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{what} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(secs)
}

fn predict() -> Result<()> {
    util::step(
        "cargo build --release (backstop-controller)",
        util::cargo(&["build", "--release", "-p", "backstop-controller"]),
    )?;
    let backstop = util::target_dir().join("release/backstop");
    let base = util::cache_dir().join("bench-predict");
    let _ = std::fs::remove_dir_all(&base);
    util::output(
        Command::new(&backstop)
            .args([
                "corpus",
                "synth",
                "--packages",
                "80",
                "--per-package",
                "16",
                "--seed",
                "5",
                "--out",
            ])
            .arg(base.join("corpus")),
    )?;
    util::output(
        Command::new(&backstop)
            .args(["train", "--json", "--seed", "1", "--corpus"])
            .arg(base.join("corpus"))
            .arg("--out")
            .arg(base.join("model")),
    )?;
    let out = util::output(
        Command::new(&backstop)
            .env("RAYON_NUM_THREADS", "1")
            .args(["bench-predict", "--model"])
            .arg(base.join("model")),
    )?;
    let v: serde_json::Value = serde_json::from_str(out.trim())?;
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "\nbackstop predict: one core, batch of one, median of {} calls\n",
        v["calls"]
    );
    println!(
        "forward pass per window       {:>8.1} us   (target <= 100 us)",
        f("forward_us_median")
    );
    println!(
        "raw window to probability     {:>8.1} us",
        f("end_to_end_us_median")
    );
    println!(
        "model on disk                 {:>8.1} KB   (target <= 2048 KB)",
        f("model_bytes") / 1024.0
    );
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}

fn shadow(reps: usize) -> Result<()> {
    if !util::is_root() {
        bail!("bench shadow: needs root (containers, mounts, cgroups)");
    }
    // `shadow bench` is a test seam: building backstop-tests beside the
    // agent turns on its `test-seams` feature (the tests crate asks for it),
    // as the overhead bench's build does.
    let bin = crate::ebpf::release(&["backstop-agent", "backstop-tests"])?;
    let agent = bin.join("backstop-agent");
    let rootfs = fixtures::rootfs()?;
    let debs = fixtures::debs()?;
    // Shadows and the chroot copy live side by side in a fresh directory
    // out of the build tree: a copy-up creates a directory for each lower
    // one the install writes into (about 100 for hello), and on this VM's
    // ext4 a mkdir deep in the crowded target/ cost 0.25 ms against 0.03 ms
    // under /var/tmp, which measured the block groups, not the shadow.
    let base = std::path::Path::new("/var/tmp")
        .join(format!("backstop-bench-shadow-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    let _gone = RemoveOnDrop(base.clone());
    let out = util::output(
        Command::new(&agent)
            .args(["shadow", "--data"])
            .arg(base.join("data"))
            .args(["bench", "--reps", &reps.to_string(), "--root"])
            .arg(&rootfs),
    )?;
    let v: serde_json::Value = serde_json::from_str(out.trim())?;
    let ms = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            .unwrap_or_default()
    };
    let (s, u) = (median(ms("shadow_ms")), median(ms("unshare_ms")));
    // dpkg -i of a real package: in a shadow (CLI: probes loaded, tracked;
    // volatile overlay, the default, and --durable) against a plain chroot
    // of a copy of the root. Dirty pages are written out before each run
    // so that no run pays for the one before it.
    let hello = fixtures::deb_path(&debs, "hello").context("hello.deb missing")?;
    let name = hello.file_name().unwrap().to_string_lossy().into_owned();
    let in_shadow = |extra: &[&str]| -> Result<f64> {
        let mut c = Command::new(&agent);
        c.args(["shadow", "--json", "--data"])
            .arg(base.join("data"))
            .args(["run", "--root"])
            .arg(&rootfs)
            .arg("--copy-in")
            .arg(&hello);
        c.args(extra);
        c.args(["--", "dpkg", "-i", &format!("/.backstop-shadow/in/{name}")]);
        sync();
        let r: serde_json::Value = serde_json::from_str(util::output(&mut c)?.trim())?;
        r["cmd"]["duration_ms"].as_f64().context("no duration")
    };
    let dpkg_reps = reps.min(9);
    // Every chroot copy is made before the first timed run: copying the
    // root creates thousands of directories, which changes how fast the
    // next mkdir on this filesystem is, and a shadow's copy-ups are mkdirs.
    // Round 0 warms caches and is not counted.
    let copies: Vec<_> = (0..=dpkg_reps)
        .map(|i| -> Result<std::path::PathBuf> {
            let copy = base.join(format!("chroot-{i}"));
            util::output(
                Command::new("cp")
                    .args(["-a", "--reflink=auto"])
                    .arg(&rootfs)
                    .arg(&copy),
            )?;
            std::fs::copy(&hello, copy.join("tmp").join(&name))?;
            Ok(copy)
        })
        .collect::<Result<_>>()?;
    let (mut volatile, mut tmpfs, mut durable, mut in_chroot) = (vec![], vec![], vec![], vec![]);
    for (i, copy) in copies.iter().enumerate() {
        let v = in_shadow(&[])?;
        let t = in_shadow(&["--upper-size", "1G"])?;
        let d = in_shadow(&["--durable"])?;
        sync();
        let c = time_cmd(
            "chroot dpkg -i",
            Command::new("chroot")
                .arg(copy)
                .args(["dpkg", "-i", &format!("/tmp/{name}")]),
        )? * 1e3;
        if i > 0 {
            volatile.push(v);
            tmpfs.push(t);
            durable.push(d);
            in_chroot.push(c);
        }
    }
    let (dv, dt, dd, dc) = (
        median(volatile),
        median(tmpfs),
        median(durable),
        median(in_chroot),
    );
    println!("\nbackstop shadow: median of {reps} (dpkg: {dpkg_reps})\n");
    println!(
        "/bin/true in a shadow      {s:>8.1} ms   vs unshare+chroot {u:>8.1} ms   overhead {:+.1} ms   (target <= 15 ms)",
        s - u
    );
    println!(
        "dpkg -i hello in a shadow  {dv:>8.1} ms   vs chroot         {dc:>8.1} ms   overhead {:+.1}%   (target <= 5%)",
        (dv / dc - 1.0) * 100.0
    );
    println!(
        "  upper on a tmpfs         {dt:>8.1} ms   vs chroot         {dc:>8.1} ms   overhead {:+.1}%   (--upper-size 1G: copy-ups in memory)",
        (dt / dc - 1.0) * 100.0
    );
    println!(
        "  the same with --durable  {dd:>8.1} ms   vs chroot         {dc:>8.1} ms   overhead {:+.1}%   (fsyncs and copy-up syncs reach the disk)",
        (dd / dc - 1.0) * 100.0
    );
    Ok(())
}

fn rollback(reps: usize) -> Result<()> {
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
            let name = src.file_name().unwrap().to_string_lossy().into_owned();
            std::fs::copy(&src, root.join("tmp").join(&name))?;
            Ok(format!("/tmp/{name}"))
        })
        .collect::<Result<_>>()?;
    let snap = |data: &Path, args: &[&str]| {
        let mut c = Command::new(&agent);
        c.args(["snapshot", "--json", "--data"])
            .arg(data)
            .args(args);
        c
    };
    let root_s = root.display().to_string();
    let (mut cp, mut first, mut second, mut restore, mut tracked, mut rsync) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for i in 0..reps {
        // 1. first snapshot into an empty store, against cp -a of the scope.
        let copy = base.join(format!("copy-{i}"));
        std::fs::create_dir_all(&copy)?;
        cp.push(time_cmd(
            "cp -a",
            Command::new("cp")
                .arg("-a")
                .arg(root.join("usr"))
                .arg(&copy),
        )?);
        let data = base.join(format!("data-{i}"));
        first.push(time_cmd(
            "first snapshot",
            &mut snap(&data, &["create", "--root", &root_s, "--scope", "/usr"]),
        )?);
        // 2. the same scope again, unchanged.
        let t0 = std::time::Instant::now();
        let out = util::output(&mut snap(
            &data,
            &["create", "--root", &root_s, "--scope", "/usr"],
        ))?;
        second.push(t0.elapsed().as_secs_f64());
        let id: serde_json::Value = serde_json::from_str(out.trim())?;
        let id = id["id"]
            .as_str()
            .context("create printed no id")?
            .to_string();
        // 3. a real install, then restore; the same install, then rsync.
        let install = || -> Result<()> {
            let mut c = Command::new("chroot");
            c.arg(&root).args(["dpkg", "-i"]).args(&files);
            util::output(&mut c).map(|_| ())
        };
        install()?;
        restore.push(time_cmd("restore", &mut snap(&data, &["restore", &id]))?);
        // The same install watched by the probes, its changes logged; the
        // restore then looks only at what the log names.
        let log = base.join("install.changes");
        let mut w = Command::new(&agent);
        w.arg("watch")
            .arg("--changes")
            .arg(&log)
            .arg("--")
            .arg("chroot")
            .arg(&root)
            .args(["dpkg", "-i"])
            .args(&files);
        util::output(&mut w)?;
        let log_s = log.display().to_string();
        tracked.push(time_cmd(
            "restore --changes",
            &mut snap(&data, &["restore", &id, "--changes", &log_s]),
        )?);
        install()?;
        let mut rs = Command::new("rsync");
        rs.args(["-a", "--delete"])
            .arg(format!("{}/usr/", copy.display()))
            .arg(format!("{root_s}/usr/"));
        rsync.push(time_cmd("rsync -a --delete", &mut rs)?);
        let _ = std::fs::remove_dir_all(&copy);
        let _ = std::fs::remove_dir_all(&data);
        eprintln!(
            "bench rollback: rep {}/{reps}: cp {:.2}s first {:.2}s second {:.3}s restore {:.3}s restore --changes {:.4}s rsync {:.3}s",
            i + 1,
            cp[i],
            first[i],
            second[i],
            restore[i],
            tracked[i],
            rsync[i]
        );
    }
    let (cp, first, second, restore, tracked, rsync) = (
        median(cp),
        median(first),
        median(second),
        median(restore),
        median(tracked),
        median(rsync),
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
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}

fn walk_count(dir: &Path) -> usize {
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
