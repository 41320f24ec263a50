//! The edge between a restore's plan and the tree it changes.
//!
//! [`HostOps`] has one method per kind of change a restore makes to one
//! node, named by its root-relative path, in the spirit of youki's
//! `Syscall` trait: [`Beneath`] is the real one, which resolves every path
//! beneath the root's descriptor (openat2, RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS) and acts through *at() calls on descriptors (see
//! `beneath.rs`); the unit tests in `order_tests.rs` put a recording fake
//! in its place to pin the order of a restore without root. The seam sits
//! one level above the system calls so the fake need not emulate a
//! filesystem; what happens inside one method (chown before chmod, the
//! O_EXCL temporary file) is the real implementation's, proven by the
//! integration tests (tests/tests/snapshot.rs, restore_attacks.rs).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::super::beneath::{self, Root, XattrAt};
use super::super::{Entry, Kind, Result, Store, fsops, hash_file, kind_of};

/// What a check of one stored object found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectState {
    Intact,
    Missing,
    /// Its content no longer hashes to its name.
    Corrupt,
}

/// Everything a restore reads from or changes in the tree it restores,
/// and the store objects it reads. Paths are root-relative bytes; an
/// implementation never lets one lead outside the root.
pub trait HostOps: Sync {
    /// A file's content written to a temporary name beside its target,
    /// not yet in place.
    type Staged;

    /// Whether the stored object named `hash` is present and intact.
    fn check_object(&self, hash: &[u8; 32]) -> Result<ObjectState>;
    /// Whether the file the walk saw as `st` still has `e`'s content.
    fn content_matches(&self, e: &Entry, st: &libc::stat) -> io::Result<bool>;
    /// Remove `rel` and everything under it; false: nothing was there.
    fn remove(&self, rel: &[u8]) -> io::Result<bool>;
    /// Make `rel` a hard link to `first`; false: it already was one.
    fn relink(&self, first: &[u8], rel: &[u8]) -> io::Result<bool>;
    /// Create `e` (a directory, symlink or special file) unless it is
    /// there as recorded; false: it was.
    fn recreate(&self, e: &Entry) -> io::Result<bool>;
    /// Write `e`'s content from the store to a new temporary file beside it.
    fn stage_content(&self, e: &Entry) -> io::Result<Self::Staged>;
    /// Owner, mode, xattrs and mtime of a staged file, on its descriptor.
    fn stage_metadata(&self, e: &Entry, staged: &Self::Staged) -> io::Result<()>;
    /// Rename a staged file into place.
    fn commit_staged(&self, staged: Self::Staged) -> io::Result<()>;
    /// Remove a staged file after a failure.
    fn discard_staged(&self, staged: Self::Staged);
    /// Owner, mode, xattrs and mtime of `e` as it is now, each where it
    /// differs; refuses a node that is not of `e`'s kind or has more than
    /// `links` links. Returns whether anything changed.
    fn set_metadata(&self, e: &Entry, links: u64) -> io::Result<bool>;
    /// Make a directory's entries durable (best effort).
    fn sync_dir(&self, rel: &[u8]);
}

/// The real tree: every call resolved beneath the root's descriptor.
pub struct Beneath<'a> {
    root: Root,
    store: &'a Store,
}

impl<'a> Beneath<'a> {
    /// The root itself is opened O_NOFOLLOW: a root that became a symlink
    /// is refused.
    pub fn open(store: &'a Store, root: &Path) -> io::Result<Self> {
        Ok(Beneath {
            root: Root::open(root)?,
            store,
        })
    }
}

/// A file written to `tmp` in `dir`, to be renamed to `name`.
pub struct StagedFile {
    dir: OwnedFd,
    tmp: CString,
    name: CString,
    file: std::fs::File,
}

