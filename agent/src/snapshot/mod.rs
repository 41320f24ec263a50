//! Known-good state: content-addressed snapshots of a scope, and restore.
//!
//! A snapshot records every entry under the scope's paths (type, content
//! hash, mode, owner, mtime, symlink target, device number, hardlink group,
//! extended attributes, which carry file capabilities and POSIX ACLs). File
//! content lives once in the object store under its SHA-256, whatever its
//! path or snapshot; a second snapshot of a mostly unchanged scope hashes
//! only files whose (dev, inode, size, mtime, ctime) changed.
//!
//! Layout under DATA/agent/snapshots (0700, files 0600: see `private.rs`):
//! `objects/ab/cdef...` (content), `objects/tmp/` (objects being written),
//! `<id>.snap` (a postcard manifest), `restore-<id>.journal` (a marker: a
//! restore in progress; restore is idempotent, a rerun finishes it), `lock`
//! (create shares it, gc holds it alone).
//!
//! Files: `mod.rs` the types (entries, manifests, errors), `store.rs` the
//! object store and manifests on disk (put, save, load, list, gc),
//! `walk.rs` reading a scope as it is now, `create.rs` taking a snapshot,
//! `diff.rs` comparing one with the tree, `restore/` putting it back,
//! `beneath.rs` the *at() calls a restore acts through, `fsops.rs` lstat,
//! xattrs and FICLONE, `private.rs` the store's modes and its lock.

pub(crate) mod beneath;
mod create;
mod diff;
pub(crate) mod fsops;
mod private;
mod restore;
mod store;
mod walk;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use create::{CreateReport, create, create_with};
pub use diff::{FsDiff, diff, hash_file};
pub use private::StoreLock;
pub use restore::{HostOps, ObjectState, RestoreReport, restore};
pub use store::Store;
pub use walk::{Scope, join};

use diff::{links_differ, metadata_equal};
use walk::{Excludes, check_scope_ancestors, kind_of, walk, walk_from};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("scope {scope} must be an absolute path inside the root")]
    BadScope { scope: String },
    #[error(
        "scope {scope}: {path} is a symlink; the directories above a scope must be real, nothing was done"
    )]
    SymlinkAncestor { scope: String, path: PathBuf },
    #[error("bad --exclude glob {glob}: {reason}")]
    BadExclude { glob: String, reason: String },
    #[error(
        "not enough room for the snapshot in {store}: up to {need} bytes of new content, {free} free"
    )]
    NoRoom {
        store: PathBuf,
        need: u64,
        free: u64,
    },
    #[error("no snapshot {id}")]
    NotFound { id: String },
    #[error("snapshot {id} is damaged: {reason}")]
    Damaged { id: String, reason: String },
    #[error("object {hash} (for {path}) is {problem}; nothing was restored")]
    BadObject {
        hash: String,
        path: String,
        problem: String,
    },
}

pub type Result<T> = std::result::Result<T, SnapshotError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDev,
    BlockDev,
    Socket,
}

/// One entry of a scope, as it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the root, as bytes (paths need not be UTF-8).
    pub path: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub size: u64,
    /// Content hash of a regular file.
    pub hash: Option<[u8; 32]>,
    /// Symlink target.
    pub target: Option<Vec<u8>>,
    pub rdev: u64,
    /// Regular files with more than one link: entries with the same group
    /// are one inode.
    pub link_group: Option<u64>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Identity at snapshot time, to skip re-hashing unchanged files.
    pub ident: (u64, u64, i64, i64),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub root: PathBuf,
    /// Scope paths, relative to the root.
    pub scopes: Vec<Vec<u8>>,
    pub excludes: Vec<String>,
    pub created_ms: u64,
    pub entries: Vec<Entry>,
}

impl Snapshot {
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// The snapshot's scope as it is on disk now, walked the same way.
    fn walk_now(&self) -> Result<Vec<(Entry, libc::stat)>> {
        let scope = Scope {
            root: self.root.clone(),
            paths: self
                .scopes
                .iter()
                .map(|s| Path::new("/").join(fsops::os(s)))
                .collect(),
            excludes: self.excludes.clone(),
        };
        let earlier = self
            .entries
            .iter()
            .map(|e| (e.path.as_slice(), e))
            .collect();
        walk(&scope, &Excludes::new(&self.excludes)?, &earlier)
    }

    /// Whether a root-relative path lies in one of the snapshot's scopes.
    fn in_scope(&self, rel: &[u8]) -> bool {
        self.scopes.iter().any(|s| scope_contains(s, rel))
    }

    /// How many links each file of the snapshot had to itself: the size of
    /// its hardlink group. A file whose inode now has more is linked from
    /// somewhere else, maybe outside the scope.
    fn group_sizes(&self) -> HashMap<u64, u64> {
        let mut sizes = HashMap::new();
        for g in self.entries.iter().filter_map(|e| e.link_group) {
            *sizes.entry(g).or_insert(0) += 1;
        }
        sizes
    }
}

/// The links a file should have: its group's size, or 1.
fn links_wanted(e: &Entry, groups: &HashMap<u64, u64>) -> u64 {
    e.link_group
        .and_then(|g| groups.get(&g).copied())
        .unwrap_or(1)
}

/// Whether root-relative `rel` is `scope` or below it, compared component
/// by component (never as text: `opt/app2` is not in `opt/app`). A `..`
/// is never in any scope: paths are normalised before they get here.
fn scope_contains(scope: &[u8], rel: &[u8]) -> bool {
    let parts = |p: &[u8]| {
        p.split(|&c| c == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .map(<[u8]>::to_vec)
            .collect::<Vec<_>>()
    };
    let (s, r) = (parts(scope), parts(rel));
    !r.iter().any(|c| c == b"..") && r.len() >= s.len() && r[..s.len()] == s[..]
}

/// An empty directory of the test's own under the temp dir (unique per
/// process and call: unit tests run side by side).
#[cfg(test)]
pub(crate) fn scratch(name: &str) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("backstop-{name}-{}-{seq}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_membership_is_per_component() {
        assert!(scope_contains(b"opt/app", b"opt/app"));
        assert!(scope_contains(b"opt/app", b"opt/app/x/y"));
        assert!(scope_contains(b"opt/app/", b"opt//app/./x"));
        assert!(!scope_contains(b"opt/app", b"opt/app2"));
        assert!(!scope_contains(b"opt/app", b"opt/app2/x"));
        assert!(!scope_contains(b"opt/app", b"opt"));
        assert!(!scope_contains(b"opt/app", b"opt/app/../../sentinel"));
        assert!(scope_contains(b"", b"anything/at/all"));
        assert!(!scope_contains(b"", b"../outside"));
    }
}
