//! Putting a scope back exactly as a snapshot recorded it.
//!
//! Order matters, and is the reason for this file's shape:
//! 1. Every object the snapshot needs is checked (present, and its content
//!    hashes to its name) before anything is touched: a damaged snapshot is
//!    refused and the scope left as it is.
//! 2. A journal marks the restore as begun. Every step after it is
//!    idempotent (it compares the tree with the snapshot and acts only on a
//!    difference), so an interrupted restore finishes when run again and
//!    gives the same result; the journal goes when it is done.
//! 3. What the snapshot does not know is removed, children first.
//! 4. Entries are recreated parents first. File content is written to a
//!    temporary name next to its target, given its owner, mode, xattrs and
//!    mtime there, and renamed into place: a file is never half-restored.
//!    Owner before mode before xattrs, because chown clears setuid bits
//!    and file capabilities.
//! 5. Directory metadata last, deepest first, so restoring children does
//!    not disturb a parent's mtime afterwards.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{
    Entry, Excludes, Kind, Result, Snapshot, SnapshotError, Store, diff, fsops, hash_file, io,
    join, metadata_equal, walk_from,
};
use crate::changes::ChangeSet;

#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreReport {
    pub id: String,
    /// Paths removed because the snapshot did not have them.
    pub removed: u64,
    /// Files whose content was put back.
    pub content_restored: u64,
    /// Entries recreated (dirs, links, symlinks, special files).
    pub recreated: u64,
    /// Entries whose owner, mode, xattrs or mtime were reset.
    pub metadata_reset: u64,
    /// A previous restore of this snapshot had been interrupted.
    pub resumed: bool,
    /// With --verify: the scope compared equal to the snapshot afterwards.
    pub verified: Option<bool>,
    /// With a change log: the entries looked at (the rest of the scope was
    /// not).
    pub looked_at: Option<u64>,
    /// Why a change log given was not used.
    pub full_walk_reason: Option<String>,
    /// With a change log and --verify: differences the log did not name,
    /// found by the full compare and repaired by a full restore.
    pub missed_by_changes: Vec<String>,
}

/// A test seam: crash (SIGKILL ourselves) after this many changes, to prove
/// that an interrupted restore finishes when run again.
fn crash_point() -> Option<u64> {
    std::env::var("BACKSTOP_TEST_KILL_RESTORE_AFTER")
        .ok()
        .and_then(|v| v.parse().ok())
}

struct Changes {
    done: u64,
    crash_after: Option<u64>,
}

