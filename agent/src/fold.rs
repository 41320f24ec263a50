//! Folding the probes' running totals into windows.
//!
//! The kernel keeps totals since a slot was claimed; a window is the
//! difference between two readings, so a slow reader never loses counts,
//! it only gets a longer window.

use backstop_common::features::feature as f;
use backstop_common::window::{Stream, Window};
use backstop_common::{HIST_BUCKETS, counter as c, hist, hist_bucket_floor};

use backstop_common::hostlevels::HostLevels;

use crate::host::HostSample;
use crate::probes::{ThreadsNow, Totals};
use crate::syscall_class;
use crate::treestat::TreeStat;

pub struct Folder {
    stream: Stream,
    prev: Box<Totals>,
    prev_host: HostSample,
    /// The host when the stream began: the host-derived features are
    /// changes since then (`HostLevels::derive`).
    first_host: HostLevels,
    prev_tree: TreeStat,
    prev_ns: u64,
    /// On-CPU time of threads still running at the previous reading.
    prev_running_ns: u64,
    /// On-CPU time already reported that the counters have not caught up
    /// with: a thread left its CPU between the reading of the totals and
    /// that of the threads, so its stretch counted at the previous reading
    /// is credited only at the next. Carried, not clipped, so that the
    /// windows add up to what the tree ran.
    on_cpu_owed_ns: f64,
    prev_misses: u64,
    seq: u64,
}

/// One reading of a slot: the kernel's totals plus what the counters cannot
/// show yet (threads on a CPU right now).
pub struct Reading {
    pub totals: Box<Totals>,
    pub threads: ThreadsNow,
    /// The largest anonymous RSS of a process of the tree since the
    /// previous reading (0: none changed).
    pub anon_peak_bytes: u64,
    pub host: HostSample,
    /// The tree's processes, descriptors and memory (`crate::treestat`).
    pub tree: TreeStat,
    pub at_ns: u64,
    /// The kernel's count of skipped program runs, host-wide, since load.
    pub recursion_misses: u64,
}

impl Folder {
    /// Start from a reading taken when the stream began.
    pub fn new(stream: Stream, start: Reading) -> Self {
        Folder {
            stream,
            prev: start.totals,
            prev_host: start.host,
            first_host: start.host.levels(&start.host),
            prev_tree: start.tree,
            prev_ns: start.at_ns,
            prev_running_ns: start.threads.running_on_cpu_ns,
            on_cpu_owed_ns: 0.0,
            prev_misses: start.recursion_misses,
            seq: 0,
        }
    }

    /// Windows folded so far.
    pub fn windows(&self) -> u64 {
        self.seq
    }

    /// The window from the previous reading to this one.
    pub fn fold(&mut self, reading: Reading) -> Window {
        let Reading {
            totals: now,
            threads,
            anon_peak_bytes,
            host,
            tree,
            at_ns: end_ns,
            recursion_misses,
        } = reading;
        let mut w = Window::new(self.stream, self.seq, self.prev_ns, end_ns);
        let v = &mut w.features;
        self.syscalls(&now, v);
        self.block(&now, v);
        self.sched(&now, &threads, v);
        v[f::MEM_ANON_PEAK_BYTES] = anon_peak_bytes as f64;
        self.proc_and_net(&now, v);
        v[f::TREE_PROCESSES] = tree.processes as f64;
        v[f::TREE_OPEN_FDS] = tree.open_fds as f64;
        v[f::TREE_RSS_GROWTH_BYTES] = tree.rss_bytes as f64 - self.prev_tree.rss_bytes as f64;
        v[f::TREE_TOP_FILE_GROWTH_BYTES] = tree.top_file_growth(&self.prev_tree) as f64;
        w.host = host.levels(&self.prev_host);
        w.host.derive(&self.first_host, v);
        w.lost_events = now.c[c::LOST_EVENTS].saturating_sub(self.prev.c[c::LOST_EVENTS])
            + recursion_misses.saturating_sub(self.prev_misses);
        self.prev_misses = recursion_misses;
        self.prev = now;
        self.prev_host = host;
        self.prev_tree = tree;
        self.prev_ns = end_ns;
        self.prev_running_ns = threads.running_on_cpu_ns;
        self.seq += 1;
        w
    }

