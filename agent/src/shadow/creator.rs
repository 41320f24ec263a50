//! The agent's side of creating a shadow's container in a process of its
//! own (the helper's side is `helper.rs`).
//!
//! Why: libcontainer starts its intermediate and init processes with a
//! raw `clone3`, so glibc's fork handlers never run in them. In the
//! multi-threaded agent (tokio, the probes' readers), when another thread
//! held a malloc arena lock (or any lock) at that instant, the clone
//! inherited it held and waited on it forever: seen as `youki:[1:INTER]`
//! and `[2:INIT]` asleep in futex_wait for over 15 minutes, the deployment
//! never ending. So the agent never calls `ContainerBuilder` itself: it
//! starts its own binary (`/proc/self/exe shadow-exec`, fork+exec through
//! `std::process::Command`, which is safe in a threaded process), and that
//! child, single-threaded, creates the container, starts it when told and
//! waits for its init (the init is the child's child: libcontainer clones
//! it with `CLONE_PARENT`). The two talk in JSON lines on the child's
//! stdin (agent to child: `start`, or end of file: kill the init) and
//! stdout (child to agent: [`Report`]).
//!
//! Dying together: the child has `PR_SET_PDEATHSIG` (SIGKILL) while it
//! creates, and from then on kills the init and exits as soon as its stdin
//! ends, which is what happens when the agent dies; what it leaves (state,
//! cgroups, mounts, the shadow's directory) is the sweep's, as before.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, ExitStatus, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{AgentError, Result};

/// The hidden verb the child runs.
pub const VERB: &str = "shadow-exec";

/// How long creating a container may take before the child is called hung
/// and killed. Creation takes well under a second; the margin is for a
/// loaded host. A single-threaded creator cannot inherit a held lock, so
/// this is a bound for the unforeseen, not the known hang.
pub const CREATE_LIMIT: Duration = Duration::from_mins(1);

/// A creation slower than this is logged: the first sign of a host too
/// loaded for the shadow's deadlines, or of a hang short of CREATE_LIMIT.
const SLOW_CREATE: Duration = Duration::from_secs(5);

/// A step of the child's work, named in its failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Checking the child is single-threaded, before libcontainer runs.
    Check,
    /// Opening the init's stdio and `ContainerBuilder::build`.
    Create,
    /// `Container::start`.
    Start,
    /// Waiting for the init.
    Wait,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Check => "check",
            Step::Create => "create",
            Step::Start => "start",
            Step::Wait => "wait",
        })
    }
}

/// What the child tells the agent, one JSON line each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "report")]
pub enum Report {
    /// The container exists; its init is blocked before its exec.
    /// `threads` is the child's own thread count read from
    /// /proc/self/status just before it called libcontainer.
    Created {
        init_pid: i32,
        threads: u32,
    },
    Started,
    /// The init exited; its raw wait status.
    Exited {
        wait_status: i32,
    },
    /// A step failed; `error` is libcontainer's error with its sources.
    Failed {
        step: Step,
        error: String,
    },
}

/// Why the child did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CreatorError {
    #[error("{step} failed in the shadow's creator (pid {pid}): {error}")]
    Step { step: Step, pid: u32, error: String },
    #[error("the shadow's creator (pid {pid}) gave no answer in {limit:?} and was killed")]
    Hung { pid: u32, limit: Duration },
    #[error("the shadow's creator (pid {pid}) {what}")]
    Protocol { pid: u32, what: String },
}

/// The running child, holding one shadow's container.
pub struct Creator {
    child: Child,
    to: Option<ChildStdin>,
    from: BufReader<ChildStdout>,
    pub init_pid: i32,
    /// The child's thread count when it called libcontainer.
    pub threads: u32,
}

