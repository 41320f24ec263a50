//! Resolving one change record, on arrival, into the host paths it may
//! have changed: through /proc/PID/{root,cwd,fd}, with the process's root
//! as the kernel saw it (RESOLVE_IN_ROOT), never guessing.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use backstop_common::{AT_FDCWD, CHANGE_PATH0_BAD, CHANGE_PATH1_BAD, ChangeEvent};

/// The host paths one record may have changed.
#[derive(Default)]
pub(super) struct Found {
    pub(super) paths: Vec<PathBuf>,
    /// (inode number, name relative to it).
    pub(super) anchored: Vec<(u64, PathBuf)>,
}

/// The paths one record may have changed.
pub(super) fn resolve(
    ev: &ChangeEvent,
    roots: &mut HashMap<u32, PathBuf>,
) -> std::result::Result<Found, String> {
    if ev.flags & (CHANGE_PATH0_BAD | CHANGE_PATH1_BAD) != 0 {
        return Err("a path could not be read whole".into());
    }
    // A thread's own /proc entry (cwd and root are per thread in principle),
    // else its process's.
    let proc = [ev.tid, ev.tgid]
        .into_iter()
        .map(|p| PathBuf::from(format!("/proc/{p}")))
        .find(|p| p.exists());
    let root = match proc
        .as_ref()
        .and_then(|p| std::fs::read_link(p.join("root")).ok())
    {
        Some(r) => {
            roots.insert(ev.tgid, r.clone());
            Some(r)
        }
        None => roots.get(&ev.tgid).cloned().or_else(|| one_root(roots)),
    };
    let mut out = Found::default();
    for (path, dirfd, ino) in [
        (&ev.path0[..], ev.dirfd0, ev.ino0),
        (&ev.path1[..], ev.dirfd1, ev.ino1),
    ] {
        let path = backstop_common::c_str(path);
        if path.is_empty() && dirfd == AT_FDCWD {
            continue;
        }
        // What the kernel read as the call was made always goes in: /proc,
        // read now, may have moved on (a chdir, a chroot, a reused fd).
        if ino != 0 {
            out.anchored
                .push((ino, PathBuf::from(std::ffi::OsStr::from_bytes(path))));
        }
        match resolve_one(path, dirfd, proc.as_deref(), root.as_deref()) {
            Ok(paths) => out.paths.extend(paths),
            Err(_) if ino != 0 => {}
            Err(why) => return Err(why),
        }
    }
    Ok(out)
}

/// One (dirfd, path) of a record, through /proc while the process lives.
fn resolve_one(
    path: &[u8],
    dirfd: i32,
    proc: Option<&Path>,
    root: Option<&Path>,
) -> std::result::Result<Vec<PathBuf>, String> {
    if path.is_empty() {
        if dirfd == AT_FDCWD {
            return Ok(Vec::new());
        }
        // The fd itself.
        let proc = proc.ok_or("the process is gone")?;
        let target = std::fs::read_link(proc.join(format!("fd/{dirfd}")))
            .map_err(|e| format!("fd {dirfd}: {e}"))?;
        let t = target.as_os_str().as_bytes();
        if t.ends_with(b" (deleted)") || !t.starts_with(b"/") {
            // Unlinked (that unlink was recorded), or not a file.
            return Ok(Vec::new());
        }
        return Ok(vec![target]);
    }
    let root = root.ok_or("the process is gone")?;
    let path = Path::new(std::ffi::OsStr::from_bytes(path));
    let in_root = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let proc = proc.ok_or("the process is gone (relative path)")?;
        let base = if dirfd == AT_FDCWD {
            proc.join("cwd")
        } else {
            proc.join(format!("fd/{dirfd}"))
        };
        let base = std::fs::read_link(&base).map_err(|e| format!("{}: {e}", base.display()))?;
        let base = match base.strip_prefix(root) {
            Ok(b) => Path::new("/").join(b),
            Err(_) if root == Path::new("/") => base,
            Err(_) => return Err(format!("{} is outside the root", base.display())),
        };
        base.join(path)
    };
    in_root_paths(root, &in_root)
}

/// When every process seen so far had the same root, that root.
fn one_root(roots: &HashMap<u32, PathBuf>) -> Option<PathBuf> {
    let mut it = roots.values();
    let first = it.next()?;
    it.all(|r| r == first).then(|| first.clone())
}

/// `path` as the kernel saw it inside `root`: the parent's real host path
/// and the name; and when the name is a symlink, also where it leads (an
/// open for writing follows it).
pub(super) fn in_root_paths(root: &Path, path: &Path) -> std::result::Result<Vec<PathBuf>, String> {
    // Lexical clean-up first: "." and empty components; ".." is left to
    // the kernel (it may cross a symlink).
    let comps: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s),
            Component::ParentDir => Some(std::ffi::OsStr::new("..")),
            _ => None,
        })
        .collect();
    let Some((name, parent)) = comps.split_last() else {
        return Ok(vec![root.to_path_buf()]);
    };
    let root_fd = open_path(None, root, 0).map_err(|e| format!("{}: {e}", root.display()))?;
    // The deepest existing ancestor, resolved by the kernel inside the
    // root; what does not exist (removed since) is appended as written.
    let mut upto = parent.len();
    let base = loop {
        let rel: PathBuf = parent[..upto].iter().collect();
        let rel = if rel.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            rel
        };
        match open_path(Some(&root_fd), &rel, libc::RESOLVE_IN_ROOT) {
            Ok(fd) => break fd_path(&fd)?,
            Err(_) if upto > 0 => upto -= 1,
            Err(e) => return Err(format!("{}: {e}", root.display())),
        }
    };
    let mut host = base;
    for c in &parent[upto..] {
        host.push(c);
    }
    if *name == ".." {
        host.pop();
    } else {
        host.push(name);
    }
    let mut out = vec![host.clone()];
    let is_link = std::fs::symlink_metadata(&host).is_ok_and(|m| m.file_type().is_symlink());
    if is_link {
        let rel: PathBuf = comps.iter().collect();
        if let Ok(fd) = open_path(Some(&root_fd), &rel, libc::RESOLVE_IN_ROOT) {
            out.push(fd_path(&fd)?);
        }
    }
    Ok(out)
}

/// openat2(O_PATH) relative to `dir` (or absolute), with `resolve` flags.
fn open_path(dir: Option<&OwnedFd>, path: &Path, resolve: u64) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes().to_vec())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: open_how is plain data; zero is a valid value for every field.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    let dirfd = dir.map_or(libc::AT_FDCWD, std::os::fd::AsRawFd::as_raw_fd);
    // SAFETY: valid C string and open_how for the call's duration.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            c.as_ptr(),
            &raw const how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn fd_path(fd: &OwnedFd) -> std::result::Result<PathBuf, String> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|p| PathBuf::from(std::ffi::OsString::from_vec(p.into_os_string().into_vec())))
        .map_err(|e| e.to_string())
}
