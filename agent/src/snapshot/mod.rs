//! Known-good state: content-addressed snapshots of a scope, and restore.
//!
//! A snapshot records every entry under the scope's paths (type, content
//! hash, mode, owner, mtime, symlink target, device number, hardlink group,
//! extended attributes, which carry file capabilities and POSIX ACLs). File
//! content lives once in the object store under its SHA-256, whatever its
//! path or snapshot; a second snapshot of a mostly unchanged scope hashes
//! only files whose (dev, inode, size, mtime, ctime) changed.
//!
//! Layout under DATA/agent/snapshots (0700, files 0600: see `private.rs`):
//! `objects/ab/cdef...` (content), `objects/tmp/` (objects being written),
//! `<id>.snap` (a postcard manifest), `restore-<id>.journal` (a marker: a
//! restore in progress; restore is idempotent, a rerun finishes it), `lock`
//! (create shares it, gc holds it alone).

mod beneath;
mod fsops;
mod private;
mod restore;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use private::StoreLock;
pub use restore::{RestoreReport, restore};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("scope {0} must be an absolute path inside the root")]
    BadScope(String),
    #[error(
        "scope {scope}: {path} is a symlink; the directories above a scope must be real, nothing was done"
    )]
    SymlinkAncestor { scope: String, path: PathBuf },
    #[error("bad --exclude glob {glob}: {reason}")]
    BadExclude { glob: String, reason: String },
    #[error(
        "not enough room for the snapshot in {store}: up to {need} bytes of new content, {free} free"
    )]
    NoRoom {
        store: PathBuf,
        need: u64,
        free: u64,
    },
    #[error("no snapshot {0}")]
    NotFound(String),
    #[error("snapshot {id} is damaged: {reason}")]
    Damaged { id: String, reason: String },
    #[error("object {hash} (for {path}) is {problem}; nothing was restored")]
    BadObject {
        hash: String,
        path: String,
        problem: String,
    },
}

pub type Result<T> = std::result::Result<T, SnapshotError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDev,
    BlockDev,
    Socket,
}

/// One entry of a scope, as it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the root, as bytes (paths need not be UTF-8).
    pub path: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub size: u64,
    /// Content hash of a regular file.
    pub hash: Option<[u8; 32]>,
    /// Symlink target.
    pub target: Option<Vec<u8>>,
    pub rdev: u64,
    /// Regular files with more than one link: entries with the same group
    /// are one inode.
    pub link_group: Option<u64>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Identity at snapshot time, to skip re-hashing unchanged files.
    pub ident: (u64, u64, i64, i64),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub root: PathBuf,
    /// Scope paths, relative to the root.
    pub scopes: Vec<Vec<u8>>,
    pub excludes: Vec<String>,
    pub created_ms: u64,
    pub entries: Vec<Entry>,
}

impl Snapshot {
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// The snapshot's scope as it is on disk now, walked the same way.
    fn walk_now(&self) -> Result<Vec<(Entry, libc::stat)>> {
        let scope = Scope {
            root: self.root.clone(),
            paths: self
                .scopes
                .iter()
                .map(|s| Path::new("/").join(fsops::os(s)))
                .collect(),
            excludes: self.excludes.clone(),
        };
        let earlier = self
            .entries
            .iter()
            .map(|e| (e.path.as_slice(), e))
            .collect();
        walk(&scope, &Excludes::new(&self.excludes)?, &earlier)
    }

    /// Whether a root-relative path lies in one of the snapshot's scopes.
    fn in_scope(&self, rel: &[u8]) -> bool {
        self.scopes.iter().any(|s| scope_contains(s, rel))
    }

    /// How many links each file of the snapshot had to itself: the size of
    /// its hardlink group. A file whose inode now has more is linked from
    /// somewhere else, maybe outside the scope.
    fn group_sizes(&self) -> HashMap<u64, u64> {
        let mut sizes = HashMap::new();
        for g in self.entries.iter().filter_map(|e| e.link_group) {
            *sizes.entry(g).or_insert(0) += 1;
        }
        sizes
    }
}

/// The links a file should have: its group's size, or 1.
fn links_wanted(e: &Entry, groups: &HashMap<u64, u64>) -> u64 {
    e.link_group
        .and_then(|g| groups.get(&g).copied())
        .unwrap_or(1)
}

