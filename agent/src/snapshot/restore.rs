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

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{
    Entry, Kind, Result, Snapshot, SnapshotError, Store, diff, fsops, hash_file, io, join,
    metadata_equal,
};

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

/// Restore snapshot `id`.
pub fn restore(store: &Store, id: &str, verify: bool) -> Result<RestoreReport> {
    let snap = store.load(id)?;
    let root = &snap.root;
    // One walk of the scope as it is now serves the plan and every step.
    let current = snap.walk_now()?;
    let now_by_path: HashMap<&[u8], &(Entry, libc::stat)> =
        current.iter().map(|c| (c.0.path.as_slice(), c)).collect();
    // Plan: which files need their content back. Unchanged files are known
    // by identity (or, after an earlier restore, by hash); only the objects
    // a restore reads need hashing before it starts.
    let needed = files_needing_content(&snap, &now_by_path)?;
    verify_objects(store, &snap, &needed.iter().map(|p| p.as_slice()).collect())?;
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
    // same filesystem, which on a busy host can be gigabytes.
    for dir in touched_dirs.iter().chain(&reset_dirs) {
        sync_dir(&join(root, dir));
    }
    std::fs::remove_file(&journal).map_err(io(&journal))?;
    if verify {
        report.verified = Some(diff(&snap)?.is_empty());
    }
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
