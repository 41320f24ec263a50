//! `cargo xtask bench decide`, parts (b) and (c) of issue 15: for a fault
//! that builds up after a known onset, the time from the onset to the host
//! fully restored, (b) with backstop deciding as it does (the controller's
//! built-in model, if one votes, the free-space trend and the exit code),
//! and (c) when only the step's exit code triggers it (as Helm --atomic or
//! a failing dpkg would: the same deployment with
//! `policy.guards.exhaustion = false` and `min_windows = 1000`, so neither
//! the trend nor the model acts within the fault), side by side, for a
//! small, an /etc and a /usr scope.
//!
//! Everything is the real thing: `backstop serve` and `backstop-agent run`
//! (release builds) over QUIC with mutual TLS, real dpkg in a scratch copy
//! of the cached Debian rootfs (under target/, removed after), the agent's
//! executor killing the live cgroup and restoring from its change log.
//! The fault: the step installs hello, writes the onset time, then writes
//! 1 MiB every 0.5 s into a 64 MiB tmpfs mounted inside the scope (so the
//! scope's filesystem really runs out, and no real disk fills) until a
//! write fails with ENOSPC, and exits 1: a disk filling up, about 32 s
//! from onset to exit. Whether (b)'s rollback came before the step's exit
//! is printed (its exit stamp is missing when the rollback killed it).
//! Times are wall clock (the step writes `date +%s.%N` to the root's /root,
//! which no scope covers: the agent adds /tmp to a chroot's scope for the
//! staged artifact, so a stamp there would be restored away); "restored"
//! is when the agent's journal says rolled-back, polled every 10 ms.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use super::RemoveOnDrop;
use crate::{fixtures, util};

const PKG: &[&str] = &[
    "/usr/bin",
    "/usr/share/doc",
    "/usr/share/info",
    "/usr/share/locale",
    "/usr/share/man",
    "/var/lib/dpkg",
    "/var/log",
];

/// A scope under test: what a restore walks.
struct Scope {
    name: &'static str,
    paths: Vec<&'static str>,
}

/// Where the fault writes, in every scope as a path of its own: a tmpfs,
/// because the trend rule watches the scope's fullest filesystem.
const FILL: &str = "/var/lib/backstop-fill";
/// The fill's tmpfs: big enough for the trend rule's 5 windows and a third
/// of the room, small enough to run out in half a minute at 2 MiB/s.
const FILL_MB: u32 = 64;

fn scopes() -> Vec<Scope> {
    let with = |extra: &'static str| {
        let mut v = vec![extra, FILL];
        v.extend(PKG.iter().copied().filter(|p| !p.starts_with(extra)));
        v
    };
    let mut small = PKG.to_vec();
    small.push(FILL);
    vec![
        Scope {
            name: "small",
            paths: small,
        },
        Scope {
            name: "/etc",
            paths: with("/etc"),
        },
        Scope {
            name: "/usr",
            paths: with("/usr"),
        },
    ]
}

/// A tmpfs of [`FILL_MB`] at a directory made for it, unmounted (lazily,
/// so a process still in it cannot keep it) when dropped, before the
/// scratch root it lives in is removed.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Result<Tmpfs> {
        std::fs::create_dir_all(dir)?;
        util::output(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={FILL_MB}m,mode=0755"))
                .arg("tmpfs")
                .arg(dir),
        )
        .with_context(|| format!("mounting a tmpfs on {}", dir.display()))?;
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A child killed when dropped.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Rig {
    backstop: PathBuf,
    base: PathBuf,
    ctl: PathBuf,
    root: PathBuf,
    deb: PathBuf,
}

/// One run's figures, seconds from the onset.
struct Run {
    restored: f64,
    exited: Option<f64>,
    restore_ms: f64,
}

