//! The demo's moving parts and their clean-up: a scratch directory under
//! target/xtask/ holding the controller's data, the agent's data and a
//! scratch copy of the Debian rootfs, the two daemons, and whatever mounts
//! and cgroups they leave. Everything is undone in `Drop`, so an error, a
//! panic or Ctrl-C (see [`interrupted`]) leaves nothing behind.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::util;

/// The enrolled host's name.
pub const HOST: &str = "demo-host";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From now on SIGINT and SIGTERM only set a flag the demo polls, so it
/// stops its own way (daemons first, then mounts and files) instead of
/// dying with them running. The daemons run in their own process groups,
/// so a terminal's Ctrl-C reaches xtask alone.
pub fn catch_interrupts() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fail with a clear line once Ctrl-C came.
pub fn check_interrupt() -> Result<()> {
    if interrupted() {
        bail!("demo: interrupted; stopping everything it started");
    }
    Ok(())
}

/// Sleep in small steps, returning early on Ctrl-C.
pub fn nap(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !interrupted() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Poll `ok` until it holds, `limit` passes (error naming `what`) or Ctrl-C.
pub fn wait_for(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !ok() {
        check_interrupt()?;
        if start.elapsed() > limit {
            bail!(
                "demo: gave up waiting for {what} after {} s",
                limit.as_secs()
            );
        }
        nap(Duration::from_millis(200));
    }
    Ok(())
}

/// A daemon: its own process group, SIGTERM'd on the demo's death too
/// (PR_SET_PDEATHSIG), and stopped (SIGTERM, then SIGKILL after 10 s) on
/// drop.
struct Daemon {
    name: &'static str,
    child: Child,
}

impl Daemon {
    fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Result<Daemon> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between
        // fork and exec here.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({})", cmd.get_program().display()))?;
        Ok(Daemon { name, child })
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: signalling our own child, which has not been reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("demo: {} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Rig {
    pub bin: PathBuf,
    /// target/xtask/demo-PID: everything the demo makes lives here.
    pub base: PathBuf,
    /// The scratch copy of the Debian rootfs: the agent's target root.
    pub root: PathBuf,
    pub ctl: PathBuf,
    pub agent_data: PathBuf,
    pub quic: String,
    pub http: String,
    /// Deployments started, whose cgroups clean-up checks.
    pub ids: Vec<String>,
    daemons: Vec<Daemon>,
}

fn free_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Rig {
    pub fn new(bin: &Path) -> Result<Rig> {
        let base = util::cache_dir().join(format!("demo-{}", std::process::id()));
        if base.exists() {
            bail!(
                "demo: {} exists already (another demo with this pid?)",
                base.display()
            );
        }
        std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        let http = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.to_string()
        };
        Ok(Rig {
            bin: bin.to_path_buf(),
            root: base.join("root"),
            ctl: base.join("controller"),
            agent_data: base.join("agent"),
            quic: format!("127.0.0.1:{}", free_port()?),
            http,
            ids: Vec::new(),
            daemons: Vec::new(),
            base,
        })
    }

    /// `backstop --data CTL ARGS`.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.bin.join("backstop"));
        c.arg("--data").arg(&self.ctl).args(args);
        c
    }

    /// `backstop ... --json`, parsed.
    pub fn json(&self, args: &[&str]) -> Result<Value> {
        let out = util::output(&mut self.cli(args))?;
        serde_json::from_str(out.trim())
            .with_context(|| format!("backstop {args:?} printed {out:?}"))
    }

    pub fn copy_root(&self, cached: &Path) -> Result<()> {
        util::output(
            Command::new("cp")
                .args(["-a", "--reflink=auto"])
                .arg(cached)
                .arg(&self.root),
        )
        .with_context(|| format!("copying {} to {}", cached.display(), self.root.display()))?;
        Ok(())
    }

    /// `backstop init`, then `backstop serve` with the embedded SQLite
    /// store and the dashboard on loopback; waits until it listens.
    pub fn start_controller(&mut self) -> Result<()> {
        util::output(&mut self.cli(&["--log", "warn", "init", "--host", HOST]))
            .context("backstop init")?;
        let log = self.base.join("controller.log");
        let mut cmd = self.cli(&[
            "--log", "info", "serve", "--listen", &self.quic, "--http", &self.http,
        ]);
        self.daemons
            .push(Daemon::spawn("backstop serve", &mut cmd, &log)?);
        wait_for(Duration::from_mins(1), "the controller to listen", || {
            self.daemon_alive(0)
                && std::fs::read_to_string(&log).is_ok_and(|l| l.contains("listening on"))
        })
        .with_context(|| format!("see {}", log.display()))
    }

    /// `backstop-agent run` with the bundle `init` enrolled; waits until
    /// the controller lists the host as connected.
    pub fn start_agent(&mut self) -> Result<()> {
        let log = self.base.join("agent.log");
        let mut cmd = Command::new(self.bin.join("backstop-agent"));
        cmd.args([
            "--log",
            "info",
            "run",
            "--controller",
            &self.quic,
            "--bundle",
        ])
        .arg(self.ctl.join(format!("pki/agents/{HOST}.bundle")))
        .arg("--data")
        .arg(&self.agent_data);
        self.daemons
            .push(Daemon::spawn("backstop-agent run", &mut cmd, &log)?);
        wait_for(Duration::from_mins(1), "the agent to connect", || {
            self.daemon_alive(1)
                && self.json(&["hosts", "--json"]).is_ok_and(|v| {
                    v.as_array().is_some_and(|hs| {
                        hs.iter()
                            .any(|h| h["name"] == HOST && h["connected"] == true)
                    })
                })
        })
        .with_context(|| format!("see {}", log.display()))
    }

    fn daemon_alive(&self, i: usize) -> bool {
        self.daemons.get(i).is_some_and(|d| {
            // try_wait needs &mut; /proc tells without reaping.
            Path::new(&format!("/proc/{}/stat", d.child.id())).exists()
                && !std::fs::read_to_string(format!("/proc/{}/stat", d.child.id()))
                    .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
        })
    }

    /// Runs `backstop deploy FILE --host HOST --wait`, its progress lines
    /// shown as they come; returns the deployment id and whether the
    /// command said committed (exit 0).
    pub fn deploy(&mut self, manifest: &Path) -> Result<(String, bool)> {
        let file = manifest.display().to_string();
        let mut cmd = self.cli(&["deploy", &file, "--host", HOST, "--wait"]);
        cmd.stdout(Stdio::piped()).process_group(0);
        eprintln!("    $ backstop deploy {file} --host {HOST} --wait");
        let mut child = cmd.spawn().context("starting backstop deploy")?;
        let stdout = child.stdout.take().context("deploy's stdout")?;
        // The id (deploy's first line) is kept as soon as it is printed, so
        // a Ctrl-C mid-deployment still finds its cgroup to clean up.
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("    | {line}");
                let _ = tx.send(line);
            }
        });
        let mut first: Option<String> = None;
        let status = loop {
            if first.is_none()
                && let Ok(line) = rx.try_recv()
            {
                let id = line.trim().to_string();
                self.ids.push(id.clone());
                first = Some(id);
            }
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if interrupted() {
                let _ = child.kill();
                let _ = child.wait();
                bail!("demo: interrupted during a deployment; stopping everything it started");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        reader
            .join()
            .map_err(|_| anyhow::anyhow!("the deploy output reader panicked"))?;
        let id = if let Some(id) = first {
            id
        } else {
            let line = rx
                .try_recv()
                .context("backstop deploy printed no deployment id")?;
            let id = line.trim().to_string();
            self.ids.push(id.clone());
            id
        };
        Ok((id, status.success()))
    }

    /// Waits for the deployment to end and returns `show ID --json`.
    pub fn ended(&self, id: &str) -> Result<Value> {
        let mut shown = Value::Null;
        wait_for(
            Duration::from_mins(2),
            &format!("{id} to end"),
            || match self.json(&["show", id, "--json"]) {
                Ok(v) => {
                    let st = v["deployment"]["state"].clone();
                    shown = v;
                    st == "committed" || st == "rolled_back"
                }
                Err(_) => false,
            },
        )?;
        Ok(shown)
    }

    fn cleanup(&mut self) {
        // The agent first, so it is not mid-restore when its root goes.
        while let Some(mut d) = self.daemons.pop() {
            d.stop();
        }
        // A deployment interrupted mid-install leaves its live cgroup
        // populated for the agent's recovery at its next start; there will
        // be none, so kill and remove ours.
        for id in &self.ids {
            for v2 in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
                let cg = Path::new(v2).join("backstop.deploy").join(id);
                if cg.is_dir() {
                    let _ = std::fs::write(cg.join("cgroup.kill"), "1");
                    std::thread::sleep(Duration::from_millis(100));
                    if let Err(e) = std::fs::remove_dir(&cg) {
                        eprintln!("demo: could not remove the cgroup {}: {e}", cg.display());
                    }
                }
            }
        }
        // Every mount beneath the base (the fill tmpfs, a shadow's
        // overlay an interrupted agent left), deepest first, before any
        // file is removed: removing through a mount would reach into it.
        let mut mounts = mounts_under(&self.base);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        for m in mounts {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        let left = mounts_under(&self.base);
        if left.is_empty() {
            if let Err(e) = std::fs::remove_dir_all(&self.base) {
                eprintln!("demo: removing {}: {e}", self.base.display());
            }
        } else {
            eprintln!(
                "demo: still mounted, so {} is kept: {left:?}",
                self.base.display()
            );
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        eprintln!(
            "demo: stopping the agent and the controller, removing {}",
            self.base.display()
        );
        self.cleanup();
    }
}

/// Mount points at or beneath `base`, from /proc/self/mountinfo (field 5;
/// spaces are escaped there as \040, which our paths never contain).
fn mounts_under(base: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(base))
        .collect()
}
