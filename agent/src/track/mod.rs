//! Running one command as a tracked tree and folding its windows: the
//! building block of `watch` (windows to stdout), `run` (windows to the
//! controller) and shadows. Where windows go is a [`WindowSink`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use backstop_common::ProcRecord;
use backstop_common::window::{Stream, Window};
use tokio::signal::unix::{SignalKind, signal};

use crate::changes::ChangeLog;
use crate::error::{AgentError, Result};
use crate::probes::Probes;
use crate::tree::{self, Stdout, Tracked};

mod session;

use session::{Rings, Session};

/// The loaded probes, shared by every tracked tree of this agent; each
/// tree has its own slot. Held only for map reads, never across an await.
pub type SharedProbes = Arc<Mutex<Probes>>;

pub fn lock(p: &SharedProbes) -> MutexGuard<'_, Probes> {
    p.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where a tracked tree's windows and lifecycle records go.
pub trait WindowSink: Send {
    fn window(&mut self, w: &Window) -> Result<()>;
    fn event(&mut self, _ev: &ProcRecord) -> Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct TrackOptions {
    pub stream: Stream,
    pub window: Duration,
    /// Whose filesystem `host_disk_free_bytes` reports.
    pub scope: PathBuf,
    pub stdout: Stdout,
    /// After a forwarded signal, how long the command gets before SIGKILL.
    pub kill_grace: Duration,
    /// Where to write the tree's change log (see [`crate::changes`]).
    pub changes: Option<PathBuf>,
    /// Kill the root with SIGKILL when it runs longer than this.
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub exit_code: i32,
    pub windows: u64,
    pub lost_events: u64,
    /// With a change log: what it recorded.
    pub changes: Option<crate::changes::Trailer>,
    /// The timeout ran out and the root was killed.
    pub timed_out: bool,
}

/// Nanoseconds on CLOCK_MONOTONIC, the clock bpf_ktime_get_ns uses.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// SIGINT and SIGTERM, listened for from the moment this is made: a signal
/// that arrives while the probes load is kept and passed on to the command
/// as soon as it runs.
pub struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub fn listen() -> Result<Self> {
        let sig_err = |source| AgentError::Io {
            context: "installing signal handlers".into(),
            source,
        };
        Ok(StopSignals {
            int: signal(SignalKind::interrupt()).map_err(sig_err)?,
            term: signal(SignalKind::terminate()).map_err(sig_err)?,
        })
    }
}

/// Run `argv` as a tracked tree until it exits, handing each window (the
/// last one partial) to `sink`. With `signals`, our SIGINT/SIGTERM are
/// passed on to the command (interactive `watch`).
pub async fn track(
    probes: &SharedProbes,
    argv: &[OsString],
    opts: &TrackOptions,
    signals: Option<&mut StopSignals>,
    sink: &mut dyn WindowSink,
) -> Result<Summary> {
    let stdout = opts.stdout;
    let launch =
        |register: &mut dyn FnMut(u32) -> Result<()>| tree::spawn_tracked(argv, stdout, register);
    track_with(probes, launch, opts, signals, sink).await
}

/// [`track`] for a tree started by `launch`, which must call the register
/// function with the root's pid before that process runs anything of its
/// own (a container's init, still blocked before its exec, qualifies).
pub async fn track_with(
    probes: &SharedProbes,
    launch: impl FnOnce(&mut dyn FnMut(u32) -> Result<()>) -> Result<Tracked>,
    opts: &TrackOptions,
    signals: Option<&mut StopSignals>,
    sink: &mut dyn WindowSink,
) -> Result<Summary> {
    if opts.window < Duration::from_millis(10) {
        return Err(AgentError::WindowTooShort {
            ms: opts.window.as_millis(),
        });
    }
    let slot = lock(probes).claim_slot()?;
    let result = track_in_slot(probes, slot, launch, opts, signals, sink).await;
    lock(probes).release_slot(slot);
    result
}

