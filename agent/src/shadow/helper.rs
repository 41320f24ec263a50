//! The child's side of `shadow-exec` (the agent's side, and why it exists,
//! is `creator.rs`): create one shadow's container from its bundle, start
//! it when the agent says so, wait for its init and report each step as a
//! JSON line on stdout.
//!
//! This runs before any runtime or thread exists in the process (main
//! calls it before building tokio), and checks that it is so: a thread
//! count other than 1 at the moment libcontainer would clone is refused,
//! since that is the state the clone3 deadlock needs. It never returns
//! with its init alive: end of file on stdin (the agent closed it, or
//! died) kills the init, which takes its whole pid namespace with it.

use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;

use super::container::{Layout, youki_root};
use super::creator::{Report, Step};

/// Run the child's whole job; the exit code is 0 when the init was waited
/// for (whatever its status: that is the agent's to read), 1 otherwise.
pub fn shadow_exec(shadows: &Path, id: &str) -> i32 {
    let mut out = std::io::stdout().lock();
    let mut send = |r: &Report| -> bool {
        let Ok(line) = serde_json::to_string(r) else {
            return false;
        };
        writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
    };
    let (mut c, threads) = match create(shadows, id) {
        Ok(made) => made,
        Err((step, error)) => {
            send(&Report::Failed { step, error });
            return 1;
        }
    };
    let Some(pid) = c.pid() else {
        send(&Report::Failed {
            step: Step::Create,
            error: "libcontainer gave no init pid".into(),
        });
        return 1;
    };
    let init = pid.as_raw();
    // From here the agent's end of our stdin says whether it lives; the
    // thread that spawned us may end while the shadow runs.
    // SAFETY: plain prctl on ourselves.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
    if !send(&Report::Created {
        init_pid: init,
        threads,
    }) || !told_to_start()
    {
        return kill_and_reap(init);
    }
    if let Err(e) = c.start() {
        send(&Report::Failed {
            step: Step::Start,
            error: crate::error::chain(&e),
        });
        kill_and_reap(init);
        return 1;
    }
    if !send(&Report::Started) {
        return kill_and_reap(init);
    }
    match wait_or_abandoned(init) {
        Ok(Some(wait_status)) => i32::from(!send(&Report::Exited { wait_status })),
        Ok(None) => kill_and_reap(init),
        Err(e) => {
            send(&Report::Failed {
                step: Step::Wait,
                error: e.to_string(),
            });
            kill_and_reap(init);
            1
        }
    }
}

/// The number on the `Threads:` line of a /proc/PID/status.
pub fn threads_in(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

fn create(shadows: &Path, id: &str) -> Result<(Container, u32), (Step, String)> {
    let l = Layout::new(shadows, id);
    let log = l.io.join("init.log");
    let opened = (|| {
        let out = std::fs::File::create(&log)?;
        let out2 = out.try_clone()?;
        let null = std::fs::File::open("/dev/null")?;
        Ok::<_, std::io::Error>((out, out2, null))
    })();
    let (out, out2, null) =
        opened.map_err(|e| (Step::Create, format!("opening {}: {e}", log.display())))?;
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| (Step::Check, format!("reading /proc/self/status: {e}")))?;
    let threads = threads_in(&status).unwrap_or(0);
    if threads != 1 {
        return Err((
            Step::Check,
            format!(
                "{threads} threads in the creator; libcontainer's clone3 is only safe from a \
                 single-threaded process"
            ),
        ));
    }
    let built = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(youki_root(shadows))
        .map_err(|e| (Step::Create, crate::error::chain(&e)))?
        .with_stdin(null)
        .with_stdout(out)
        .with_stderr(out2)
        .as_init(&l.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| (Step::Create, crate::error::chain(&e)))?;
    Ok((built, threads))
}

/// Whether the agent asked to start (a `start` line); false on end of
/// file or anything else.
fn told_to_start() -> bool {
    let mut line = String::new();
    matches!(std::io::stdin().lock().read_line(&mut line), Ok(n) if n > 0) && line.trim() == "start"
}

/// SIGKILL the init (its pid namespace dies with it) and reap it.
fn kill_and_reap(init: i32) -> i32 {
    // SAFETY: kill on our own unreaped child: the pid cannot be reused.
    unsafe { libc::kill(init, libc::SIGKILL) };
    let _ = reap(init);
    1
}

fn reap(pid: i32) -> std::io::Result<i32> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &raw mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Wait for the init's exit (its raw status), or for our stdin to end
/// (`None`: the agent is gone or let go of us).
fn wait_or_abandoned(init: i32) -> std::io::Result<Option<i32>> {
    // SAFETY: pidfd_open of our own unreaped child; the fd is ours.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, init, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor returned above.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    let stdin = std::io::stdin();
    loop {
        let mut fds = [
            libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stdin.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[0].revents != 0 {
            return reap(init).map(Some);
        }
        if fds[1].revents != 0 {
            let mut buf = [0u8; 64];
            // SAFETY: read into a valid buffer from our stdin.
            let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_count_is_read_from_the_status_line() {
        let status = "Name:\tbackstop-agent\nUmask:\t0022\nThreads:\t1\nSigQ:\t0/3\n";
        assert_eq!(threads_in(status), Some(1));
        assert_eq!(threads_in("Threads:  12\n"), Some(12));
        assert_eq!(threads_in("Name: x\n"), None);
    }

    #[test]
    fn this_test_process_is_not_single_threaded_and_says_so() {
        // The test harness runs tests on threads of their own: the check
        // the creator makes would refuse here, as it must.
        let _other = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_secs(1)));
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(threads_in(&status).unwrap() > 1);
    }
}