/// Whether root-relative `rel` is `scope` or below it, compared component
/// by component (never as text: `opt/app2` is not in `opt/app`). A `..`
/// is never in any scope: paths are normalised before they get here.
fn scope_contains(scope: &[u8], rel: &[u8]) -> bool {
    let parts = |p: &[u8]| {
        p.split(|&c| c == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .map(<[u8]>::to_vec)
            .collect::<Vec<_>>()
    };
    let (s, r) = (parts(scope), parts(rel));
    !r.iter().any(|c| c == b"..") && r.len() >= s.len() && r[..s.len()] == s[..]
}

/// Refuse a scope whose ancestors inside the root are symlinks: a walk or
/// restore of it would act wherever the link leads.
fn check_scope_ancestors(root: &Path, scopes: &[Vec<u8>]) -> Result<()> {
    for s in scopes {
        let comps: Vec<&[u8]> = s.split(|&c| c == b'/').filter(|c| !c.is_empty()).collect();
        let mut rel = Vec::new();
        for c in &comps[..comps.len().saturating_sub(1)] {
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(c);
            let full = join(root, &rel);
            match fsops::lstat(&full) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                    return Err(SnapshotError::SymlinkAncestor {
                        scope: format!("/{}", String::from_utf8_lossy(s)),
                        path: full,
                    });
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(io(&full)(e)),
            }
        }
    }
    Ok(())
}

/// The snapshot store of an agent.
pub struct Store {
    pub dir: PathBuf,
}

const MAGIC: &[u8; 8] = b"BSSNAP01";

impl Store {
    /// Open (or make) the store, private: see `private.rs`.
    pub fn open(data: &Path) -> Result<Self> {
        let dir = data.join("agent").join("snapshots");
        private::mkdirs(&dir.join("objects"))?;
        let store = Store { dir };
        store.make_private()?;
        Ok(store)
    }

    pub fn object_path(&self, hash: &[u8; 32]) -> PathBuf {
        let h = hex::encode(hash);
        self.dir.join("objects").join(&h[..2]).join(&h[2..])
    }

