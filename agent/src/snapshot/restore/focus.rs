//! A restore guided by a change log: which part of the scope it looks at.
//! The log is a hint for speed, never the source of truth: a log that
//! climbs out of the scope is not trusted at all, and `--verify` still
//! compares the whole scope.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::super::{Entry, Excludes, Result, Snapshot, fsops, walk_from};
use crate::changes::ChangeSet;

/// Where a restore guided by a change log looks: each logged path inside
/// the scope with everything under it (a renamed or removed directory
/// takes its subtree along), every member of a hardlink group one of them
/// belongs to (they share content), and their parent directories alone
/// (adding or removing a name moved their mtime).
pub(super) struct Focus {
    roots: HashSet<Vec<u8>>,
    parents: HashSet<Vec<u8>>,
}

impl Focus {
    /// Err: why the log cannot guide this restore.
    pub(super) fn new(snap: &Snapshot, changes: &ChangeSet) -> std::result::Result<Self, String> {
        // The root was canonical when the snapshot was taken; paths in the
        // log are normalised (ChangeSet::read), so prefixes compare whole
        // components.
        let root = snap.root.clone();
        refuse_climbs(snap, changes, &root)?;
        let mut cands: BTreeSet<Vec<u8>> = changes
            .paths
            .iter()
            .filter_map(|p| p.strip_prefix(&root).ok())
            .map(|rel| rel.as_os_str().as_bytes().to_vec())
            .filter(|rel| snap.in_scope(rel))
            .collect();
        if !changes.anchored.is_empty() {
            cands.extend(anchored_candidates(snap, changes, &root));
        }
        add_link_groups(snap, &mut cands);
        // Sorted, so an ancestor comes before its descendants.
        let mut roots: HashSet<Vec<u8>> = HashSet::new();
        for c in cands {
            if !ancestors(&c).any(|a| roots.contains(a)) {
                roots.insert(c);
            }
        }
        let parents = roots
            .iter()
            .flat_map(|r| ancestors(r))
            .filter(|a| snap.in_scope(a) && !roots.contains(*a))
            .map(<[u8]>::to_vec)
            .collect();
        Ok(Focus { roots, parents })
    }

    fn contains(&self, path: &[u8]) -> bool {
        self.parents.contains(path)
            || self.roots.contains(path)
            || ancestors(path).any(|a| self.roots.contains(a))
    }

    /// The snapshot's entries in focus, and the tree now in focus (parents
    /// before children).
    pub(super) fn view(&self, snap: &Snapshot) -> Result<(Snapshot, Vec<(Entry, libc::stat)>)> {
        let entries: Vec<Entry> = snap
            .entries
            .iter()
            .filter(|e| self.contains(&e.path))
            .cloned()
            .collect();
        let part = Snapshot {
            id: snap.id.clone(),
            root: snap.root.clone(),
            scopes: snap.scopes.clone(),
            excludes: snap.excludes.clone(),
            created_ms: snap.created_ms,
            entries,
        };
        let earlier: HashMap<&[u8], &Entry> = part
            .entries
            .iter()
            .map(|e| (e.path.as_slice(), e))
            .collect();
        let starts = self
            .roots
            .iter()
            .map(|r| (r.clone(), true))
            .chain(self.parents.iter().map(|p| (p.clone(), false)))
            .collect();
        let mut current = walk_from(
            &snap.root,
            starts,
            &Excludes::new(&snap.excludes)?,
            &earlier,
        )?;
        current.sort_by(|a, b| {
            a.0.path
                .split(|&c| c == b'/')
                .cmp(b.0.path.split(|&c| c == b'/'))
        });
        Ok((part, current))
    }
}

/// `base` (root-relative) joined with a relative `name`, "." and ".."
/// applied as written.
fn lexical_join(base: &[u8], name: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = base
        .split(|&c| c == b'/')
        .filter(|p| !p.is_empty())
        .collect();
    for p in name.split(|&c| c == b'/') {
        match p {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join(&b'/')
}

/// `a/b/c` -> `a/b`, `a`.
fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .rev()
        .filter(|(_, c)| **c == b'/')
        .map(move |(i, _)| &path[..i])
}

/// A `..` that leads out of the scope says the log was written by
/// something other than an honest resolver: trust none of it.
fn refuse_climbs(
    snap: &Snapshot,
    changes: &ChangeSet,
    root: &Path,
) -> std::result::Result<(), String> {
    for (clean, raw) in &changes.climbs {
        let inside = clean
            .strip_prefix(root)
            .is_ok_and(|rel| snap.in_scope(rel.as_os_str().as_bytes()));
        if !inside {
            return Err(format!("the path {raw} leaves the scope through `..`"));
        }
    }
    Ok(())
}

/// Every record also names what its path started from by inode, as the
/// kernel saw it at the call (immune to a later chdir, chroot or exit): a
/// directory the snapshot has is found by its path, the root by the root's
/// inode. A directory the snapshot lacks is new since, and its names were
/// created by records already in the set.
fn anchored_candidates(snap: &Snapshot, changes: &ChangeSet, root: &Path) -> Vec<Vec<u8>> {
    let ino_of = |p: &Path| fsops::lstat(p).map(|st| st.st_ino).ok();
    let (root_ino, host_root_ino) = (ino_of(root), ino_of(Path::new("/")));
    let rb = root.as_os_str().as_bytes();
    let root_rel = &rb[rb.iter().take_while(|&&c| c == b'/').count()..];
    // A host-relative path, made root-relative (None: outside).
    let from_host = |host: Vec<u8>| -> Option<Vec<u8>> {
        if root_rel.is_empty() {
            return Some(host);
        }
        host.strip_prefix(root_rel)
            .and_then(|r| r.strip_prefix(b"/"))
            .map(<[u8]>::to_vec)
    };
    let mut by_ino: HashMap<u64, Vec<&[u8]>> = HashMap::new();
    for e in &snap.entries {
        by_ino.entry(e.ident.1).or_default().push(&e.path);
    }
    let mut out = Vec::new();
    for (ino, name) in &changes.anchored {
        let name = name.as_os_str().as_bytes();
        let mut found: Vec<Vec<u8>> = by_ino
            .get(ino)
            .into_iter()
            .flatten()
            .filter(|_| !name.starts_with(b"/"))
            .map(|base| lexical_join(base, name))
            .collect();
        if Some(*ino) == root_ino {
            found.push(lexical_join(b"", name));
        }
        if Some(*ino) == host_root_ino
            && let Some(rel) = from_host(lexical_join(b"", name))
        {
            found.push(rel);
        }
        out.extend(found.into_iter().filter(|rel| snap.in_scope(rel)));
    }
    out
}

/// Every member of a hardlink group a candidate belongs to: they share
/// content.
fn add_link_groups(snap: &Snapshot, cands: &mut BTreeSet<Vec<u8>>) {
    let groups: HashSet<u64> = snap
        .entries
        .iter()
        .filter(|e| cands.contains(&e.path))
        .filter_map(|e| e.link_group)
        .collect();
    cands.extend(
        snap.entries
            .iter()
            .filter(|e| e.link_group.is_some_and(|g| groups.contains(&g)))
            .map(|e| e.path.clone()),
    );
}
