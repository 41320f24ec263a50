//! The room check: whether an artifact's .debs fit where they unpack,
//! asked before anything changes.
//!
//! Why: a package that does not fit fails in dpkg's unpack with ENOSPC,
//! mostly within its first window, so neither the model nor the disk
//! trend can see it coming (the corpus's disk-full family: 22 of 29
//! installs fail in window 0). What each file needs is written in the
//! .deb itself. dpkg unpacks every file beside the one it replaces
//! (`.dpkg-new`) and renames them only at the end, so an upgrade needs
//! room for its new files whole: the old ones are not counted off.
//!
//! Where a file lands: its nearest existing directory, resolved as the
//! chrooted install will resolve it (RESOLVE_IN_ROOT: a symlink the root
//! holds is followed as the root sees it, never out of it), and that
//! directory's filesystem. Each filesystem's need is set against what it
//! has free for unprivileged users: bytes (`f_bavail`, the figure the
//! windows' `host_disk_free_bytes` reports) and inodes (`f_favail`; a
//! filesystem out of inodes fails a write with the same ENOSPC).
//!
//! What is counted, in dpkg's order for each .deb:
//! - its control area, which dpkg extracts to `/var/lib/dpkg/tmp.ci`
//!   before anything else and keeps (as `info/`) beside the files;
//! - the copy of its status file dpkg then writes beside that area
//!   (`status-new`, renamed over `status`): a passing need, checked and
//!   not kept. In a shadow, whose root is an overlay's lower layer,
//!   dpkg's link of the old status to `status-old` copies it up whole
//!   into the writable layer, where it stays: counted there once;
//! - its files: regular files rounded up to 4 KiB and one inode each,
//!   one inode per symlink or other node, and one per directory that
//!   does not exist yet (a directory two .debs of one artifact both
//!   create counts twice);
//! - in a shadow, the status file's copy again, which dpkg writes once
//!   the files are in place (on the host the files they replaced are
//!   gone by then, which the tally does not count off).
//!
//! Not counted: directories' blocks, the `.list` file and the triggers
//! dpkg writes once the files are in place, and what maintainer scripts
//! write. So but for that one inode the check is a lower bound: what it
//! refuses cannot fit.

mod debs;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use debs::{debs_of, read_into};

use crate::snapshot::beneath::{Root, fstat};
use crate::snapshot::fsops::free_fd;

/// A block: what the smallest file takes on ext4 or tmpfs.
const BLOCK: u64 = 4096;

/// What the room check found for an artifact.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Check {
    /// It fits: `files` entries of `bytes` in all, read in `ms`.
    Fits {
        debs: usize,
        files: u64,
        bytes: u64,
        ms: u64,
    },
    /// The deployment must not start, and why.
    Refused { reason: String },
    /// The check could not run on this host, and why.
    Unchecked { reason: String },
}

/// The room check. Refused: a .deb the host cannot read, a filesystem it
/// does not fit on, or a shadow whose writable layer (`shadow_upper`
/// bytes, a tmpfs every file the install writes lands on) is smaller
/// than the files: that shadow would fail for want of room, not for the
/// install's fault. An artifact with no .deb fits: nothing is unpacked.
/// The files are tallied as dpkg-deb streams them and the reading stops
/// at the first that does not fit, so a hostile .deb (a compression
/// bomb, millions of entries) costs at most the room it claims.
pub fn check(root: &Path, artifact: &[PathBuf], shadow_upper: Option<u64>) -> Check {
    let refused = |reason| Check::Refused { reason };
    let debs = match debs_of(artifact) {
        Ok(d) => d,
        Err(e) => return refused(e),
    };
    let t0 = std::time::Instant::now();
    let mut tally = match Tally::new(root, shadow_upper) {
        Ok(t) => t,
        Err(e) => return refused(format!("room check on {}: {e}", root.display())),
    };
    for deb in &debs {
        match read_into(deb, &mut tally) {
            Ok(()) => {}
            Err(Stop::NoDpkgDeb) => {
                return Check::Unchecked {
                    reason: "no dpkg-deb on this host to read the artifact's .debs (install dpkg)"
                        .into(),
                };
            }
            Err(Stop::Bad(reason)) => {
                return refused(format!("artifact {}: {reason}", deb.display()));
            }
            Err(Stop::Root(e)) => {
                return refused(format!("room check on {}: {e}", root.display()));
            }
            Err(Stop::Full(why)) => return refused(why),
        }
    }
    Check::Fits {
        debs: debs.len(),
        files: tally.files,
        bytes: tally.total,
        ms: t0.elapsed().as_millis() as u64,
    }
}