    fn manifest_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.snap"))
    }

    /// Copy a file into the store (reflinked where the filesystem can),
    /// hashing it on the way; returns its hash.
    fn put(&self, src: &Path) -> Result<[u8; 32]> {
        let tmp_dir = self.dir.join("objects").join("tmp");
        private::mkdirs(&tmp_dir)?;
        let tmp = tmp_dir.join(format!("{}-{}", std::process::id(), unique()));
        let mut input = std::fs::File::open(src).map_err(io(src))?;
        let mut out = private::create_private(&tmp)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        if fsops::reflink(&input, &out).is_ok() {
            loop {
                let n = input.read(&mut buf).map_err(io(src))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
        } else {
            loop {
                let n = input.read(&mut buf).map_err(io(src))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(io(&tmp))?;
            }
        }
        out.sync_data().map_err(io(&tmp))?;
        let hash: [u8; 32] = hasher.finalize().into();
        let dst = self.object_path(&hash);
        if dst.exists() {
            let _ = std::fs::remove_file(&tmp);
        } else {
            let parent = dst.parent().expect("object paths have a parent");
            private::mkdirs(parent)?;
            std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
        }
        Ok(hash)
    }

    fn save(&self, snap: &Snapshot) -> Result<()> {
        let path = self.manifest_path(&snap.id);
        let tmp = path.with_extension("tmp");
        let mut bytes = MAGIC.to_vec();
        let body = postcard::to_allocvec(snap).expect("snapshots serialize");
        bytes.extend_from_slice(&Sha256::digest(&body));
        bytes.extend_from_slice(&body);
        // Ids are unique per process and millisecond; a leftover of the
        // same name can only be a dead create's.
        let _ = std::fs::remove_file(&tmp);
        let mut f = private::create_private(&tmp)?;
        let mut write = || -> std::io::Result<()> {
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(io(&path))
    }

    pub fn load(&self, id: &str) -> Result<Snapshot> {
        if id.is_empty() || id.contains('/') || id.contains("..") {
            return Err(SnapshotError::NotFound(id.to_string()));
        }
        let path = self.manifest_path(id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SnapshotError::NotFound(id.to_string()));
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let damaged = |reason: &str| SnapshotError::Damaged {
            id: id.to_string(),
            reason: reason.to_string(),
        };
        if bytes.len() < 40 || &bytes[..8] != MAGIC {
            return Err(damaged("not a snapshot manifest (bad header)"));
        }
        if Sha256::digest(&bytes[40..]).as_slice() != &bytes[8..40] {
            return Err(damaged("manifest checksum mismatch (truncated or altered)"));
        }
        postcard::from_bytes(&bytes[40..]).map_err(|e| damaged(&e.to_string()))
    }

    /// Snapshots, oldest first.
    pub fn list(&self) -> Result<Vec<Snapshot>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir)
            .map_err(io(&self.dir))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".snap") {
                out.push(self.load(id)?);
            }
        }
        out.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(out)
    }

    /// Delete objects no snapshot refers to; returns (objects, bytes) freed.
    /// Waits for the creates in progress (the store lock, exclusive): an
    /// object they stored is in no manifest until they finish. Leftovers
    /// in objects/tmp are a dead create's and go too.
    pub fn gc(&self) -> Result<(u64, u64)> {
        let _lock = self.lock_gc()?;
        let live: HashSet<[u8; 32]> = self
            .list()?
            .iter()
            .flat_map(|s| s.entries.iter().filter_map(|e| e.hash))
            .collect();
        let mut freed = (0, 0);
        let objects = self.dir.join("objects");
        for fan in std::fs::read_dir(&objects).map_err(io(&objects))?.flatten() {
            let fan_name = fan.file_name().to_string_lossy().into_owned();
            for obj in std::fs::read_dir(fan.path())
                .map_err(io(&fan.path()))?
                .flatten()
            {
                let full = format!("{fan_name}{}", obj.file_name().to_string_lossy());
                let keep = hex::decode(&full)
                    .ok()
                    .and_then(|v| <[u8; 32]>::try_from(v).ok())
                    .is_some_and(|h| live.contains(&h));
                if !keep {
                    let size = obj.metadata().map(|m| m.len()).unwrap_or(0);
                    if std::fs::remove_file(obj.path()).is_ok() {
                        freed.0 += 1;
                        freed.1 += size;
                    }
                }
            }
        }
        Ok(freed)
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn realtime_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What to snapshot.
#[derive(Debug, Clone)]
pub struct Scope {
    pub root: PathBuf,
    /// Absolute paths as seen inside the root (e.g. /etc).
    pub paths: Vec<PathBuf>,
    pub excludes: Vec<String>,
}

struct Excludes(globset::GlobSet);

impl Excludes {
    fn new(globs: &[String]) -> Result<Self> {
        let mut b = globset::GlobSetBuilder::new();
        for g in globs {
            b.add(
                globset::Glob::new(g).map_err(|e| SnapshotError::BadExclude {
                    glob: g.clone(),
                    reason: e.to_string(),
                })?,
            );
        }
        Ok(Excludes(b.build().map_err(|e| {
            SnapshotError::BadExclude {
                glob: globs.join(" "),
                reason: e.to_string(),
            }
        })?))
    }

    /// `rel` is root-relative; globs are written as absolute paths in the root.
    fn excluded(&self, rel: &[u8]) -> bool {
        let mut abs = b"/".to_vec();
        abs.extend_from_slice(rel);
        self.0.is_match(fsops::os(&abs))
    }
}

fn scope_rel(p: &Path) -> Result<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let s = p.as_os_str().as_bytes();
    if !s.starts_with(b"/")
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(SnapshotError::BadScope(p.display().to_string()));
    }
    Ok(s.trim_start_matches_bytes(b'/')
        .trim_end_matches_bytes(b'/')
        .to_vec())
}

trait TrimBytes {
    fn trim_start_matches_bytes(&self, b: u8) -> &[u8];
    fn trim_end_matches_bytes(&self, b: u8) -> &[u8];
}

impl TrimBytes for [u8] {
    fn trim_start_matches_bytes(&self, b: u8) -> &[u8] {
        let n = self.iter().take_while(|&&c| c == b).count();
        &self[n..]
    }
    fn trim_end_matches_bytes(&self, b: u8) -> &[u8] {
        let n = self.iter().rev().take_while(|&&c| c == b).count();
        &self[..self.len() - n]
    }
}

