//! A recording fake of [`HostOps`], for the unit tests of a restore's
//! order only (`order_tests.rs`): it logs every call and keeps a small
//! model of the tree (which paths exist, as what), refusing, as the kernel
//! would, to create a node whose parent is missing or to link to a file
//! that is not there. Nothing here touches a real tree.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::sync::Mutex;

use super::super::{Entry, Kind, Result};
use super::host::{HostOps, ObjectState};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Op {
    CheckObject([u8; 32]),
    Remove(Vec<u8>),
    Relink { first: Vec<u8>, rel: Vec<u8> },
    Recreate(Vec<u8>),
    StageContent(Vec<u8>),
    StageMetadata(Vec<u8>),
    Commit(Vec<u8>),
    SetMetadata(Vec<u8>),
    SyncDir(Vec<u8>),
}

impl Op {
    /// The path an op changes; None for the reads and syncs.
    pub(super) fn changes(&self) -> Option<&[u8]> {
        match self {
            Op::CheckObject(_) | Op::SyncDir(_) => None,
            Op::Remove(p)
            | Op::Recreate(p)
            | Op::StageContent(p)
            | Op::StageMetadata(p)
            | Op::Commit(p)
            | Op::SetMetadata(p) => Some(p),
            Op::Relink { rel, .. } => Some(rel),
        }
    }

    /// Whether the op puts a node in place.
    pub(super) fn creates(&self) -> bool {
        matches!(self, Op::Recreate(_) | Op::Commit(_) | Op::Relink { .. })
    }
}

/// Records every call; `tree` is what exists now (root-relative path to
/// kind; the root itself always exists).
pub(super) struct Recorder {
    pub(super) log: Mutex<Vec<Op>>,
    pub(super) tree: Mutex<BTreeMap<Vec<u8>, Kind>>,
    pub(super) content_ok: HashSet<Vec<u8>>,
    pub(super) objects: HashMap<[u8; 32], ObjectState>,
}

fn parent(p: &[u8]) -> &[u8] {
    p.iter()
        .rposition(|&c| c == b'/')
        .map_or(&p[..0], |i| &p[..i])
}

fn not_found(what: &str, p: &[u8]) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{what}: /{} is not there", String::from_utf8_lossy(p)),
    )
}

impl Recorder {
    pub(super) fn new(current: &[(Entry, libc::stat)]) -> Self {
        Recorder {
            log: Mutex::new(Vec::new()),
            tree: Mutex::new(
                current
                    .iter()
                    .map(|(e, _)| (e.path.clone(), e.kind))
                    .collect(),
            ),
            content_ok: HashSet::new(),
            objects: HashMap::new(),
        }
    }

    fn record(&self, op: Op) {
        self.log.lock().unwrap().push(op);
    }

    pub(super) fn ops(&self) -> Vec<Op> {
        self.log.lock().unwrap().clone()
    }

    /// As openat2 beneath the root would: the parent must be a directory.
    fn need_parent(&self, p: &[u8]) -> io::Result<()> {
        let dir = parent(p);
        match self.tree.lock().unwrap().get(dir) {
            _ if dir.is_empty() => Ok(()),
            Some(Kind::Dir) => Ok(()),
            _ => Err(not_found("parent", dir)),
        }
    }
}

impl HostOps for Recorder {
    type Staged = Vec<u8>;

    fn check_object(&self, hash: &[u8; 32]) -> Result<ObjectState> {
        self.record(Op::CheckObject(*hash));
        Ok(self
            .objects
            .get(hash)
            .copied()
            .unwrap_or(ObjectState::Intact))
    }

    fn content_matches(&self, e: &Entry, _st: &libc::stat) -> io::Result<bool> {
        Ok(self.content_ok.contains(&e.path))
    }

    fn remove(&self, rel: &[u8]) -> io::Result<bool> {
        self.record(Op::Remove(rel.to_vec()));
        let mut tree = self.tree.lock().unwrap();
        let under =
            |p: &Vec<u8>| p == rel || (p.starts_with(rel) && p.get(rel.len()) == Some(&b'/'));
        let before = tree.len();
        tree.retain(|p, _| !under(p));
        Ok(tree.len() < before)
    }

    fn relink(&self, first: &[u8], rel: &[u8]) -> io::Result<bool> {
        self.record(Op::Relink {
            first: first.to_vec(),
            rel: rel.to_vec(),
        });
        self.need_parent(rel)?;
        let mut tree = self.tree.lock().unwrap();
        if tree.get(first) != Some(&Kind::File) {
            return Err(not_found("link target", first));
        }
        tree.insert(rel.to_vec(), Kind::File);
        Ok(true)
    }

    fn recreate(&self, e: &Entry) -> io::Result<bool> {
        self.record(Op::Recreate(e.path.clone()));
        self.need_parent(&e.path)?;
        let mut tree = self.tree.lock().unwrap();
        match tree.get(&e.path) {
            Some(k) if *k == e.kind => Ok(false),
            None if e.kind == Kind::File => Err(not_found("file", &e.path)),
            _ => {
                tree.insert(e.path.clone(), e.kind);
                Ok(true)
            }
        }
    }

    fn stage_content(&self, e: &Entry) -> io::Result<Vec<u8>> {
        self.record(Op::StageContent(e.path.clone()));
        self.need_parent(&e.path)?;
        Ok(e.path.clone())
    }

    fn stage_metadata(&self, e: &Entry, _staged: &Vec<u8>) -> io::Result<()> {
        self.record(Op::StageMetadata(e.path.clone()));
        Ok(())
    }

    fn commit_staged(&self, staged: Vec<u8>) -> io::Result<()> {
        self.record(Op::Commit(staged.clone()));
        self.tree.lock().unwrap().insert(staged, Kind::File);
        Ok(())
    }

    fn discard_staged(&self, _staged: Vec<u8>) {}

    fn set_metadata(&self, e: &Entry, _links: u64) -> io::Result<bool> {
        self.record(Op::SetMetadata(e.path.clone()));
        match self.tree.lock().unwrap().get(&e.path) {
            Some(k) if *k == e.kind => Ok(true),
            _ => Err(not_found("metadata", &e.path)),
        }
    }

    fn sync_dir(&self, rel: &[u8]) {
        self.record(Op::SyncDir(rel.to_vec()));
    }
}