impl HostOps for Beneath<'_> {
    type Staged = StagedFile;

    fn check_object(&self, hash: &[u8; 32]) -> Result<ObjectState> {
        let obj = self.store.object_path(hash);
        if !obj.exists() {
            return Ok(ObjectState::Missing);
        }
        Ok(if hash_file(&obj)? == *hash {
            ObjectState::Intact
        } else {
            ObjectState::Corrupt
        })
    }

    fn content_matches(&self, e: &Entry, st: &libc::stat) -> io::Result<bool> {
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_size as u64 != e.size {
            return Ok(false);
        }
        let untouched = (st.st_dev, st.st_ino, st.st_ctime, st.st_ctime_nsec) == e.ident
            && (st.st_mtime, st.st_mtime_nsec) == e.mtime;
        if untouched {
            return Ok(true);
        }
        let mut f = std::fs::File::from(self.root.open_beneath(&e.path, libc::O_RDONLY)?);
        let mut hasher = Sha256::new();
        io::copy(&mut f, &mut hasher)?;
        Ok(<[u8; 32]>::from(hasher.finalize()) == e.hash.unwrap_or_default())
    }

    /// Ok(false) also when its parent is gone.
    fn remove(&self, rel: &[u8]) -> io::Result<bool> {
        let (dir, name) = match self.root.parent(rel) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        beneath::remove_tree_at(dir.as_fd(), &name)
    }

    fn relink(&self, first: &[u8], rel: &[u8]) -> io::Result<bool> {
        let (fdir, fname) = self.root.parent(first)?;
        let first_st = beneath::stat_at(fdir.as_fd(), &fname)?;
        let (dir, name) = self.root.parent(rel)?;
        let now = stat_or_none(dir.as_fd(), &name)?;
        if now.is_some_and(|st| (st.st_dev, st.st_ino) == (first_st.st_dev, first_st.st_ino)) {
            return Ok(false);
        }
        if now.is_some() {
            beneath::unlink_at(dir.as_fd(), &name, false)?;
        }
        beneath::link_at(fdir.as_fd(), &fname, dir.as_fd(), &name)?;
        Ok(true)
    }

    fn recreate(&self, e: &Entry) -> io::Result<bool> {
        if e.path.is_empty() {
            return Ok(false);
        }
        let (dir, name) = self.root.parent(&e.path)?;
        let dir = dir.as_fd();
        let now = stat_or_none(dir, &name)?;
        if is_as_recorded(e, dir, &name, now)? {
            return Ok(false);
        }
        if now.is_some() {
            beneath::unlink_at(dir, &name, false)?;
        }
        match e.kind {
            // Mode in step 5; 0700 until then.
            Kind::Dir => beneath::mkdir_at(dir, &name)?,
            Kind::Symlink => {
                beneath::symlink_at(e.target.as_deref().unwrap_or_default(), dir, &name)?;
            }
            // Planned as present and intact, gone since: another writer.
            Kind::File => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "vanished under the restore",
                ));
            }
            _ => beneath::mknod_at(dir, &name, e.mode, e.rdev)?,
        }
        Ok(true)
    }

    /// O_EXCL, O_NOFOLLOW, 0600, beside the target: whatever is at the
    /// target's name (maybe a hard link to an inode outside the scope) is
    /// only ever unlinked by the rename.
    fn stage_content(&self, e: &Entry) -> io::Result<StagedFile> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let hash = e.hash.expect("files carry a hash");
        let (dir, name) = self.root.parent(&e.path)?;
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = CString::new(format!(".bsrestore-{}-{seq}", std::process::id())).expect("no NUL");
        // A leftover of a killed restore that had the same pid.
        let _ = beneath::unlink_at(dir.as_fd(), &tmp, false);
        let file = beneath::create_excl(dir.as_fd(), &tmp)?;
        let staged = StagedFile {
            dir,
            tmp,
            name,
            file,
        };
        let written = (|| {
            let mut src = std::fs::File::open(self.store.object_path(&hash))?;
            if fsops::reflink(&src, &staged.file).is_err() {
                io::copy(&mut src, &mut &staged.file)?;
            }
            staged.file.sync_data()
        })();
        match written {
            Ok(()) => Ok(staged),
            Err(err) => {
                self.discard_staged(staged);
                Err(err)
            }
        }
    }

    fn stage_metadata(&self, e: &Entry, staged: &StagedFile) -> io::Result<()> {
        let fd = staged.file.as_fd();
        beneath::chown_fd(fd, e.uid, e.gid)?;
        // After chown, which clears setuid bits and file capabilities.
        beneath::chmod_fd(fd, e.mode)?;
        let x = XattrAt::Node(fd);
        for (name, value) in &e.xattrs {
            x.set(name, value)?;
        }
        beneath::set_times_fd(fd, e.mtime.0, e.mtime.1)
    }

    fn commit_staged(&self, staged: StagedFile) -> io::Result<()> {
        let StagedFile {
            dir,
            tmp,
            name,
            file,
        } = staged;
        drop(file);
        beneath::rename_at(dir.as_fd(), &tmp, &name)
    }

    fn discard_staged(&self, staged: StagedFile) {
        let _ = beneath::unlink_at(staged.dir.as_fd(), &staged.tmp, false);
    }

    fn set_metadata(&self, e: &Entry, links: u64) -> io::Result<bool> {
        set_metadata(&self.root, e, links)
    }

    fn sync_dir(&self, rel: &[u8]) {
        if let Ok(fd) = self
            .root
            .open_beneath(rel, libc::O_RDONLY | libc::O_DIRECTORY)
        {
            let _ = std::fs::File::from(fd).sync_all();
        }
    }
}

fn stat_or_none(dir: BorrowedFd, name: &CStr) -> io::Result<Option<libc::stat>> {
    match beneath::stat_at(dir, name) {
        Ok(st) => Ok(Some(st)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the node at `name` (stat `now`) is already what `e` records: a
/// directory or file that is there (a file's content is checked apart), a
/// symlink with the same target, a special file of the same type and
/// device number.
fn is_as_recorded(
    e: &Entry,
    dir: BorrowedFd,
    name: &CStr,
    now: Option<libc::stat>,
) -> io::Result<bool> {
    Ok(match e.kind {
        Kind::Dir | Kind::File => now.is_some(),
        Kind::Symlink => {
            now.is_some()
                && beneath::readlink_at(dir, name)? == e.target.clone().unwrap_or_default()
        }
        Kind::Fifo | Kind::CharDev | Kind::BlockDev | Kind::Socket => now.is_some_and(|st| {
            st.st_mode & libc::S_IFMT == e.mode & libc::S_IFMT && st.st_rdev == e.rdev
        }),
    })
}

/// Owner, then mode, then xattrs, then mtime of the entry as it is now
/// beneath the root; each only when it differs. Returns whether anything
/// changed. Acts on the node's own descriptor, after checking it is the
/// kind recorded and has no more links than `links` (else someone linked
/// it from elsewhere since the plan: refuse rather than change it).
fn set_metadata(root: &Root, e: &Entry, links: u64) -> io::Result<bool> {
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
        return Err(io::Error::other(format!(
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
