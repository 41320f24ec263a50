//! The order of a restore, pinned without root: `apply` runs against the
//! recording fake of [`HostOps`] in `fake.rs`. The real implementation is
//! tested for real, as root, by tests/tests/snapshot.rs and
//! restore_attacks.rs.
#![expect(
    clippy::unreadable_literal,
    reason = "st_mode values read as ls and stat(2) print them (0o100644)"
)]

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use super::super::{Entry, Kind, Snapshot, SnapshotError, Store};
use super::apply::apply;
use super::fake::{Op, Recorder};
use super::host::ObjectState;

const H1: [u8; 32] = [1; 32];
const H2: [u8; 32] = [2; 32];
const H3: [u8; 32] = [3; 32];

fn entry(path: &str, kind: Kind, mode: u32, hash: Option<[u8; 32]>) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime: (1, 0),
        size: 3,
        hash,
        target: (kind == Kind::Symlink).then(|| b"../conf".to_vec()),
        rdev: 0,
        link_group: None,
        xattrs: vec![],
        ident: (1, path.len() as u64, 1, 0),
    }
}

/// An entry as the walk finds it now, with the stat the walk returned.
fn now(e: Entry) -> (Entry, libc::stat) {
    // SAFETY: stat is plain data; zero is valid for every field.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_mode = e.mode;
    st.st_nlink = 1;
    st.st_ino = e.ident.1;
    st.st_size = e.size as i64;
    (e, st)
}

/// A snapshot of /etc with a hardlink pair, a nested directory and a
/// symlink, and a tree that has since drifted: an added directory with a
/// file in it, `app` replaced by a file, `keep`'s mode and `etc`'s mtime
/// changed.
fn drifted() -> (Snapshot, Vec<(Entry, libc::stat)>) {
    let (dir, file, link) = (0o40755, 0o100644, 0o120777);
    let mut a = entry("etc/app/a", Kind::File, file, Some(H1));
    a.link_group = Some(1);
    let mut b = entry("etc/app/b", Kind::File, file, Some(H1));
    b.link_group = Some(1);
    let snap = Snapshot {
        id: "sorder".into(),
        root: PathBuf::from("/nonexistent/backstop-order-root"),
        scopes: vec![b"etc".to_vec()],
        excludes: vec![],
        created_ms: 0,
        entries: vec![
            entry("etc", Kind::Dir, dir, None),
            entry("etc/app", Kind::Dir, dir, None),
            a,
            b,
            entry("etc/app/conf", Kind::File, file, Some(H2)),
            entry("etc/app/sub", Kind::Dir, dir, None),
            entry("etc/app/sub/sym", Kind::Symlink, link, None),
            entry("etc/keep", Kind::File, file, Some(H3)),
        ],
    };
    let mut etc = entry("etc", Kind::Dir, dir, None);
    etc.mtime = (2, 0);
    let current = vec![
        now(etc),
        now(entry("etc/added", Kind::Dir, dir, None)),
        now(entry("etc/added/x", Kind::File, file, Some(H3))),
        now(entry("etc/app", Kind::File, file, Some(H3))),
        now(entry("etc/keep", Kind::File, 0o100600, Some(H3))),
    ];
    (snap, current)
}

/// A store of its own per call: the tests run side by side.
fn scratch_store(name: &str) -> (PathBuf, Store) {
    let dir = super::super::scratch(name);
    let store = Store::open(&dir).expect("a scratch store");
    (dir, store)
}

fn restore_drifted() -> (Vec<Op>, BTreeMap<Vec<u8>, Kind>) {
    let (snap, current) = drifted();
    let mut fake = Recorder::new(&current);
    fake.content_ok.insert(b"etc/keep".to_vec());
    let (dir, store) = scratch_store("order");
    let report = apply(&fake, &store, &snap, &current);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = report {
        panic!(
            "restore failed against the fake: {e}; calls: {:#?}",
            fake.ops()
        );
    }
    let tree = fake.tree.lock().unwrap().clone();
    (fake.ops(), tree)
}

fn show(op: &Op) -> String {
    format!("{op:?}")
}

fn position(ops: &[Op], want: &Op) -> usize {
    ops.iter()
        .position(|o| o == want)
        .unwrap_or_else(|| panic!("no {want:?} in {ops:#?}"))
}

#[test]
fn every_object_is_verified_before_any_change() {
    let (ops, _) = restore_drifted();
    let last_check = ops.iter().rposition(|o| matches!(o, Op::CheckObject(_)));
    let first_change = ops.iter().position(|o| o.changes().is_some());
    let (Some(last_check), Some(first_change)) = (last_check, first_change) else {
        panic!("expected checks and changes, got {ops:#?}");
    };
    assert!(
        last_check < first_change,
        "{} came before the last object check {}",
        show(&ops[first_change]),
        show(&ops[last_check])
    );
    let checked: HashSet<_> = ops
        .iter()
        .filter_map(|o| match o {
            Op::CheckObject(h) => Some(*h),
            _ => None,
        })
        .collect();
    // H1 (the hardlink pair, read once) and H2 are read; H3 (`keep`,
    // whose content is intact) is not, so it need not be checked.
    assert_eq!(checked, HashSet::from([H1, H2]), "{ops:#?}");
}