pub(super) fn restore_race(reps: usize) -> Result<()> {
    if !util::is_root() {
        bail!("bench decide (b, c): needs root (probes, cgroups, chroot)");
    }
    let bin = crate::ebpf::release(&["backstop-agent", "backstop-controller"])?;
    let rootfs = fixtures::rootfs()?;
    let deb = fixtures::deb_path(&fixtures::debs()?, "hello").context("hello.deb missing")?;
    let base = util::cache_dir().join("bench-decide-restore");
    let _ = std::fs::remove_dir_all(&base);
    let _gone = RemoveOnDrop(base.clone());
    std::fs::create_dir_all(&base)?;
    let root = base.join("root");
    util::output(Command::new("cp").arg("-a").arg(&rootfs).arg(&root))?;
    let rig = Rig {
        backstop: bin.join("backstop"),
        ctl: base.join("ctl"),
        base: base.clone(),
        root,
        deb,
    };
    let _fill = Tmpfs::mount(&rig.root.join(FILL.trim_start_matches('/')))?;
    let (_serve, _agent) = rig.start(&bin.join("backstop-agent"))?;
    let mut rows = Vec::new();
    for s in scopes() {
        let (mut early, mut late) = (Vec::new(), Vec::new());
        for i in 0..reps {
            early.push(rig.once(&s, true)?);
            late.push(rig.once(&s, false)?);
            eprintln!("bench decide: {} rep {}/{reps} done", s.name, i + 1);
        }
        rows.push((s, early, late));
    }
    report(&rig.root, reps, &rows);
    Ok(())
}

impl Rig {
    fn cli(&self) -> Command {
        let mut c = Command::new(&self.backstop);
        c.arg("--data").arg(&self.ctl);
        c
    }

    /// A controller and a connected agent.
    fn start(&self, agent: &Path) -> Result<(Kid, Kid)> {
        util::output(self.cli().args(["init", "--host", "bench"]))?;
        let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let log = |n: &str| std::fs::File::create(self.base.join(n));
        let serve = Kid(self
            .cli()
            .args(["--log", "info", "serve", "--listen", &addr])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log("serve.log")?)
            .spawn()
            .context("starting backstop serve")?);
        wait(Duration::from_secs(30), "the controller to listen", || {
            std::fs::read_to_string(self.base.join("serve.log"))
                .is_ok_and(|l| l.contains("listening on"))
        })?;
        let agent = Kid(Command::new(agent)
            .args(["--log", "warn", "run", "--controller", &addr, "--bundle"])
            .arg(self.ctl.join("pki/agents/bench.bundle"))
            .arg("--data")
            .arg(self.base.join("agent"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log("agent.log")?)
            .spawn()
            .context("starting backstop-agent run")?);
        wait(Duration::from_mins(1), "the agent to connect", || {
            self.cli()
                .args(["hosts", "--json"])
                .output()
                .ok()
                .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
                .is_some_and(|v| v.to_string().contains("\"connected\":true"))
        })?;
        Ok((serve, agent))
    }

