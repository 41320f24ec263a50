//! One pass of a restore over a part of the scope: plan (which files need
//! their content, every object they need checked), mark the restore begun,
//! remove, put back, reset directories, sync. Every change goes through a
//! [`HostOps`]; the order of the steps is this file's, and
//! `order_tests.rs` pins it.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use super::super::{
    Entry, Kind, Result, Snapshot, SnapshotError, Store, io, join, links_differ, links_wanted,
    metadata_equal, private,
};
use super::host::{HostOps, ObjectState};
use super::{RestoreReport, crash_point};

/// The tree as the walk saw it, by path.
type Now<'a> = HashMap<&'a [u8], &'a (Entry, libc::stat)>;

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
pub(super) fn apply<H: HostOps>(
    ops: &H,
    store: &Store,
    snap: &Snapshot,
    current: &[(Entry, libc::stat)],
) -> Result<RestoreReport> {
    let t0 = std::time::Instant::now();
    let now_by_path: Now = current.iter().map(|c| (c.0.path.as_slice(), c)).collect();
    // Plan: which files need their content back. Unchanged files are known
    // by identity (or, after an earlier restore, by hash); only the objects
    // a restore reads need hashing before it starts.
    let needed = files_needing_content(ops, snap, current, &now_by_path)?;
    verify_objects(ops, snap, &needed)?;
    let journal = store.dir.join(format!("restore-{}.journal", snap.id));
    let resumed = journal.exists();
    if !resumed {
        // 0600 from creation, like every file of the store.
        private::create_private(&journal)?
            .write_all(snap.id.as_bytes())
            .map_err(io(&journal))?;
    }
    let mut p = Progress {
        report: RestoreReport {
            id: snap.id.clone(),
            resumed,
            ..Default::default()
        },
        changes: Changes {
            done: 0,
            crash_after: crash_point(),
        },
        touched_dirs: HashSet::new(),
    };
    let step =
        |what: &str| tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "restore: {what}");
    step("planned, objects verified");
    remove_extra(ops, snap, current, &mut p)?;
    step("extra entries removed");
    put_back(ops, snap, &now_by_path, &needed, &mut p)?;
    step("entries recreated");
    let reset_dirs = reset_dirs(ops, snap, &now_by_path, &mut p)?;
    step("directory metadata reset");
    let dirs: Vec<&Vec<u8>> = p.touched_dirs.iter().chain(&reset_dirs).collect();
    sync_dirs(ops, &dirs);
    step("directories synced");
    std::fs::remove_file(&journal).map_err(io(&journal))?;
    Ok(p.report)
}

/// Step 1: every object this restore will read (`needed`) is present and
/// hashes to its name, before anything is changed.
fn verify_objects<H: HostOps>(ops: &H, snap: &Snapshot, needed: &HashSet<Vec<u8>>) -> Result<()> {
    let mut checked = HashSet::new();
    for e in &snap.entries {
        let Some(h) = e.hash else { continue };
        if !needed.contains(&e.path) || !checked.insert(h) {
            continue;
        }
        let problem = match ops.check_object(&h)? {
            ObjectState::Intact => continue,
            ObjectState::Missing => "missing from the store",
            ObjectState::Corrupt => "corrupt (its content no longer hashes to its name)",
        };
        return Err(SnapshotError::BadObject {
            hash: hex::encode(h),
            path: format!("/{}", String::from_utf8_lossy(&e.path)),
            problem: problem.to_string(),
        });
    }
    Ok(())
}

/// Paths of the files (first of each hardlink group) that need a fresh
/// file: missing, other content, or an inode linked differently than
/// recorded (a hard link to somewhere else must not be fixed in place).
fn files_needing_content<H: HostOps>(
    ops: &H,
    snap: &Snapshot,
    current: &[(Entry, libc::stat)],
    now: &Now,
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
            Some((_, st)) if linked_ok => ops
                .content_matches(e, st)
                .map_err(io(&join(&snap.root, &e.path)))?,
            _ => false,
        };
        if !ok {
            out.insert(e.path.clone());
        }
    }
    Ok(out)
}