#[test]
fn added_paths_are_removed_before_anything_is_recreated() {
    let (ops, _) = restore_drifted();
    let last_remove = ops.iter().rposition(|o| matches!(o, Op::Remove(_)));
    let first_create = ops.iter().position(Op::creates);
    let (Some(last_remove), Some(first_create)) = (last_remove, first_create) else {
        panic!("expected removals and creations, got {ops:#?}");
    };
    assert!(
        last_remove < first_create,
        "{} came before the removal {}",
        show(&ops[first_create]),
        show(&ops[last_remove])
    );
    // Children first: the added file goes before its directory.
    let x = position(&ops, &Op::Remove(b"etc/added/x".to_vec()));
    let added = position(&ops, &Op::Remove(b"etc/added".to_vec()));
    assert!(x < added, "{ops:#?}");
}

#[test]
fn directories_are_made_before_their_contents() {
    let (ops, _) = restore_drifted();
    let app = position(&ops, &Op::Recreate(b"etc/app".to_vec()));
    let sub = position(&ops, &Op::Recreate(b"etc/app/sub".to_vec()));
    for (i, op) in ops.iter().enumerate().filter(|(_, o)| o.creates()) {
        let p = op.changes().unwrap_or_default();
        if p.starts_with(b"etc/app/") {
            assert!(app < i, "{} came before etc/app was made", show(op));
        }
        if p.starts_with(b"etc/app/sub/") {
            assert!(sub < i, "{} came before etc/app/sub was made", show(op));
        }
    }
    assert!(app < sub, "{ops:#?}");
}

#[test]
fn a_hard_link_is_made_after_the_first_member_of_its_group() {
    let (ops, tree) = restore_drifted();
    let first = position(&ops, &Op::Commit(b"etc/app/a".to_vec()));
    let link = position(
        &ops,
        &Op::Relink {
            first: b"etc/app/a".to_vec(),
            rel: b"etc/app/b".to_vec(),
        },
    );
    assert!(
        first < link,
        "the link came before its target's content: {ops:#?}"
    );
    assert!(
        !ops.contains(&Op::StageContent(b"etc/app/b".to_vec())),
        "the second member is linked, never written: {ops:#?}"
    );
    assert_eq!(tree.get(b"etc/app/b".as_slice()), Some(&Kind::File));
}

#[test]
fn metadata_is_set_after_content_and_before_the_rename() {
    let (ops, _) = restore_drifted();
    for path in [b"etc/app/a".as_slice(), b"etc/app/conf"] {
        let staged = position(&ops, &Op::StageContent(path.to_vec()));
        let meta = position(&ops, &Op::StageMetadata(path.to_vec()));
        let commit = position(&ops, &Op::Commit(path.to_vec()));
        assert!(staged < meta && meta < commit, "{ops:#?}");
    }
    // A node made in place gets its metadata once it exists.
    let sym = b"etc/app/sub/sym".to_vec();
    let made = position(&ops, &Op::Recreate(sym.clone()));
    let meta = position(&ops, &Op::SetMetadata(sym));
    assert!(made < meta, "{ops:#?}");
    // An intact file whose mode drifted keeps its content.
    assert!(
        ops.contains(&Op::SetMetadata(b"etc/keep".to_vec())),
        "{ops:#?}"
    );
    assert!(
        !ops.contains(&Op::StageContent(b"etc/keep".to_vec())),
        "{ops:#?}"
    );
}

#[test]
fn directory_metadata_comes_last_deepest_first() {
    let (ops, _) = restore_drifted();
    let (snap, _) = drifted();
    let dirs: HashSet<&[u8]> = snap
        .entries
        .iter()
        .filter(|e| e.kind == Kind::Dir)
        .map(|e| e.path.as_slice())
        .collect();
    let dir_meta: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o, Op::SetMetadata(p) if dirs.contains(p.as_slice())))
        .map(|(i, _)| i)
        .collect();
    let last_other = ops
        .iter()
        .enumerate()
        .filter(|(i, o)| o.changes().is_some() && !dir_meta.contains(i))
        .map(|(i, _)| i)
        .max()
        .expect("changes other than directory metadata");
    assert!(
        dir_meta.iter().all(|&i| i > last_other),
        "a directory's metadata was set before {}: {ops:#?}",
        show(&ops[last_other])
    );
    let order: Vec<&Op> = dir_meta.iter().map(|&i| &ops[i]).collect();
    assert_eq!(
        order,
        [
            &Op::SetMetadata(b"etc/app/sub".to_vec()),
            &Op::SetMetadata(b"etc/app".to_vec()),
            &Op::SetMetadata(b"etc".to_vec()),
        ],
        "deepest first"
    );
    let first_sync = ops.iter().position(|o| matches!(o, Op::SyncDir(_)));
    assert!(first_sync.is_some_and(|s| s > last_other && dir_meta.iter().all(|&i| i < s)));
}

#[test]
fn a_corrupt_object_changes_nothing() {
    let (snap, current) = drifted();
    let mut fake = Recorder::new(&current);
    fake.objects.insert(H2, ObjectState::Corrupt);
    let before = fake.tree.lock().unwrap().clone();
    let (dir, store) = scratch_store("order-corrupt");
    let r = apply(&fake, &store, &snap, &current);
    let journal = store.dir.join("restore-sorder.journal").exists();
    let _ = std::fs::remove_dir_all(&dir);
    match r {
        Err(SnapshotError::BadObject { path, .. }) => assert_eq!(path, "/etc/app/conf"),
        other => panic!("expected BadObject for /etc/app/conf, got {other:?}"),
    }
    let ops = fake.ops();
    assert!(ops.iter().all(|o| o.changes().is_none()), "{ops:#?}");
    assert_eq!(*fake.tree.lock().unwrap(), before);
    assert!(!journal, "no restore marker before the objects are checked");
}
