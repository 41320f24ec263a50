//! What an install did to the shadow's filesystem, read from the overlay's
//! upper directory (piuparts' before/after view without a second walk of
//! the lower layers, `Lower`): an entry there is new or changed (copied up), a 0:0
//! character device is a whiteout (removed), an opaque directory replaced
//! the one below.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use backstop_common::fsdiff::FsDiff;

use super::lower::Lower;
use crate::error::{AgentError, Result};

/// Mount points libcontainer or the runner create in the root; not the
/// install's doing.
const IGNORED: &[&str] = &[super::container::IO_MOUNT, "/proc", "/sys", "/dev"];

pub fn upper_diff(upper: &Path, lower: &Lower) -> Result<FsDiff> {
    let mut d = FsDiff::default();
    let mut stack = vec![PathBuf::from("/")];
    while let Some(rel) = stack.pop() {
        let dir = upper.join(rel.strip_prefix("/").unwrap_or(&rel));
        let rd = std::fs::read_dir(&dir).map_err(|source| AgentError::Io {
            context: format!("reading the shadow's upper dir {}", dir.display()),
            source,
        })?;
        let mut names: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            let rel = rel.join(&name);
            let shown = rel.to_string_lossy().into_owned();
            if IGNORED.contains(&shown.as_str()) {
                continue;
            }
            let up = upper.join(rel.strip_prefix("/").unwrap_or(&rel));
            let Ok(m) = std::fs::symlink_metadata(&up) else {
                continue;
            };
            let below = lower.symlink_metadata(rel.strip_prefix("/").unwrap_or(&rel));
            if m.file_type().is_char_device() && m.rdev() == 0 {
                d.removed.push(shown);
                continue;
            }
            if m.is_dir() {
                match &below {
                    Ok(b) if b.is_dir() => {
                        let opaque = xattr_is(&up, b"trusted.overlay.opaque", b"y");
                        if opaque || (m.mode(), m.uid(), m.gid()) != (b.mode(), b.uid(), b.gid()) {
                            d.changed.push(shown);
                        }
                    }
                    Ok(_) => d.changed.push(shown),
                    Err(_) => d.added.push(shown),
                }
                stack.push(rel);
                continue;
            }
            match below {
                Ok(_) => d.changed.push(shown),
                Err(_) => d.added.push(shown),
            }
        }
    }
    for v in [&mut d.added, &mut d.changed, &mut d.removed] {
        v.sort();
    }
    Ok(d)
}

pub(super) fn xattr_is(p: &Path, name: &[u8], want: &[u8]) -> bool {
    let Ok(path) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let Ok(name) = std::ffi::CString::new(name) else {
        return false;
    };
    let mut buf = [0u8; 8];
    // SAFETY: valid C strings and buffer.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n >= 0 && &buf[..n as usize] == want
}