impl Changes {
    fn tick(&mut self) {
        self.done += 1;
        if self.crash_after.is_some_and(|n| self.done >= n) {
            // SAFETY: signalling ourselves; SIGKILL cannot be caught.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    }
}

/// Every object this restore will read (`needed`) is present and hashes to
/// its name.
fn verify_objects(store: &Store, snap: &Snapshot, needed: &HashSet<&[u8]>) -> Result<()> {
    let mut checked = HashSet::new();
    for e in &snap.entries {
        let Some(h) = e.hash else { continue };
        if !needed.contains(e.path.as_slice()) || !checked.insert(h) {
            continue;
        }
        let bad = |problem: &str| SnapshotError::BadObject {
            hash: hex::encode(h),
            path: format!("/{}", String::from_utf8_lossy(&e.path)),
            problem: problem.to_string(),
        };
        let obj = store.object_path(&h);
        if !obj.exists() {
            return Err(bad("missing from the store"));
        }
        if hash_file(&obj)? != h {
            return Err(bad("corrupt (its content no longer hashes to its name)"));
        }
    }
    Ok(())
}

/// Restore snapshot `id`; with a complete change log, looking only at the
/// paths it names (see [`Focus`]).
pub fn restore(
    store: &Store,
    id: &str,
    verify: bool,
    changes: Option<&ChangeSet>,
) -> Result<RestoreReport> {
    let t0 = std::time::Instant::now();
    let snap = store.load(id)?;
    let mut full_walk_reason = None;
    let focus = match changes {
        Some(c) => match &c.incomplete {
            Some(why) => {
                full_walk_reason = Some(format!("the change log is incomplete: {why}"));
                None
            }
            None => Some(Focus::new(&snap, c)),
        },
        None => None,
    };
    let mut report = match &focus {
        Some(f) => {
            tracing::debug!(
                ms = t0.elapsed().as_secs_f64() * 1e3,
                "restore: manifest loaded, focus built"
            );
            let (part, current) = f.view(&snap)?;
            let looked_at = current.len() as u64;
            tracing::debug!(
                ms = t0.elapsed().as_secs_f64() * 1e3,
                entries = looked_at,
                "restore: focus walked"
            );
            let mut r = apply(store, &part, current)?;
            r.looked_at = Some(looked_at);
            r
        }
        // One walk of the scope as it is now serves the plan and every step.
        None => apply(store, &snap, snap.walk_now()?)?,
    };
    report.full_walk_reason = full_walk_reason;
    if verify {
        let d = diff(&snap)?;
        if !d.is_empty() && focus.is_some() {
            // Something changed that the log did not name (a write through
            // an fd inherited from outside the tree, io_uring, a process
            // outside the tree): say what, and repair it the slow way.
            report.missed_by_changes = d
                .added
                .iter()
                .chain(&d.changed)
                .chain(&d.removed)
                .cloned()
                .collect();
            let again = apply(store, &snap, snap.walk_now()?)?;
            report.removed += again.removed;
            report.content_restored += again.content_restored;
            report.recreated += again.recreated;
            report.metadata_reset += again.metadata_reset;
            report.verified = Some(diff(&snap)?.is_empty());
        } else {
            report.verified = Some(d.is_empty());
        }
    }
    Ok(report)
}

/// Where a restore guided by a change log looks: each logged path inside
/// the scope with everything under it (a renamed or removed directory
/// takes its subtree along), every member of a hardlink group one of them
/// belongs to (they share content), and their parent directories alone
/// (adding or removing a name moved their mtime).
struct Focus {
    roots: HashSet<Vec<u8>>,
    parents: HashSet<Vec<u8>>,
}

impl Focus {
    fn new(snap: &Snapshot, changes: &ChangeSet) -> Self {
        let root = std::fs::canonicalize(&snap.root).unwrap_or_else(|_| snap.root.clone());
        let mut cands: BTreeSet<Vec<u8>> = changes
            .paths
            .iter()
            .filter_map(|p| p.strip_prefix(&root).ok())
            .map(|rel| rel.as_os_str().as_bytes().to_vec())
            .filter(|rel| snap.in_scope(rel))
            .collect();
        // Every record also names what its path started from by inode, as
        // the kernel saw it at the call (immune to a later chdir, chroot or
        // exit): a directory the snapshot has is found by its path, the
        // root by the root's inode. A directory the snapshot lacks is new
        // since, and its names were created by records already in the set.
        if !changes.anchored.is_empty() {
            let ino_of = |p: &Path| fsops::lstat(p).map(|st| st.st_ino).ok();
            let (root_ino, host_root_ino) = (ino_of(&root), ino_of(Path::new("/")));
            let rb = root.as_os_str().as_bytes();
            let root_rel = &rb[rb.iter().take_while(|&&c| c == b'/').count()..];
            // A host-relative path, made root-relative (None: outside).
            let from_host = |host: Vec<u8>| -> Option<Vec<u8>> {
                if root_rel.is_empty() {
                    return Some(host);
                }
                host.strip_prefix(root_rel)
                    .and_then(|r| r.strip_prefix(b"/"))
                    .map(|r| r.to_vec())
            };
            let mut by_ino: HashMap<u64, Vec<&[u8]>> = HashMap::new();
            for e in &snap.entries {
                by_ino.entry(e.ident.1).or_default().push(&e.path);
            }
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
                cands.extend(found.into_iter().filter(|rel| snap.in_scope(rel)));
            }
        }
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
            .map(|a| a.to_vec())
            .collect();
        Focus { roots, parents }
    }

    fn contains(&self, path: &[u8]) -> bool {
        self.parents.contains(path)
            || self.roots.contains(path)
            || ancestors(path).any(|a| self.roots.contains(a))
    }

    /// The snapshot's entries in focus, and the tree now in focus (parents
    /// before children).
    fn view(&self, snap: &Snapshot) -> Result<(Snapshot, Vec<(Entry, libc::stat)>)> {
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

/// Put `snap`'s entries back, given the tree now as `current` (the same
/// part of it the entries cover).
fn apply(
    store: &Store,
    snap: &Snapshot,
    current: Vec<(Entry, libc::stat)>,
) -> Result<RestoreReport> {
    let id = snap.id.as_str();
    let root = &snap.root;
    let now_by_path: HashMap<&[u8], &(Entry, libc::stat)> =
        current.iter().map(|c| (c.0.path.as_slice(), c)).collect();
    // Plan: which files need their content back. Unchanged files are known
    // by identity (or, after an earlier restore, by hash); only the objects
    // a restore reads need hashing before it starts.
    let t0 = std::time::Instant::now();
    let needed = files_needing_content(snap, &now_by_path)?;
    verify_objects(store, snap, &needed.iter().map(|p| p.as_slice()).collect())?;
    let journal = store.dir.join(format!("restore-{id}.journal"));
    let resumed = journal.exists();
    std::fs::write(&journal, id).map_err(io(&journal))?;

    let mut report = RestoreReport {
        id: id.to_string(),
        resumed,
        ..Default::default()
    };
    let mut changes = Changes {
        done: 0,
        crash_after: crash_point(),
    };
    let wanted: HashMap<&[u8], &Entry> = snap
        .entries
        .iter()
        .map(|e| (e.path.as_slice(), e))
        .collect();
    // Directories whose entries we add or remove: their mtime moves.
    let mut touched_dirs: HashSet<Vec<u8>> = HashSet::new();
    let mut touch = |path: &[u8]| {
        let parent = path
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(&path[..0], |i| &path[..i]);
        touched_dirs.insert(parent.to_vec());
    };

    tracing::debug!(
        ms = t0.elapsed().as_secs_f64() * 1e3,
        "restore: planned, objects verified"
    );
    // 3. Remove what the snapshot does not have (or has as another kind).
    for (e, _) in current.iter().rev() {
        let keep = wanted
            .get(e.path.as_slice())
            .is_some_and(|w| w.kind == e.kind);
        if !keep {
            let full = join(root, &e.path);
            let r = if e.kind == Kind::Dir {
                std::fs::remove_dir_all(&full)
            } else {
                std::fs::remove_file(&full)
            };
            match r {
                Ok(()) => {
                    report.removed += 1;
                    touch(&e.path);
                    changes.tick();
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(io(&full)(err)),
            }
        }
    }

    tracing::debug!(
        ms = t0.elapsed().as_secs_f64() * 1e3,
        "restore: extra entries removed"
    );
    // 4. Recreate, parents first (the snapshot is in walk order).
    let mut group_first: HashMap<u64, (PathBuf, Option<(u64, u64)>)> = HashMap::new();
    for e in &snap.entries {
        // The walk's view is still true for kept entries of the same kind;
        // an entry it shows exactly as recorded needs no system call.
        let was = now_by_path
            .get(e.path.as_slice())
            .filter(|c| c.0.kind == e.kind);
        let inode = was.map(|c| (c.1.st_dev, c.1.st_ino));
        let untouched = was.is_some_and(|c| metadata_equal(&c.0, e))
            && (e.kind != Kind::File || !needed.contains(&e.path));
        let full = join(root, &e.path);
        if e.kind == Kind::File
            && let Some(g) = e.link_group
        {
            if let Some((first, first_inode)) = group_first.get(&g) {
                if untouched && inode.is_some() && inode == *first_inode {
                    continue;
                }
                let first_st = fsops::lstat(first).map_err(io(first))?;
                let now = fsops::lstat(&full).ok();
                let linked = now
                    .is_some_and(|st| st.st_ino == first_st.st_ino && st.st_dev == first_st.st_dev);
                if !linked {
                    if now.is_some() {
                        std::fs::remove_file(&full).map_err(io(&full))?;
                    }
                    std::fs::hard_link(first, &full).map_err(io(&full))?;
                    report.recreated += 1;
                    touch(&e.path);
                    changes.tick();
                }
                continue;
            }
            group_first.insert(g, (full.clone(), if untouched { inode } else { None }));
        }
        if untouched {
            continue;
        }
        let now = match fsops::lstat(&full) {
            Ok(st) => Some(st),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(err) => return Err(io(&full)(err)),
        };
        match e.kind {
            Kind::Dir => {
                if now.is_none() {
                    std::fs::create_dir(&full).map_err(io(&full))?;
                    report.recreated += 1;
                    touch(&e.path);
                    changes.tick();
                }
                // Metadata in step 5.
                continue;
            }
            Kind::File => {
                if now.is_none() || needed.contains(&e.path) {
                    put_content(store, e, &full)?;
                    report.content_restored += 1;
                    touch(&e.path);
                    changes.tick();
                    continue;
                }
            }
            Kind::Symlink => {
                let target = e.target.clone().unwrap_or_default();
                let ok = now.is_some()
                    && std::fs::read_link(&full).ok().is_some_and(|t| {
                        std::os::unix::ffi::OsStrExt::as_bytes(t.as_os_str()) == target
                    });
                if !ok {
                    if now.is_some() {
                        std::fs::remove_file(&full).map_err(io(&full))?;
                    }
                    std::os::unix::fs::symlink(fsops::os(&target), &full).map_err(io(&full))?;
                    report.recreated += 1;
                    touch(&e.path);
                    changes.tick();
                }
            }
            Kind::Fifo | Kind::CharDev | Kind::BlockDev | Kind::Socket => {
                let ok = now.is_some_and(|st| {
                    st.st_mode & libc::S_IFMT == e.mode & libc::S_IFMT && st.st_rdev == e.rdev
                });
                if !ok {
                    if now.is_some() {
                        std::fs::remove_file(&full).map_err(io(&full))?;
                    }
                    fsops::mknod(&full, e.mode, e.rdev).map_err(io(&full))?;
                    report.recreated += 1;
                    touch(&e.path);
                    changes.tick();
                }
            }
        }
        if set_metadata(e, &full)? {
            report.metadata_reset += 1;
            touch(&e.path);
            changes.tick();
        }
    }

    tracing::debug!(
        ms = t0.elapsed().as_secs_f64() * 1e3,
        "restore: entries recreated"
    );
    // 5. Directories last, deepest first.
    let mut reset_dirs = Vec::new();
    for e in snap.entries.iter().rev().filter(|e| e.kind == Kind::Dir) {
        let was = now_by_path
            .get(e.path.as_slice())
            .filter(|c| c.0.kind == Kind::Dir);
        if was.is_some_and(|c| metadata_equal(&c.0, e)) && !touched_dirs.contains(&e.path) {
            continue;
        }
        let full = join(root, &e.path);
        if set_metadata(e, &full)? {
            report.metadata_reset += 1;
            reset_dirs.push(e.path.clone());
            changes.tick();
        }
    }
    // Make it durable: rewritten files were synced as they were written;
    // syncing every directory we touched commits the removals, renames
    // and (on a journaling filesystem, with them) the metadata resets.
    // Not syncfs: that would also wait for unrelated dirty data on the
    // same filesystem, which on a busy host can be gigabytes. Several at
    // once: a journaling filesystem commits concurrent fsyncs together.
    tracing::debug!(
        ms = t0.elapsed().as_secs_f64() * 1e3,
        "restore: directory metadata reset"
    );
    let dirs: Vec<PathBuf> = touched_dirs
        .iter()
        .chain(&reset_dirs)
        .map(|d| join(root, d))
        .collect();
    let per_thread = dirs.len().div_ceil(8).max(1);
    std::thread::scope(|s| {
        for chunk in dirs.chunks(per_thread) {
            s.spawn(move || chunk.iter().for_each(|d| sync_dir(d)));
        }
    });
    tracing::debug!(
        ms = t0.elapsed().as_secs_f64() * 1e3,
        "restore: directories synced"
    );
    std::fs::remove_file(&journal).map_err(io(&journal))?;
    Ok(report)
}

/// Whether the file at `full` (as `st`) still has the entry's content.
fn content_ok(e: &Entry, full: &Path, st: &libc::stat) -> Result<bool> {
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_size as u64 != e.size {
        return Ok(false);
    }
    let untouched = (st.st_dev, st.st_ino, st.st_ctime, st.st_ctime_nsec) == e.ident
        && (st.st_mtime, st.st_mtime_nsec) == e.mtime;
    Ok(untouched || hash_file(full)? == e.hash.unwrap_or_default())
}

/// Paths of the files (first of each hardlink group) whose content differs
/// from the snapshot's or that are missing, judged from the walk's view.
fn files_needing_content(
    snap: &Snapshot,
    now: &HashMap<&[u8], &(Entry, libc::stat)>,
) -> Result<HashSet<Vec<u8>>> {
    let mut out = HashSet::new();
    let mut groups = HashSet::new();
    for e in snap.entries.iter().filter(|e| e.kind == Kind::File) {
        if let Some(g) = e.link_group
            && !groups.insert(g)
        {
            continue;
        }
        let full = join(&snap.root, &e.path);
        let ok = match now.get(e.path.as_slice()) {
            Some((_, st)) => content_ok(e, &full, st)?,
            None => false,
        };
        if !ok {
            out.insert(e.path.clone());
        }
    }
    Ok(out)
}

/// Write a file's content under a temporary name beside it, with its
/// metadata, and rename it into place.
fn put_content(store: &Store, e: &Entry, full: &Path) -> Result<()> {
    let hash = e.hash.expect("files carry a hash");
    let obj = store.object_path(&hash);
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = full.with_file_name(format!(".bsrestore-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let src = std::fs::File::open(&obj).map_err(io(&obj))?;
    let dst = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    if fsops::reflink(&src, &dst).is_err() {
        let mut src = src;
        let mut dst2 = &dst;
        std::io::copy(&mut src, &mut dst2).map_err(io(&tmp))?;
    }
    dst.sync_data().map_err(io(&tmp))?;
    drop(dst);
    set_metadata(e, &tmp)?;
    std::fs::rename(&tmp, full).map_err(io(full))?;
    Ok(())
}

/// Owner, then mode, then xattrs, then mtime; each only when it differs.
/// Returns whether anything changed.
fn set_metadata(e: &Entry, full: &Path) -> Result<bool> {
    let st = fsops::lstat(full).map_err(io(full))?;
    let mut changed = false;
    if (st.st_uid, st.st_gid) != (e.uid, e.gid) {
        fsops::lchown(full, e.uid, e.gid).map_err(io(full))?;
        changed = true;
    }
    // chown may have cleared setuid/setgid: read the mode again.
    let st = if changed {
        fsops::lstat(full).map_err(io(full))?
    } else {
        st
    };
    if e.kind != Kind::Symlink && st.st_mode & 0o7777 != e.mode & 0o7777 {
        fsops::chmod(full, e.mode).map_err(io(full))?;
        changed = true;
    }
    let now_x = fsops::xattrs(full).map_err(io(full))?;
    if now_x != e.xattrs {
        for (name, _) in &now_x {
            if !e.xattrs.iter().any(|(n, _)| n == name) {
                fsops::remove_xattr(full, name).map_err(io(full))?;
            }
        }
        for (name, value) in &e.xattrs {
            if !now_x.iter().any(|(n, v)| n == name && v == value) {
                fsops::set_xattr(full, name, value).map_err(io(full))?;
            }
        }
        changed = true;
    }
    let st = fsops::lstat(full).map_err(io(full))?;
    if (st.st_mtime, st.st_mtime_nsec) != e.mtime {
        fsops::set_mtime(full, e.mtime.0, e.mtime.1).map_err(io(full))?;
        changed = true;
    }
    Ok(changed)
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}
