//! The feature schema: the names of a window's values and their order.
//!
//! This is the one place they are defined. The agent fills windows in this
//! order, the wire carries them in this order, and a model records the
//! schema it was trained on and refuses any other. Adding, removing or
//! reordering a name is a new schema version.

/// Bumped on any change to [`FEATURES`].
///
/// v3 (issue 16): no feature depends on the host's absolute size. The
/// host's free disk, available memory, load and CPU left the features for
/// [`crate::hostlevels::HostLevels`] beside them; the host enters only as
/// the fall of free disk and available memory since the stream began, in
/// bytes: what was consumed, which does not depend on how much the host
/// had. Added what failures build up through: the tree's live
/// processes, open descriptors, RSS growth and its fastest-growing file.
///
/// v4 (issue 16): time the tree spent waiting in futexes and on pipes and
/// FIFOs, per window: what a lock or a reader with no writer builds up.
pub const SCHEMA_VERSION: &str = "backstop.features.v4";

/// What one feature measures, for `--help`, the README and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureDef {
    pub name: &'static str,
    pub unit: &'static str,
    pub help: &'static str,
}

macro_rules! features {
    ($( $ident:ident = $name:literal, $unit:literal, $help:literal; )*) => {
        /// Feature indices, usable as `window.features[feature::SYSCALLS_TOTAL]`.
        pub mod feature {
            features!(@idx 0usize; $($ident)*);
        }
        pub const FEATURES: &[FeatureDef] = &[
            $( FeatureDef { name: $name, unit: $unit, help: $help }, )*
        ];
    };
    (@idx $n:expr; $first:ident $($rest:ident)*) => {
        pub const $first: usize = $n;
        features!(@idx $n + 1usize; $($rest)*);
    };
    (@idx $n:expr;) => {};
}

features! {
    SYSCALLS_TOTAL = "syscalls_total", "count", "syscalls entered by the tree";
    SYSCALLS_FILE = "syscalls_file", "count", "file and filesystem syscalls (open, read, write, stat, ...)";
    SYSCALLS_NET = "syscalls_net", "count", "socket syscalls";
    SYSCALLS_PROC = "syscalls_proc", "count", "process syscalls (clone, execve, wait, kill, ...)";
    SYSCALLS_MEM = "syscalls_mem", "count", "memory syscalls (mmap, brk, mprotect, ...)";
    SYSCALLS_SYNC = "syscalls_sync", "count", "waiting and synchronisation (futex, poll, epoll, nanosleep, ...)";
    SYSCALLS_OTHER = "syscalls_other", "count", "every other syscall";
    SYSCALL_ERRORS_TOTAL = "syscall_errors_total", "count", "syscalls that returned an error";
    SYSCALL_ERRORS_ENOENT = "syscall_errors_enoent", "count", "errors ENOENT";
    SYSCALL_ERRORS_EACCES = "syscall_errors_eacces", "count", "errors EACCES or EPERM";
    SYSCALL_ERRORS_ENOSPC = "syscall_errors_enospc", "count", "errors ENOSPC or EDQUOT";
    SYSCALL_ERRORS_ENOMEM = "syscall_errors_enomem", "count", "errors ENOMEM or EAGAIN";
    SYSCALL_ERRORS_EIO = "syscall_errors_eio", "count", "errors EIO";
    SYSCALL_ERRORS_NET = "syscall_errors_net", "count", "network errors (refused, reset, unreachable, timed out, address in use)";
    SYSCALL_ERRORS_OTHER = "syscall_errors_other", "count", "every other errno";
    SYSCALL_LATENCY_P50_US = "syscall_latency_p50_us", "us", "median syscall duration (histogram bucket floor, <=25% low); waits on another task or on time left out (futex, pipe, children, clients, sleeps, signals)";
    SYSCALL_LATENCY_P99_US = "syscall_latency_p99_us", "us", "99th percentile syscall duration; the same waits left out";
    BLOCK_READ_BYTES = "block_read_bytes", "bytes", "bytes of read bios the tree submitted itself (direct I/O, reads, readahead)";
    BLOCK_WRITE_BYTES = "block_write_bytes", "bytes", "bytes of write bios the tree submitted itself (direct I/O, fsync/sync writeback)";
    BLOCK_OPS = "block_ops", "count", "read and write bios the tree submitted";
    BLOCK_ERRORS = "block_errors", "count", "the tree's block requests that completed with an error";
    BLOCK_LATENCY_P99_US = "block_latency_p99_us", "us", "99th percentile from bio submission to request completion";
    PAGE_DIRTIED_BYTES = "page_dirtied_bytes", "bytes", "regular-file page-cache bytes the tree dirtied: buffered writes, flushed later by kernel threads";
    SCHED_ON_CPU_NS = "sched_on_cpu_ns", "ns", "CPU time of the tree's threads (credited when a thread leaves the CPU)";
    SCHED_RUNQ_DELAY_P99_US = "sched_runq_delay_p99_us", "us", "99th percentile wait from runnable to running";
    SCHED_CTX_SWITCHES = "sched_ctx_switches", "count", "times a thread of the tree left the CPU";
    SCHED_INVOLUNTARY_SWITCHES = "sched_involuntary_switches", "count", "of those, times it was preempted while runnable";
    SCHED_BLOCKED_LONGEST_MS = "sched_blocked_longest_ms", "ms", "at the window's end, how long the longest-waiting thread has been asleep inside one syscall, neither on a CPU nor runnable (waits for children left out)";
    SCHED_FUTEX_WAIT_MS = "sched_futex_wait_ms", "ms", "time the tree's threads spent in futex waits (lock and condition waits), credited when each wait returns";
    SCHED_PIPE_WAIT_MS = "sched_pipe_wait_ms", "ms", "time the tree's threads spent reading and writing pipes and FIFOs, and opening a FIFO (waiting for its other end), credited when each returns";
    PROC_FORKS = "proc_forks", "count", "new processes (fork, vfork, clone without CLONE_THREAD)";
    PROC_THREADS = "proc_threads", "count", "new threads";
    PROC_EXECS = "proc_execs", "count", "successful execve";
    PROC_EXITS = "proc_exits", "count", "processes that exited (last thread gone)";
    PROC_EXITS_NONZERO = "proc_exits_nonzero", "count", "processes that exited with a non-zero code, or were ended by SIGPIPE (a pipeline's writer whose reader was done: status 141 to the shell)";
    PROC_SIGNAL_DEATHS = "proc_signal_deaths", "count", "processes killed by a signal other than SIGPIPE, but not the SIGKILL that ends what the tree's root left running once the root has exited (a shadow's pid namespace ending)";
    PROC_OOM_KILLS = "proc_oom_kills", "count", "processes chosen by the OOM killer (global or cgroup)";
    MEM_ANON_PEAK_BYTES = "mem_anon_peak_bytes", "bytes", "largest anonymous memory (RSS) a process of the tree reached in the window, seen when it changed (0: none changed)";
    NET_TCP_RETRANSMITS = "net_tcp_retransmits", "count", "TCP segments retransmitted on the tree's sockets";
    NET_CONNECT_ATTEMPTS = "net_connect_attempts", "count", "TCP connects started (SYN sent)";
    NET_CONNECT_FAILURES = "net_connect_failures", "count", "TCP connects that never reached ESTABLISHED";
    NET_CONNECT_LATENCY_P99_US = "net_connect_latency_p99_us", "us", "99th percentile SYN-to-ESTABLISHED time";
    NET_TX_BYTES = "net_tx_bytes", "bytes", "bytes sent on sockets (any family)";
    NET_RX_BYTES = "net_rx_bytes", "bytes", "bytes received on sockets (any family)";
    TREE_PROCESSES = "tree_processes", "count", "processes of the tree alive at the window's end (a fork storm or leaked daemons build up here)";
    TREE_OPEN_FDS = "tree_open_fds", "count", "file descriptors the tree's processes hold open at the window's end (a descriptor leak builds up here)";
    TREE_RSS_GROWTH_BYTES = "tree_rss_growth_bytes", "bytes", "change over the window of the resident memory summed over the tree's processes (negative: it shrank; a leak grows it every window)";
    TREE_TOP_FILE_GROWTH_BYTES = "tree_top_file_growth_bytes", "bytes", "growth over the window of the one regular file the tree holds open that grew most (0 for a file first seen this window): a log or a file filling the disk builds up here";
    HOST_DISK_FREE_FALL = "host_disk_free_fall_bytes", "bytes", "how much the scope filesystem's free space fell since the stream began (negative: it grew): what was consumed, the same on a disk of any size";
    HOST_MEM_AVAILABLE_FALL = "host_mem_available_fall_bytes", "bytes", "how much the host's MemAvailable fell since the stream began (negative: it grew): what was consumed, the same on a host of any size";
}

