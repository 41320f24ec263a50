//! Which paths a tracked tree may have changed, for a restore that looks
//! only there. Recorded at sys_enter from the syscall's own arguments: the
//! paths as the process wrote them (relative, through symlinks, inside its
//! chroot); the agent resolves them while the process still exists.
//!
//! Only the shape of each call is known here (which argument is a path,
//! which a dirfd, which the open flags); one common body reads them, so the
//! verifier sees one copy of the string reads, not one per syscall.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_probe_read_user_str},
    programs::RawTracePointContext,
};
use backstop_common::{
    AT_FDCWD, CHANGE_PATH0_BAD, CHANGE_PATH1_BAD, ChangeEvent, PATH_LEN, counter,
};

use crate::{CHANGE_SLOTS, CHANGES, add};

/// Argument positions, 1-based (0: none).
#[derive(Clone, Copy)]
pub struct Desc {
    path0: u8,
    dirfd0: u8,
    path1: u8,
    dirfd1: u8,
    /// Open flags: the argument holding them (1-based); with `HOW`, the
    /// argument points at a `struct open_how` whose first field they are.
    open_flags: u8,
}

const HOW: u8 = 0x10;

const fn d(path0: u8, dirfd0: u8, path1: u8, dirfd1: u8, open_flags: u8) -> Option<Desc> {
    Some(Desc {
        path0,
        dirfd0,
        path1,
        dirfd1,
        open_flags,
    })
}

/// The x86_64 syscalls that can change a file's content, existence, name,
/// owner, mode, xattrs or times.
#[inline(always)]
pub fn describe(nr: i64) -> Option<Desc> {
    match nr {
        2 => d(1, 0, 0, 0, 2),                        // open(path, flags)
        257 => d(2, 1, 0, 0, 3),                      // openat(dfd, path, flags)
        437 => d(2, 1, 0, 0, HOW | 3),                // openat2(dfd, path, how)
        85 | 76 => d(1, 0, 0, 0, 0),                  // creat, truncate
        77 | 91 | 93 | 190 | 199 => d(0, 1, 0, 0, 0), // ftruncate fchmod fchown fsetxattr fremovexattr
        83 | 84 | 87 | 133 => d(1, 0, 0, 0, 0),       // mkdir rmdir unlink mknod
        258 | 263 | 259 => d(2, 1, 0, 0, 0),          // mkdirat unlinkat mknodat
        82 => d(1, 0, 2, 0, 0),                       // rename(old, new)
        264 | 316 => d(2, 1, 4, 3, 0),                // renameat(2)(odfd, old, ndfd, new)
        86 => d(2, 0, 0, 0, 0),                       // link(old, new): the new name
        265 => d(4, 3, 0, 0, 0),                      // linkat(odfd, old, ndfd, new)
        88 => d(2, 0, 0, 0, 0),                       // symlink(target, new)
        266 => d(3, 2, 0, 0, 0),                      // symlinkat(target, ndfd, new)
        90 | 92 | 94 => d(1, 0, 0, 0, 0),             // chmod chown lchown
        268 | 452 | 260 => d(2, 1, 0, 0, 0),          // fchmodat(2) fchownat
        188 | 189 | 197 | 198 => d(1, 0, 0, 0, 0),    // (l)setxattr (l)removexattr
        463 | 466 => d(2, 1, 0, 0, 0),                // setxattrat removexattrat
        132 | 235 => d(1, 0, 0, 0, 0),                // utime utimes
        261 | 280 => d(2, 1, 0, 0, 0),                // futimesat utimensat (NULL path: the fd)
        _ => None,
    }
}

/// x86_64 `struct pt_regs` offsets of the syscall arguments (di, si, dx,
/// r10, r8, r9).
#[inline(always)]
pub fn arg(regs: *const u8, i: u8) -> u64 {
    let off = match i {
        1 => 112,
        2 => 104,
        3 => 96,
        4 => 56,
        5 => 72,
        6 => 64,
        _ => return 0,
    };
    crate::read_kernel::<u64>(regs, off).unwrap_or(0)
}

const O_WRONLY: u64 = 0o1;
const O_RDWR: u64 = 0o2;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;

