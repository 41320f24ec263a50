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
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::snapshot::beneath::{Root, fstat};

/// A block: what the smallest file takes on ext4 or tmpfs.
const BLOCK: u64 = 4096;

/// One filesystem the artifact does not fit on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// The shallowest directory of the root the artifact writes beneath
    /// on that filesystem (root-relative, with a leading `/`).
    pub at: String,
    pub need: u64,
    pub free: u64,
}

/// Why the deployment must not start: a .deb the host cannot read, a
/// filesystem it does not fit on, or a shadow whose writable layer
/// (`shadow_upper` bytes, a tmpfs every file the install writes lands on)
/// is smaller than the files: that shadow would fail for want of room,
/// not for the install's fault, and its failure would count against a
/// healthy install. None: it fits, or the check could not run here
/// (logged as one warning line).
pub fn refusal(root: &Path, artifact: &[PathBuf], shadow_upper: Option<u64>) -> Option<String> {
    let debs = match debs_of(artifact) {
        Ok(d) if d.is_empty() => return None,
        Ok(d) => d,
        Err(e) => return Some(e),
    };
    let t0 = std::time::Instant::now();
    let mut files = Vec::new();
    for deb in &debs {
        match listing(deb) {
            Ok(f) => files.extend(f),
            Err(Listing::NoDpkgDeb) => {
                tracing::warn!(
                    "room check skipped: no dpkg-deb on this host to read the artifact's .debs \
                     (install dpkg, or set policy.guards.exhaustion = false to silence this)"
                );
                return None;
            }
            Err(Listing::Bad(reason)) => {
                return Some(format!("artifact {}: {reason}", deb.display()));
            }
        }
    }
    // dpkg-deb decompresses each .deb whole: seconds for a large one.
    tracing::info!(
        debs = debs.len(),
        files = files.len(),
        bytes = files.iter().map(|(_, s)| blocks(*s)).sum::<u64>(),
        ms = t0.elapsed().as_millis() as u64,
        "room check: the artifact's files read"
    );
    if let Some(why) = shadow_upper.and_then(|u| shadow_too_small(&files, u)) {
        return Some(why);
    }
    match shortfalls(root, &files) {
        Ok(s) if s.is_empty() => None,
        Ok(s) => Some(
            s.iter()
                .map(|s| {
                    format!(
                        "no room: the artifact's files need {} on the filesystem of {}, which has {} free",
                        human(s.need),
                        s.at,
                        human(s.free)
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
                + " (policy.guards.exhaustion = false installs anyway)",
        ),
        Err(e) => Some(format!("room check on {}: {e}", root.display())),
    }
}

fn blocks(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK
}

fn shadow_too_small(files: &[(Vec<u8>, u64)], upper: u64) -> Option<String> {
    let need: u64 = files.iter().map(|(_, s)| blocks(*s)).sum();
    (need > upper).then(|| {
        format!(
            "shadow.limits.disk_mb: the shadow's writable layer ({}) is smaller than the artifact's files ({}); \
             the shadow would fail for want of room, not for the install's fault: raise it",
            human(upper),
            human(need)
        )
    })
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

enum Listing {
    NoDpkgDeb,
    Bad(String),
}

/// The regular files `deb` unpacks: root-relative path (no leading `/`)
/// and size, read from `dpkg-deb --fsys-tarfile`.
fn listing(deb: &Path) -> Result<Vec<(Vec<u8>, u64)>, Listing> {
    let mut child = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Listing::NoDpkgDeb,
            _ => Listing::Bad(format!("running dpkg-deb: {e}")),
        })?;
    let mut stderr = child.stderr.take();
    let read = child
        .stdout
        .take()
        .ok_or_else(|| Listing::Bad("dpkg-deb gave no output".into()))
        .and_then(|out| entries(out).map_err(|e| Listing::Bad(format!("its data: {e}"))));
    if read.is_err() {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| Listing::Bad(format!("waiting for dpkg-deb: {e}")))?;
    let files = read?;
    if !status.success() {
        let mut msg = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.take(4096).read_to_string(&mut msg);
        }
        return Err(Listing::Bad(format!(
            "not a .deb dpkg-deb can read ({status}): {}",
            msg.trim()
        )));
    }
    Ok(files)
}

fn entries(r: impl Read) -> std::io::Result<Vec<(Vec<u8>, u64)>> {
    let mut out = Vec::new();
    for e in tar::Archive::new(r).entries()? {
        let e = e?;
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = e.path_bytes();
        let rel = path.strip_prefix(b"./").unwrap_or(&path);
        let rel = rel.strip_prefix(b"/").unwrap_or(rel);
        out.push((rel.to_vec(), e.header().size()?));
    }
    Ok(out)
}

/// Each filesystem `files` (root-relative path, size) do not fit on.
pub fn shortfalls(root: &Path, files: &[(Vec<u8>, u64)]) -> std::io::Result<Vec<Shortfall>> {
    let r = Root::open(root)?;
    // Per directory of a file: its filesystem (st_dev). Per filesystem:
    // the need, the shallowest directory seen, and a descriptor on it.
    let mut dev_of: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut fs: BTreeMap<u64, (u64, Vec<u8>, OwnedFd)> = BTreeMap::new();
    for (path, size) in files {
        let dir = parent(path);
        let dev = if let Some(d) = dev_of.get(dir) {
            *d
        } else {
            let (at, fd) = nearest(&r, dir)?;
            let dev = fstat(std::os::fd::AsFd::as_fd(&fd))?.st_dev;
            let e = fs.entry(dev).or_insert_with(|| (0, at.clone(), fd));
            if depth(&at) < depth(&e.1) {
                e.1 = at;
            }
            dev_of.insert(dir.to_vec(), dev);
            dev
        };
        if let Some(e) = fs.get_mut(&dev) {
            e.0 += blocks(*size);
        }
    }
    let mut out = Vec::new();
    for (need, at, fd) in fs.into_values() {
        let free = free_bytes(&fd)?;
        if need > free {
            out.push(Shortfall {
                at: format!("/{}", String::from_utf8_lossy(&at)),
                need,
                free,
            });
        }
    }
    Ok(out)
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

fn free_bytes(fd: &OwnedFd) -> std::io::Result<u64> {
    // SAFETY: zeroed statvfs is a valid out-parameter; the descriptor is
    // open (O_PATH descriptors are accepted by fstatfs since Linux 3.12).
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and out-parameter.
    if unsafe { libc::fstatvfs(fd.as_raw_fd(), &raw mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
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
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("backstop-room-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_file_lands_on_its_nearest_existing_directorys_filesystem_as_the_root_sees_it() {
        let root = scratch("links");
        std::fs::create_dir_all(root.join("usr/share")).unwrap();
        // Absolute links, as a hostile root would hold them: to the host
        // they lead to procfs; in the root, to nothing, so the root's own
        // filesystem is where those files land.
        std::os::unix::fs::symlink("/proc", root.join("usr/share/locale")).unwrap();
        std::os::unix::fs::symlink("/proc/self", root.join("usr/lib")).unwrap();
        let files = vec![
            (b"usr/share/locale/de/LC_MESSAGES/x.mo".to_vec(), 1),
            (b"usr/lib/x/y.so".to_vec(), 5000),
            (b"usr/share/doc/x/copyright".to_vec(), 4097),
        ];
        let r = Root::open(&root).unwrap();
        let root_dev = fstat(std::os::fd::AsFd::as_fd(
            &r.open_in_root(b"", libc::O_PATH).unwrap(),
        ))
        .unwrap()
        .st_dev;
        for (path, _) in &files {
            let (at, fd) = nearest(&r, parent(path)).unwrap();
            let dev = fstat(std::os::fd::AsFd::as_fd(&fd)).unwrap().st_dev;
            assert_eq!(
                dev,
                root_dev,
                "{} went off the root via /{}",
                String::from_utf8_lossy(path),
                String::from_utf8_lossy(&at)
            );
        }
        // 4 KiB + 8 KiB + 8 KiB on one filesystem that has more free.
        assert_eq!(shortfalls(&root, &files).unwrap(), Vec::new());
        let huge = vec![(b"usr/bin/big".to_vec(), u64::MAX / 2)];
        let s = shortfalls(&root, &huge).unwrap();
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].at, "/usr");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_shadow_smaller_than_the_files_is_named_by_its_field() {
        let files = vec![(b"usr/bin/a".to_vec(), 1), (b"usr/bin/b".to_vec(), 4097)];
        assert_eq!(shadow_too_small(&files, 3 * BLOCK), None);
        let why = shadow_too_small(&files, 3 * BLOCK - 1).expect("too small");
        assert!(why.starts_with("shadow.limits.disk_mb"), "{why}");
        assert!(why.contains("12.0 KiB"), "{why}");
    }

    #[test]
    fn a_file_that_is_not_a_deb_is_refused_by_name_and_a_plain_file_is_not_checked() {
        let d = scratch("bad");
        let bad = d.join("x.deb");
        std::fs::write(&bad, b"not an ar archive").unwrap();
        std::fs::write(d.join("notes.txt"), b"x").unwrap();
        if Command::new("dpkg-deb").arg("--version").output().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "no dpkg-deb on this host: CI installs dpkg"
            );
            eprintln!("SKIP: no dpkg-deb on this host");
            return;
        }
        let why = refusal(&d, std::slice::from_ref(&bad), None).expect("a refusal");
        assert!(why.contains(&bad.display().to_string()), "{why}");
        assert_eq!(refusal(&d, &[d.join("notes.txt")], Some(1)), None);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