/// Position of a feature by name.
pub fn index_of(name: &str) -> Option<usize> {
    FEATURES.iter().position(|f| f.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_indices_match() {
        for (i, f) in FEATURES.iter().enumerate() {
            assert_eq!(index_of(f.name), Some(i), "{} is defined twice", f.name);
        }
        assert_eq!(
            FEATURES[feature::HOST_MEM_AVAILABLE_FALL].name,
            "host_mem_available_fall_bytes"
        );
        assert_eq!(feature::HOST_MEM_AVAILABLE_FALL, FEATURES.len() - 1);
    }

    /// Schema v3's promise: no feature is a host's absolute level (bytes
    /// free, bytes available, load); those live in `HostLevels`, and the
    /// host enters the features only as a change since the stream began.
    #[test]
    fn no_feature_is_an_absolute_host_level() {
        let host: Vec<&str> = FEATURES
            .iter()
            .map(|f| f.name)
            .filter(|n| n.starts_with("host_"))
            .collect();
        assert_eq!(
            host,
            ["host_disk_free_fall_bytes", "host_mem_available_fall_bytes"]
        );
    }

    #[test]
    fn issue_required_names_exist() {
        for name in [
            "syscalls_total",
            "syscall_errors_total",
            "syscall_errors_enoent",
            "syscall_errors_eacces",
            "syscall_errors_enospc",
            "syscall_errors_enomem",
            "block_read_bytes",
            "block_write_bytes",
            "block_ops",
            "block_latency_p99_us",
            "sched_on_cpu_ns",
            "sched_runq_delay_p99_us",
            "sched_ctx_switches",
            "proc_forks",
            "proc_execs",
            "proc_exits",
            "proc_exits_nonzero",
            "proc_signal_deaths",
            "proc_oom_kills",
            "net_tcp_retransmits",
            "net_connect_failures",
            "host_disk_free_fall_bytes",
            "host_mem_available_fall_bytes",
            "tree_processes",
            "tree_open_fds",
            "tree_rss_growth_bytes",
            "tree_top_file_growth_bytes",
        ] {
            assert!(
                index_of(name).is_some(),
                "feature {name} is missing from the schema"
            );
        }
    }
}