    /// Counter `i`'s growth since the previous reading.
    fn delta(&self, now: &Totals, i: usize) -> f64 {
        now.c[i].saturating_sub(self.prev.c[i]) as f64
    }

    /// Histogram `h`'s growth since the previous reading.
    fn hist(&self, now: &Totals, h: usize) -> [u64; HIST_BUCKETS] {
        hist_delta(&now.hist[h], &self.prev.hist[h])
    }

    /// Syscalls by class, errors by errno class, latency.
    fn syscalls(&self, now: &Totals, v: &mut [f64]) {
        for (nr, (n, p)) in now
            .syscalls
            .iter()
            .zip(self.prev.syscalls.iter())
            .enumerate()
        {
            let delta = n.saturating_sub(*p);
            if delta != 0 {
                v[syscall_class::class(nr).feature()] += delta as f64;
                v[f::SYSCALLS_TOTAL] += delta as f64;
            }
        }
        let d = |i| self.delta(now, i);
        v[f::SYSCALL_ERRORS_TOTAL] = d(c::SYSCALL_ERRORS_TOTAL);
        v[f::SYSCALL_ERRORS_ENOENT] = d(c::ERR_ENOENT);
        v[f::SYSCALL_ERRORS_EACCES] = d(c::ERR_EACCES);
        v[f::SYSCALL_ERRORS_ENOSPC] = d(c::ERR_ENOSPC);
        v[f::SYSCALL_ERRORS_ENOMEM] = d(c::ERR_ENOMEM);
        v[f::SYSCALL_ERRORS_EIO] = d(c::ERR_EIO);
        v[f::SYSCALL_ERRORS_NET] = d(c::ERR_NET);
        v[f::SYSCALL_ERRORS_OTHER] = d(c::ERR_OTHER);
        let lat = self.hist(now, hist::SYSCALL_LATENCY);
        v[f::SYSCALL_LATENCY_P50_US] = quantile_us(&lat, 0.50);
        v[f::SYSCALL_LATENCY_P99_US] = quantile_us(&lat, 0.99);
    }

    /// Block I/O and dirtied pages.
    fn block(&self, now: &Totals, v: &mut [f64]) {
        let d = |i| self.delta(now, i);
        v[f::BLOCK_READ_BYTES] = d(c::BLOCK_READ_BYTES);
        v[f::BLOCK_WRITE_BYTES] = d(c::BLOCK_WRITE_BYTES);
        v[f::BLOCK_OPS] = d(c::BLOCK_READ_OPS) + d(c::BLOCK_WRITE_OPS);
        v[f::BLOCK_ERRORS] = d(c::BLOCK_ERRORS);
        let blk = self.hist(now, hist::BLOCK_LATENCY);
        v[f::BLOCK_LATENCY_P99_US] = quantile_us(&blk, 0.99);
        v[f::PAGE_DIRTIED_BYTES] = d(c::PAGE_DIRTIED_BYTES);
    }

    /// CPU time (with threads on a CPU right now), run-queue delay,
    /// switches, the longest block.
    fn sched(&mut self, now: &Totals, threads: &ThreadsNow, v: &mut [f64]) {
        let on_cpu = self.delta(now, c::SCHED_ON_CPU_NS) + threads.running_on_cpu_ns as f64
            - self.prev_running_ns as f64
            - self.on_cpu_owed_ns;
        v[f::SCHED_ON_CPU_NS] = on_cpu.max(0.0);
        self.on_cpu_owed_ns = (-on_cpu).max(0.0);
        let d = |i| self.delta(now, i);
        let runq = self.hist(now, hist::RUNQ_DELAY);
        v[f::SCHED_RUNQ_DELAY_P99_US] = quantile_us(&runq, 0.99);
        v[f::SCHED_CTX_SWITCHES] = d(c::SCHED_CTX_SWITCHES);
        v[f::SCHED_INVOLUNTARY_SWITCHES] = d(c::SCHED_INVOLUNTARY);
        v[f::SCHED_BLOCKED_LONGEST_MS] = threads.longest_blocked_ns as f64 / 1e6;
        v[f::SCHED_FUTEX_WAIT_MS] = d(c::FUTEX_WAIT_NS) / 1e6;
        v[f::SCHED_PIPE_WAIT_MS] = d(c::PIPE_WAIT_NS) / 1e6;
    }

