//! Starting a command as a tracked process tree.
//!
//! The probes follow a tree from its first pid, so that pid must be in the
//! tracked map before the command's first instruction. The child stops
//! between fork and exec, tells us its pid over a pipe, and waits for our
//! go-ahead, which we give only once the pid is registered. Everything it
//! does from exec on, and everything it forks, is then counted.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;

use crate::error::{AgentError, Result};

/// Where the command's stdout goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    Inherit,
    /// To our stderr, keeping our stdout for machine-readable output.
    Stderr,
    /// To a pipe the caller reads (`Child::stdout` of [`Exit::Child`]): a
    /// deployment's step runner reports its progress on it.
    Piped,
}

pub struct Tracked {
    pub pid: u32,
    pub exit: Exit,
}

/// How the root of a tracked tree is waited for.
pub enum Exit {
    /// A command we spawned.
    Child(tokio::process::Child),
    /// A process started some other way (a container's init), waited for
    /// on a blocking thread.
    Waiter(tokio::task::JoinHandle<std::io::Result<std::process::ExitStatus>>),
}

impl Tracked {
    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match &mut self.exit {
            Exit::Child(c) => c.wait().await,
            Exit::Waiter(h) => h.await.map_err(std::io::Error::other)?,
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(AgentError::Io {
            context: "creating the registration pipe".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: pipe2 returned two fresh descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_stdout(cmd: &mut std::process::Command, stdout: Stdout) {
    match stdout {
        Stdout::Inherit => {}
        Stdout::Stderr => {
            let err = std::io::stderr().as_raw_fd();
            // SAFETY: dup of our own stderr; the new descriptor is owned here.
            let dup = unsafe { libc::fcntl(err, libc::F_DUPFD_CLOEXEC, 3) };
            if dup >= 0 {
                cmd.stdout(Stdio::from(unsafe { OwnedFd::from_raw_fd(dup) }));
            }
        }
        Stdout::Piped => {
            cmd.stdout(Stdio::piped());
        }
    }
}

/// Spawn `argv` (must be inside a tokio runtime); `register` is called with
/// the child's pid before it execs, and the child execs only if it succeeds.
pub fn spawn_tracked(
    argv: &[OsString],
    stdout: Stdout,
    register: impl FnOnce(u32) -> Result<()>,
) -> Result<Tracked> {
    let program = argv.first().ok_or(AgentError::NoCommand)?;
    let (pid_r, pid_w) = pipe()?;
    let (ack_r, ack_w) = pipe()?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(&argv[1..]);
    set_stdout(&mut cmd, stdout);
    let (w, r) = (pid_w.as_raw_fd(), ack_r.as_raw_fd());
    let (parent_r, parent_w) = (pid_r.as_raw_fd(), ack_w.as_raw_fd());
    // SAFETY: between fork and exec only async-signal-safe calls are made:
    // close, signal, getpid, write, read. No allocation (the error is a raw
    // os error).
    unsafe {
        cmd.pre_exec(move || {
            // Our copies of the agent's ends: were the write end of the ack
            // pipe kept open here, an agent killed before answering would
            // leave this child blocked in read() forever, not seeing EOF.
            libc::close(parent_r);
            libc::close(parent_w);
            // A supervisor's command must be stoppable: dispositions
            // inherited as "ignore" (a background job of a script ignores
            // SIGINT) would swallow the signals we forward.
            for sig in [
                libc::SIGINT,
                libc::SIGTERM,
                libc::SIGQUIT,
                libc::SIGHUP,
                libc::SIGPIPE,
            ] {
                libc::signal(sig, libc::SIG_DFL);
            }
            let pid = (libc::getpid() as u32).to_ne_bytes();
            if libc::write(w, pid.as_ptr().cast(), 4) != 4 {
                return Err(std::io::Error::last_os_error());
            }
            let mut ack = 0u8;
            if libc::read(r, (&mut ack as *mut u8).cast(), 1) != 1 || ack != 1 {
                return Err(std::io::Error::from_raw_os_error(libc::ECANCELED));
            }
            Ok(())
        });
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let handle = tokio::runtime::Handle::current();
    // spawn() returns only after exec, which waits for our ack: run it on
    // its own thread while this one registers the pid.
    let spawner = std::thread::spawn(move || {
        let _rt = handle.enter();
        let r = cmd.spawn();
        // Our copies of the child's ends: closed so a child that dies before
        // writing gives us EOF instead of a hang.
        drop(pid_w);
        drop(ack_r);
        r
    });
    let mut pid_buf = [0u8; 4];
    let got_pid = std::fs::File::from(pid_r).read_exact(&mut pid_buf).is_ok();
    let registered = if got_pid {
        register(u32::from_ne_bytes(pid_buf))
    } else {
        Ok(())
    };
    let go = [u8::from(got_pid && registered.is_ok())];
    let _ = std::fs::File::from(ack_w).write_all(&go);
    let spawned = spawner.join().map_err(|_| AgentError::Io {
        context: "the spawning thread panicked".into(),
        source: std::io::Error::other("panic"),
    })?;
    registered?;
    let child = spawned.map_err(|source| AgentError::Spawn {
        program: program.to_string_lossy().into_owned(),
        source,
    })?;
    let pid = child.id().unwrap_or(u32::from_ne_bytes(pid_buf));
    Ok(Tracked {
        pid,
        exit: Exit::Child(child),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_command_is_a_validation_error_not_a_spawn_error() {
        let r = spawn_tracked(&[], Stdout::Inherit, |_| Ok(()));
        assert!(matches!(r, Err(AgentError::NoCommand)), "{:?}", r.err());
    }
}
