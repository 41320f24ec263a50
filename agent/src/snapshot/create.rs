//! Taking a snapshot: walk the scope, reuse what earlier snapshots already
//! hashed (by identity), refuse before copying when the store has no room,
//! store the rest, save the manifest. The store lock is held shared from
//! start to the saved manifest, so a gc never takes an object in between.

use std::collections::HashMap;

use serde::Serialize;

use super::store::unique;
use super::walk::{Excludes, check_scope_ancestors, scope_rel, walk};
use super::{Entry, Kind, Result, Scope, Snapshot, SnapshotError, Store, fsops, io, join};

fn realtime_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, Clone, Serialize)]
pub struct CreateReport {
    pub id: String,
    pub entries: usize,
    pub bytes: u64,
    /// Files whose content was read and hashed (the rest were unchanged
    /// since an earlier snapshot).
    pub hashed_files: usize,
    pub hashed_bytes: u64,
}

/// What says a file is unchanged without reading it: (dev, inode, ctime,
/// ctime ns, size, mtime). Any write changes ctime.
type Identity = (u64, u64, i64, i64, u64, (i64, i64));

/// Take a snapshot of `scope` into `store`.
pub fn create(store: &Store, scope: &Scope) -> Result<CreateReport> {
    create_with(store, scope, &backstop_common::progress::Silent)
}

/// [`create`], reporting the walk and then each entry stored to `progress`.
pub fn create_with(
    store: &Store,
    scope: &Scope,
    progress: &dyn backstop_common::progress::Progress,
) -> Result<CreateReport> {
    // Held until the manifest is saved: gc must not take what we store.
    let _lock = store.lock_create()?;
    let excludes = Excludes::new(&scope.excludes)?;
    let root = std::fs::canonicalize(&scope.root).map_err(io(&scope.root))?;
    let scope = Scope {
        root,
        ..scope.clone()
    };
    let rels = scope
        .paths
        .iter()
        .map(|p| scope_rel(p))
        .collect::<Result<Vec<_>>>()?;
    check_scope_ancestors(&scope.root, &rels)?;
    let snapshots = store.list()?;
    // The newest earlier snapshot of this root spares re-reading xattrs.
    let earlier: HashMap<&[u8], &Entry> = snapshots
        .iter()
        .rev()
        .find(|s| s.root == scope.root)
        .map(|s| s.entries.iter().map(|e| (e.path.as_slice(), e)).collect())
        .unwrap_or_default();
    let started_ns = realtime_ns();
    progress.note("walking the scope");
    let mut walked = walk(&scope, &excludes, &earlier)?;
    spoil_racy(&mut walked, started_ns);
    let mut known = known_content(&snapshots);
    check_room(store, &walked, &known)?;
    let mut stored = Stored::default();
    progress.total(walked.len() as u64);
    progress.note("storing content");
    let entries = store_content(store, &scope, walked, &mut known, &mut stored, progress)?;
    let snap = Snapshot {
        id: format!(
            "s{:x}{:04x}",
            now_ms(),
            u32::from(std::process::id() as u16) ^ unique() as u32
        ),
        root: scope.root.clone(),
        scopes: rels,
        excludes: scope.excludes.clone(),
        created_ms: now_ms(),
        entries,
    };
    store.save(&snap)?;
    Ok(CreateReport {
        id: snap.id.clone(),
        entries: snap.entries.len(),
        bytes: snap.bytes(),
        hashed_files: stored.files,
        hashed_bytes: stored.bytes,
    })
}

/// "Racily clean" (as git calls it): ctime has the kernel's coarse clock,
/// so a file changed again within the tick of its last change keeps its
/// ctime. An entry changed that close to the walk cannot vouch for itself
/// later; its identity is spoiled so it is always re-read.
fn spoil_racy(walked: &mut [(Entry, libc::stat)], started_ns: i64) {
    const RACY_NS: i128 = 100_000_000;
    for (e, _) in walked {
        let ctime_ns = i128::from(e.ident.2) * 1_000_000_000 + i128::from(e.ident.3);
        if ctime_ns >= i128::from(started_ns) - RACY_NS {
            e.ident.2 = i64::MIN;
        }
    }
}

