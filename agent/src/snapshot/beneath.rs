//! Acting beneath a root through directory descriptors, never path strings.
//!
//! A restore runs as root on a tree an untrusted install has just changed,
//! and that install may have left a daemon running which swaps directories
//! for symlinks at any moment. So every path is resolved by the kernel
//! beneath the root's descriptor with openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS): a symlink anywhere on the way, or a `..` that
//! leaves the root, fails the call (ELOOP, EXDEV) instead of leading out.
//! Every change is then made with an *at() call on the parent directory's
//! descriptor or on a descriptor of the node itself, so what was checked is
//! what is changed.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name has a NUL byte"))
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The root of a restore, opened once.
pub struct Root {
    fd: OwnedFd,
}

impl Root {
    /// Open `root` itself; a root that is now a symlink is refused
    /// (O_NOFOLLOW), since a restore acts only where it was recorded.
    pub fn open(root: &Path) -> io::Result<Self> {
        let c = cstr(root.as_os_str().as_bytes())?;
        // SAFETY: valid C string.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        Ok(Root { fd: owned(fd)? })
    }

    /// `rel` (root-relative; empty: the root) opened beneath the root with
    /// `flags`, no symlink followed on the way or at the end.
    pub fn open_beneath(&self, rel: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
        self.openat2(
            rel,
            flags | libc::O_NOFOLLOW,
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS,
        )
    }

    /// `rel` opened as a process chrooted to the root would see it:
    /// symlinks followed, but resolved against the root and never out of
    /// it (RESOLVE_IN_ROOT). For reading where an install's writes will
    /// land, never for acting on the tree.
    pub fn open_in_root(&self, rel: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
        self.openat2(rel, flags, libc::RESOLVE_IN_ROOT)
    }

    fn openat2(&self, rel: &[u8], flags: libc::c_int, resolve: u64) -> io::Result<OwnedFd> {
        let c = cstr(if rel.is_empty() { b"." } else { rel })?;
        // SAFETY: open_how is plain data; zero is valid for every field.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (flags | libc::O_CLOEXEC) as u64;
        how.resolve = resolve;
        // SAFETY: valid descriptor, C string and open_how for the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &raw const how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        owned(fd as libc::c_int)
    }

    /// The directory holding `rel`, and `rel`'s last name.
    pub fn parent(&self, rel: &[u8]) -> io::Result<(OwnedFd, CString)> {
        let (dir, name) = match rel.iter().rposition(|&c| c == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&rel[..0], rel),
        };
        if name.is_empty() || name == b"." || name == b".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a name inside the root",
            ));
        }
        let fd = self
            .open_beneath(dir, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| match e.raw_os_error() {
                // Say why in words: a raced symlink shows up as these.
                Some(libc::ELOOP | libc::ENOTDIR | libc::EXDEV) => io::Error::new(
                    e.kind(),
                    format!(
                        "refused: /{} is not a real directory beneath the root \
                         (a symlink or a `..` on the way?): {e}",
                        String::from_utf8_lossy(dir)
                    ),
                ),
                _ => e,
            })?;
        Ok((fd, cstr(name)?))
    }
}

/// lstat of `name` in `dir`.
pub fn stat_at(dir: BorrowedFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and C string.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &raw mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

pub fn fstat(fd: BorrowedFd) -> io::Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: an empty path with AT_EMPTY_PATH means the descriptor itself.
    check(unsafe {
        libc::fstatat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            &raw mut st,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// The node `name` in `dir` itself (a symlink is not followed).
pub fn open_node(dir: BorrowedFd, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: valid descriptor and C string.
    owned(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
}

pub fn unlink_at(dir: BorrowedFd, name: &CStr, is_dir: bool) -> io::Result<()> {
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
}

pub fn mkdir_at(dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    // 0700 until step 5 gives the recorded mode.
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o700) })
}

pub fn symlink_at(target: &[u8], dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: valid descriptor and C strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

pub fn mknod_at(dir: BorrowedFd, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    // Permission bits 0600 until set_metadata gives the recorded ones.
    let mode = (mode & libc::S_IFMT) | 0o600;
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev as libc::dev_t) })
}

/// A hard link `new_dir/new` to `old_dir/old` (never following a symlink).
pub fn link_at(old_dir: BorrowedFd, old: &CStr, new_dir: BorrowedFd, new: &CStr) -> io::Result<()> {
    // SAFETY: valid descriptors and C strings; flags 0: no follow.
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            0,
        )
    })
}

pub fn rename_at(dir: BorrowedFd, old: &CStr, new: &CStr) -> io::Result<()> {
    // SAFETY: valid descriptor and C strings.
    check(unsafe { libc::renameat(dir.as_raw_fd(), old.as_ptr(), dir.as_raw_fd(), new.as_ptr()) })
}