    fn manifest(&self, s: &Scope, exit_only: bool) -> Result<PathBuf> {
        let step = format!(
            "dpkg -i \"$0\" >/dev/null && date +%s.%N > /root/backstop-onset && i=0; \
             while head -c 1048576 /dev/urandom > {FILL}/chunk.$i; do i=$((i+1)); sleep 0.5; done; \
             date +%s.%N > /root/backstop-exit; exit 1"
        );
        let text = format!(
            "name = \"hello\"\nroot = {:?}\n[artifact]\ndebs = [{:?}]\n[[steps]]\nname = \"install\"\n\
             run = [\"sh\", \"-c\", {step:?}, \"{{artifact}}\"]\ntimeout = \"2m\"\n\
             env = {{ DEBIAN_FRONTEND = \"noninteractive\" }}\n[scope]\npaths = {:?}\n\
             [shadow]\nenabled = false\n[monitor]\nperiod = \"0s\"\n{}",
            self.root.display().to_string(),
            self.deb.display().to_string(),
            s.paths,
            if exit_only {
                "[policy.guards]\nmin_windows = 1000\nexhaustion = false\n"
            } else {
                ""
            }
        );
        let path = self.base.join("fault.toml");
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// One deployment of the fault; `early`: backstop decides as it does,
    /// else on the exit code only.
    fn once(&self, s: &Scope, early: bool) -> Result<Run> {
        let (onset_f, exit_f) = (
            self.root.join("root/backstop-onset"),
            self.root.join("root/backstop-exit"),
        );
        let _ = std::fs::remove_file(&onset_f);
        let _ = std::fs::remove_file(&exit_f);
        let manifest = self.manifest(s, !early)?;
        // No --window-ms: the model's length, as a deployment gets by
        // default (250 ms for the built-in model; the trend rule reads
        // one window a second of them, so this writer's half-second
        // pauses are not mistaken for a wobble).
        let out =
            util::output((self.cli().arg("deploy").arg(&manifest)).args(["--host", "bench"]))?;
        let id = out.trim().to_string();
        wait(Duration::from_mins(2), "the fault's onset", || {
            stamp(&onset_f).is_some()
        })?;
        let onset = stamp(&onset_f).context("onset stamp")?;
        let journal = self
            .base
            .join(format!("agent/agent/deployments/{id}/journal.json"));
        wait(Duration::from_mins(2), "the agent's rollback", || {
            std::fs::read_to_string(&journal).is_ok_and(|j| j.contains("\"rolled-back\""))
        })?;
        let restored = now() - onset;
        let mut restore_ms = f64::NAN;
        wait(Duration::from_secs(30), "the stored rollback", || {
            let shown = self.cli().args(["show", &id, "--json"]).output().ok();
            let v = shown.and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok());
            let found = v.as_ref().and_then(|v| {
                v["events"].as_array()?.iter().find_map(|e| {
                    e["event"]["rolled_back"]["report"]["restore"]["duration_ms"].as_f64()
                })
            });
            found.inspect(|ms| restore_ms = *ms).is_some()
        })?;
        Ok(Run {
            restored,
            exited: stamp(&exit_f).map(|e| e - onset),
            restore_ms,
        })
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn stamp(p: &Path) -> Option<f64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn wait(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > limit {
            bail!("bench decide: gave up waiting for {what} after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn report(root: &Path, reps: usize, rows: &[(Scope, Vec<Run>, Vec<Run>)]) {
    let med = |v: &[Run], f: fn(&Run) -> f64| super::median(v.iter().map(f).collect());
    println!(
        "\nbackstop decide (b, c): a fault filling a {FILL_MB} MiB tmpfs in the scope at 2 MiB/s from a known onset until ENOSPC, then exit 1; \
         windows of the built-in model's length; median of {reps}\n"
    );
    println!(
        "  (b) backstop as it runs: the built-in model (if one votes), the free-space trend, and the exit code\n  \
         (c) exit code only (policy.guards exhaustion = false, min_windows = 1000): the step exits 1, then the rollback\n"
    );
    println!(
        "  scope   entries  (b) onset->restored  restore  before exit   (c) onset->exit  (c) onset->restored  restore   (b)/(c) begins"
    );
    for (s, early, late) in rows {
        let entries: usize = s
            .paths
            .iter()
            .map(|p| super::rollback::walk_count(&root.join(p.trim_start_matches('/'))))
            .sum();
        let (b, b_ms) = (med(early, |r| r.restored), med(early, |r| r.restore_ms));
        let first = early.iter().filter(|r| r.exited.is_none()).count();
        let c_exit = med(late, |r| r.exited.unwrap_or(f64::NAN));
        let (c, c_ms) = (med(late, |r| r.restored), med(late, |r| r.restore_ms));
        println!(
            "  {:<6} {entries:>8}  {b:>17.3} s  {b_ms:>6.0} ms  {first:>5}/{:<5}  {c_exit:>13.3} s  {c:>17.3} s  {c_ms:>6.0} ms  {:>10.3}",
            s.name,
            early.len(),
            b / c_exit
        );
    }
    println!(
        "\n  targets: a typical package restored in under 1 s (restore columns, < 1000 ms); \
         rollback finished before the exit-code-only baseline begins ((b)/(c) begins < 1)"
    );
}
