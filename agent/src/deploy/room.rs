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
//! has free for unprivileged users (`f_bavail`, the figure the windows'
//! `host_disk_free_bytes` reports), regular files rounded up to 4 KiB.
//! Directories and inodes are not counted.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::snapshot::beneath::{Root, fstat};
use crate::snapshot::fsops::free_bytes_fd;

/// A block: what the smallest file takes on ext4 or tmpfs.
const BLOCK: u64 = 4096;

/// Why the deployment must not start: a .deb the host cannot read, a
/// filesystem it does not fit on, or a shadow whose writable layer
/// (`shadow_upper` bytes, a tmpfs every file the install writes lands on)
/// is smaller than the files: that shadow would fail for want of room,
/// not for the install's fault, and its failure would count against a
/// healthy install. None: it fits, or the check could not run here
/// (logged as one warning line).
///
/// The files are tallied as dpkg-deb streams them and the reading stops
/// at the first file that does not fit, so a hostile .deb (a compression
/// bomb, millions of entries) costs at most the room it claims and no
/// memory per file.
pub fn refusal(root: &Path, artifact: &[PathBuf], shadow_upper: Option<u64>) -> Option<String> {
    let debs = match debs_of(artifact) {
        Ok(d) if d.is_empty() => return None,
        Ok(d) => d,
        Err(e) => return Some(e),
    };
    let t0 = std::time::Instant::now();
    let mut tally = match Tally::new(root, shadow_upper) {
        Ok(t) => t,
        Err(e) => return Some(format!("room check on {}: {e}", root.display())),
    };
    for deb in &debs {
        match read_into(deb, &mut tally) {
            Ok(()) => {}
            Err(Stop::NoDpkgDeb) => {
                tracing::warn!(
                    "room check skipped: no dpkg-deb on this host to read the artifact's .debs \
                     (install dpkg, or set policy.guards.exhaustion = false to silence this)"
                );
                return None;
            }
            Err(Stop::Bad(reason)) => return Some(format!("artifact {}: {reason}", deb.display())),
            Err(Stop::Root(e)) => return Some(format!("room check on {}: {e}", root.display())),
            Err(Stop::Full(why)) => return Some(why),
        }
    }
    // dpkg-deb decompresses each .deb whole: seconds for a large one.
    tracing::info!(
        debs = debs.len(),
        files = tally.files,
        bytes = tally.total,
        ms = t0.elapsed().as_millis() as u64,
        "room check: the artifact fits"
    );
    None
}

fn blocks(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK
}

/// What the files read so far need, per filesystem they land on.
struct Tally {
    root: Root,
    shadow_upper: Option<u64>,
    /// The directory of the last file and its filesystem: a tar lists a
    /// directory's files together, so this spares most lookups.
    last: Option<(Vec<u8>, u64)>,
    fs: BTreeMap<u64, Fs>,
    files: u64,
    total: u64,
}

struct Fs {
    need: u64,
    free: u64,
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
        })
    }

    /// Count a regular file (root-relative path, size); the refusal once
    /// the files no longer fit.
    fn add(&mut self, path: &[u8], size: u64) -> Result<(), Stop> {
        let dir = parent(path);
        let dev = match &self.last {
            Some((d, dev)) if d == dir => *dev,
            _ => {
                let (at, fd) = nearest(&self.root, dir).map_err(Stop::Root)?;
                let dev = fstat(std::os::fd::AsFd::as_fd(&fd))
                    .map_err(Stop::Root)?
                    .st_dev;
                if let Some(f) = self.fs.get_mut(&dev) {
                    if depth(&at) < depth(&f.at) {
                        f.at = at;
                    }
                } else {
                    let free = free_bytes_fd(std::os::fd::AsFd::as_fd(&fd)).map_err(Stop::Root)?;
                    self.fs.insert(dev, Fs { need: 0, free, at });
                }
                self.last = Some((dir.to_vec(), dev));
                dev
            }
        };
        let b = blocks(size);
        self.files += 1;
        self.total = self.total.saturating_add(b);
        if let Some(upper) = self.shadow_upper.filter(|u| self.total > *u) {
            return Err(Stop::Full(format!(
                "shadow.limits.disk_mb: the shadow's writable layer ({}) is smaller than the artifact's files \
                 (more than that, {} counted when reading stopped); the shadow would fail for want of room, \
                 not for the install's fault: raise it",
                human(upper),
                human(self.total)
            )));
        }
        let f = self
            .fs
            .get_mut(&dev)
            .ok_or(Stop::Bad("internal: no filesystem".into()))?;
        f.need = f.need.saturating_add(b);
        if f.need > f.free {
            return Err(Stop::Full(format!(
                "no room: the artifact's files need more than the {} free on the filesystem of /{} \
                 ({} counted when reading stopped; policy.guards.exhaustion = false installs anyway)",
                human(f.free),
                String::from_utf8_lossy(&f.at),
                human(f.need)
            )));
        }
        Ok(())
    }
}

/// The .debs among the artifact's paths: files named `*.deb`, and those
/// directly inside a directory.
fn debs_of(artifact: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let is_deb = |p: &Path| p.extension().is_some_and(|e| e == "deb");
    let mut out = Vec::new();
    for p in artifact {
        if p.is_dir() {
            let rd = std::fs::read_dir(p).map_err(|e| format!("artifact {}: {e}", p.display()))?;
            let mut found: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| is_deb(p) && p.is_file())
                .collect();
            found.sort();
            out.extend(found);
        } else if is_deb(p) {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Why reading an artifact stopped.
enum Stop {
    NoDpkgDeb,
    Bad(String),
    /// The root could not be looked at.
    Root(std::io::Error),
    /// The files do not fit: the refusal.
    Full(String),
}

/// Tally the regular files `deb` unpacks, read from `dpkg-deb
/// --fsys-tarfile` as it streams; dpkg-deb is killed when reading stops
/// early.
fn read_into(deb: &Path, tally: &mut Tally) -> Result<(), Stop> {
    let mut child = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Stop::NoDpkgDeb,
            _ => Stop::Bad(format!("running dpkg-deb: {e}")),
        })?;
    let mut stderr = child.stderr.take();
    let read = match child.stdout.take() {
        Some(out) => entries(out, tally),
        None => Err(Stop::Bad("dpkg-deb gave no output".into())),
    };
    if read.is_err() {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| Stop::Bad(format!("waiting for dpkg-deb: {e}")))?;
    match read {
        // A refusal, or the root failing us, stands whatever dpkg-deb
        // said after it was killed.
        Err(e @ (Stop::Full(_) | Stop::Root(_))) => return Err(e),
        Err(e) if status.success() => return Err(e),
        _ => {}
    }
    if !status.success() {
        let mut msg = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.take(4096).read_to_string(&mut msg);
        }
        return Err(Stop::Bad(format!(
            "not a .deb dpkg-deb can read ({status}): {}",
            msg.trim()
        )));
    }
    Ok(())
}

fn entries(r: impl Read, tally: &mut Tally) -> Result<(), Stop> {
    let bad = |e: std::io::Error| Stop::Bad(format!("its data: {e}"));
    for e in tar::Archive::new(r).entries().map_err(bad)? {
        let e = e.map_err(bad)?;
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = e.path_bytes();
        let rel = path.strip_prefix(b"./").unwrap_or(&path);
        let rel = rel.strip_prefix(b"/").unwrap_or(rel);
        tally.add(rel, e.header().size().map_err(bad)?)?;
    }
    Ok(())
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
#[path = "room_tests.rs"]
mod tests;