pub fn join(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(fsops::os(rel))
    }
}

fn kind_of(mode: u32) -> Kind {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Symlink,
        libc::S_IFIFO => Kind::Fifo,
        libc::S_IFCHR => Kind::CharDev,
        libc::S_IFBLK => Kind::BlockDev,
        libc::S_IFSOCK => Kind::Socket,
        _ => Kind::File,
    }
}

/// Walk the scope: every entry's metadata (no content yet), parents before
/// children, in a stable order.
/// `earlier`: entries of a previous snapshot of this root, by path. An entry
/// whose (dev, inode, ctime) is unchanged since then has the same xattrs and
/// symlink target (changing either moves ctime), so they are not read again.
fn walk(
    scope: &Scope,
    excludes: &Excludes,
    earlier: &HashMap<&[u8], &Entry>,
) -> Result<Vec<(Entry, libc::stat)>> {
    let starts = scope
        .paths
        .iter()
        .map(|p| Ok((scope_rel(p)?, true)))
        .collect::<Result<Vec<_>>>()?;
    walk_from(&scope.root, starts, excludes, earlier)
}

/// [`walk`] from root-relative start points; a start with `false` is
/// looked at alone, its children are not.
fn walk_from(
    root: &Path,
    starts: Vec<(Vec<u8>, bool)>,
    excludes: &Excludes,
    earlier: &HashMap<&[u8], &Entry>,
) -> Result<Vec<(Entry, libc::stat)>> {
    let mut out = Vec::new();
    // A start whose parent is not a real directory beneath the root (a
    // symlink on the way, as a hostile change log may name) has nothing
    // of the scope under it: it is not looked at.
    let beneath = beneath::Root::open(root).map_err(io(root))?;
    let mut stack: Vec<(Vec<u8>, bool)> = starts
        .into_iter()
        .filter(|(rel, _)| rel.is_empty() || beneath.parent(rel).is_ok())
        .collect();
    stack.reverse();
    let mut seen_dirs = HashSet::new();
    while let Some((rel, descend)) = stack.pop() {
        if excludes.excluded(&rel) {
            continue;
        }
        let full = join(root, &rel);
        let st = match fsops::lstat(&full) {
            Ok(st) => st,
            // A scope path that does not exist yet is an empty scope; an
            // entry that vanished during the walk is skipped.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&full)(e)),
        };
        let kind = kind_of(st.st_mode);
        let ident = (st.st_dev, st.st_ino, st.st_ctime, st.st_ctime_nsec);
        let same_inode = earlier
            .get(rel.as_slice())
            .filter(|e| e.ident == ident && e.kind == kind);
        let entry = Entry {
            path: rel.clone(),
            kind,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            size: if kind == Kind::File {
                st.st_size as u64
            } else {
                0
            },
            hash: None,
            target: if let Some(e) = same_inode {
                e.target.clone()
            } else if kind == Kind::Symlink {
                Some(
                    std::os::unix::ffi::OsStrExt::as_bytes(
                        std::fs::read_link(&full).map_err(io(&full))?.as_os_str(),
                    )
                    .to_vec(),
                )
            } else {
                None
            },
            rdev: st.st_rdev,
            link_group: None,
            xattrs: match same_inode {
                Some(e) => e.xattrs.clone(),
                None => fsops::xattrs(&full).map_err(io(&full))?,
            },
            ident,
        };
        if kind == Kind::Dir && descend && seen_dirs.insert((st.st_dev, st.st_ino)) {
            let mut children: Vec<Vec<u8>> = std::fs::read_dir(&full)
                .map_err(io(&full))?
                .map(|e| {
                    e.map(|e| {
                        let name =
                            std::os::unix::ffi::OsStrExt::as_bytes(e.file_name().as_os_str())
                                .to_vec();
                        let mut child = rel.clone();
                        if !child.is_empty() {
                            child.push(b'/');
                        }
                        child.extend_from_slice(&name);
                        child
                    })
                })
                .collect::<std::io::Result<_>>()
                .map_err(io(&full))?;
            children.sort();
            children.reverse();
            stack.extend(children.into_iter().map(|c| (c, true)));
        }
        out.push((entry, st));
    }
    Ok(out)
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
    let mut walked = walk(&scope, &excludes, &earlier)?;
    // "Racily clean" (as git calls it): ctime has the kernel's coarse clock,
    // so a file changed again within the tick of its last change keeps its
    // ctime. An entry changed that close to the walk cannot vouch for
    // itself later; its identity is spoiled so it is always re-read.
    const RACY_NS: i128 = 100_000_000;
    for (e, _) in &mut walked {
        let ctime_ns = e.ident.2 as i128 * 1_000_000_000 + e.ident.3 as i128;
        if ctime_ns >= started_ns as i128 - RACY_NS {
            e.ident.2 = i64::MIN;
        }
    }
    // Content known from earlier snapshots, by identity.
    let mut known: HashMap<Identity, [u8; 32]> = HashMap::new();
    for s in &snapshots {
        for e in &s.entries {
            if let Some(h) = e.hash {
                known.insert(
                    (e.ident.0, e.ident.1, e.ident.2, e.ident.3, e.size, e.mtime),
                    h,
                );
            }
        }
    }
    let key = |e: &Entry| (e.ident.0, e.ident.1, e.ident.2, e.ident.3, e.size, e.mtime);
    // Refuse before copying anything if the worst case does not fit.
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
    let mut entries = Vec::with_capacity(walked.len());
    let mut groups: HashMap<(u64, u64), u64> = HashMap::new();
    let (mut hashed_files, mut hashed_bytes) = (0, 0);
    for (mut e, st) in walked {
        if e.kind == Kind::File {
            if st.st_nlink > 1 {
                let g = groups.len() as u64 + 1;
                e.link_group = Some(*groups.entry((st.st_dev, st.st_ino)).or_insert(g));
            }
            let hash = match known.get(&key(&e)) {
                Some(h) if store.object_path(h).exists() => *h,
                _ => {
                    hashed_files += 1;
                    hashed_bytes += e.size;
                    let full = join(&scope.root, &e.path);
                    let h = store.put(&full)?;
                    known.insert(key(&e), h);
                    h
                }
            };
            e.hash = Some(hash);
        }
        entries.push(e);
    }
    let snap = Snapshot {
        id: format!(
            "s{:x}{:04x}",
            now_ms(),
            std::process::id() as u16 as u32 ^ unique() as u32
        ),
        root: scope.root.clone(),
        scopes: scope
            .paths
            .iter()
            .map(|p| scope_rel(p))
            .collect::<Result<_>>()?,
        excludes: scope.excludes.clone(),
        created_ms: now_ms(),
        entries,
    };
    store.save(&snap)?;
    Ok(CreateReport {
        id: snap.id.clone(),
        entries: snap.entries.len(),
        bytes: snap.bytes(),
        hashed_files,
        hashed_bytes,
    })
}