impl Creator {
    /// Start the child and let it create container `id` from the bundle
    /// already on disk under `shadows`; returns once the init exists.
    pub fn create(shadows: &Path, id: &str) -> Result<Creator> {
        let ctx = || format!("creating shadow container {id}");
        let parent = std::process::id();
        let mut cmd = std::process::Command::new("/proc/self/exe");
        cmd.arg(VERB)
            .arg("--shadows")
            .arg(shadows)
            .arg("--id")
            .arg(id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Out of the agent's process group: a Ctrl-C at the terminal
            // is the agent's to pass on to the init, and must not kill
            // the creator (which would orphan the shadow).
            .process_group(0);
        // SAFETY: prctl and getppid are async-signal-safe; nothing else
        // runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The agent died before the prctl took hold.
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::other("the agent is gone"));
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| AgentError::Io {
            context: format!("{}: starting {VERB}", ctx()),
            source,
        })?;
        let (Some(to), Some(from)) = (child.stdin.take(), child.stdout.take()) else {
            unreachable!("both were piped above")
        };
        let mut c = Creator {
            child,
            to: Some(to),
            from: BufReader::new(from),
            init_pid: 0,
            threads: 0,
        };
        let began = std::time::Instant::now();
        match c.next(Some(CREATE_LIMIT)).map_err(|e| fail(ctx(), e))? {
            Report::Created { init_pid, threads } => {
                let took = began.elapsed();
                if took > SLOW_CREATE {
                    tracing::warn!(
                        "creating shadow container {id} took {took:.1?} (it takes well under a second on an idle host)"
                    );
                }
                c.init_pid = init_pid;
                c.threads = threads;
                Ok(c)
            }
            other => Err(fail(ctx(), c.unexpected(&other))),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Tell the child to start the container (the init execs).
    pub fn start(&mut self, id: &str) -> Result<()> {
        let ctx = || format!("starting shadow {id}");
        let pid = self.pid();
        let sent = self
            .to
            .as_mut()
            .map_or(Err(std::io::ErrorKind::BrokenPipe.into()), |to| {
                to.write_all(b"start\n")
            });
        if let Err(e) = sent {
            let what = format!("could not be told to start: {e}");
            return Err(fail(ctx(), CreatorError::Protocol { pid, what }));
        }
        match self.next(None).map_err(|e| fail(ctx(), e))? {
            Report::Started => Ok(()),
            other => Err(fail(ctx(), self.unexpected(&other))),
        }
    }

    /// Wait for the init to exit (blocking); the child is reaped too.
    pub fn wait(mut self) -> std::io::Result<ExitStatus> {
        let r = self.next(None);
        match r {
            Ok(Report::Exited { wait_status }) => Ok(ExitStatus::from_raw(wait_status)),
            Ok(other) => Err(std::io::Error::other(self.unexpected(&other))),
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    /// The next report; end of file or a line that does not decode is a
    /// protocol error (with the child's exit status once it is known).
    fn next(&mut self, limit: Option<Duration>) -> Result<Report, CreatorError> {
        let pid = self.pid();
        if let Some(limit) = limit
            && !readable_within(&self.from, limit)
        {
            let _ = self.child.kill();
            return Err(CreatorError::Hung { pid, limit });
        }
        let mut line = String::new();
        match self.from.read_line(&mut line) {
            Ok(0) => {
                let status = self
                    .child
                    .wait()
                    .map_or_else(|e| e.to_string(), |s| s.to_string());
                let what = format!("ended without a report ({status})");
                return Err(CreatorError::Protocol { pid, what });
            }
            Ok(_) => {}
            Err(e) => {
                let what = format!("could not be read: {e}");
                return Err(CreatorError::Protocol { pid, what });
            }
        }
        match serde_json::from_str(line.trim_end()) {
            Ok(Report::Failed { step, error }) => Err(CreatorError::Step { step, pid, error }),
            Ok(r) => Ok(r),
            Err(e) => {
                let what = format!("sent {:?}, not a report: {e}", line.trim_end());
                Err(CreatorError::Protocol { pid, what })
            }
        }
    }

    fn unexpected(&self, r: &Report) -> CreatorError {
        CreatorError::Protocol {
            pid: self.pid(),
            what: format!("sent {r:?} out of turn"),
        }
    }
}

/// Closing the child's stdin tells it to kill the init (if it still runs)
/// and exit; it is then reaped, so no creator outlives its handle.
impl Drop for Creator {
    fn drop(&mut self) {
        drop(self.to.take());
        if let Err(e) = self.child.wait() {
            tracing::warn!(pid = self.child.id(), "reaping the shadow's creator: {e}");
        }
    }
}

fn fail(context: String, e: CreatorError) -> AgentError {
    AgentError::Failed {
        context,
        source: Box::new(e),
    }
}

/// Whether `r` has something to read (or its end) within `limit`.
fn readable_within(r: &BufReader<ChildStdout>, limit: Duration) -> bool {
    if !r.buffer().is_empty() {
        return true;
    }
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        let mut p = libc::pollfd {
            fd: r.get_ref().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&raw mut p, 1, ms) } {
            n if n > 0 => return true,
            0 => return false,
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_one_json_line_each_and_read_back() {
        let all = [
            Report::Created {
                init_pid: 42,
                threads: 1,
            },
            Report::Started,
            Report::Exited { wait_status: 256 },
            Report::Failed {
                step: Step::Create,
                error: "failed to create container: no such file".into(),
            },
        ];
        for r in all {
            let line = serde_json::to_string(&r).unwrap();
            assert!(!line.contains('\n'), "{line}");
            assert_eq!(serde_json::from_str::<Report>(&line).unwrap(), r);
        }
        assert_eq!(
            serde_json::to_string(&Report::Created {
                init_pid: 7,
                threads: 1
            })
            .unwrap(),
            r#"{"report":"created","init_pid":7,"threads":1}"#
        );
    }

    #[test]
    fn a_failed_step_keeps_the_step_and_the_error_text() {
        let e = CreatorError::Step {
            step: Step::Create,
            pid: 9,
            error: "failed to create container: mount error".into(),
        };
        assert_eq!(
            e.to_string(),
            "create failed in the shadow's creator (pid 9): failed to create container: mount error"
        );
    }
}
