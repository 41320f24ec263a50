//! Kernel <-> user layouts: the per-stream counters the probes aggregate in
//! per-CPU maps, the lifecycle records on the ring buffer, and the
//! histogram bucketing both halves must agree on (`kernel/bucket.rs`).
#![expect(
    clippy::pub_underscore_fields,
    reason = "`_pad` makes repr(C) padding explicit; the probes set it to 0 and nothing reads it"
)]

mod bucket;

pub use bucket::{errno_counter, hist_bucket, hist_bucket_floor};

/// Stream slots. Slot 0 means "not tracked"; a tracked process tree carries
/// one of `1..MAX_SLOTS`, inherited across fork.
pub const MAX_SLOTS: u32 = 16;

/// Set in a TRACKED entry between registration and the first exec: the
/// agent's own fork-to-exec steps (handing over the pid, waiting for the
/// go-ahead) race with registration and must not count as the command's.
/// The first exec clears it; from then on everything counts.
pub const PENDING_EXEC: u32 = 1 << 31;

/// Syscall numbers counted individually per slot (x86_64 has < 470).
pub const MAX_SYSCALLS: u32 = 512;

/// Log-linear histogram: four sub-buckets per power of two, so a bucket is
/// at most 25% wide. Values (nanoseconds) of 2^40 and above share the last.
pub const HIST_BUCKETS: usize = 160;

/// Histograms kept per slot, indexed by these.
pub mod hist {
    pub const SYSCALL_LATENCY: usize = 0;
    pub const BLOCK_LATENCY: usize = 1;
    pub const RUNQ_DELAY: usize = 2;
    pub const CONNECT_LATENCY: usize = 3;
    pub const COUNT: usize = 4;
}

pub mod counter;

const _: () = assert!(
    counter::LOST_EVENTS < counter::COUNT,
    "counter index out of range"
);

/// One slot's counters on one CPU. The agent sums the per-CPU copies.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SlotCounters {
    pub c: [u64; counter::COUNT],
    pub hist: [[u64; HIST_BUCKETS]; hist::COUNT],
}

impl SlotCounters {
    pub const ZERO: SlotCounters = SlotCounters {
        c: [0; counter::COUNT],
        hist: [[0; HIST_BUCKETS]; hist::COUNT],
    };
}

/// Syscalls entered by one slot, per syscall number, on one CPU.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SyscallCounts {
    pub n: [u64; MAX_SYSCALLS as usize],
}

/// The syscall in flight on one CPU, if a tracked thread entered it there.
/// Most syscalls exit on the CPU they entered without a context switch, so
/// their timing needs no per-thread hash lookup; when the thread leaves the
/// CPU mid-syscall, the start moves to its [`ThreadState`].
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct CpuSyscall {
    pub tid: u32,
    /// The syscall's number.
    pub nr: u32,
    pub start_ns: u64,
    /// What the syscall waits on, when it may wait (`WAITS_*`).
    pub waits: u32,
    pub _pad: u32,
}

/// A futex wait (futex, futex_waitv).
pub const WAITS_FUTEX: u32 = 1;
/// A read or write on a pipe or FIFO (the fd's inode is S_IFIFO).
pub const WAITS_PIPE: u32 = 2;
/// An open that may wait for a FIFO's other end (known at exit: the new
/// fd's inode is S_IFIFO).
pub const WAITS_OPEN: u32 = 4;
/// A wait on another task or on time ([`waits_on_others`]).
pub const WAITS_OTHERS: u32 = 8;

/// Whether a thread asleep in x86_64 syscall `nr` waits for something
/// other than a resource it needs to go on, so that however long it
/// sleeps there it is not stuck, nor is the host slow:
/// - wait4 and waitid: its children, whose own work the windows show;
/// - accept, epoll, poll and select, sleeps, pause and signal waits: a
///   daemon at rest until a client, a timer or a signal comes, or a
///   deliberate sleep.
///
/// `sched_blocked_longest_ms` leaves these out (since stop 25: a service
/// a postinst starts idles in one of them for as long as it lives), and
/// so does the syscall latency histogram (since stop 29: a sleep's second
/// or a daemon's poll is no latency of the host's). What stays: a lock
/// (flock, fcntl), a read or an open that waits for data, a write or sync
/// the device holds. Kernel and agent share this one list.
pub const fn waits_on_others(nr: u64) -> bool {
    matches!(
        nr,
        // wait4, waitid
        61 | 247
        // poll, select, pause, nanosleep, accept, rt_sigtimedwait,
        // rt_sigsuspend, clock_nanosleep, epoll_wait, pselect6, ppoll,
        // epoll_pwait, accept4, epoll_pwait2
        | 7 | 23 | 34 | 35 | 43 | 128 | 130 | 230 | 232 | 270 | 271 | 281 | 288 | 441
    )
}

