//! The object store and the manifests on disk: content under its SHA-256
//! (`objects/ab/cdef...`), one checksummed postcard manifest per snapshot,
//! and gc of what no manifest names.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Result, Snapshot, SnapshotError, fsops, io, private};

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
    pub(super) fn put(&self, src: &Path) -> Result<[u8; 32]> {
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

    pub(super) fn save(&self, snap: &Snapshot) -> Result<()> {
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
            return Err(SnapshotError::NotFound { id: id.to_string() });
        }
        let path = self.manifest_path(id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SnapshotError::NotFound { id: id.to_string() });
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
                    let size = obj.metadata().map_or(0, |m| m.len());
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

pub(super) fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
