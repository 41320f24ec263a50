//! The frozen layer: a deployment's concurrent shadow sees its scope as
//! the deployment's snapshot recorded it, never the live tree the live
//! install is changing at the same moment (overlayfs leaves changes to a
//! mounted lower layer undefined; we saw ESTALE and a false rollback).
//!
//! Built in the shadow's own private directory from the snapshot
//! manifest alone, as composefs does, with no file content copied: every
//! directory of the scope with its recorded metadata and marked opaque
//! (`trusted.overlay.opaque=y`), so nothing of the live tree shows through
//! below it; symlinks, fifos, sockets and device nodes as themselves;
//! regular files as overlayfs metacopy files (a sparse file of the
//! recorded size, owner, mode, xattrs and mtime, with
//! `trusted.overlay.metacopy` and `trusted.overlay.redirect=/ab/cdef...`)
//! whose data comes from the snapshot store's object of that hash,
//! mounted as a data-only lower layer; hard links as hard links. A scope
//! path the snapshot found absent is a whiteout. Excluded paths are not
//! in the snapshot, so inside an opaque scope directory they are absent.
//! The directories above a scope path are plain (not opaque) directories
//! with the live root's metadata, read beneath the root without following
//! a symlink; outside the scope the shadow still sees the live root.
//!
//! The install cannot reach this: it is built before the shadow starts,
//! from the manifest, in DATA/agent/shadows/<id>/frozen (0700 above it);
//! nothing is read from the live tree but the scope's ancestors' stat.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::container::{err, other};
use super::lower::Lower;
use crate::error::Result;
use crate::snapshot::{Entry, Kind, Snapshot, Store, StoreLock, beneath, fsops};

/// What to build a frozen layer from, for [`super::ShadowOptions`].
#[derive(Debug, Clone)]
pub struct FrozenScope {
    /// The deployment's snapshot (in DATA's store) of the shadow's root.
    pub snapshot: String,
    /// Host files the shadow finds in the root's directory DIR (absolute
    /// inside the root): a chrooted deployment's staged artifact, copied
    /// there after the snapshot was taken (`deploy/plan.rs`).
    pub staged: Option<(PathBuf, Vec<PathBuf>)>,
}

/// What one build made (for the log and the tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Built {
    pub entries: usize,
    pub metacopy_files: usize,
    pub whiteouts: usize,
}

/// Build the frozen layer of `snap` in the empty directory `dir`.
/// `objects` is the store's objects directory, `root` the live root (read
/// only for the stat of the scope's ancestors).
pub fn build(
    snap: &Snapshot,
    objects: &Path,
    root: &Path,
    dir: &Path,
    staged: Option<&(PathBuf, Vec<PathBuf>)>,
) -> Result<Built> {
    let mut b = Builder {
        dir,
        live: beneath::Root::open(root).ok(),
        links: HashMap::new(),
        dir_times: Vec::new(),
        built: Built::default(),
    };
    for e in &snap.entries {
        let rel = checked(&snap.id, &e.path)?;
        b.parents(&rel)?;
        b.entry(e, &rel, objects)?;
    }
    for s in &snap.scopes {
        if !s.is_empty() && !snap.entries.iter().any(|e| &e.path == s) {
            let rel = checked(&snap.id, s)?;
            b.parents(&rel)?;
            let p = dir.join(&rel);
            if std::fs::symlink_metadata(&p).is_err() {
                mknod(&p, libc::S_IFCHR, 0).map_err(err(format!("whiteout {}", p.display())))?;
                b.built.whiteouts += 1;
            }
        }
    }
    if let Some((rel, files)) = staged {
        b.stage(rel, files)?;
    }
    // Children moved their directories' times: set them last, deepest first.
    for (p, t) in b.dir_times.iter().rev() {
        set_times(p, *t).map_err(err(format!("setting the times of {}", p.display())))?;
    }
    Ok(b.built)
}