/// Per-thread state of a tracked thread (keyed by tid).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct ThreadState {
    /// When the current syscall entered; 0 when none is in flight.
    pub syscall_start_ns: u64,
    /// When the thread last went on CPU; 0 when off CPU.
    pub on_cpu_since_ns: u64,
    /// When the thread became runnable; 0 when not waiting for a CPU.
    pub runnable_since_ns: u64,
    /// The kernel's own CPU time of the thread (`se.sum_exec_runtime`)
    /// when its on-CPU time was last credited. Some switches onto a CPU
    /// are never traced (seen on Firecracker guests, where every switch
    /// away from the init's worker threads went unseen, by our program
    /// and by the kernel's own sched_switch event alike), so a stretch
    /// can end without having started; the kernel's runtime says what it
    /// was.
    pub cpu_seen_ns: u64,
    /// The number of the syscall in flight (valid while
    /// `syscall_start_ns` is not 0): the agent leaves out threads that
    /// only wait for their children when it looks for blocked ones.
    pub syscall_nr: u32,
    /// [`CpuSyscall::waits`] of the syscall in flight.
    pub syscall_waits: u32,
}

/// In-flight bio, keyed by [`BioKey`].
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BioStart {
    pub start_ns: u64,
    pub slot: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct BioKey {
    pub dev: u32,
    pub _pad: u32,
    pub sector: u64,
}

/// A TCP socket some tracked process connected or sent on.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockOwner {
    pub connect_start_ns: u64,
    pub slot: u32,
    pub _pad: u32,
}

pub const EVENT_EXEC: u32 = 1;
pub const EVENT_EXIT: u32 = 2;
pub const EVENT_OOM_KILL: u32 = 3;

pub const FILENAME_LEN: usize = 128;

/// Longest path a change record carries whole (with its NUL). A longer one
/// arrives truncated and flagged, and its change set is incomplete.
pub const PATH_LEN: usize = 256;

/// `flags` of a [`ChangeEvent`]: the path could not be read from the
/// process's memory, or did not fit.
pub const CHANGE_PATH0_BAD: u32 = 1;
pub const CHANGE_PATH1_BAD: u32 = 2;

/// No directory fd: the path is absolute or relative to the cwd
/// (`AT_FDCWD`), and an empty path with this means "no path at all".
pub const AT_FDCWD: i32 = -100;

/// A system call of a tracked tree that may change the filesystem: opened
/// for writing, created, renamed, linked, unlinked, chmod-ed, chown-ed,
/// truncated, xattrs or times set. Recorded at entry, before the kernel
/// acts, so a failed call is recorded too (harmless: restore compares).
/// Up to two (dirfd, path) pairs: a rename's old and new name. An empty
/// path with a dirfd means the fd itself (`fchmod`, `AT_EMPTY_PATH`).
/// Only for slots whose change recording is on.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ChangeEvent {
    pub slot: u32,
    pub tid: u32,
    pub tgid: u32,
    /// The syscall number.
    pub nr: u32,
    pub flags: u32,
    pub dirfd0: i32,
    pub dirfd1: i32,
    pub _pad: u32,
    /// The inode number of what the path starts from, read as the call
    /// was made: the process's root directory for an absolute path, the
    /// dirfd's or cwd's directory for a relative one, the fd's own file
    /// for no path; 0 when unknown. Unlike /proc, read later, it cannot
    /// have moved on (a chdir, a chroot, a closed and reused fd), and it
    /// outlives the process.
    pub ino0: u64,
    pub ino1: u64,
    pub path0: [u8; PATH_LEN],
    pub path1: [u8; PATH_LEN],
}

