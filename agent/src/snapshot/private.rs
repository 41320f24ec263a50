//! The snapshot store's file handling: it holds copies of whatever the
//! scope holds (an `/etc/shadow` among them), so nothing in it is readable
//! by anyone but root, at any instant; and the lock that keeps `gc` from
//! deleting what a `create` in progress has stored but not yet recorded.
//!
//! Modes: the store's directories are 0700, its files 0600. Files are
//! created with that mode (O_CREAT|O_EXCL, mode 0600), never created wider
//! and narrowed later, so there is no window in which another user could
//! open one. A store left by an older agent (objects 0644, directories
//! 0755) is narrowed when opened, with a warning naming each path.
//!
//! Locking: `DATA/agent/snapshots/lock` is flock(2)ed. `create` holds it
//! shared for its whole run (creates run side by side; two puts of the same
//! object rename the same content into place), `gc` holds it exclusive.
//! Either waits for the other, saying so once on the log. flock is released
//! by the kernel when the process dies, so a killed create never blocks gc.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use backstop_common::private::{self, Narrowed};

use super::{Result, Store, io};

pub(super) use backstop_common::private::{DIR_MODE, FILE_MODE};

/// `mkdir -p` whose every new directory is 0700 from the start.
pub(super) fn mkdirs(dir: &Path) -> Result<()> {
    private::make_dirs(dir).map_err(io(dir))
}

/// A new file, 0600 from its creation; fails if `path` exists (a symlink
/// planted there included: O_EXCL does not follow it).
pub(super) fn create_private(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io(path))
}

/// Held while a `create` or `gc` runs; dropping it releases the lock.
pub struct StoreLock {
    _file: File,
}

impl Store {
    fn lock(&self, exclusive: bool) -> Result<StoreLock> {
        let path = self.dir.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io(&path))?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        let flock = |flags| loop {
            // SAFETY: flock on a descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), flags) } == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        match flock(op | libc::LOCK_NB) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if exclusive {
                    tracing::warn!(
                        lock = %path.display(),
                        "snapshot gc: waiting for the snapshot creates in progress to finish"
                    );
                } else {
                    tracing::warn!(
                        lock = %path.display(),
                        "snapshot create: waiting for a snapshot gc to finish"
                    );
                }
                flock(op).map_err(io(&path))?;
            }
            Err(e) => return Err(io(&path)(e)),
        }
        Ok(StoreLock { _file: file })
    }

    /// Shared: objects stored under it stay until a manifest names them.
    pub fn lock_create(&self) -> Result<StoreLock> {
        self.lock(false)
    }

    /// Exclusive: no create is between storing an object and saving the
    /// manifest that refers to it.
    pub fn lock_gc(&self) -> Result<StoreLock> {
        self.lock(true)
    }

    /// Narrow what an older agent left wider than 0700/0600, saying what
    /// it was. Directories are always looked at (there are at most 258);
    /// the objects in a fan directory only when that directory was open,
    /// since a 0700 directory already keeps them from everyone else and a
    /// big store has hundreds of thousands of them.
    pub(super) fn make_private(&self) -> Result<()> {
        let objects = self.dir.join("objects");
        for dir in [&self.dir, &objects] {
            if let Some(old) = tighten(dir, DIR_MODE)? {
                warn_loose(dir, old, DIR_MODE);
            }
        }
        // Manifests, the lock, journals: few, each named.
        tighten_files(&self.dir, |p, old| warn_loose(p, old, FILE_MODE))?;
        for fan in std::fs::read_dir(&objects).map_err(io(&objects))? {
            let fan = fan.map_err(io(&objects))?.path();
            if !std::fs::symlink_metadata(&fan).map_err(io(&fan))?.is_dir() {
                continue;
            }
            if let Some(old) = tighten(&fan, DIR_MODE)? {
                warn_loose(&fan, old, DIR_MODE);
                // Objects: one line per directory, not one per object.
                let (mut n, mut first) = (0u64, None);
                tighten_files(&fan, |p, old| {
                    n += 1;
                    first.get_or_insert((p.to_path_buf(), old));
                })?;
                if let Some((p, old)) = first {
                    tracing::warn!(
                        dir = %fan.display(),
                        objects = n,
                        first = %p.display(),
                        old_mode = format!("{old:o}"),
                        "snapshot objects were readable by other users; made 600"
                    );
                }
            }
        }
        Ok(())
    }
}

fn warn_loose(path: &Path, old: u32, new: u32) {
    tracing::warn!(
        path = %path.display(),
        old_mode = format!("{old:o}"),
        new_mode = format!("{new:o}"),
        "snapshot store was open to other users; made private"
    );
}

/// Narrow `path` to `mode` if group or others have any bit on it; its
/// old mode if it did. Only directories (for DIR_MODE) and regular files
/// (for FILE_MODE) are looked at: symlinks and other types are left alone
/// (only root writes here).
fn tighten(path: &Path, mode: u32) -> Result<Option<u32>> {
    let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
    let right_type = if mode == DIR_MODE {
        meta.is_dir()
    } else {
        meta.is_file()
    };
    if !right_type {
        return Ok(None);
    }
    match private::narrow(path, mode).map_err(io(path))? {
        Narrowed::Changed { old, .. } => Ok(Some(old)),
        Narrowed::Kept | Narrowed::Symlink => Ok(None),
    }
}

/// [`tighten`] every regular file directly in `dir`, telling `changed`.
fn tighten_files(dir: &Path, mut changed: impl FnMut(&Path, u32)) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let p = e.map_err(io(dir))?.path();
        match tighten(&p, FILE_MODE) {
            Ok(Some(old)) => changed(&p, old),
            Ok(None) => {}
            // Removed meanwhile (a manifest's temporary file renamed).
            Err(super::SnapshotError::Io { source, .. })
                if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
