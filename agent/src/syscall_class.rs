//! x86_64 syscall numbers folded into the classes the feature schema
//! names. The probes count by number; the grouping lives here so it can be
//! changed (as a new schema version) without touching the kernel side.

use backstop_common::features::feature;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    File,
    Net,
    Proc,
    Mem,
    Sync,
    Other,
}

impl Class {
    pub fn feature(self) -> usize {
        match self {
            Class::File => feature::SYSCALLS_FILE,
            Class::Net => feature::SYSCALLS_NET,
            Class::Proc => feature::SYSCALLS_PROC,
            Class::Mem => feature::SYSCALLS_MEM,
            Class::Sync => feature::SYSCALLS_SYNC,
            Class::Other => feature::SYSCALLS_OTHER,
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[expect(
    clippy::match_same_arms,
    reason = "one arm per line of the syscall table, so each number is easy to find"
)]
pub fn class(nr: usize) -> Class {
    match nr {
        // read write open close stat fstat lstat; lseek; ioctl pread pwrite readv writev access pipe
        0..=6 | 8 | 16..=22 => Class::File,
        32
        | 33
        | 40
        | 72..=95
        | 132
        | 133
        | 137
        | 138
        | 161
        | 162
        | 165
        | 166
        | 187
        | 188..=199 => Class::File,
        217 | 221 | 235 | 257..=269 | 275..=277 | 280 | 285 | 292 | 293 | 295 | 296 | 306 | 316 => {
            Class::File
        }
        326..=328 | 332 | 437 | 439 | 452 => Class::File,
        41..=55 | 288 | 299 | 307 => Class::Net,
        // clone fork vfork execve exit wait4 kill; signals; ids; prctl ...
        13..=15 | 39 | 56..=62 | 101..=112 | 157 | 158 | 186 | 200 | 218 | 231 | 234 | 247 => {
            Class::Proc
        }
        273 | 322 | 334 | 424 | 434 | 435 => Class::Proc,
        9..=12 | 25..=28 | 149..=152 | 216 | 237..=239 | 279 | 319 | 325 | 329 => Class::Mem,
        7 | 23 | 24 | 34 | 35 | 202 | 213 | 230 | 232 | 233 | 270 | 271 | 281 | 291 | 441 | 449 => {
            Class::Sync
        }
        _ => Class::Other,
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub fn class(_nr: usize) -> Class {
    Class::Other
}

/// Whether a thread asleep in syscall `nr` waits on others, not on a
/// resource it needs ([`backstop_common::waits_on_others`] has the list
/// and why; the probes use the same one).
#[cfg(target_arch = "x86_64")]
pub fn waits_on_others(nr: usize) -> bool {
    backstop_common::waits_on_others(nr as u64)
}

#[cfg(not(target_arch = "x86_64"))]
pub fn waits_on_others(_nr: usize) -> bool {
    false
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn well_known_numbers() {
        assert_eq!(class(libc::SYS_openat as usize), Class::File);
        assert_eq!(class(libc::SYS_newfstatat as usize), Class::File);
        assert_eq!(class(libc::SYS_statx as usize), Class::File);
        assert_eq!(class(libc::SYS_connect as usize), Class::Net);
        assert_eq!(class(libc::SYS_clone3 as usize), Class::Proc);
        assert_eq!(class(libc::SYS_execve as usize), Class::Proc);
        assert_eq!(class(libc::SYS_mmap as usize), Class::Mem);
        assert_eq!(class(libc::SYS_futex as usize), Class::Sync);
        assert_eq!(class(libc::SYS_getrandom as usize), Class::Other);
        for nr in [
            libc::SYS_wait4,
            libc::SYS_waitid,
            libc::SYS_poll,
            libc::SYS_select,
            libc::SYS_pause,
            libc::SYS_nanosleep,
            libc::SYS_accept,
            libc::SYS_rt_sigtimedwait,
            libc::SYS_rt_sigsuspend,
            libc::SYS_clock_nanosleep,
            libc::SYS_epoll_wait,
            libc::SYS_pselect6,
            libc::SYS_ppoll,
            libc::SYS_epoll_pwait,
            libc::SYS_accept4,
            libc::SYS_epoll_pwait2,
        ] {
            assert!(waits_on_others(nr as usize), "{nr}");
        }
        // A lock, a prompt's read, a FIFO's open, a sync: stuck.
        for nr in [
            libc::SYS_flock,
            libc::SYS_fcntl,
            libc::SYS_futex,
            libc::SYS_read,
            libc::SYS_openat,
            libc::SYS_fsync,
        ] {
            assert!(!waits_on_others(nr as usize), "{nr}");
        }
    }
}