    /// Process lifecycle and network.
    fn proc_and_net(&self, now: &Totals, v: &mut [f64]) {
        let d = |i| self.delta(now, i);
        v[f::PROC_FORKS] = d(c::PROC_FORKS);
        v[f::PROC_THREADS] = d(c::PROC_THREADS);
        v[f::PROC_EXECS] = d(c::PROC_EXECS);
        v[f::PROC_EXITS] = d(c::PROC_EXITS);
        v[f::PROC_EXITS_NONZERO] = d(c::PROC_EXITS_NONZERO);
        v[f::PROC_SIGNAL_DEATHS] = d(c::PROC_SIGNAL_DEATHS);
        v[f::PROC_OOM_KILLS] = d(c::PROC_OOM_KILLS);
        v[f::NET_TCP_RETRANSMITS] = d(c::NET_TCP_RETRANSMITS);
        v[f::NET_CONNECT_ATTEMPTS] = d(c::NET_CONNECT_ATTEMPTS);
        v[f::NET_CONNECT_FAILURES] = d(c::NET_CONNECT_FAILURES);
        let conn = self.hist(now, hist::CONNECT_LATENCY);
        v[f::NET_CONNECT_LATENCY_P99_US] = quantile_us(&conn, 0.99);
        v[f::NET_TX_BYTES] = d(c::NET_TX_BYTES);
        v[f::NET_RX_BYTES] = d(c::NET_RX_BYTES);
    }
}

fn hist_delta(now: &[u64; HIST_BUCKETS], prev: &[u64; HIST_BUCKETS]) -> [u64; HIST_BUCKETS] {
    let mut out = [0; HIST_BUCKETS];
    for (o, (n, p)) in out.iter_mut().zip(now.iter().zip(prev.iter())) {
        *o = n.saturating_sub(*p);
    }
    out
}

