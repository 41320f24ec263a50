//! Comparing a snapshot with the tree as it is now: what was added,
//! changed (content, metadata, or how an inode is linked) and removed.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{Entry, Kind, Result, Snapshot, check_scope_ancestors, io, join, links_wanted};

/// How the tree differs from a snapshot: the same type as a shadow's diff.
pub use backstop_common::fsdiff::FsDiff;

/// Owner, mode, mtime, xattrs, symlink target and device number as recorded.
pub(super) fn metadata_equal(now: &Entry, want: &Entry) -> bool {
    now.mode == want.mode
        && now.uid == want.uid
        && now.gid == want.gid
        && now.mtime == want.mtime
        && now.xattrs == want.xattrs
        && now.target == want.target
        && (!matches!(want.kind, Kind::CharDev | Kind::BlockDev) || now.rdev == want.rdev)
}

/// Whether the entry on disk now matches the recorded one (content hashed
/// only when its identity changed).
fn same(recorded: &Entry, now: &Entry, root: &Path) -> Result<bool> {
    let meta_same =
        recorded.kind == now.kind && metadata_equal(now, recorded) && recorded.size == now.size;
    if !meta_same {
        return Ok(false);
    }
    if recorded.kind != Kind::File || recorded.ident == now.ident {
        return Ok(true);
    }
    let full = join(root, &now.path);
    Ok(hash_file(&full)? == recorded.hash.unwrap_or_default())
}

/// Files whose inode is linked differently than recorded: more (or fewer)
/// links than their hardlink group, or a group member that is no longer
/// the same inode as its group's first. Content and mode may match (a hard
/// link to an outside file with the same content): they still differ.
pub(super) fn links_differ(snap: &Snapshot, walked: &[(Entry, libc::stat)]) -> HashSet<Vec<u8>> {
    let groups = snap.group_sizes();
    let now: HashMap<&[u8], &libc::stat> = walked
        .iter()
        .map(|(e, st)| (e.path.as_slice(), st))
        .collect();
    let mut first: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut out = HashSet::new();
    for e in snap.entries.iter().filter(|e| e.kind == Kind::File) {
        let Some(st) = now.get(e.path.as_slice()) else {
            continue;
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            continue;
        }
        let inode = (st.st_dev, st.st_ino);
        let same_group = e
            .link_group
            .is_none_or(|g| *first.entry(g).or_insert(inode) == inode);
        if !same_group || st.st_nlink != links_wanted(e, &groups) {
            out.insert(e.path.clone());
        }
    }
    out
}

pub fn hash_file(p: &Path) -> Result<[u8; 32]> {
    let mut f = std::fs::File::open(p).map_err(io(p))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(io(p))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

pub fn diff(snap: &Snapshot) -> Result<FsDiff> {
    check_scope_ancestors(&snap.root, &snap.scopes)?;
    let walked = snap.walk_now()?;
    let relinked = links_differ(snap, &walked);
    let now: HashMap<Vec<u8>, Entry> = walked
        .into_iter()
        .map(|(e, _)| (e.path.clone(), e))
        .collect();
    let before: HashMap<&[u8], &Entry> = snap
        .entries
        .iter()
        .map(|e| (e.path.as_slice(), e))
        .collect();
    let show = |p: &[u8]| format!("/{}", String::from_utf8_lossy(p));
    let mut d = FsDiff::default();
    for e in &snap.entries {
        match now.get(&e.path) {
            None => d.removed.push(show(&e.path)),
            Some(n) if relinked.contains(&e.path) || !same(e, n, &snap.root)? => {
                d.changed.push(show(&e.path));
            }
            Some(_) => {}
        }
    }
    let mut added: Vec<&Vec<u8>> = now
        .keys()
        .filter(|p| !before.contains_key(p.as_slice()))
        .collect();
    added.sort();
    d.added = added.into_iter().map(|p| show(p)).collect();
    Ok(d)
}
