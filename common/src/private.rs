//! Data only root reads. The agent's outbox and snapshot store and the
//! controller's database and keys hold every deployment's argv and copies
//! of files such as `/etc/shadow`, so their directories are 0700 and their
//! files 0600. Each part creates its files with that mode; this is the one
//! rule for narrowing what an older version, a restored backup or a careless
//! chmod left wider, so the agent and the controller cannot drift apart on
//! what "private" means.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Every directory backstop keeps data in.
pub const DIR_MODE: u32 = 0o700;
/// Every file backstop keeps data in.
pub const FILE_MODE: u32 = 0o600;

/// What [`narrow`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Narrowed {
    /// Group and others had nothing `want` does not give them.
    Kept,
    /// The mode was `old` and is now `new`.
    Changed { old: u32, new: u32 },
    /// A symlink: chmod would follow it out of the data directory, so it
    /// is left alone and the caller decides what that means.
    Symlink,
}

/// Clear the group and other bits of `path` that `want` does not have.
/// Never widens a mode and never follows a symlink; the owner's bits are
/// the owner's (root's) business and stay.
pub fn narrow(path: &Path, want: u32) -> io::Result<Narrowed> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(Narrowed::Symlink);
    }
    let old = meta.mode() & 0o7777;
    let extra = old & 0o077 & !want;
    if extra == 0 {
        return Ok(Narrowed::Kept);
    }
    let new = old & !extra;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(new))?;
    Ok(Narrowed::Changed { old, new })
}

/// `mkdir -p` whose every new directory is 0700 from its creation (an
/// existing one is left as it is: see [`narrow`]).
pub fn make_dirs(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// The permission bits (`0o7777`) of `path` itself, never a link's target:
/// what every check of "is this private" compares.
pub fn mode_of(path: &Path) -> io::Result<u32> {
    Ok(std::fs::symlink_metadata(path)?.mode() & 0o7777)
}

/// A throw-away directory for tests and experiments:
/// `$TMPDIR/backstop-NAME-PID`, emptied when made and removed when dropped.
/// Made only on demand (a test that wants its code to create the directory
/// gets a path that does not exist yet).
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(name: &str) -> ScratchDir {
        let path = std::env::temp_dir().join(format!("backstop-{name}-{}", std::process::id()));
        // A leftover of an earlier process with the same pid.
        let _ = std::fs::remove_dir_all(&path);
        ScratchDir(path)
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_clears_only_what_others_should_not_have() {
        let d = std::env::temp_dir().join(format!("backstop-narrow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        make_dirs(&d.join("a/b")).unwrap();
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&d.join("a/b")), DIR_MODE);
        let f = d.join("f");
        std::fs::write(&f, "x").unwrap();
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        };
        set(&f, 0o644);
        assert_eq!(
            narrow(&f, FILE_MODE).unwrap(),
            Narrowed::Changed {
                old: 0o644,
                new: 0o600
            }
        );
        set(&f, 0o400);
        assert_eq!(
            narrow(&f, FILE_MODE).unwrap(),
            Narrowed::Kept,
            "stricter stays"
        );
        assert_eq!(mode(&f), 0o400);
        set(&d.join("a"), 0o755);
        assert_eq!(
            narrow(&d.join("a"), DIR_MODE).unwrap(),
            Narrowed::Changed {
                old: 0o755,
                new: 0o700
            }
        );
        std::os::unix::fs::symlink("/etc", d.join("l")).unwrap();
        assert_eq!(narrow(&d.join("l"), DIR_MODE).unwrap(), Narrowed::Symlink);
        assert!(narrow(&d.join("missing"), FILE_MODE).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