/// Step 3: remove what the snapshot does not have (or has as another
/// kind), children first.
fn remove_extra<H: HostOps>(
    ops: &H,
    snap: &Snapshot,
    current: &[(Entry, libc::stat)],
    p: &mut Progress,
) -> Result<()> {
    let wanted: HashMap<&[u8], &Entry> = snap
        .entries
        .iter()
        .map(|e| (e.path.as_slice(), e))
        .collect();
    for (e, _) in current.iter().rev() {
        let keep = wanted
            .get(e.path.as_slice())
            .is_some_and(|w| w.kind == e.kind);
        if !keep && !e.path.is_empty() {
            let full = join(&snap.root, &e.path);
            if ops.remove(&e.path).map_err(io(&full))? {
                p.report.removed += 1;
                p.did(&e.path);
            }
        }
    }
    Ok(())
}

/// Step 4: every entry of `snap` recreated, rewritten or relinked where the
/// walk's view (`now_by_path`) differs from it, parents first (the
/// snapshot is in walk order).
fn put_back<H: HostOps>(
    ops: &H,
    snap: &Snapshot,
    now_by_path: &Now,
    needed: &HashSet<Vec<u8>>,
    p: &mut Progress,
) -> Result<()> {
    // Each hardlink group's first path, and its inode when it was kept.
    type First = (Vec<u8>, Option<(u64, u64)>);
    let groups = snap.group_sizes();
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
                let kept = untouched && inode.is_some() && inode == *first_inode;
                if !kept && ops.relink(first, &e.path).map_err(io(&full))? {
                    p.report.recreated += 1;
                    p.did(&e.path);
                }
                continue;
            }
            group_first.insert(g, (e.path.clone(), if untouched { inode } else { None }));
        }
        if untouched {
            continue;
        }
        if e.kind == Kind::File && needed.contains(&e.path) {
            put_content(ops, e, p).map_err(io(&full))?;
            continue;
        }
        if ops.recreate(e).map_err(io(&full))? {
            p.report.recreated += 1;
            p.did(&e.path);
        }
        if e.kind != Kind::Dir
            && ops
                .set_metadata(e, links_wanted(e, &groups))
                .map_err(io(&full))?
        {
            p.report.metadata_reset += 1;
            p.did(&e.path);
        }
    }
    Ok(())
}

/// A file's content into a new file beside it, its metadata through that
/// file's descriptor, then renamed into place: a file is never
/// half-restored.
fn put_content<H: HostOps>(ops: &H, e: &Entry, p: &mut Progress) -> std::io::Result<()> {
    let staged = ops.stage_content(e)?;
    if let Err(err) = ops.stage_metadata(e, &staged) {
        ops.discard_staged(staged);
        return Err(err);
    }
    ops.commit_staged(staged)?;
    p.report.content_restored += 1;
    p.did(&e.path);
    Ok(())
}

/// Step 5: directory metadata last, deepest first, so restoring children
/// does not disturb a parent's mtime afterwards. Returns the directories
/// reset.
fn reset_dirs<H: HostOps>(
    ops: &H,
    snap: &Snapshot,
    now_by_path: &Now,
    p: &mut Progress,
) -> Result<Vec<Vec<u8>>> {
    let mut reset = Vec::new();
    for e in snap.entries.iter().rev().filter(|e| e.kind == Kind::Dir) {
        let was = now_by_path
            .get(e.path.as_slice())
            .filter(|c| c.0.kind == Kind::Dir);
        if was.is_some_and(|c| metadata_equal(&c.0, e)) && !p.touched_dirs.contains(&e.path) {
            continue;
        }
        let full = join(&snap.root, &e.path);
        if ops.set_metadata(e, 1).map_err(io(&full))? {
            p.report.metadata_reset += 1;
            reset.push(e.path.clone());
            p.changes.tick();
        }
    }
    Ok(reset)
}

/// Make it durable: rewritten files were synced as they were written;
/// syncing every directory we touched commits the removals, renames and
/// (on a journaling filesystem, with them) the metadata resets. Not
/// syncfs: that would also wait for unrelated dirty data on the same
/// filesystem, which on a busy host can be gigabytes. Several at once: a
/// journaling filesystem commits concurrent fsyncs together.
fn sync_dirs<H: HostOps>(ops: &H, dirs: &[&Vec<u8>]) {
    let per_thread = dirs.len().div_ceil(8).max(1);
    std::thread::scope(|s| {
        for chunk in dirs.chunks(per_thread) {
            s.spawn(move || chunk.iter().for_each(|d| ops.sync_dir(d)));
        }
    });
}