/// A lifecycle record on the ring buffer (exec, exit, OOM kill); no count
/// depends on it. It leaves the agent as `wire::ProcEvent` (its `From`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcRecord {
    pub kind: u32,
    pub slot: u32,
    pub pid: u32,
    pub tgid: u32,
    pub ts_ns: u64,
    /// For exits: the kernel's wait status (`code << 8`, or the signal).
    pub exit_code: i32,
    pub _pad: u32,
    pub comm: [u8; 16],
    pub filename: [u8; FILENAME_LEN],
}

/// Kernel layout facts the probes cannot know at compile time (no CO-RE in
/// Rust eBPF): the agent reads them from /sys/kernel/btf/vmlinux at load and
/// writes them into the programs' globals.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_exit_code: u32,
    /// task_struct `se` plus sched_entity `sum_exec_runtime` (u64, ns).
    pub task_runtime: u32,
    pub folio_flags: u32,
    /// Offset of the folio's page count; `u32::MAX` when the kernel has none
    /// (then large folios count as one page).
    pub folio_nr_pages: u32,
    pub pg_head_bit: u32,
    pub page_size: u32,
    /// Offset of `group_dead` in the sched_process_exit tracepoint record;
    /// `u32::MAX` on kernels without it (then a leader's exit ends the group).
    pub tp_exit_group_dead: u32,
    /// struct request: `__sector` (u64) and `q`; request_queue: `disk`;
    /// gendisk: `major`, `first_minor` (ints). The raw block_rq_complete
    /// hook rebuilds the tracepoint's dev_t from these.
    pub rq_sector: u32,
    pub rq_q: u32,
    pub q_disk: u32,
    pub disk_major: u32,
    pub disk_first_minor: u32,
    /// struct sock: `sk_protocol` (u16); `u32::MAX` when it is a bitfield
    /// (old kernels), and then every socket state change counts as TCP.
    pub sk_protocol: u32,
    /// address_space: `host`; inode: `i_mode` (u16). Only folios of
    /// regular files count as buffered writes.
    pub mapping_host: u32,
    pub inode_mode: u32,
    /// For change records that name a file by fd or relative to a
    /// directory: task_struct `files` and `fs`; files_struct `fdt`;
    /// fdtable `fd`; file `f_inode`; inode `i_ino`; fs_struct `pwd` plus
    /// path `dentry`; dentry `d_inode`.
    pub task_files: u32,
    pub task_fs: u32,
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    pub file_inode: u32,
    pub inode_ino: u32,
    pub fs_pwd_dentry: u32,
    /// fs_struct `root` plus path `dentry`.
    pub fs_root_dentry: u32,
    pub dentry_inode: u32,
    /// For the rss_stat hook: task_struct `mm`; mm_struct `rss_stat` (an
    /// array of percpu_counter, one per `MM_*` counter), the size of one
    /// element, and percpu_counter `count` (s64, in pages). `u32::MAX`
    /// when the kernel's layout differs: then no peak is recorded.
    pub task_mm: u32,
    pub mm_rss_stat: u32,
    pub rss_counter_size: u32,
    pub percpu_counter_count: u32,
}

/// A NUL-terminated string in a fixed buffer (comm, filename, path), up to
/// its NUL.
pub fn c_str(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, and have no padding bytes
    // (explicit `_pad` fields fill what alignment would leave).
    unsafe impl aya::Pod for super::SlotCounters {}
    unsafe impl aya::Pod for super::ThreadState {}
    unsafe impl aya::Pod for super::SyscallCounts {}
    unsafe impl aya::Pod for super::CpuSyscall {}
    unsafe impl aya::Pod for super::BioStart {}
    unsafe impl aya::Pod for super::BioKey {}
    unsafe impl aya::Pod for super::SockOwner {}
    unsafe impl aya::Pod for super::ProcRecord {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::ChangeEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_fit_their_indices() {
        // No implicit padding: size is exactly the sum of the fields.
        assert_eq!(
            core::mem::size_of::<SlotCounters>(),
            8 * (counter::COUNT + HIST_BUCKETS * hist::COUNT)
        );
        assert_eq!(core::mem::size_of::<ProcRecord>(), 32 + 16 + FILENAME_LEN);
        assert_eq!(core::mem::size_of::<ChangeEvent>(), 48 + 2 * PATH_LEN);
    }
}