/// The layers below a shadow's upper: the root itself, or (`frozen`
/// given) the frozen layer of that snapshot built in `dir`, over the root
/// unless a scope covers all of it, with the store's objects below. The
/// store's lock comes with it, held shared while the shadow runs, so a
/// `snapshot gc` never takes an object the layer's redirects name (the
/// deployment's manifest names them all, and nothing deletes it while it
/// runs; the lock makes that hold for any manifest).
pub(super) fn lower_for(
    data: &Path,
    root: &Path,
    dir: &Path,
    frozen: Option<&FrozenScope>,
) -> Result<(Lower, Option<StoreLock>)> {
    let Some(f) = frozen else {
        return Ok((Lower::Root(root.to_path_buf()), None));
    };
    let store = Store::open(data)?;
    let lock = store.lock_create()?;
    let snap = store.load(&f.snapshot)?;
    if snap.root != root {
        return Err(other(
            format!("building the shadow's frozen layer of snapshot {}", snap.id),
            format!(
                "the snapshot is of root {}, the shadow's root is {}",
                snap.root.display(),
                root.display()
            ),
        ));
    }
    let objects = store.dir.join("objects");
    let objects = std::path::absolute(&objects).unwrap_or(objects);
    // On a tmpfs of its own: a sparse file with its overlay xattrs took an
    // ext4 block each (12.6 MB for hello's scope); in memory it is a few
    // MB of inodes, gone when the teardown unmounts it.
    let layer = dir.join("frozen");
    super::overlay::bind_inert(dir)?;
    super::overlay::mount_tmpfs(&layer)?;
    let built = build(&snap, &objects, root, &layer, f.staged.as_ref())?;
    tracing::debug!(snapshot = %snap.id, ?built, "built the shadow's frozen layer");
    let live = (!covers_root(&snap)).then(|| root.to_path_buf());
    Ok((
        Lower::Frozen {
            frozen: layer,
            live,
            objects,
        },
        Some(lock),
    ))
}

/// Whether a scope of the snapshot is the whole root: then the frozen
/// layer is all the shadow sees (an overlay's root is never opaque).
pub fn covers_root(snap: &Snapshot) -> bool {
    snap.scopes
        .iter()
        .any(|s| s.split(|&c| c == b'/').all(|c| c.is_empty() || c == b"."))
}

/// An entry's path as a relative path of plain components: the manifest
/// is ours, but a damaged one must not place anything outside `dir`.
fn checked(id: &str, rel: &[u8]) -> Result<PathBuf> {
    let bad = rel.is_empty()
        || rel.starts_with(b"/")
        || rel.contains(&0)
        || rel
            .split(|&c| c == b'/')
            .any(|c| c.is_empty() || c == b"." || c == b"..");
    if bad && !rel.is_empty() {
        return Err(other(
            format!("building the frozen layer of snapshot {id}"),
            format!(
                "entry path {:?} is not a plain relative path",
                String::from_utf8_lossy(rel)
            ),
        ));
    }
    Ok(PathBuf::from(fsops::os(rel)))
}

struct Builder<'a> {
    dir: &'a Path,
    live: Option<beneath::Root>,
    /// The first path made of each hardlink group.
    links: HashMap<u64, PathBuf>,
    dir_times: Vec<(PathBuf, (i64, i64))>,
    built: Built,
}