fn key(e: &Entry) -> Identity {
    (e.ident.0, e.ident.1, e.ident.2, e.ident.3, e.size, e.mtime)
}

/// Content known from earlier snapshots, by identity.
fn known_content(snapshots: &[Snapshot]) -> HashMap<Identity, [u8; 32]> {
    let mut known = HashMap::new();
    for s in snapshots {
        for e in &s.entries {
            if let Some(h) = e.hash {
                known.insert(key(e), h);
            }
        }
    }
    known
}

/// Refuse before copying anything if the worst case does not fit.
fn check_room(
    store: &Store,
    walked: &[(Entry, libc::stat)],
    known: &HashMap<Identity, [u8; 32]>,
) -> Result<()> {
    let need: u64 = walked
        .iter()
        .filter(|(e, _)| {
            e.kind == Kind::File
                && !known
                    .get(&key(e))
                    .is_some_and(|h| store.object_path(h).exists())
        })
        .map(|(e, _)| e.size)
        .sum();
    let free = fsops::free_bytes(&store.dir).map_err(io(&store.dir))?;
    if need > free {
        return Err(SnapshotError::NoRoom {
            store: store.dir.clone(),
            need,
            free,
        });
    }
    Ok(())
}

/// Files read and hashed into the store by one create.
#[derive(Default)]
struct Stored {
    files: usize,
    bytes: u64,
}

/// The walked entries with their hardlink groups and content hashes, every
/// file's content in the store (stored now unless known and present).
fn store_content(
    store: &Store,
    scope: &Scope,
    walked: Vec<(Entry, libc::stat)>,
    known: &mut HashMap<Identity, [u8; 32]>,
    stored: &mut Stored,
    progress: &dyn backstop_common::progress::Progress,
) -> Result<Vec<Entry>> {
    let mut entries = Vec::with_capacity(walked.len());
    let mut groups: HashMap<(u64, u64), u64> = HashMap::new();
    for (mut e, st) in walked {
        if e.kind == Kind::File {
            if st.st_nlink > 1 {
                let g = groups.len() as u64 + 1;
                e.link_group = Some(*groups.entry((st.st_dev, st.st_ino)).or_insert(g));
            }
            let hash = match known.get(&key(&e)) {
                Some(h) if store.object_path(h).exists() => *h,
                _ => {
                    stored.files += 1;
                    stored.bytes += e.size;
                    let full = join(&scope.root, &e.path);
                    let h = store.put(&full)?;
                    known.insert(key(&e), h);
                    h
                }
            };
            e.hash = Some(hash);
        }
        entries.push(e);
        progress.advance(1);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::{diff, scratch};
    use super::*;

    #[test]
    fn a_file_changed_just_before_the_walk_is_never_trusted_by_identity() {
        let dir = scratch("racy");
        std::fs::create_dir_all(dir.join("root/etc")).unwrap();
        std::fs::write(dir.join("root/etc/a"), b"one").unwrap();
        let store = Store::open(&dir.join("data")).unwrap();
        let scope = Scope {
            root: dir.join("root"),
            paths: vec![PathBuf::from("/etc")],
            excludes: vec![],
        };
        let r = create(&store, &scope).unwrap();
        let snap = store.load(&r.id).unwrap();
        let a = snap.entries.iter().find(|e| e.path == b"etc/a").unwrap();
        assert_eq!(
            a.ident.2,
            i64::MIN,
            "a file changed within the racy window keeps no identity"
        );
        // Same size, new content: the next snapshot must see it.
        std::fs::write(dir.join("root/etc/a"), b"two").unwrap();
        let r2 = create(&store, &scope).unwrap();
        assert_eq!(r2.hashed_files, 1, "the racily-clean file was re-read");
        let d = diff(&store.load(&r.id).unwrap()).unwrap();
        assert_eq!(d.changed, vec!["/etc/a".to_string()]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