/// Why the deployment must not start ([`check`]'s refusal), or None: it
/// fits, or the check could not run here (logged as one warning line).
pub fn refusal(root: &Path, artifact: &[PathBuf], shadow_upper: Option<u64>) -> Option<String> {
    match check(root, artifact, shadow_upper) {
        Check::Refused { reason } => Some(reason),
        Check::Unchecked { reason } => {
            tracing::warn!(
                "room check skipped: {reason}, or set policy.guards.exhaustion = false to silence this"
            );
            None
        }
        // dpkg-deb decompresses each .deb whole: seconds for a large one.
        Check::Fits { debs: 0, .. } => None,
        Check::Fits {
            debs,
            files,
            bytes,
            ms,
        } => {
            tracing::info!(debs, files, bytes, ms, "room check: the artifact fits");
            None
        }
    }
}

fn blocks(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK
}

/// One entry of a .deb's tar, as the tally counts it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Entry {
    /// A regular file of that many bytes: its blocks and an inode.
    File(u64),
    /// A directory: an inode when it does not exist yet.
    Dir,
    /// A symlink, device or FIFO: an inode.
    Node,
}

/// What the files read so far need, per filesystem they land on.
struct Tally {
    root: Root,
    shadow_upper: Option<u64>,
    /// The last directory looked up, its filesystem, and whether it
    /// exists: a tar lists a directory's files together, so this spares
    /// most lookups.
    last: Option<(Vec<u8>, u64, bool)>,
    fs: BTreeMap<u64, Fs>,
    files: u64,
    total: u64,
    /// The status file's copy-up into the shadow's layer is counted.
    copied_up: bool,
    /// The status file's size, in blocks (0 before it was looked at).
    status: u64,
}

struct Fs {
    need: u64,
    free: u64,
    inodes: u64,
    /// None: the filesystem keeps no fixed number of inodes.
    inodes_free: Option<u64>,
    /// The shallowest directory seen on it (root-relative).
    at: Vec<u8>,
}

impl Tally {
    fn new(root: &Path, shadow_upper: Option<u64>) -> std::io::Result<Tally> {
        Ok(Tally {
            root: Root::open(root)?,
            shadow_upper,
            last: None,
            fs: BTreeMap::new(),
            files: 0,
            total: 0,
            copied_up: false,
            status: 0,
        })
    }

    /// The filesystem `dir` (root-relative) is on, or would be on once
    /// made, and whether it exists now.
    fn locate(&mut self, dir: &[u8]) -> Result<(u64, bool), Stop> {
        if let Some((d, dev, exists)) = &self.last
            && d == dir
        {
            return Ok((*dev, *exists));
        }
        let (at, fd) = nearest(&self.root, dir).map_err(Stop::Root)?;
        let fd = std::os::fd::AsFd::as_fd(&fd);
        let dev = fstat(fd).map_err(Stop::Root)?.st_dev;
        let exists = at == dir;
        if let Some(f) = self.fs.get_mut(&dev) {
            if depth(&at) < depth(&f.at) {
                f.at = at;
            }
        } else {
            let (free, inodes_free) = free_fd(fd).map_err(Stop::Root)?;
            let f = Fs {
                need: 0,
                free,
                inodes: 0,
                inodes_free,
                at,
            };
            self.fs.insert(dev, f);
        }
        self.last = Some((dir.to_vec(), dev, exists));
        Ok((dev, exists))
    }

    /// Count an entry (root-relative path); the refusal once the entries
    /// no longer fit.
    fn add(&mut self, path: &[u8], entry: Entry) -> Result<(), Stop> {
        let (dev, bytes) = match entry {
            Entry::Dir => match self.locate(path)? {
                (_, true) => return Ok(()),
                (dev, false) => (dev, 0),
            },
            Entry::File(size) => (self.locate(parent(path))?.0, blocks(size)),
            Entry::Node => (self.locate(parent(path))?.0, 0),
        };
        self.files += u64::from(matches!(entry, Entry::File(_)));
        self.total = self.total.saturating_add(bytes);
        self.fits_the_shadow(0)?;
        let f = self
            .fs
            .get_mut(&dev)
            .ok_or(Stop::Bad("internal: no filesystem".into()))?;
        f.need = f.need.saturating_add(bytes);
        f.inodes += 1;
        let short = if f.need > f.free {
            Some((human(f.free), human(f.need)))
        } else {
            f.inodes_free
                .filter(|free| f.inodes > *free)
                .map(|free| (format!("{free} inodes"), format!("{} inodes", f.inodes)))
        };
        match short {
            Some((free, need)) => Err(Stop::Full(format!(
                "no room: the artifact's files need more than the {free} free on the filesystem of /{} \
                 ({need} counted when reading stopped; policy.guards.exhaustion = false installs anyway)",
                String::from_utf8_lossy(&f.at),
            ))),
            None => Ok(()),
        }
    }