/// The q-quantile in microseconds, as the floor of the bucket holding it
/// (at most 25% low; 0 when the window saw nothing).
pub fn quantile_us(h: &[u64; HIST_BUCKETS], q: f64) -> f64 {
    let total: u64 = h.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, n) in h.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return hist_bucket_floor(i) as f64 / 1000.0;
        }
    }
    hist_bucket_floor(HIST_BUCKETS - 1) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_common::hist_bucket;

    #[test]
    fn quantiles_from_buckets() {
        let mut h = [0u64; HIST_BUCKETS];
        h[hist_bucket(1_000)] += 98; // 1 us
        h[hist_bucket(2_000_000)] += 2; // 2 ms
        assert_eq!(
            quantile_us(&h, 0.5),
            hist_bucket_floor(hist_bucket(1_000)) as f64 / 1000.0
        );
        let p99 = quantile_us(&h, 0.99);
        assert!((1500.0..=2000.0).contains(&p99), "p99 {p99}");
        assert_eq!(quantile_us(&[0; HIST_BUCKETS], 0.99), 0.0);
    }

    #[test]
    fn folds_deltas_and_classes() {
        let mut start = Totals::zero();
        start.syscalls[libc::SYS_openat as usize] = 40;
        let mut now = start.clone();
        now.c[c::ERR_ENOENT] = 7;
        now.c[c::LOST_EVENTS] = 2;
        now.syscalls[libc::SYS_openat as usize] = 60;
        now.syscalls[libc::SYS_connect as usize] = 10;
        let host = HostSample {
            cpu_busy: 5,
            cpu_total: 10,
            mem_available_bytes: 1 << 30,
            mem_total_bytes: 1 << 32,
            load1: 0.5,
            disk_free_bytes: 75,
            disk_total_bytes: 400,
            cpus: 2,
        };
        let first = HostSample {
            mem_available_bytes: 1 << 31,
            disk_free_bytes: 100,
            ..host
        };
        let tree = |rss_bytes| TreeStat {
            processes: 3,
            open_fds: 12,
            rss_bytes,
            files: [((1, 2), rss_bytes / 10)].into(),
        };
        let at = |totals, running_on_cpu_ns, host, at_ns, recursion_misses| Reading {
            totals,
            threads: ThreadsNow {
                running_on_cpu_ns,
                longest_blocked_ns: 2_500_000,
            },
            anon_peak_bytes: 4096,
            host,
            tree: tree(at_ns * 10),
            at_ns,
            recursion_misses,
        };
        let mut folder = Folder::new(Stream::Live, at(start, 0, first, 1_000, 10));
        now.c[c::SCHED_ON_CPU_NS] = 300;
        now.c[c::FUTEX_WAIT_NS] = 7_000_000;
        now.c[c::PIPE_WAIT_NS] = 1_500_000;
        // Two lost in the slot, three runs skipped by the kernel.
        let w = folder.fold(at(now.clone(), 50, host, 2_000, 13));
        assert_eq!(
            (w.seq, w.start_ns, w.end_ns, w.lost_events),
            (0, 1_000, 2_000, 5)
        );
        assert_eq!(w.features[f::SYSCALLS_TOTAL], 30.0);
        assert_eq!(w.features[f::SYSCALLS_FILE], 20.0);
        assert_eq!(w.features[f::SYSCALLS_NET], 10.0);
        assert_eq!(w.features[f::SYSCALL_ERRORS_ENOENT], 7.0);
        assert_eq!(w.host.cpu_util, 0.0, "no CPU time passed since the start");
        assert_eq!(
            w.host.disk_free_bytes, 75.0,
            "the level beside the features"
        );
        assert_eq!(w.features[f::HOST_DISK_FREE_FALL], 25.0, "bytes gone");
        assert_eq!(w.features[f::HOST_MEM_AVAILABLE_FALL], (1u64 << 30) as f64);
        assert_eq!(w.features[f::TREE_PROCESSES], 3.0);
        assert_eq!(w.features[f::TREE_OPEN_FDS], 12.0);
        assert_eq!(w.features[f::TREE_RSS_GROWTH_BYTES], 10_000.0);
        assert_eq!(w.features[f::TREE_TOP_FILE_GROWTH_BYTES], 1_000.0);
        assert_eq!(w.features[f::SCHED_BLOCKED_LONGEST_MS], 2.5);
        assert_eq!(w.features[f::SCHED_FUTEX_WAIT_MS], 7.0);
        assert_eq!(w.features[f::SCHED_PIPE_WAIT_MS], 1.5);
        assert_eq!(w.features[f::MEM_ANON_PEAK_BYTES], 4096.0);
        assert_eq!(
            w.features[f::SCHED_ON_CPU_NS],
            350.0,
            "credited time plus time still running"
        );
        // The running thread leaves the CPU: the next window gets only the rest.
        now.c[c::SCHED_ON_CPU_NS] = 380;
        let w = folder.fold(at(now.clone(), 0, host, 3_000, 13));
        assert_eq!(w.lost_events, 0);
        assert_eq!(w.features[f::SCHED_ON_CPU_NS], 30.0);
        // It runs again, 40 ns by this reading...
        let w = folder.fold(at(now.clone(), 40, host, 4_000, 13));
        assert_eq!(w.features[f::SCHED_ON_CPU_NS], 40.0);
        // ...and leaves its CPU after the totals were read, before the
        // threads were: neither shows it, and the 40 already reported
        // are owed, not taken back as a negative time.
        let w = folder.fold(at(now.clone(), 0, host, 5_000, 13));
        assert_eq!(w.features[f::SCHED_ON_CPU_NS], 0.0);
        // The counter credits its 60 ns stretch: 20 of them are new.
        now.c[c::SCHED_ON_CPU_NS] = 440;
        let w = folder.fold(at(now, 0, host, 6_000, 13));
        assert_eq!(w.features[f::SCHED_ON_CPU_NS], 20.0);
        assert_eq!(folder.windows(), 5);
    }
}
