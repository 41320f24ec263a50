//! A bound on creating a shadow's container.
//!
//! Why: libcontainer starts its intermediate and init processes with a
//! raw `clone3` syscall, so glibc's fork handlers never run in them. The
//! agent has many threads; when another one holds a malloc arena lock (or
//! any lock) at that instant, the child inherits it held and waits on it
//! forever, and `ContainerBuilder::build` waits forever for the child.
//! Seen here as `youki:[1:INTER]` and `[2:INIT]` asleep in futex_wait for
//! over 15 minutes, with the deployment never ending. Until the container
//! is created in a process of its own (single-threaded), this watchdog
//! turns that hang into an error: after [`CREATE_LIMIT`] it kills the
//! processes the creating thread cloned that are still the agent's own
//! image (not yet exec'd), which ends `build` with an error and the shadow
//! with a clear failure.

use std::sync::mpsc;
use std::time::Duration;

/// How long creating a container may take before it is called hung.
/// Creation takes well under a second; the margin is for a loaded host.
pub const CREATE_LIMIT: Duration = Duration::from_mins(1);

/// Armed while a container is created; disarmed when dropped.
pub struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    fired: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Watchdog {
    /// Watch the calling thread's clones for `limit`.
    pub fn arm(id: &str, limit: Duration) -> Watchdog {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let (tx, rx) = mpsc::channel::<()>();
        let fired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = fired.clone();
        let id = id.to_string();
        let spawned = std::thread::Builder::new()
            .name("shadow-watchdog".into())
            .spawn(move || {
                if rx.recv_timeout(limit) != Err(mpsc::RecvTimeoutError::Timeout) {
                    return;
                }
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                let killed = kill_unexeced_clones(tid);
                tracing::error!(
                    shadow = id,
                    ?killed,
                    "creating the shadow's container hung for {limit:?} (libcontainer's clone3 in a \
                     multi-threaded agent); killed its un-exec'd processes"
                );
            });
        if let Err(e) = spawned {
            tracing::warn!("no watchdog for the shadow's creation: {e}");
        }
        Watchdog {
            done: Some(tx),
            fired,
        }
    }

    /// Whether the limit passed and the watchdog killed.
    pub fn fired(&self) -> bool {
        self.fired.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}

/// SIGKILL every child of thread `tid` that still runs the agent's own
/// executable image (a clone not yet exec'd: libcontainer's intermediate
/// and init before `start`); returns their pids.
fn kill_unexeced_clones(tid: libc::pid_t) -> Vec<i32> {
    let me = std::fs::read_link("/proc/self/exe").ok();
    let children =
        std::fs::read_to_string(format!("/proc/self/task/{tid}/children")).unwrap_or_default();
    let mut killed = Vec::new();
    for pid in children
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if exe.is_none() || exe != me {
            continue;
        }
        // SAFETY: kill on a pid that is our own child (not yet reaped, so
        // it cannot have been reused).
        if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
            killed.push(pid);
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_that_never_execs_is_killed_and_an_execed_child_is_not() {
        // Our own un-exec'd fork (sleeping, as a deadlocked clone would)
        // and an exec'd child, both from this thread.
        // SAFETY: the child only calls async-signal-safe pause() and _exit.
        let forked = unsafe { libc::fork() };
        assert!(forked >= 0, "fork");
        if forked == 0 {
            loop {
                // SAFETY: pause is async-signal-safe.
                unsafe { libc::pause() };
            }
        }
        let mut execd = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        // Let `sleep` finish its exec, so its image is no longer ours.
        std::thread::sleep(Duration::from_millis(300));
        let dog = Watchdog::arm("sh-test", Duration::from_millis(100));
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid out-pointer.
        let r = unsafe { libc::waitpid(forked, &raw mut status, 0) };
        assert_eq!(r, forked);
        assert!(libc::WIFSIGNALED(status), "the un-exec'd clone was killed");
        assert_eq!(libc::WTERMSIG(status), libc::SIGKILL);
        assert!(dog.fired());
        assert!(
            execd.try_wait().expect("try_wait").is_none(),
            "the exec'd child lives"
        );
        execd.kill().expect("kill sleep");
        let _ = execd.wait();
    }

    #[test]
    fn a_creation_within_the_limit_kills_nothing() {
        let dog = Watchdog::arm("sh-test", Duration::from_secs(30));
        assert!(!dog.fired());
        drop(dog);
    }
}
