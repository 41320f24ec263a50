//! Loading the probes into this kernel and reading what they count.
//!
//! Nothing is pinned: every program, link and map lives only as long as the
//! file descriptors this process holds, so the kernel frees all of it when
//! the agent exits, however it exits (SIGKILL included).
//!
//! Only this module touches aya. Its files: `load` (the object, its
//! programs, and the kernel facts the load needs), `slots` (claim,
//! release, track), `read` (totals and other map readings), `mailbox`
//! (the shared ring buffers and per-slot mailboxes), `verify` (the
//! hook list and a load without attaching, for `doctor`).

mod load;
mod mailbox;
mod read;
mod slots;
mod verify;

mod stats;

use std::os::fd::OwnedFd;

use aya::Ebpf;
use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use backstop_common::{
    ChangeEvent, HIST_BUCKETS, KernelOffsets, MAX_SLOTS, MAX_SYSCALLS, ProcRecord, SlotCounters,
    SyscallCounts, ThreadState, counter, hist,
};

pub use load::block_devices;
use mailbox::Mailboxes;
pub use verify::{Hook, HookKind, hooks, verify_load};

pub use stats::{ProgramStats, RunStats};

use crate::error::{AgentError, Result};

/// The probe object, embedded at build time (see build.rs).
static PROBES_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/backstop-probes.o"));

/// Raw tracepoints, always attached: hot paths (no perf record built per
/// event) and hooks that fire in interrupt context.
const RAW_TRACEPOINTS: &[(&str, &str)] = &[
    ("bs_sched_switch", "sched_switch"),
    ("bs_sched_wakeup", "sched_wakeup"),
    ("bs_sched_wakeup_new", "sched_wakeup_new"),
    ("bs_writeback_dirty_folio", "writeback_dirty_folio"),
    // Interrupt context: raw, so they are never skipped for nesting inside
    // one of our classic tracepoint programs.
    ("bs_block_rq_complete", "block_rq_complete"),
    ("bs_inet_sock_set_state", "inet_sock_set_state"),
    ("bs_tcp_retransmit_skb", "tcp_retransmit_skb"),
];

/// Classic tracepoints: (program, category, event).
const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("bs_task_newtask", "task", "task_newtask"),
    ("bs_sched_process_exec", "sched", "sched_process_exec"),
    ("bs_sched_process_exit", "sched", "sched_process_exit"),
    ("bs_oom_mark_victim", "oom", "mark_victim"),
    ("bs_block_bio_queue", "block", "block_bio_queue"),
    ("bs_sock_send_length", "sock", "sock_send_length"),
    ("bs_sock_recv_length", "sock", "sock_recv_length"),
];

/// Raw tracepoints attached only while some tree is tracked: they fire for
/// every task on the host, so an idle agent must not pay for them. Once any
/// raw_syscalls tracepoint is attached, every thread on the host takes the
/// kernel's slower syscall path, tracked or not; rss_stat fires on every
/// page fault.
const TRACKING_HOOKS: [(&str, &str); 3] = [
    ("bs_sys_enter", "sys_enter"),
    ("bs_sys_exit", "sys_exit"),
    ("bs_rss_stat", "rss_stat"),
];

#[derive(Debug, Clone, Default)]
pub struct ProbeOptions {
    /// Forward the probes' aya-log diagnostics to the agent's log.
    pub probe_log: bool,
}

/// A slot's threads at one moment (see [`Probes::threads_now`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadsNow {
    /// CPU time the threads on a CPU have run without yet leaving it (the
    /// kernel credits on-CPU time at switch-out). Adding it to a window,
    /// and taking it out of the next, keeps a long-running thread's time in
    /// the windows where it was spent.
    pub running_on_cpu_ns: u64,
    /// Of the threads asleep inside a syscall (neither on a CPU nor
    /// runnable), how long the longest-waiting one has been in it; waits
    /// for children do not count (a parent waits as long as its children
    /// work).
    pub longest_blocked_ns: u64,
}

/// One slot's running totals, summed over CPUs.
#[derive(Clone)]
pub struct Totals {
    pub c: [u64; counter::COUNT],
    pub hist: [[u64; HIST_BUCKETS]; hist::COUNT],
    pub syscalls: [u64; MAX_SYSCALLS as usize],
}

impl Totals {
    pub fn zero() -> Box<Self> {
        Box::new(Totals {
            c: [0; counter::COUNT],
            hist: [[0; HIST_BUCKETS]; hist::COUNT],
            syscalls: [0; MAX_SYSCALLS as usize],
        })
    }
}

pub struct Probes {
    tracked: Array<MapData, u32>,
    tracked_len: u32,
    counters: PerCpuArray<MapData, SlotCounters>,
    syscalls: PerCpuArray<MapData, SyscallCounts>,
    events: RingBuf<MapData>,
    changes: RingBuf<MapData>,
    change_slots: Array<MapData, u32>,
    /// Per slot, the tgid of its tree's root (main.rs of the probes: ROOTS).
    roots: Array<MapData, u32>,
    threads: HashMap<MapData, u32, ThreadState>,
    anon_peak: PerCpuArray<MapData, u64>,
    /// Our programs (name, fd), for reading the kernel's count of runs it
    /// skipped.
    prog_fds: Vec<(&'static str, OwnedFd)>,
    slots: [bool; MAX_SLOTS as usize],
    last_slot: usize,
    /// Records a tree read from a shared ring buffer for other trees.
    event_mail: Mailboxes<ProcRecord>,
    change_mail: Mailboxes<ChangeEvent>,
    /// Links of the tracking hooks while attached.
    tracking_links: Vec<(
        &'static str,
        aya::programs::raw_trace_point::RawTracePointLinkId,
    )>,
    pub offsets: KernelOffsets,
    pub warnings: Vec<String>,
    logger: Option<aya_log::EbpfLogger<&'static dyn log_facade::Log>>,
    // Programs and their links; dropped (detached) last.
    ebpf: Ebpf,
}

// aya-log hands records to the `log` crate.
use log as log_facade;

fn refused(what: &str, e: impl std::error::Error) -> AgentError {
    // The interesting part (EPERM, the verifier's complaint) is usually at
    // the end of the source chain.
    let mut reason = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        src = s.source();
    }
    AgentError::BpfRefused {
        what: what.to_string(),
        reason: first_line(&reason),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

fn map_err(map: &'static str, e: impl std::fmt::Display) -> AgentError {
    AgentError::Map {
        map,
        reason: e.to_string(),
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program>,
    <&'a mut T as TryFrom<&'a mut aya::programs::Program>>::Error: std::fmt::Display,
{
    let p = ebpf
        .program_mut(name)
        .ok_or_else(|| AgentError::BpfRefused {
            what: format!("program {name}"),
            reason: "not in the probe object (stale build? run `cargo xtask build-ebpf`)".into(),
        })?;
    <&mut T>::try_from(p).map_err(|e| AgentError::BpfRefused {
        what: format!("program {name}"),
        reason: e.to_string(),
    })
}