impl Builder<'_> {
    /// Make the directories above `rel` that are not there yet, with the
    /// live root's metadata (0755 root:root where it has no directory).
    fn parents(&mut self, rel: &Path) -> Result<()> {
        let mut at = PathBuf::new();
        let comps: Vec<_> = rel.components().collect();
        for c in comps.iter().take(comps.len().saturating_sub(1)) {
            at.push(c);
            let p = self.dir.join(&at);
            if std::fs::symlink_metadata(&p).is_ok() {
                continue;
            }
            std::fs::create_dir(&p).map_err(err(format!("creating {}", p.display())))?;
            let st = self.live.as_ref().and_then(|r| {
                let (fd, name) = r.parent(at.as_os_str().as_bytes()).ok()?;
                beneath::stat_at(std::os::fd::AsFd::as_fd(&fd), &name).ok()
            });
            let (mode, uid, gid, mtime) = match st {
                Some(s) if s.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                    (s.st_mode, s.st_uid, s.st_gid, (s.st_mtime, s.st_mtime_nsec))
                }
                _ => (0o755, 0, 0, (0, 0)),
            };
            meta(&p, uid, gid, Some(mode)).map_err(err(format!("{}", p.display())))?;
            self.dir_times.push((p, mtime));
        }
        Ok(())
    }

    fn entry(&mut self, e: &Entry, rel: &Path, objects: &Path) -> Result<()> {
        let p = self.dir.join(rel);
        let what = format!("frozen layer entry {}", p.display());
        if e.kind != Kind::Dir && std::fs::symlink_metadata(&p).is_ok() {
            return Ok(()); // listed twice (nested scopes): made already
        }
        self.built.entries += 1;
        match e.kind {
            Kind::Dir => {
                if !p.is_dir() {
                    std::fs::create_dir(&p).map_err(err(what.clone()))?;
                }
                meta(&p, e.uid, e.gid, Some(e.mode)).map_err(err(what.clone()))?;
                xattrs(&p, e).map_err(err(what.clone()))?;
                if !rel.as_os_str().is_empty() {
                    set_x(&p, b"trusted.overlay.opaque", b"y").map_err(err(what))?;
                }
                self.dir_times.push((p, e.mtime));
                return Ok(());
            }
            Kind::File => {
                if let Some(first) = e.link_group.and_then(|g| self.links.get(&g)) {
                    return std::fs::hard_link(first, &p).map_err(err(what));
                }
                self.file(e, &p, objects).map_err(err(what.clone()))?;
                if let Some(g) = e.link_group {
                    self.links.insert(g, p.clone());
                }
            }
            Kind::Symlink => {
                let target = e.target.as_deref().unwrap_or_default();
                std::os::unix::fs::symlink(fsops::os(target), &p).map_err(err(what.clone()))?;
                meta(&p, e.uid, e.gid, None).map_err(err(what.clone()))?;
                xattrs(&p, e).map_err(err(what.clone()))?;
            }
            Kind::Fifo | Kind::CharDev | Kind::BlockDev | Kind::Socket => {
                mknod(&p, e.mode & libc::S_IFMT, e.rdev).map_err(err(what.clone()))?;
                meta(&p, e.uid, e.gid, Some(e.mode)).map_err(err(what.clone()))?;
                xattrs(&p, e).map_err(err(what.clone()))?;
            }
        }
        set_times(&p, e.mtime).map_err(err(what))
    }

    /// A regular file: empty when the snapshot's was, otherwise a sparse
    /// metacopy file whose data is the object of its hash.
    fn file(&mut self, e: &Entry, p: &Path, objects: &Path) -> std::io::Result<()> {
        let f = std::fs::File::create_new(p)?;
        f.set_len(e.size)?;
        drop(f);
        // Owner before mode (chown clears setuid), recorded xattrs after
        // both (chown clears security.capability).
        meta(p, e.uid, e.gid, Some(e.mode))?;
        xattrs(p, e)?;
        if e.size > 0 {
            let hash = e.hash.ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "no content hash")
            })?;
            let h = hex::encode(hash);
            let object = objects.join(&h[..2]).join(&h[2..]);
            if std::fs::symlink_metadata(&object).is_err() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("its object {} is missing", object.display()),
                ));
            }
            set_x(p, b"trusted.overlay.metacopy", b"")?;
            let redirect = format!("/{}/{}", &h[..2], &h[2..]);
            set_x(p, b"trusted.overlay.redirect", redirect.as_bytes())?;
            self.built.metacopy_files += 1;
        }
        Ok(())
    }

    /// The staged artifact: DIR (0700) holding a copy of each host file,
    /// as `deploy::plan::stage` makes it in the live root.
    fn stage(&mut self, rel: &Path, files: &[PathBuf]) -> Result<()> {
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        self.parents(rel)?;
        let d = self.dir.join(rel);
        std::fs::create_dir(&d).map_err(err(format!("creating {}", d.display())))?;
        meta(&d, 0, 0, Some(0o700)).map_err(err(format!("{}", d.display())))?;
        for src in files {
            let dst = d.join(src.file_name().unwrap_or_default());
            let ok = std::process::Command::new("cp")
                .args(["-a", "--reflink=auto", "--"])
                .arg(src)
                .arg(&dst)
                .status()
                .map_err(err(format!("copying {} into the shadow", src.display())))?;
            if !ok.success() {
                return Err(other(
                    format!("copying {} to {}", src.display(), dst.display()),
                    format!("cp exited {ok}"),
                ));
            }
        }
        Ok(())
    }
}

fn cpath(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::ErrorKind::InvalidInput.into())
}

fn set_x(p: &Path, name: &[u8], value: &[u8]) -> std::io::Result<()> {
    fsops::set_xattr_of(&cpath(p)?, name, value, true)
}

/// The entry's recorded xattrs. One named `trusted.overlay.*` is escaped
/// (`trusted.overlay.overlay.*`, Linux 6.7), so the shadow sees it as the
/// host had it and our overlay does not obey it.
fn xattrs(p: &Path, e: &Entry) -> std::io::Result<()> {
    for (name, value) in &e.xattrs {
        let escaped;
        let name = match name.strip_prefix(b"trusted.overlay.") {
            Some(rest) => {
                escaped = [b"trusted.overlay.overlay.".as_slice(), rest].concat();
                &escaped
            }
            None => name,
        };
        set_x(p, name, value)?;
    }
    Ok(())
}

/// Owner, then (not for a symlink) the permission bits of `mode`.
fn meta(p: &Path, uid: u32, gid: u32, mode: Option<u32>) -> std::io::Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode & 0o7777))?;
    }
    Ok(())
}

fn mknod(p: &Path, kind: u32, rdev: u64) -> std::io::Result<()> {
    let c = cpath(p)?;
    // SAFETY: a valid C string; mknod creates, it follows nothing.
    if unsafe { libc::mknod(c.as_ptr(), kind | 0o600, rdev) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Access and modification time of the node itself (never a link's target).
fn set_times(p: &Path, (sec, nsec): (i64, i64)) -> std::io::Result<()> {
    let c = cpath(p)?;
    let t = libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    let times = [t, t];
    // SAFETY: a valid C string and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
#[path = "frozen_tests.rs"]
mod tests;