#[inline(always)]
pub fn record(ctx: &RawTracePointContext, slot: u32, tid: u32, nr: u32, d: Desc) {
    if CHANGE_SLOTS.get(slot).copied().unwrap_or(0) == 0 {
        return;
    }
    let regs: *const u8 = ctx.arg(0);
    if d.open_flags != 0 {
        let flags = if d.open_flags & HOW != 0 {
            let how = arg(regs, d.open_flags & 0xf);
            // SAFETY: the helper checks the user address and fails cleanly.
            unsafe { aya_ebpf::helpers::bpf_probe_read_user(how as *const u64) }.unwrap_or(0)
        } else {
            arg(regs, d.open_flags)
        };
        if flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC) == 0 {
            return;
        }
    }
    let Some(mut e) = CHANGES.reserve::<ChangeEvent>(0) else {
        add(slot, counter::CHANGES_LOST, 1);
        return;
    };
    let ev = e.as_mut_ptr();
    let mut flags = 0;
    // SAFETY: the reservation is sized for a ChangeEvent; every field is
    // written before submit (the paths by the string reads, which always
    // NUL-terminate, or explicitly).
    unsafe {
        (*ev).slot = slot;
        (*ev).tid = tid;
        (*ev).tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        (*ev).nr = nr;
        (*ev)._pad = 0;
        (*ev).dirfd0 = if d.dirfd0 != 0 {
            arg(regs, d.dirfd0) as i32
        } else {
            AT_FDCWD
        };
        (*ev).dirfd1 = if d.dirfd1 != 0 {
            arg(regs, d.dirfd1) as i32
        } else {
            AT_FDCWD
        };
        let p0 = core::ptr::addr_of_mut!((*ev).path0) as *mut u8;
        if !read_path(regs, d.path0, p0) {
            flags |= CHANGE_PATH0_BAD;
        }
        (*ev).ino0 = base_ino(*p0, (*ev).dirfd0);
        let p1 = core::ptr::addr_of_mut!((*ev).path1) as *mut u8;
        if !read_path(regs, d.path1, p1) {
            flags |= CHANGE_PATH1_BAD;
        }
        (*ev).ino1 = if d.path1 != 0 {
            base_ino(*p1, (*ev).dirfd1)
        } else {
            0
        };
        (*ev).flags = flags;
    }
    if flags != 0 {
        add(slot, counter::CHANGES_LOST, 1);
    }
    e.submit(0);
}

/// What a path starts from, as an inode number: the process's root for
/// an absolute path (first byte '/'), the dirfd's file or the cwd for a
/// relative one; an empty path with a dirfd names the fd's own file.
#[inline(always)]
fn base_ino(first: u8, dirfd: i32) -> u64 {
    let off = crate::OFFSETS.load();
    // SAFETY: the helper has no preconditions.
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() } as *const u8;
    let null = core::ptr::null::<u8>();
    let inode: *const u8 = if first == b'/' || (dirfd == AT_FDCWD && first != 0) {
        let at = if first == b'/' {
            off.fs_root_dentry
        } else {
            off.fs_pwd_dentry
        };
        let fs: *const u8 = crate::read_kernel(task, off.task_fs).unwrap_or(null);
        let dentry: *const u8 = crate::read_kernel(fs, at).unwrap_or(null);
        crate::read_kernel(dentry, off.dentry_inode).unwrap_or(null)
    } else {
        if !(0..1 << 20).contains(&dirfd) {
            return 0;
        }
        fd_inode(dirfd)
    };
    crate::read_kernel(inode, off.inode_ino).unwrap_or(0)
}

/// The inode of the current task's descriptor `fd` (null when there is
/// none or it cannot be read).
#[inline(always)]
pub fn fd_inode(fd: i32) -> *const u8 {
    let null = core::ptr::null::<u8>();
    if !(0..1 << 20).contains(&fd) {
        return null;
    }
    let off = crate::OFFSETS.load();
    // SAFETY: the helper has no preconditions.
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() } as *const u8;
    let files: *const u8 = crate::read_kernel(task, off.task_files).unwrap_or(null);
    let fdt: *const u8 = crate::read_kernel(files, off.files_fdt).unwrap_or(null);
    let fds: *const u8 = crate::read_kernel(fdt, off.fdtable_fd).unwrap_or(null);
    let file: *const u8 = crate::read_kernel(fds, fd as u32 * 8).unwrap_or(null);
    crate::read_kernel(file, off.file_inode).unwrap_or(null)
}

/// Read the path argument `i` into `dst` (PATH_LEN bytes). No argument, or
/// a NULL pointer (utimensat on an fd): an empty string. False when the
/// read failed or the path did not fit.
///
/// SAFETY: `dst` points at PATH_LEN writable bytes.
#[inline(always)]
unsafe fn read_path(regs: *const u8, i: u8, dst: *mut u8) -> bool {
    let src = if i == 0 { 0 } else { arg(regs, i) };
    if src == 0 {
        // SAFETY: per the contract.
        unsafe { *dst = 0 };
        return true;
    }
    // SAFETY: the helper checks the user address; dst per the contract.
    let n = unsafe { bpf_probe_read_user_str(dst as *mut _, PATH_LEN as u32, src as *const _) };
    if n <= 0 {
        // SAFETY: per the contract.
        unsafe { *dst = 0 };
        return false;
    }
    (n as usize) < PATH_LEN
}