/// How the tree differs from a snapshot: the same type as a shadow's diff.
pub use backstop_common::fsdiff::FsDiff;

/// Owner, mode, mtime, xattrs, symlink target and device number as recorded.
fn metadata_equal(now: &Entry, want: &Entry) -> bool {
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
fn links_differ(snap: &Snapshot, walked: &[(Entry, libc::stat)]) -> HashSet<Vec<u8>> {
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
                d.changed.push(show(&e.path))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_membership_is_per_component() {
        assert!(scope_contains(b"opt/app", b"opt/app"));
        assert!(scope_contains(b"opt/app", b"opt/app/x/y"));
        assert!(scope_contains(b"opt/app/", b"opt//app/./x"));
        assert!(!scope_contains(b"opt/app", b"opt/app2"));
        assert!(!scope_contains(b"opt/app", b"opt/app2/x"));
        assert!(!scope_contains(b"opt/app", b"opt"));
        assert!(!scope_contains(b"opt/app", b"opt/app/../../sentinel"));
        assert!(scope_contains(b"", b"anything/at/all"));
        assert!(!scope_contains(b"", b"../outside"));
    }

    #[test]
    fn a_file_changed_just_before_the_walk_is_never_trusted_by_identity() {
        let dir = std::env::temp_dir().join(format!("backstop-racy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
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
