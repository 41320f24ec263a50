//! A sentinel: a directory outside the root (and scope) of an attack, whose
//! full walk must be identical before and after.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What the walk records of one entry: everything a restore that escaped
/// could change (content, mode, owner, mtime, inode, link count, target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub ino: u64,
    pub nlink: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub content: u64,
    pub target: Option<std::path::PathBuf>,
}

pub type Walk = BTreeMap<String, Node>;

/// Every entry under `dir` (itself included, as ""), symlinks not followed.
pub fn walk(dir: &Path) -> Walk {
    let mut out = Walk::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p)
            .unwrap_or_else(|e| panic!("sentinel walk: {}: {e}", p.display()));
        let ft = m.file_type();
        if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap().flatten() {
                stack.push(e.path());
            }
        }
        let content = if ft.is_file() {
            let mut h = std::hash::DefaultHasher::new();
            std::fs::read(&p).unwrap().hash(&mut h);
            h.finish()
        } else {
            0
        };
        let rel = p.strip_prefix(dir).unwrap().display().to_string();
        out.insert(
            rel,
            Node {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                ino: m.ino(),
                nlink: m.nlink(),
                size: if ft.is_file() { m.len() } else { 0 },
                mtime: (m.mtime(), m.mtime_nsec()),
                content,
                target: ft.is_symlink().then(|| std::fs::read_link(&p).unwrap()),
            },
        );
    }
    out
}

/// Panics, listing what differs, unless `dir` walks exactly as `before`.
pub fn assert_untouched(dir: &Path, before: &Walk, what: &str) {
    let after = walk(dir);
    let mut diffs = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => diffs.push(format!("- {k} (gone)")),
            Some(w) if w != v => diffs.push(format!("~ {k}: {v:?} -> {w:?}")),
            _ => {}
        }
    }
    diffs.extend(
        after
            .keys()
            .filter(|k| !before.contains_key(*k))
            .map(|k| format!("+ {k} (new)")),
    );
    assert!(
        diffs.is_empty(),
        "{what}: the sentinel {} was changed:\n{}",
        dir.display(),
        diffs.join("\n")
    );
}
