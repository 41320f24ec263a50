//! Putting a scope back exactly as a snapshot recorded it.
//!
//! Order matters, and is the reason for this file's shape:
//! 1. Every object the snapshot needs is checked (present, and its content
//!    hashes to its name) before anything is touched: a damaged snapshot is
//!    refused and the scope left as it is.
//! 2. A marker file says a restore has begun (it is not a journal of
//!    planned actions). Every step after it is idempotent (it compares the
//!    tree with the snapshot and acts only on a difference), so an
//!    interrupted restore finishes when run again and gives the same
//!    result; the marker goes when it is done.
//! 3. What the snapshot does not know is removed, children first.
//! 4. Entries are recreated parents first. File content is written to a
//!    temporary name next to its target, given its owner, mode, xattrs and
//!    mtime there, and renamed into place: a file is never half-restored.
//!    Owner before mode before xattrs, because chown clears setuid bits
//!    and file capabilities.
//! 5. Directory metadata last, deepest first, so restoring children does
//!    not disturb a parent's mtime afterwards.
//!
//! Every change goes through [`beneath`]: paths are resolved by the kernel
//! beneath the root's descriptor with no symlink followed, and acted on
//! through the parent's or the node's descriptor. A file whose inode is
//! linked from elsewhere (more links than its hardlink group) is replaced
//! by a fresh file, never fixed in place, so no inode outside the scope is
//! changed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::beneath::{self, Root, XattrAt};
use super::{
    Entry, Excludes, Kind, Result, Snapshot, SnapshotError, Store, check_scope_ancestors, diff,
    fsops, hash_file, io, join, kind_of, links_differ, links_wanted, metadata_equal, walk_from,
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
/// that an interrupted restore finishes when run again. Compiled only with
/// the `test-seams` feature: a release binary never reads it.
#[cfg(feature = "test-seams")]
fn crash_point() -> Option<u64> {
    std::env::var("BACKSTOP_TEST_KILL_RESTORE_AFTER")
        .ok()
        .and_then(|v| v.parse().ok())
}

#[cfg(not(feature = "test-seams"))]
fn crash_point() -> Option<u64> {
    None
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
    check_scope_ancestors(&snap.root, &snap.scopes)?;
    let mut full_walk_reason = None;
    let focus = match changes {
        Some(c) => match &c.incomplete {
            Some(why) => {
                full_walk_reason = Some(format!("the change log is incomplete: {why}"));
                None
            }
            None => match Focus::new(&snap, c) {
                Ok(f) => Some(f),
                Err(why) => {
                    full_walk_reason = Some(format!("the change log is not trusted: {why}"));
                    None
                }
            },
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
    /// Err: why the log cannot guide this restore.
    fn new(snap: &Snapshot, changes: &ChangeSet) -> std::result::Result<Self, String> {
        // The root was canonical when the snapshot was taken; paths in the
        // log are normalised (ChangeSet::read), so prefixes compare whole
        // components.
        let root = snap.root.clone();
        // A `..` that leads out of the scope says the log was written by
        // something other than an honest resolver: trust none of it.
        for (clean, raw) in &changes.climbs {
            let inside = clean
                .strip_prefix(&root)
                .is_ok_and(|rel| snap.in_scope(rel.as_os_str().as_bytes()));
            if !inside {
                return Err(format!("the path {raw} leaves the scope through `..`"));
            }
        }
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
        Ok(Focus { roots, parents })
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

/// The counters of one restore, and what it touched.
struct Progress {
    report: RestoreReport,
    changes: Changes,
    /// Directories whose entries we added or removed: their mtime moved.
    touched_dirs: HashSet<Vec<u8>>,
}

impl Progress {
    /// One change made at `path`: its parent is synced at the end (and its
    /// mtime, moved when a name was added or removed, reset).
    fn did(&mut self, path: &[u8]) {
        let parent = path
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(&path[..0], |i| &path[..i]);
        self.touched_dirs.insert(parent.to_vec());
        self.changes.tick();
    }
}

/// Put `snap`'s entries back, given the tree now as `current` (the same
/// part of it the entries cover).
fn apply(
    store: &Store,
    snap: &Snapshot,
    current: Vec<(Entry, libc::stat)>,
) -> Result<RestoreReport> {
    let id = snap.id.as_str();
    let root = Root::open(&snap.root).map_err(io(&snap.root))?;
    let now_by_path: HashMap<&[u8], &(Entry, libc::stat)> =
        current.iter().map(|c| (c.0.path.as_slice(), c)).collect();
    // Plan: which files need their content back. Unchanged files are known
    // by identity (or, after an earlier restore, by hash); only the objects
    // a restore reads need hashing before it starts.
    let t0 = std::time::Instant::now();
    let needed = files_needing_content(snap, &root, &current, &now_by_path)?;
    verify_objects(store, snap, &needed.iter().map(|p| p.as_slice()).collect())?;
    let journal = store.dir.join(format!("restore-{id}.journal"));
    let resumed = journal.exists();
    if !resumed {
        // 0600 from creation, like every file of the store.
        use std::io::Write;
        super::private::create_private(&journal)?
            .write_all(id.as_bytes())
            .map_err(io(&journal))?;
    }

    let mut p = Progress {
        report: RestoreReport {
            id: id.to_string(),
            resumed,
            ..Default::default()
        },
        changes: Changes {
            done: 0,
            crash_after: crash_point(),
        },
        touched_dirs: HashSet::new(),
    };
    let wanted: HashMap<&[u8], &Entry> = snap
        .entries
        .iter()
        .map(|e| (e.path.as_slice(), e))
        .collect();
    tracing::debug!(
        ms = t0.elapsed().as_secs_f64() * 1e3,
        "restore: planned, objects verified"
    );
    // 3. Remove what the snapshot does not have (or has as another kind).
    for (e, _) in current.iter().rev() {
        let keep = wanted
            .get(e.path.as_slice())
            .is_some_and(|w| w.kind == e.kind);
        if !keep && !e.path.is_empty() {
            let full = join(&snap.root, &e.path);
            if remove(&root, &e.path).map_err(io(&full))? {
                p.report.removed += 1;
                p.did(&e.path);
            }
        }
    }
    tracing::debug!(
        ms = t0.elapsed().as_secs_f64() * 1e3,
        "restore: extra entries removed"
    );
    // 4. Recreate, parents first (the snapshot is in walk order).
    put_back(store, snap, &root, &now_by_path, &needed, &mut p)?;
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
        if was.is_some_and(|c| metadata_equal(&c.0, e)) && !p.touched_dirs.contains(&e.path) {
            continue;
        }
        let full = join(&snap.root, &e.path);
        if set_metadata(e, &root, 1).map_err(io(&full))? {
            p.report.metadata_reset += 1;
            reset_dirs.push(e.path.clone());
            p.changes.tick();
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
    let dirs: Vec<&Vec<u8>> = p.touched_dirs.iter().chain(&reset_dirs).collect();
    let per_thread = dirs.len().div_ceil(8).max(1);
    let root_ref = &root;
    std::thread::scope(|s| {
        for chunk in dirs.chunks(per_thread) {
            s.spawn(move || chunk.iter().for_each(|d| sync_dir(root_ref, d)));
        }
    });
    tracing::debug!(
        ms = t0.elapsed().as_secs_f64() * 1e3,
        "restore: directories synced"
    );
    std::fs::remove_file(&journal).map_err(io(&journal))?;
    Ok(p.report)
}

/// Step 4: every entry of `snap` recreated, rewritten or relinked where the
/// walk's view (`now_by_path`) differs from it, parents first.
fn put_back(
    store: &Store,
    snap: &Snapshot,
    root: &Root,
    now_by_path: &HashMap<&[u8], &(Entry, libc::stat)>,
    needed: &HashSet<Vec<u8>>,
    p: &mut Progress,
) -> Result<()> {
    let groups = snap.group_sizes();
    // Each hardlink group's first path, and its inode when it was kept.
    type First = (Vec<u8>, Option<(u64, u64)>);
    let mut group_first: HashMap<u64, First> = HashMap::new();
    for e in &snap.entries {
        // The walk's view is still true for kept entries of the same kind;
        // an entry it shows exactly as recorded needs no system call.
        let was = now_by_path
            .get(e.path.as_slice())
            .filter(|c| c.0.kind == e.kind);
        let inode = was.map(|c| (c.1.st_dev, c.1.st_ino));
        let untouched = was.is_some_and(|c| metadata_equal(&c.0, e))
            && (e.kind != Kind::File || !needed.contains(&e.path));
        let full = join(&snap.root, &e.path);
        if e.kind == Kind::File
            && let Some(g) = e.link_group
        {
            if let Some((first, first_inode)) = group_first.get(&g) {
                if !(untouched && inode.is_some() && inode == *first_inode) {
                    relink(root, first, &e.path, p).map_err(io(&full))?;
                }
                continue;
            }
            group_first.insert(g, (e.path.clone(), if untouched { inode } else { None }));
        }
        if untouched {
            continue;
        }
        if e.kind == Kind::File && needed.contains(&e.path) {
            put_content(store, e, root, p).map_err(io(&full))?;
            continue;
        }
        recreate(e, root, p).map_err(io(&full))?;
        if e.kind != Kind::Dir
            && set_metadata(e, root, links_wanted(e, &groups)).map_err(io(&full))?
        {
            p.report.metadata_reset += 1;
            p.did(&e.path);
        }
    }
    Ok(())
}

/// Remove `rel` (a directory with everything under it) beneath the root.
/// Ok(false): nothing was there, or its parent is gone.
fn remove(root: &Root, rel: &[u8]) -> std::io::Result<bool> {
    let (dir, name) = match root.parent(rel) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    beneath::remove_tree_at(dir.as_fd(), &name)
}

/// Make `rel` a hard link to its group's `first` unless it already is one.
fn relink(root: &Root, first: &[u8], rel: &[u8], p: &mut Progress) -> std::io::Result<()> {
    let (fdir, fname) = root.parent(first)?;
    let first_st = beneath::stat_at(fdir.as_fd(), &fname)?;
    let (dir, name) = root.parent(rel)?;
    let now = stat_or_none(dir.as_fd(), &name)?;
    if now.is_some_and(|st| (st.st_dev, st.st_ino) == (first_st.st_dev, first_st.st_ino)) {
        return Ok(());
    }
    if now.is_some() {
        beneath::unlink_at(dir.as_fd(), &name, false)?;
    }
    beneath::link_at(fdir.as_fd(), &fname, dir.as_fd(), &name)?;
    p.report.recreated += 1;
    p.did(rel);
    Ok(())
}

fn stat_or_none(dir: std::os::fd::BorrowedFd, name: &CStr) -> std::io::Result<Option<libc::stat>> {
    match beneath::stat_at(dir, name) {
        Ok(st) => Ok(Some(st)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Create a missing (or wrong) directory, symlink or special file; a file
/// that is there with the right content is left for its metadata.
fn recreate(e: &Entry, root: &Root, p: &mut Progress) -> std::io::Result<()> {
    if e.path.is_empty() {
        return Ok(());
    }
    let (dir, name) = root.parent(&e.path)?;
    let dir = dir.as_fd();
    let now = stat_or_none(dir, &name)?;
    let ok = match e.kind {
        Kind::Dir | Kind::File => now.is_some(),
        Kind::Symlink => {
            now.is_some()
                && beneath::readlink_at(dir, &name)? == e.target.clone().unwrap_or_default()
        }
        Kind::Fifo | Kind::CharDev | Kind::BlockDev | Kind::Socket => now.is_some_and(|st| {
            st.st_mode & libc::S_IFMT == e.mode & libc::S_IFMT && st.st_rdev == e.rdev
        }),
    };
    if ok {
        return Ok(());
    }
    if now.is_some() {
        beneath::unlink_at(dir, &name, false)?;
    }
    match e.kind {
        // Mode in step 5; 0700 until then.
        Kind::Dir => beneath::mkdir_at(dir, &name)?,
        Kind::Symlink => beneath::symlink_at(e.target.as_deref().unwrap_or_default(), dir, &name)?,
        // Planned as present and intact, gone since: another writer.
        Kind::File => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "vanished under the restore",
            ));
        }
        _ => beneath::mknod_at(dir, &name, e.mode, e.rdev)?,
    }
    p.report.recreated += 1;
    p.did(&e.path);
    Ok(())
}

/// Whether the file (as `st`, opened beneath the root) still has the
/// entry's content.
fn content_ok(e: &Entry, root: &Root, st: &libc::stat) -> std::io::Result<bool> {
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_size as u64 != e.size {
        return Ok(false);
    }
    let untouched = (st.st_dev, st.st_ino, st.st_ctime, st.st_ctime_nsec) == e.ident
        && (st.st_mtime, st.st_mtime_nsec) == e.mtime;
    if untouched {
        return Ok(true);
    }
    let mut f = std::fs::File::from(root.open_beneath(&e.path, libc::O_RDONLY)?);
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher)?;
    Ok(<[u8; 32]>::from(hasher.finalize()) == e.hash.unwrap_or_default())
}

/// Paths of the files (first of each hardlink group) that need a fresh
/// file: missing, other content, or an inode linked differently than
/// recorded (a hard link to somewhere else must not be fixed in place).
fn files_needing_content(
    snap: &Snapshot,
    root: &Root,
    current: &[(Entry, libc::stat)],
    now: &HashMap<&[u8], &(Entry, libc::stat)>,
) -> Result<HashSet<Vec<u8>>> {
    let relinked = links_differ(snap, current);
    // A group is relinked when any member is.
    let bad_groups: HashSet<u64> = snap
        .entries
        .iter()
        .filter(|e| relinked.contains(&e.path))
        .filter_map(|e| e.link_group)
        .collect();
    let mut out = HashSet::new();
    let mut groups = HashSet::new();
    for e in snap.entries.iter().filter(|e| e.kind == Kind::File) {
        if let Some(g) = e.link_group
            && !groups.insert(g)
        {
            continue;
        }
        let linked_ok =
            !relinked.contains(&e.path) && e.link_group.is_none_or(|g| !bad_groups.contains(&g));
        let ok = match now.get(e.path.as_slice()) {
            Some((_, st)) if linked_ok => {
                content_ok(e, root, st).map_err(io(&join(&snap.root, &e.path)))?
            }
            _ => false,
        };
        if !ok {
            out.insert(e.path.clone());
        }
    }
    Ok(out)
}

/// Write a file's content into a new file beside it (O_EXCL, O_NOFOLLOW,
/// 0600), give it its metadata through its descriptor, and rename it into
/// place: a file is never half-restored, and whatever was at the name
/// (maybe a hard link to an inode outside the scope) is only unlinked.
fn put_content(store: &Store, e: &Entry, root: &Root, p: &mut Progress) -> std::io::Result<()> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let hash = e.hash.expect("files carry a hash");
    let (dir, name) = root.parent(&e.path)?;
    let dir = dir.as_fd();
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp =
        std::ffi::CString::new(format!(".bsrestore-{}-{seq}", std::process::id())).expect("no NUL");
    // A leftover of a killed restore that had the same pid.
    let _ = beneath::unlink_at(dir, &tmp, false);
    let dst = beneath::create_excl(dir, &tmp)?;
    let written = (|| {
        let obj = store.object_path(&hash);
        let mut src = std::fs::File::open(&obj)?;
        if fsops::reflink(&src, &dst).is_err() {
            std::io::copy(&mut src, &mut &dst)?;
        }
        dst.sync_data()?;
        set_file_metadata(e, dst.as_fd())
    })();
    if let Err(err) = written {
        let _ = beneath::unlink_at(dir, &tmp, false);
        return Err(err);
    }
    drop(dst);
    beneath::rename_at(dir, &tmp, &name)?;
    p.report.content_restored += 1;
    p.did(&e.path);
    Ok(())
}

/// Owner, mode, xattrs, mtime of a freshly written file, on its descriptor.
fn set_file_metadata(e: &Entry, fd: std::os::fd::BorrowedFd) -> std::io::Result<()> {
    beneath::chown_fd(fd, e.uid, e.gid)?;
    // After chown, which clears setuid bits and file capabilities.
    beneath::chmod_fd(fd, e.mode)?;
    let x = XattrAt::Node(fd);
    for (name, value) in &e.xattrs {
        x.set(name, value)?;
    }
    beneath::set_times_fd(fd, e.mtime.0, e.mtime.1)
}

/// Owner, then mode, then xattrs, then mtime of the entry as it is now
/// beneath the root; each only when it differs. Returns whether anything
/// changed. Acts on the node's own descriptor, after checking it is the
/// kind recorded and has no more links than `links` (else someone linked
/// it from elsewhere since the plan: refuse rather than change it).
fn set_metadata(e: &Entry, root: &Root, links: u64) -> std::io::Result<bool> {
    let parent = if e.path.is_empty() {
        None
    } else {
        Some(root.parent(&e.path)?)
    };
    let node: OwnedFd = match &parent {
        None => root.open_beneath(b"", libc::O_PATH | libc::O_DIRECTORY)?,
        Some((dir, name)) => beneath::open_node(dir.as_fd(), name)?,
    };
    let fd = node.as_fd();
    let st = beneath::fstat(fd)?;
    if kind_of(st.st_mode) != e.kind || (e.kind == Kind::File && st.st_nlink as u64 > links) {
        return Err(std::io::Error::other(format!(
            "changed under the restore (now {:?} with {} links), left alone",
            kind_of(st.st_mode),
            st.st_nlink
        )));
    }
    let mut changed = false;
    if (st.st_uid, st.st_gid) != (e.uid, e.gid) {
        beneath::chown_fd(fd, e.uid, e.gid)?;
        changed = true;
    }
    // chown may have cleared setuid/setgid: read the mode again.
    let st = if changed { beneath::fstat(fd)? } else { st };
    if e.kind != Kind::Symlink && st.st_mode & 0o7777 != e.mode & 0o7777 {
        beneath::chmod_fd(fd, e.mode)?;
        changed = true;
    }
    let x = match &parent {
        Some((dir, name)) if e.kind == Kind::Symlink => XattrAt::Link(dir.as_fd(), name),
        _ => XattrAt::Node(fd),
    };
    let now_x = x.list()?;
    if now_x != e.xattrs {
        for (name, _) in &now_x {
            if !e.xattrs.iter().any(|(n, _)| n == name) {
                x.remove(name)?;
            }
        }
        for (name, value) in &e.xattrs {
            if !now_x.iter().any(|(n, v)| n == name && v == value) {
                x.set(name, value)?;
            }
        }
        changed = true;
    }
    let st = beneath::fstat(fd)?;
    if (st.st_mtime, st.st_mtime_nsec) != e.mtime {
        beneath::set_times_fd(fd, e.mtime.0, e.mtime.1)?;
        changed = true;
    }
    Ok(changed)
}

fn sync_dir(root: &Root, rel: &[u8]) {
    if let Ok(fd) = root.open_beneath(rel, libc::O_RDONLY | libc::O_DIRECTORY) {
        let _ = std::fs::File::from(fd).sync_all();
    }
}
