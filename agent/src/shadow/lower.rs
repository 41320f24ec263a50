//! What lies below a shadow's upper layer: the target's root alone, or
//! (a deployment's concurrent shadow) the frozen layer built from the
//! deployment's snapshot over the root, with the snapshot store's objects
//! as a data-only layer under both. One place says how that stack is
//! mounted (`lowerdir`) and how a path in it looks (for the diff).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// The layers below a shadow's upper, top first.
#[derive(Debug, Clone)]
pub enum Lower {
    /// The target's root: what the shadow sees is the live tree.
    Root(PathBuf),
    /// The scope as the snapshot recorded it (`frozen.rs`), over the live
    /// root (None: a scope that is the whole root hides all of it), with
    /// the store's objects as the data-only layer the frozen files'
    /// redirects name.
    Frozen {
        frozen: PathBuf,
        live: Option<PathBuf>,
        objects: PathBuf,
    },
}

impl Lower {
    /// Every directory the mount options name (none may hold ',' or ':').
    pub fn dirs(&self) -> Vec<&Path> {
        match self {
            Lower::Root(r) => vec![r],
            Lower::Frozen {
                frozen,
                live,
                objects,
            } => std::iter::once(frozen.as_path())
                .chain(live.as_deref())
                .chain(std::iter::once(objects.as_path()))
                .collect(),
        }
    }

    /// The overlay's `lowerdir` (and `metacopy=on`, which a data-only
    /// layer needs: Linux 6.5, Documentation/filesystems/overlayfs.rst,
    /// "Data-only lower layers"; it turns `redirect_dir` on too).
    pub fn options(&self) -> String {
        match self {
            Lower::Root(r) => format!("lowerdir={}", r.display()),
            Lower::Frozen {
                frozen,
                live,
                objects,
            } => {
                let live = live
                    .as_ref()
                    .map(|l| format!(":{}", l.display()))
                    .unwrap_or_default();
                format!(
                    "lowerdir={}{live}::{},metacopy=on",
                    frozen.display(),
                    objects.display()
                )
            }
        }
    }

    /// The live root, when the shadow sees any of it.
    pub fn live(&self) -> Option<&Path> {
        match self {
            Lower::Root(r) => Some(r),
            Lower::Frozen { live, .. } => live.as_deref(),
        }
    }

    /// lstat of root-relative `rel` as the overlay's lower stack shows it:
    /// the frozen layer first; an opaque directory there hides the live
    /// root below it, a whiteout or a non-directory hides the path; where
    /// the frozen layer has nothing, the live root answers.
    pub fn symlink_metadata(&self, rel: &Path) -> std::io::Result<std::fs::Metadata> {
        let Lower::Frozen { frozen, live, .. } = self else {
            return std::fs::symlink_metadata(self.dirs()[0].join(rel));
        };
        let gone = || Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        let comps: Vec<_> = rel
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        let mut at = PathBuf::new();
        for (i, c) in comps.iter().enumerate() {
            at.push(c);
            let here = frozen.join(&at);
            let m = match std::fs::symlink_metadata(&here) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return match live {
                        Some(l) => std::fs::symlink_metadata(l.join(rel)),
                        None => Err(e),
                    };
                }
                r => r?,
            };
            if is_whiteout(&m) {
                return gone();
            }
            if i + 1 == comps.len() {
                return Ok(m);
            }
            if !m.is_dir() {
                return gone();
            }
            if super::diff::xattr_is(&here, b"trusted.overlay.opaque", b"y") {
                let m = std::fs::symlink_metadata(frozen.join(rel))?;
                return if is_whiteout(&m) { gone() } else { Ok(m) };
            }
        }
        std::fs::symlink_metadata(frozen)
    }
}

/// overlayfs's whiteout: a character device 0:0.
pub fn is_whiteout(m: &std::fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}
