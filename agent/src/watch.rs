//! `backstop-agent watch`: run one command as a tracked tree and print its
//! windows. The building block every other flow (exec, deploy, shadow)
//! reuses: probes loaded, one slot claimed, windows folded on a timer.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Duration;

use backstop_common::features::{FEATURES, SCHEMA_VERSION};
use backstop_common::window::{Stream, Window};
use backstop_common::{EVENT_EXEC, EVENT_EXIT, EVENT_OOM_KILL, ProcEvent};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{SignalKind, signal};

use crate::error::{AgentError, Result};
use crate::fold::{Folder, Reading};
use crate::host::HostSampler;
use crate::probes::{ProbeOptions, Probes};
use crate::tree::{self, Stdout};

#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub window: Duration,
    pub json: bool,
    /// Also print exec/exit/OOM records.
    pub events: bool,
    /// Whose filesystem `host_disk_free_bytes` reports.
    pub scope: PathBuf,
    pub probes: ProbeOptions,
    /// After SIGINT/SIGTERM is forwarded, how long the command gets before SIGKILL.
    pub kill_grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub exit_code: i32,
    pub windows: u64,
    pub lost_events: u64,
}

/// Nanoseconds on CLOCK_MONOTONIC, the clock bpf_ktime_get_ns uses.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Run `argv` tracked, writing windows to `out`. Returns when the command
/// has exited (and the last, partial window is written).
pub async fn watch(argv: &[OsString], opts: &WatchOptions, out: &mut dyn Write) -> Result<Summary> {
    if opts.window < Duration::from_millis(10) {
        return Err(AgentError::Io {
            context: "--window-ms must be at least 10".into(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        });
    }
    let mut probes = Probes::load(&opts.probes)?;
    for w in &probes.warnings {
        tracing::warn!("{w}");
    }
    let slot = probes.claim_slot()?;
    let sampler = HostSampler::new(&opts.scope);
    let read = |probes: &Probes| -> Result<Reading> {
        let at_ns = monotonic_ns();
        Ok(Reading {
            totals: probes.totals(slot)?,
            running_on_cpu_ns: probes.running_on_cpu_ns(slot, at_ns),
            host: sampler.sample()?,
            at_ns,
            recursion_misses: probes.recursion_misses(),
        })
    };
    let mut folder = Folder::new(Stream::Live, read(&probes)?);
    let mut printer = Printer {
        json: opts.json,
        header_done: false,
    };

    let stdout = if opts.json {
        Stdout::Stderr
    } else {
        Stdout::Inherit
    };
    let mut tracked = tree::spawn_tracked(argv, stdout, |pid| probes.track(pid, slot))?;
    let pid = tracked.pid;
    tracing::debug!(pid, slot, "tracking");

    let ring_err = |source| AgentError::Io {
        context: "watching the probes' ring buffer".into(),
        source,
    };
    let ring_fd = probes.events_fd().try_clone_to_owned().map_err(ring_err)?;
    // SAFETY: we own this duplicate; it stays open for the AsyncFd's life.
    let events_fd =
        unsafe { AsyncFd::register_with_interest(ring_fd, tokio::io::Interest::READABLE) }
            .map_err(|e| ring_err(e.into()))?;
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + opts.window, opts.window);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sigint = signal(SignalKind::interrupt()).map_err(sig_err)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(sig_err)?;
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut lost = 0u64;

    let status = loop {
        let kill_at = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            st = tracked.child.wait() => break st.map_err(|source| AgentError::Io { context: "waiting for the command".into(), source })?,
            _ = ticker.tick() => {
                let w = folder.fold(read(&probes)?);
                lost += w.lost_events;
                printer.window(out, &w)?;
            }
            guard = events_fd.readable() => {
                if let Ok(mut g) = guard {
                    g.clear_ready();
                }
                let events = opts.events;
                let mut err = Ok(());
                probes.drain_events(|ev| if events && err.is_ok() { err = printer.event(out, &ev) });
                err?;
            }
            _ = sigint.recv() => forward(pid, libc::SIGINT, &mut deadline, opts.kill_grace),
            _ = sigterm.recv() => forward(pid, libc::SIGTERM, &mut deadline, opts.kill_grace),
            _ = kill_at => {
                tracing::warn!(pid, "command still running after the grace period; sending SIGKILL");
                signal_child(pid, libc::SIGKILL);
                deadline = None;
            }
        }
    };
    let events = opts.events;
    let mut err = Ok(());
    probes.drain_events(|ev| {
        if events && err.is_ok() {
            err = printer.event(out, &ev)
        }
    });
    err?;
    let w = folder.fold(read(&probes)?);
    lost += w.lost_events;
    printer.window(out, &w)?;
    let exit_code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    let summary = Summary {
        exit_code,
        windows: folder.windows(),
        lost_events: lost,
    };
    printer.summary(out, &summary)?;
    Ok(summary)
}