pub fn readlink_at(dir: BorrowedFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: valid descriptor, C string and buffer.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// A new file `name` in `dir`, mode 0600, that did not exist (O_EXCL) and
/// is not reached through a symlink (O_NOFOLLOW).
pub fn create_excl(dir: BorrowedFd, name: &CStr) -> io::Result<std::fs::File> {
    // SAFETY: valid descriptor and C string.
    let fd = owned(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    })?;
    Ok(std::fs::File::from(fd))
}

/// Remove `name` in `dir` and, if it is a directory, everything under it:
/// each directory opened beneath its parent's descriptor with O_NOFOLLOW,
/// so a directory swapped for a symlink midway fails the removal instead of
/// leading it elsewhere. Returns whether anything was there.
pub fn remove_tree_at(dir: BorrowedFd, name: &CStr) -> io::Result<bool> {
    let st = match stat_at(dir, name) {
        Ok(st) => st,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        unlink_at(dir, name, false)?;
        return Ok(true);
    }
    // SAFETY: valid descriptor and C string.
    let sub = owned(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    for child in read_names(sub.as_fd())? {
        remove_tree_at(sub.as_fd(), &child)?;
    }
    unlink_at(dir, name, true)?;
    Ok(true)
}

/// The names in the directory `dir` (an O_RDONLY descriptor).
fn read_names(dir: BorrowedFd) -> io::Result<Vec<CString>> {
    // fdopendir takes the descriptor over; give it a copy.
    let dup = dir.try_clone_to_owned()?;
    // SAFETY: a descriptor we own, handed to the DIR stream.
    let d = unsafe { libc::fdopendir(dup.as_raw_fd()) };
    if d.is_null() {
        return Err(io::Error::last_os_error());
    }
    std::mem::forget(dup);
    // Start from the beginning whatever the shared offset says.
    // SAFETY: d is a valid DIR stream.
    unsafe { libc::rewinddir(d) };
    let mut out = Vec::new();
    loop {
        // SAFETY: d is a valid DIR stream; the entry lives until the next call.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        if name != c"." && name != c".." {
            out.push(name.to_owned());
        }
    }
    // SAFETY: d is a valid DIR stream, closed once.
    unsafe { libc::closedir(d) };
    Ok(out)
}

/// `/proc/self/fd/N`: the node an O_PATH descriptor holds, for the calls
/// that have no descriptor form for O_PATH (chmod, xattrs).
fn proc_fd(fd: BorrowedFd) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL")
}

/// Owner of the node itself (symlinks included).
pub fn chown_fd(fd: BorrowedFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: empty path with AT_EMPTY_PATH: the descriptor itself.
    check(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Mode of a node that is not a symlink (symlinks have no mode of their own).
pub fn chmod_fd(fd: BorrowedFd, mode: u32) -> io::Result<()> {
    let p = proc_fd(fd);
    // SAFETY: valid C string; the magic link leads to the held node.
    check(unsafe { libc::chmod(p.as_ptr(), mode & 0o7777) })
}

/// Atime and mtime of the node itself, symlinks included (utimensat with
/// AT_EMPTY_PATH takes an O_PATH descriptor).
pub fn set_times_fd(fd: BorrowedFd, sec: i64, nsec: i64) -> io::Result<()> {
    let t = libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    let times = [t, t];
    // SAFETY: an empty path with AT_EMPTY_PATH: the descriptor itself.
    check(unsafe {
        libc::utimensat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            times.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Where xattr calls reach a node: a file or directory through its
/// descriptor's magic link; a symlink (which the link would follow) by its
/// name beneath its parent's magic link, without following it.
pub enum XattrAt<'a> {
    Node(BorrowedFd<'a>),
    Link(BorrowedFd<'a>, &'a CStr),
}

impl XattrAt<'_> {
    fn path(&self) -> io::Result<(CString, bool)> {
        Ok(match self {
            XattrAt::Node(fd) => (proc_fd(*fd), false),
            XattrAt::Link(dir, name) => {
                let mut p = proc_fd(*dir).into_bytes();
                p.push(b'/');
                p.extend_from_slice(name.to_bytes());
                (cstr(&p)?, true)
            }
        })
    }

    pub fn list(&self) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (p, nofollow) = self.path()?;
        super::fsops::xattrs_of(&p, nofollow)
    }

    pub fn set(&self, name: &[u8], value: &[u8]) -> io::Result<()> {
        let (p, nofollow) = self.path()?;
        super::fsops::set_xattr_of(&p, name, value, nofollow)
    }

    pub fn remove(&self, name: &[u8]) -> io::Result<()> {
        let (p, nofollow) = self.path()?;
        super::fsops::remove_xattr_of(&p, name, nofollow)
    }
}