async fn track_in_slot(
    probes: &SharedProbes,
    slot: u32,
    launch: impl FnOnce(&mut dyn FnMut(u32) -> Result<()>) -> Result<Tracked>,
    opts: &TrackOptions,
    signals: Option<&mut StopSignals>,
    sink: &mut dyn WindowSink,
) -> Result<Summary> {
    let mut session = Session::start(probes, slot, opts)?;
    let mut tracked = launch(&mut |pid| lock(probes).track(pid, slot))?;
    tracing::debug!(pid = tracked.pid, slot, "tracking");
    let rings = Rings::watch(probes)?;
    let (status, timed_out) =
        run_until_exit(&mut session, &mut tracked, &rings, opts, signals, sink).await?;
    session.finish(status, timed_out, sink)
}

/// Until the root exits: fold a window per tick, drain records as they
/// arrive, pass stop signals on, and enforce the grace period and the
/// timeout. Returns the root's status and whether the timeout killed it.
async fn run_until_exit(
    session: &mut Session<'_>,
    tracked: &mut Tracked,
    rings: &Rings,
    opts: &TrackOptions,
    mut signals: Option<&mut StopSignals>,
    sink: &mut dyn WindowSink,
) -> Result<(std::process::ExitStatus, bool)> {
    let pid = tracked.pid;
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + opts.window, opts.window);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut deadline: Option<tokio::time::Instant> = None;
    let timeout_at = opts.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut timed_out = false;
    let status = loop {
        let time_up = async {
            match timeout_at {
                Some(d) if !timed_out => tokio::time::sleep_until(d).await,
                _ => std::future::pending().await,
            }
        };
        let kill_at = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            st = tracked.wait() => break st.map_err(|source| AgentError::Io { context: "waiting for the command".into(), source })?,
            _ = ticker.tick() => session.tick(sink)?,
            guard = rings.events.readable() => {
                if let Ok(mut g) = guard {
                    g.clear_ready();
                }
                session.drain_events(sink);
            }
            guard = rings.changes.readable() => {
                if let Ok(mut g) = guard {
                    g.clear_ready();
                }
                session.drain_changes();
            }
            Some(sig) = recv(&mut signals) => forward(pid, sig, &mut deadline, opts.kill_grace),
            () = kill_at => {
                tracing::warn!(pid, "command still running after the grace period; sending SIGKILL");
                signal_child(pid, libc::SIGKILL);
                deadline = None;
            }
            () = time_up => {
                tracing::warn!(pid, timeout = ?opts.timeout, "timeout: sending SIGKILL");
                signal_child(pid, libc::SIGKILL);
                timed_out = true;
            }
        }
    };
    Ok((status, timed_out))
}

/// A sink that fails loses what it was given, never the tree: returning
/// here would drop the child (kill_on_drop) and SIGKILL an install midway
/// because, say, the disk under the outbox is full. Only a stop signal, the
/// timeout or the command's own end stops the tree.
fn survive(r: Result<()>, failures: &mut u64) {
    if let Err(e) = r {
        if *failures == 0 {
            tracing::warn!("the window sink failed; the command keeps running: {e}");
        }
        *failures += 1;
    }
}

/// A change log that cannot be written is abandoned, not fatal: without
/// its trailer it reads as incomplete, so a restore walks the whole scope.
fn survive_log(r: Result<()>, log: &mut Option<ChangeLog>) {
    if let Err(e) = r {
        tracing::warn!(
            "the change log failed and is abandoned (a restore will walk the whole scope): {e}"
        );
        *log = None;
    }
}

/// The next stop signal, or never when not listening.
async fn recv(s: &mut Option<&mut StopSignals>) -> Option<i32> {
    match s {
        Some(s) => tokio::select! {
            Some(()) = s.int.recv() => Some(libc::SIGINT),
            Some(()) = s.term.recv() => Some(libc::SIGTERM),
        },
        None => std::future::pending().await,
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
