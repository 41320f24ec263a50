//! Writing one outbox file: 0600 from creation (O_EXCL, never chmodded
//! later), fsynced, and renamed into place, so a crash leaves the whole
//! message or none of it.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::datadir::FILE_MODE;

/// Create `path` 0600 (never wider, even for an instant), write, fsync.
pub(super) fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let r = f.write_all(bytes).and_then(|()| f.sync_data());
    if r.is_err() {
        let _ = std::fs::remove_file(path);
    }
    r
}

/// Write `bytes` to `path` through a temporary name: all or nothing.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
