//! Indices into [`super::SlotCounters::c`]. Every counter is a running total since
//! the slot was claimed; user space takes differences per window.

/// Unused: the total is the sum of the per-number counts.
pub const RESERVED_0: usize = 0;
pub const SYSCALL_ERRORS_TOTAL: usize = 1;
pub const ERR_ENOENT: usize = 2;
/// EACCES and EPERM.
pub const ERR_EACCES: usize = 3;
/// ENOSPC and EDQUOT.
pub const ERR_ENOSPC: usize = 4;
/// ENOMEM and EAGAIN.
pub const ERR_ENOMEM: usize = 5;
pub const ERR_EIO: usize = 6;
/// Connection refused/reset/aborted, unreachable, timed out, address in use.
pub const ERR_NET: usize = 7;
pub const ERR_OTHER: usize = 8;
/// Bytes of bios submitted from the tree's own context (direct I/O,
/// reads and readahead, writeback the tree forced with fsync/sync).
pub const BLOCK_READ_BYTES: usize = 9;
pub const BLOCK_WRITE_BYTES: usize = 10;
pub const BLOCK_READ_OPS: usize = 11;
pub const BLOCK_WRITE_OPS: usize = 12;
pub const BLOCK_ERRORS: usize = 13;
/// Bytes of page-cache folios the tree turned from clean to dirty: the
/// buffered writes the kernel flushes later from its own threads.
pub const PAGE_DIRTIED_BYTES: usize = 14;
pub const SCHED_ON_CPU_NS: usize = 15;
pub const SCHED_CTX_SWITCHES: usize = 16;
pub const SCHED_INVOLUNTARY: usize = 17;
pub const PROC_FORKS: usize = 18;
pub const PROC_THREADS: usize = 19;
pub const PROC_EXECS: usize = 20;
pub const PROC_EXITS: usize = 21;
pub const PROC_EXITS_NONZERO: usize = 22;
pub const PROC_SIGNAL_DEATHS: usize = 23;
pub const PROC_OOM_KILLS: usize = 24;
pub const NET_TCP_RETRANSMITS: usize = 25;
pub const NET_CONNECT_ATTEMPTS: usize = 26;
pub const NET_CONNECT_FAILURES: usize = 27;
pub const NET_TX_BYTES: usize = 28;
pub const NET_RX_BYTES: usize = 29;
/// Events the probes could not record (full map, full ring buffer).
pub const LOST_EVENTS: usize = 30;
/// Change records (see [`ChangeEvent`]) that did not reach the ring
/// buffer or whose path could not be read whole. Not a feature: a change
/// set with any of these is incomplete, and restore walks the scope.
pub const CHANGES_LOST: usize = 31;
/// Time the tree's threads spent in futex waits, credited when each wait
/// returns.
pub const FUTEX_WAIT_NS: usize = 32;
/// Time in reads and writes on pipes and FIFOs, and in opens of a FIFO
/// (waiting for its other end), credited when each returns.
pub const PIPE_WAIT_NS: usize = 33;
pub const COUNT: usize = 34;
