//! The system calls a snapshot needs that std does not offer, or offers
//! only by following symlinks: lstat with nanoseconds, extended attributes,
//! FICLONE. What a restore changes goes through beneath.rs instead.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn lstat(p: &Path) -> io::Result<libc::stat> {
    let c = cpath(p)?;
    // SAFETY: zeroed stat is a valid out-parameter; c is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::lstat(c.as_ptr(), &raw mut st) })?;
    Ok(st)
}

/// Every extended attribute of the path itself (not a symlink's target),
/// sorted by name. Includes security.capability and the POSIX ACLs
/// (system.posix_acl_access / _default).
pub fn xattrs(p: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    xattrs_of(&cpath(p)?, true)
}

/// [`xattrs`] of a C path; `nofollow`: of the final symlink itself (the
/// l* calls), else of what it leads to (for /proc/self/fd magic links).
pub fn xattrs_of(c: &CStr, nofollow: bool) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let list = if nofollow {
        libc::llistxattr
    } else {
        libc::listxattr
    };
    let get = if nofollow {
        libc::lgetxattr
    } else {
        libc::getxattr
    };
    // SAFETY: size query with a null buffer.
    let len = unsafe { list(c.as_ptr(), std::ptr::null_mut(), 0) };
    if len < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOTSUP) {
            Ok(Vec::new())
        } else {
            Err(e)
        };
    }
    let mut names = vec![0u8; len as usize];
    // SAFETY: the buffer has the size the kernel asked for.
    let len = unsafe { list(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    names.truncate(len as usize);
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).expect("split on NUL");
        // SAFETY: size query with a null buffer.
        let vlen = unsafe { get(c.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        if vlen < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut value = vec![0u8; vlen as usize];
        // SAFETY: the buffer has the size the kernel asked for.
        let vlen = unsafe {
            get(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if vlen < 0 {
            return Err(io::Error::last_os_error());
        }
        value.truncate(vlen as usize);
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

pub fn set_xattr_of(c: &CStr, name: &[u8], value: &[u8], nofollow: bool) -> io::Result<()> {
    let n = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let set = if nofollow {
        libc::lsetxattr
    } else {
        libc::setxattr
    };
    // SAFETY: valid C strings and buffer.
    check(unsafe {
        set(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

pub fn remove_xattr_of(c: &CStr, name: &[u8], nofollow: bool) -> io::Result<()> {
    let n = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let remove = if nofollow {
        libc::lremovexattr
    } else {
        libc::removexattr
    };
    // SAFETY: valid C strings.
    check(unsafe { remove(c.as_ptr(), n.as_ptr()) })
}

/// Share `src`'s blocks with `dst` where the filesystem can (FICLONE).
pub fn reflink(src: &std::fs::File, dst: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // FICLONE = _IOW(0x94, 9, int)
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: both descriptors are open files.
    check(unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE, src.as_raw_fd()) })
}

pub fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Bytes free to unprivileged users on the filesystem holding `p`.
pub fn free_bytes(p: &Path) -> io::Result<u64> {
    let c = cpath(p)?;
    // SAFETY: zeroed statvfs is a valid out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    check(unsafe { libc::statvfs(c.as_ptr(), &raw mut st) })?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// What the filesystem holding `fd`'s file has free for unprivileged
/// users: bytes, and inodes (None where it keeps no fixed number: btrfs
/// reports f_files = 0). An O_PATH descriptor will do: fstatfs takes one
/// since Linux 3.12.
pub fn free_fd(fd: std::os::fd::BorrowedFd) -> io::Result<(u64, Option<u64>)> {
    use std::os::fd::AsRawFd;
    // SAFETY: zeroed statvfs is a valid out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and out-parameter.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), &raw mut st) })?;
    let inodes = (st.f_files > 0).then_some(st.f_favail);
    Ok((st.f_bavail.saturating_mul(st.f_frsize), inodes))
}
