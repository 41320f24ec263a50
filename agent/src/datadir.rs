//! The agent's part of the data directory (DATA/agent): one agent at a time
//! (an flock on DATA/agent/lock), and private (0700 directories, 0600
//! files), because the outbox holds every deployment's argv and events.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use backstop_common::private::{self, Narrowed};

use crate::error::{AgentError, Result};

pub use backstop_common::private::{DIR_MODE, FILE_MODE};

fn io(context: String) -> impl FnOnce(std::io::Error) -> AgentError {
    move |source| AgentError::Io { context, source }
}

/// DATA/agent, made 0700 (and reported and fixed when it was looser).
pub fn agent_dir(data: &Path) -> Result<PathBuf> {
    let dir = data.join("agent");
    private_dir(&dir)?;
    Ok(dir)
}

/// Create `dir` (and its parents) with mode 0700, or tighten an existing
/// one to 0700, saying so: a looser mode is a leak an SRE should hear of.
pub fn private_dir(dir: &Path) -> Result<()> {
    private::make_dirs(dir).map_err(io(format!("creating {}", dir.display())))?;
    tighten(dir, DIR_MODE)
}

/// Make `path` no more open than `mode` (group and other bits only), with
/// a warning naming the path and its old mode when it was looser.
pub fn tighten(path: &Path, mode: u32) -> Result<()> {
    match private::narrow(path, mode).map_err(io(format!("chmod {}", path.display())))? {
        Narrowed::Kept => Ok(()),
        Narrowed::Changed { old, new } => {
            tracing::warn!(
                path = %path.display(),
                old_mode = format!("{old:o}"),
                new_mode = format!("{new:o}"),
                "agent data was readable by others; tightened its mode"
            );
            Ok(())
        }
        // chmod would follow it; a symlink here is not ours to fix.
        Narrowed::Symlink => Err(AgentError::Io {
            context: format!(
                "{} is a symlink; the agent keeps its data in real files",
                path.display()
            ),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        }),
    }
}

/// The lock that makes one agent the only writer of DATA/agent/outbox.
/// Held (and the lock file open) for as long as this value lives; the
/// kernel drops it when the agent dies, however it dies.
#[derive(Debug)]
pub struct DataLock {
    _file: File,
    pub path: PathBuf,
}

impl DataLock {
    /// Take DATA/agent/lock without waiting. A second agent on the same
    /// data directory gets [`AgentError::Locked`], naming the holder's pid
    /// when the holder wrote it.
    pub fn take(data: &Path) -> Result<DataLock> {
        let path = agent_dir(data)?.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(format!("locking {}", path.display()))(err));
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(AgentError::Locked {
                path,
                holder: text.trim().parse().ok(),
            });
        }
        tighten(&path, FILE_MODE)?;
        // The pid is a courtesy for the error above; a full disk must not
        // stop the agent from starting, so failing to write it is a warning.
        let pid = std::process::id();
        let write = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{pid}"));
        if let Err(e) = write {
            tracing::warn!(path = %path.display(), "cannot write our pid into the lock file: {e}");
        }
        Ok(DataLock { _file: file, path })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use backstop_common::private::{ScratchDir, mode_of};

    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder() {
        let data = ScratchDir::new("datalock");
        let first = DataLock::take(&data).unwrap();
        match DataLock::take(&data) {
            Err(AgentError::Locked { path, holder }) => {
                assert_eq!(path, first.path);
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("second lock: {other:?}"),
        }
        let mode = |p: &Path| mode_of(p).unwrap();
        assert_eq!(mode(&data.join("agent")), 0o700);
        assert_eq!(mode(&first.path), 0o600);
        drop(first);
        DataLock::take(&data).expect("free again once the first is gone");
    }

    #[test]
    fn looser_modes_are_tightened() {
        let dir = ScratchDir::new("tighten");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        let mode = mode_of(&dir).unwrap();
        assert_eq!(mode, 0o700);
    }
}
