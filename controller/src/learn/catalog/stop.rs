//! Stopping a recording part way: SIGINT, SIGTERM or SIGHUP ends the
//! scenario that is running and the run, keeping every record so far.
//!
//! Why: a runner killed outright leaves what its scenario made for the
//! next run to sweep: the busy neighbour's cgroup (its perl dies with the
//! runner, the cgroup does not) and the shadow's mounts and container
//! (the agent dies without its teardown). Stopped by a signal instead,
//! the runner kills the agent itself, has `backstop-agent shadow sweep`
//! remove what that left, and returns through the neighbour's `Drop`,
//! so nothing is left; the same command resumes where it stopped.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{CatalogError, Result, io};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// From now on SIGINT, SIGTERM and SIGHUP ask the run to stop instead of
/// ending the process. For the `corpus run` binary, before it runs.
pub fn on_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; the sigaction is zeroed, then filled.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&raw mut sa.sa_mask);
            libc::sigaction(sig, &raw const sa, std::ptr::null_mut());
        }
    }
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Run the agent's `cmd` to its end and collect its output, as
/// `Command::output` does; if a stop is asked for first, kill it, sweep
/// the shadows under `agent_data` and return [`CatalogError::Stopped`].
pub fn output(mut cmd: Command, agent: &Path, agent_data: &Path) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(io(format!("running {}", agent.display())))?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(io(format!("waiting for {}", agent.display())))?
        {
            break status;
        }
        if requested() {
            end(&mut child);
            sweep(agent, agent_data);
            return Err(CatalogError::Stopped);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Read a pipe to its end on a thread of its own, so neither pipe fills
/// while the other is waited on.
fn drain<R: std::io::Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut v);
        }
        v
    })
}

/// SIGTERM, then SIGKILL after 5 s; reaped either way.
fn end(child: &mut Child) {
    let pid = child.id().cast_signed();
    // SAFETY: kill(2) on our own child, not yet reaped (try_wait said it
    // runs), so the pid is not another process's.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    for _ in 0..100 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `backstop-agent shadow sweep` on the runner's agent data: what the
/// killed agent's shadow left.
fn sweep(agent: &Path, agent_data: &Path) {
    let swept = Command::new(agent)
        .args(["shadow", "--data"])
        .arg(agent_data)
        .arg("sweep")
        .stdin(Stdio::null())
        .status();
    if !swept.as_ref().is_ok_and(std::process::ExitStatus::success) {
        tracing::warn!(
            "backstop-agent shadow --data {} sweep failed ({swept:?}): the next `corpus run` sweeps again",
            agent_data.display()
        );
    }
}