fn sig_err(source: std::io::Error) -> AgentError {
    AgentError::Io {
        context: "installing signal handlers".into(),
        source,
    }
}

/// Pass a signal on to the command and start its grace period; a second
/// signal while one is pending kills it at once.
fn forward(pid: u32, sig: i32, deadline: &mut Option<tokio::time::Instant>, grace: Duration) {
    let sig = if deadline.is_some() {
        libc::SIGKILL
    } else {
        sig
    };
    tracing::info!(pid, sig, "forwarding signal to the command");
    signal_child(pid, sig);
    deadline.get_or_insert_with(|| tokio::time::Instant::now() + grace);
}

fn signal_child(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) to our own child; it is not reaped until the
    // wait branch completes, so the pid cannot have been reused.
    unsafe { libc::kill(pid as i32, sig) };
}

struct Printer {
    json: bool,
    header_done: bool,
}

impl Printer {
    fn window(&mut self, out: &mut dyn Write, w: &Window) -> Result<()> {
        let res = if self.json {
            writeln!(out, "{}", w.to_json())
        } else {
            if !self.header_done {
                self.header_done = true;
                writeln!(
                    out,
                    "{:>4} {:>7} {:>9} {:>7} {:>7} {:>10} {:>10} {:>10} {:>8} {:>6} {:>5} {:>5} {:>5} {:>5}",
                    "seq", "secs", "syscalls", "errors", "enoent", "blk_read", "blk_write", "dirtied", "cpu_ms", "ctxsw", "forks", "execs", "exits", "lost"
                )
            } else {
                Ok(())
            }
            .and_then(|()| {
                let g = |n: &str| w.get(n).unwrap_or(0.0);
                writeln!(
                    out,
                    "{:>4} {:>7.3} {:>9} {:>7} {:>7} {:>10} {:>10} {:>10} {:>8.1} {:>6} {:>5} {:>5} {:>5} {:>5}",
                    w.seq,
                    (w.end_ns - w.start_ns) as f64 / 1e9,
                    g("syscalls_total"),
                    g("syscall_errors_total"),
                    g("syscall_errors_enoent"),
                    human_bytes(g("block_read_bytes")),
                    human_bytes(g("block_write_bytes")),
                    human_bytes(g("page_dirtied_bytes")),
                    g("sched_on_cpu_ns") / 1e6,
                    g("sched_ctx_switches"),
                    g("proc_forks"),
                    g("proc_execs"),
                    format!("{}{}", g("proc_exits"), if g("proc_exits_nonzero") + g("proc_signal_deaths") > 0.0 { "!" } else { "" }),
                    w.lost_events,
                )
            })
        };
        res.and_then(|()| out.flush()).map_err(write_err)
    }

    fn event(&mut self, out: &mut dyn Write, ev: &ProcEvent) -> Result<()> {
        let kind = match ev.kind {
            EVENT_EXEC => "exec",
            EVENT_EXIT => "exit",
            EVENT_OOM_KILL => "oom_kill",
            _ => "unknown",
        };
        let comm = cstr(&ev.comm);
        let filename = cstr(&ev.filename);
        let res = if self.json {
            let mut j = serde_json::json!({"kind": kind, "pid": ev.pid, "tgid": ev.tgid, "ts_ns": ev.ts_ns, "comm": comm});
            if ev.kind == EVENT_EXEC {
                j["filename"] = filename.into();
            }
            if ev.kind == EVENT_EXIT {
                j["exit_code"] = ((ev.exit_code >> 8) & 0xff).into();
                j["signal"] = (ev.exit_code & 0x7f).into();
            }
            writeln!(out, "{}", serde_json::json!({ "event": j }))
        } else {
            match ev.kind {
                EVENT_EXEC => writeln!(out, "  exec  pid {} {}", ev.pid, filename),
                EVENT_EXIT => writeln!(
                    out,
                    "  exit  pid {} {} code {} signal {}",
                    ev.pid,
                    comm,
                    (ev.exit_code >> 8) & 0xff,
                    ev.exit_code & 0x7f
                ),
                _ => writeln!(out, "  {kind} pid {} {}", ev.pid, comm),
            }
        };
        res.map_err(write_err)
    }

    fn summary(&mut self, out: &mut dyn Write, s: &Summary) -> Result<()> {
        let res = if self.json {
            writeln!(
                out,
                "{}",
                serde_json::json!({"summary": {"exit_code": s.exit_code, "windows": s.windows, "lost_events": s.lost_events, "schema": SCHEMA_VERSION, "features": FEATURES.len()}})
            )
        } else {
            writeln!(
                out,
                "exit code {} after {} windows; lost events: {} (schema {})",
                s.exit_code, s.windows, s.lost_events, SCHEMA_VERSION
            )
        };
        res.and_then(|()| out.flush()).map_err(write_err)
    }
}

fn write_err(source: std::io::Error) -> AgentError {
    AgentError::Io {
        context: "writing windows to stdout".into(),
        source,
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn human_bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = v;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v}B")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}
