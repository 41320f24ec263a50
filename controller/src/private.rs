//! The controller's data is for root only: the data directory and `pki/`
//! are 0700, the database (with its -wal and -shm files), keys, bundles and
//! the control socket 0600. A directory left with looser modes (by an older
//! version, a restored backup, a careless chmod) is reported and fixed on
//! start. Everything here blocks: call it from a blocking task.

use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use backstop_common::private::{self, Narrowed};

pub use backstop_common::private::{DIR_MODE, FILE_MODE};

/// Narrow `path` to at most `want` (never widening it). Returns whether it
/// had to. Symlinks are left alone: chmod would follow them out of DATA.
pub fn fix_mode(path: &Path, want: u32) -> io::Result<bool> {
    match private::narrow(path, want) {
        Ok(Narrowed::Kept) => Ok(false),
        Ok(Narrowed::Changed { old, new }) => {
            tracing::warn!(
                path = %path.display(),
                old_mode = format!("{old:04o}"),
                new_mode = format!("{new:04o}"),
                "data readable beyond root: mode narrowed"
            );
            Ok(true)
        }
        Ok(Narrowed::Symlink) => {
            tracing::warn!(path = %path.display(), "a symlink in the data directory: left alone");
            Ok(false)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

/// Create `dir` (and missing parents) 0700, or narrow it when it exists.
/// A sticky directory (such as /tmp given as --data) is someone else's to
/// mode: it is reported, never changed.
pub fn dir(dir: &Path) -> io::Result<()> {
    private::make_dirs(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())))?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o1000 != 0 {
        tracing::warn!(path = %dir.display(), mode = format!("{mode:04o}"),
            "the data directory is a shared sticky directory: use a directory of its own");
        return Ok(());
    }
    fix_mode(dir, DIR_MODE).map(|_| ())
}

/// The database file and SQLite's companions: created 0600 before SQLite
/// opens it (SQLite gives -wal and -shm the database file's mode), and
/// narrowed when they exist.
pub fn database_files(db: &Path, create: bool) -> io::Result<()> {
    if create && !db.exists() {
        // Missing parents are made 0700; an existing parent is left as it
        // is: with --database it may be any directory (/var/lib, say).
        if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
            private::make_dirs(parent).map_err(|e| {
                io::Error::new(e.kind(), format!("creating {}: {e}", parent.display()))
            })?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(db)
            .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", db.display())))?;
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        fix_mode(Path::new(&p), FILE_MODE)?;
    }
    Ok(())
}

/// Check and fix the whole data directory: DATA and DATA/pki (and its
/// agents/) 0700; keys and bundles 0600. The database is handled by
/// [`database_files`] when the store opens it.
pub fn data_dir(data: &Path) -> io::Result<()> {
    dir(data)?;
    let pki = data.join("pki");
    for d in [pki.clone(), pki.join("agents")] {
        if d.is_dir() {
            fix_mode(&d, DIR_MODE)?;
        }
    }
    for d in [pki.clone(), pki.join("agents")] {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "key" || x == "bundle") {
                fix_mode(&p, FILE_MODE)?;
            }
        }
    }
    fix_mode(&data.join("control.sock"), FILE_MODE)?;
    Ok(())
}

/// Sets the process umask for as long as it lives, then restores the old
/// one. The umask is process-wide: hold it only around the creation it
/// protects (binding the control socket), where no other thread creates
/// files.
pub struct Umask(libc::mode_t);

impl Umask {
    pub fn set(mask: libc::mode_t) -> Umask {
        // SAFETY: umask has no preconditions and cannot fail.
        Umask(unsafe { libc::umask(mask) })
    }
}

impl Drop for Umask {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::umask(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_modes_are_narrowed_never_widened() {
        let d = backstop_common::private::ScratchDir::new("private");
        dir(&d).unwrap();
        let mode = |p: &Path| backstop_common::private::mode_of(p).unwrap();
        assert_eq!(mode(&d), 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let db = d.join("backstop.db");
        database_files(&db, true).unwrap();
        assert_eq!(mode(&db), 0o600, "created private");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let key = d.join("pki/agents/a.bundle");
        std::fs::create_dir_all(key.parent().unwrap()).unwrap();
        std::fs::write(&key, "x").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        data_dir(&d).unwrap();
        database_files(&db, false).unwrap();
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&d.join("pki")), 0o700);
        assert_eq!(mode(&d.join("pki/agents")), 0o700);
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&db), 0o600);
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(!fix_mode(&db, FILE_MODE).unwrap(), "stricter is kept");
        assert_eq!(mode(&db), 0o400);
    }
}