    /// dpkg's next copy of its status file, once a .deb's files are in
    /// place. On the host the files it replaced are gone by then, which
    /// the tally does not count off, so only the shadow's layer, where a
    /// replaced file of the lower layer frees nothing, is checked.
    fn status_copy_after_files(&self) -> Result<(), Stop> {
        self.fits_the_shadow(self.status)
    }

    /// Whether what is counted, and `passing` bytes more, fit the
    /// shadow's writable layer.
    fn fits_the_shadow(&self, passing: u64) -> Result<(), Stop> {
        let counted = self.total.saturating_add(passing);
        match self.shadow_upper.filter(|u| counted > *u) {
            Some(upper) => Err(Stop::Full(format!(
                "shadow.limits.disk_mb: the shadow's writable layer ({}) is smaller than the artifact's files \
                 (more than that, {} counted when reading stopped); the shadow would fail for want of room, \
                 not for the install's fault: raise it",
                human(upper),
                human(counted)
            ))),
            None => Ok(()),
        }
    }

    /// dpkg's copy of its status file, written beside what is counted so
    /// far before a .deb's files are unpacked: checked, not kept (it is
    /// renamed over the old one). In a shadow the root is an overlay's
    /// lower layer, and dpkg's first checkpoint hard-links the old status
    /// to `status-old`, which copies the whole file up into the writable
    /// layer, to stay: counted there once.
    fn status_copy(&mut self) -> Result<(), Stop> {
        const STATUS: &[u8] = b"var/lib/dpkg/status";
        let size = match self.root.open_in_root(STATUS, libc::O_PATH) {
            Ok(fd) => {
                let st = fstat(std::os::fd::AsFd::as_fd(&fd)).map_err(Stop::Root)?;
                if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                    return Ok(());
                }
                blocks(st.st_size.max(0) as u64)
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                return Ok(());
            }
            Err(e) => return Err(Stop::Root(e)),
        };
        self.status = size;
        if self.shadow_upper.is_some() && !self.copied_up {
            self.copied_up = true;
            self.total = self.total.saturating_add(size);
        }
        self.fits_the_shadow(size)?;
        let (dev, _) = self.locate(parent(STATUS))?;
        let f = &self.fs[&dev];
        if f.need.saturating_add(size) > f.free {
            return Err(Stop::Full(format!(
                "no room: dpkg copies its status file ({}) before it unpacks, beside the {} counted \
                 so far on the filesystem of /{}, which has {} free \
                 (policy.guards.exhaustion = false installs anyway)",
                human(size),
                human(f.need),
                String::from_utf8_lossy(&f.at),
                human(f.free)
            )));
        }
        Ok(())
    }
}

/// Why reading an artifact stopped.
#[derive(Debug)]
enum Stop {
    NoDpkgDeb,
    Bad(String),
    /// The root could not be looked at.
    Root(std::io::Error),
    /// The files do not fit: the refusal.
    Full(String),
}

fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&c| c == b'/') {
        Some(i) => &path[..i],
        None => &path[..0],
    }
}

fn depth(p: &[u8]) -> usize {
    if p.is_empty() {
        0
    } else {
        p.split(|&c| c == b'/').count()
    }
}

/// `dir`, or its nearest ancestor that exists as a directory, opened in
/// the root; with the part of `dir` that was found.
fn nearest(r: &Root, dir: &[u8]) -> std::io::Result<(Vec<u8>, OwnedFd)> {
    let mut at = dir;
    loop {
        match r.open_in_root(at, libc::O_PATH | libc::O_DIRECTORY) {
            Ok(fd) => return Ok((at.to_vec(), fd)),
            Err(e)
                if !at.is_empty()
                    && matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) =>
            {
                at = parent(at);
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("/{}: {e}", String::from_utf8_lossy(at)),
                ));
            }
        }
    }
}

fn human(b: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = b as f64;
    if b >= KIB * KIB * KIB {
        format!("{:.1} GiB", b / (KIB * KIB * KIB))
    } else if b >= KIB * KIB {
        format!("{:.1} MiB", b / (KIB * KIB))
    } else {
        format!("{:.1} KiB", b / KIB)
    }
}

#[cfg(test)]
mod measure;
#[cfg(test)]
mod tests;
