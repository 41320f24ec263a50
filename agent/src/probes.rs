//! Loading the probes into this kernel and reading what they count.
//!
//! Nothing is pinned: every program, link and map lives only as long as the
//! file descriptors this process holds, so the kernel frees all of it when
//! the agent exits, however it exits (SIGKILL included).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{RawTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader};
use backstop_common::{
    ChangeEvent, HIST_BUCKETS, KernelOffsets, MAX_SLOTS, MAX_SYSCALLS, ProcEvent, SlotCounters,
    SyscallCounts, ThreadState, counter, hist,
};

use crate::btf;
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
    threads: HashMap<MapData, u32, ThreadState>,
    anon_peak: PerCpuArray<MapData, u64>,
    /// Our programs (name, fd), for reading the kernel's count of runs it
    /// skipped.
    prog_fds: Vec<(&'static str, OwnedFd)>,
    slots: [bool; MAX_SLOTS as usize],
    last_slot: usize,
    /// Records a tree read from a shared ring buffer for other trees.
    event_mail: Mailboxes<ProcEvent>,
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
    _ebpf: Ebpf,
}

// aya-log hands records to the `log` crate.
use log as log_facade;

impl Probes {
    /// Check privileges, read kernel layouts, load and attach every probe.
    pub fn load(opts: &ProbeOptions) -> Result<Self> {
        backstop_common::root::require_root(
            "loading eBPF probes needs root (CAP_BPF, CAP_PERFMON)",
        )?;
        if PROBES_OBJECT.is_empty() {
            return Err(AgentError::ProbesMissing);
        }
        raise_memlock();
        // Before anything reads tracefs: aya caches where it found it.
        crate::tracefs::ensure()?;
        let btf = btf::Btf::from_sys_fs()?;
        let (mut offsets, mut warnings) = btf::kernel_offsets(&btf)?;
        offsets.tp_exit_group_dead =
            tracepoint_field_offset("sched", "sched_process_exit", "group_dead")
                .unwrap_or(u32::MAX);
        let pid_max = read_pid_max()?;

        let mut loader = EbpfLoader::new();
        loader
            .override_global("OFFSETS", &offsets, true)
            .map_max_entries("TRACKED", pid_max);
        if !opts.probe_log {
            // aya-log statements compile to a level check first: level 0
            // turns every one of them into a no-op.
            loader.override_global("AYA_LOG_LEVEL", &0u8, false);
        }
        let mut ebpf = loader
            .load(PROBES_OBJECT)
            .map_err(|e| refused("loading the probe object", e))?;

        let logger = if opts.probe_log {
            match aya_log::EbpfLogger::init(&mut ebpf) {
                Ok(l) => Some(l),
                Err(e) => {
                    warnings.push(format!("probe log unavailable: {e}"));
                    None
                }
            }
        } else {
            None
        };

        let mut block_devs: HashMap<MapData, u32, u32> = take(&mut ebpf, "BLOCK_DEVS")?;
        for (dev, disk) in block_devices(Path::new("/sys/class/block")) {
            block_devs
                .insert(dev, disk, 0)
                .map_err(|e| map_err("BLOCK_DEVS", e))?;
        }
        let tracked: Array<MapData, u32> = take(&mut ebpf, "TRACKED")?;
        let counters = take(&mut ebpf, "COUNTERS")?;
        let syscalls = take(&mut ebpf, "SYSCALL_COUNTS")?;
        let events = take(&mut ebpf, "EVENTS")?;
        let changes = take(&mut ebpf, "CHANGES")?;
        let change_slots = take(&mut ebpf, "CHANGE_SLOTS")?;
        let threads = take(&mut ebpf, "THREADS")?;
        let anon_peak = take(&mut ebpf, "ANON_PEAK")?;

        let mut prog_fds = Vec::new();
        for (prog, _) in TRACKING_HOOKS {
            let p: &mut RawTracePoint = program(&mut ebpf, prog)?;
            p.load()
                .map_err(|e| refused(&format!("loading program {prog}"), e))?;
            prog_fds.push((prog, dup_prog_fd(p.fd(), prog)?));
        }
        for (prog, tp) in RAW_TRACEPOINTS {
            let p: &mut RawTracePoint = program(&mut ebpf, prog)?;
            p.load()
                .map_err(|e| refused(&format!("loading program {prog}"), e))?;
            p.attach(tp)
                .map_err(|e| refused(&format!("attaching {prog} to raw tracepoint {tp}"), e))?;
            prog_fds.push((*prog, dup_prog_fd(p.fd(), prog)?));
        }
        for (prog, category, name) in TRACEPOINTS {
            let p: &mut TracePoint = program(&mut ebpf, prog)?;
            p.load()
                .map_err(|e| refused(&format!("loading program {prog}"), e))?;
            p.attach(category, name).map_err(|e| {
                refused(
                    &format!("attaching {prog} to tracepoint {category}/{name}"),
                    e,
                )
            })?;
            prog_fds.push((*prog, dup_prog_fd(p.fd(), prog)?));
        }
        Ok(Probes {
            tracked_len: tracked.len(),
            tracked,
            counters,
            syscalls,
            events,
            changes,
            change_slots,
            threads,
            anon_peak,
            prog_fds,
            slots: [false; MAX_SLOTS as usize],
            last_slot: 0,
            // A tree's worth of exec/exit records and of change records
            // (560 bytes each: at most 9 MB waiting per slot).
            event_mail: Mailboxes::new(1 << 16),
            change_mail: Mailboxes::new(1 << 14),
            tracking_links: Vec::new(),
            offsets,
            warnings,
            logger,
            _ebpf: ebpf,
        })
    }

    /// Claim a free stream slot (1..MAX_SLOTS). Its counters keep running
    /// totals, so readers start from [`Probes::totals`] at claim time.
    /// Slots are handed out round-robin: a tree's orphans (daemons it left
    /// running) keep counting into its slot, so a slot is reused as late as
    /// possible.
    pub fn claim_slot(&mut self) -> Result<u32> {
        let n = MAX_SLOTS as usize - 1;
        let free = (0..n)
            .map(|i| 1 + (self.last_slot + i) % n)
            .find(|&s| !self.slots[s])
            .ok_or(AgentError::NoFreeSlot { max: MAX_SLOTS - 1 })?;
        if self.tracking_links.is_empty() {
            self.attach_tracking_hooks()?;
        }
        self.slots[free] = true;
        self.last_slot = free;
        Ok(free as u32)
    }

    /// Give a slot back; with no slot left in use, the tracking hooks come
    /// off and the host's syscalls cost what they cost without us.
    pub fn release_slot(&mut self, slot: u32) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = false;
        }
        if let Err(e) = self.record_changes(slot, false) {
            tracing::warn!(slot, "turning change recording off: {e}");
        }
        self.event_mail.clear(slot);
        self.change_mail.clear(slot);
        if !self.slots.iter().any(|&s| s) {
            self.detach_tracking_hooks();
        }
    }

    fn attach_tracking_hooks(&mut self) -> Result<()> {
        for (prog, tp) in TRACKING_HOOKS {
            let p: &mut RawTracePoint = program(&mut self._ebpf, prog)?;
            let link = p
                .attach(tp)
                .map_err(|e| refused(&format!("attaching {prog} to raw tracepoint {tp}"), e))?;
            self.tracking_links.push((prog, link));
        }
        Ok(())
    }

    fn detach_tracking_hooks(&mut self) {
        for (prog, link) in std::mem::take(&mut self.tracking_links) {
            if let Ok(p) = program::<RawTracePoint>(&mut self._ebpf, prog)
                && let Err(e) = p.detach(link)
            {
                tracing::warn!(prog, "detaching: {e}");
            }
        }
    }

    /// Track `pid` (and from then on everything it forks) as `slot`,
    /// counting from its first exec.
    pub fn track(&mut self, pid: u32, slot: u32) -> Result<()> {
        if pid >= self.tracked_len {
            return Err(AgentError::PidOutOfRange {
                pid,
                max: self.tracked_len,
            });
        }
        self.tracked
            .set(pid, slot | backstop_common::PENDING_EXEC, 0)
            .map_err(|e| map_err("TRACKED", e))
    }

    /// Running totals of a slot, summed over CPUs.
    pub fn totals(&self, slot: u32) -> Result<Box<Totals>> {
        let mut t = Totals::zero();
        let per_cpu = self
            .counters
            .get(&slot, 0)
            .map_err(|e| map_err("COUNTERS", e))?;
        for cpu in per_cpu.iter() {
            for (acc, v) in t.c.iter_mut().zip(cpu.c.iter()) {
                *acc += v;
            }
            for (acc_h, h) in t.hist.iter_mut().zip(cpu.hist.iter()) {
                for (acc, v) in acc_h.iter_mut().zip(h.iter()) {
                    *acc += v;
                }
            }
        }
        let per_cpu = self
            .syscalls
            .get(&slot, 0)
            .map_err(|e| map_err("SYSCALL_COUNTS", e))?;
        for cpu in per_cpu.iter() {
            for (acc, v) in t.syscalls.iter_mut().zip(cpu.n.iter()) {
                *acc += v;
            }
        }
        Ok(t)
    }

    /// What the slot's threads are doing at `now_ns`, from one pass over
    /// the thread table.
    pub fn threads_now(&self, slot: u32, now_ns: u64) -> ThreadsNow {
        let mut now = ThreadsNow::default();
        for (tid, state) in self.threads.iter().flatten() {
            let running = state.on_cpu_since_ns != 0 && state.on_cpu_since_ns <= now_ns;
            // Asleep inside a syscall: neither on a CPU nor waiting for one.
            let blocked = state.syscall_start_ns != 0
                && state.syscall_start_ns <= now_ns
                && state.on_cpu_since_ns == 0
                && state.runnable_since_ns == 0
                && !crate::syscall_class::waits_for_children(state.syscall_nr as usize);
            if !(running || blocked) || self.tracked.get(&tid, 0).ok() != Some(slot) {
                continue;
            }
            if running {
                now.running_on_cpu_ns += now_ns - state.on_cpu_since_ns;
            }
            if blocked {
                now.longest_blocked_ns =
                    now.longest_blocked_ns.max(now_ns - state.syscall_start_ns);
            }
        }
        now
    }

    /// The largest anonymous RSS a process of the slot reached since the
    /// last call (0 when none changed), and start over.
    pub fn take_anon_peak(&mut self, slot: u32) -> Result<u64> {
        let per_cpu = self
            .anon_peak
            .get(&slot, 0)
            .map_err(|e| map_err("ANON_PEAK", e))?;
        let peak = per_cpu.iter().copied().max().unwrap_or(0);
        if peak != 0 {
            let zeros = aya::maps::PerCpuValues::try_from(vec![0u64; per_cpu.len()])
                .map_err(|e| map_err("ANON_PEAK", e))?;
            self.anon_peak
                .set(slot, zeros, 0)
                .map_err(|e| map_err("ANON_PEAK", e))?;
        }
        Ok(peak)
    }

    /// Runs of our programs the kernel skipped since load. A tracepoint
    /// program does not run while another tracing program is running on the
    /// same CPU (an interrupt's block completion during a syscall hook, say);
    /// the kernel counts each skip per program. Which tree a skipped event
    /// belonged to is unknowable, so callers report these as lost for every
    /// stream rather than hide them.
    pub fn recursion_misses(&self) -> u64 {
        self.recursion_misses_by_program()
            .iter()
            .map(|(_, n)| n)
            .sum()
    }

    /// Skipped runs per program, for diagnosis.
    pub fn recursion_misses_by_program(&self) -> Vec<(&'static str, u64)> {
        self.prog_fds
            .iter()
            .map(|(name, fd)| (*name, prog_recursion_misses(fd.as_fd())))
            .collect()
    }

    /// Hand `slot`'s queued lifecycle records to `f`, in order; other
    /// slots' records wait in their mailboxes.
    pub fn drain_events(&mut self, slot: u32, mut f: impl FnMut(ProcEvent)) {
        self.event_mail.take(slot).into_iter().for_each(&mut f);
        while let Some(item) = self.events.next() {
            if item.len() >= std::mem::size_of::<ProcEvent>() {
                // SAFETY: the probes write whole ProcEvents (repr(C), Pod);
                // read_unaligned copes with the ring buffer's 8-byte alignment.
                let ev = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const ProcEvent) };
                if ev.slot == slot {
                    f(ev);
                } else if self.slots.get(ev.slot as usize) == Some(&true) {
                    self.event_mail.put(ev.slot, ev);
                }
            }
        }
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
    }

    /// The ring buffer's fd, to wait on for new records.
    pub fn events_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }

    /// Whether the probes record `slot`'s filesystem changes.
    pub fn record_changes(&mut self, slot: u32, on: bool) -> Result<()> {
        self.change_slots
            .set(slot, u32::from(on), 0)
            .map_err(|e| map_err("CHANGE_SLOTS", e))
    }

    /// Hand `slot`'s queued change records to `f`, in order; other
    /// slots' records wait in their mailboxes.
    pub fn drain_changes(&mut self, slot: u32, mut f: impl FnMut(&ChangeEvent)) {
        self.change_mail.take(slot).iter().for_each(&mut f);
        while let Some(item) = self.changes.next() {
            if item.len() >= std::mem::size_of::<ChangeEvent>() {
                // SAFETY: the probes write whole ChangeEvents (repr(C), Pod).
                let ev = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const ChangeEvent) };
                if ev.slot == slot {
                    f(&ev);
                } else if self.slots.get(ev.slot as usize) == Some(&true) {
                    self.change_mail.put(ev.slot, ev);
                }
            }
        }
    }

    /// Change records of `slot` dropped because its mailbox was full: lost
    /// as surely as those the kernel could not queue.
    pub fn changes_dropped(&self, slot: u32) -> u64 {
        self.change_mail.dropped(slot)
    }

    /// The change ring buffer's fd, to wait on for new records.
    pub fn changes_fd(&self) -> BorrowedFd<'_> {
        self.changes.as_fd()
    }
}

fn dup_prog_fd(
    fd: std::result::Result<&aya::programs::ProgramFd, aya::programs::ProgramError>,
    prog: &str,
) -> Result<OwnedFd> {
    fd.map_err(|e| refused(&format!("program {prog}"), e))?
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| AgentError::Io {
            context: format!("duplicating the fd of {prog}"),
            source,
        })
}

fn prog_recursion_misses(fd: BorrowedFd<'_>) -> u64 {
    use aya_obj::generated::bpf_prog_info;
    /// The `info` member of `union bpf_attr` (BPF_OBJ_GET_INFO_BY_FD).
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // SAFETY: all-zero is a valid bpf_prog_info (plain integers and pointers).
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<bpf_prog_info>() as u32,
        info: &mut info as *mut bpf_prog_info as u64,
    };
    // SAFETY: attr and info outlive the call; the kernel accepts an attr
    // shorter than union bpf_attr and writes at most info_len bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if r == 0 { info.recursion_misses } else { 0 }
}

fn raise_memlock() {
    // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones to
    // the memory cgroup, where this is harmless.
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to an initialised rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

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

fn take<T: TryFrom<aya::maps::Map>>(ebpf: &mut Ebpf, name: &'static str) -> Result<T>
where
    T::Error: std::fmt::Display,
{
    let map = ebpf.take_map(name).ok_or(AgentError::Map {
        map: name,
        reason: "not in the probe object".into(),
    })?;
    T::try_from(map).map_err(|e| map_err(name, e))
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

fn read_pid_max() -> Result<u32> {
    let path = Path::new("/proc/sys/kernel/pid_max");
    let s = std::fs::read_to_string(path).map_err(|source| AgentError::Proc {
        path: path.into(),
        source,
    })?;
    s.trim().parse::<u32>().map_err(|e| AgentError::Proc {
        path: path.into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// Offset of a field in a tracepoint's record, from its tracefs format file.
fn tracepoint_field_offset(category: &str, event: &str, field: &str) -> Option<u32> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|base| {
            std::fs::read_to_string(format!("{base}/events/{category}/{event}/format")).ok()
        })
        .and_then(|fmt| parse_field_offset(&fmt, field))
}

fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.split_whitespace().last()?.split('[').next()?;
        if name != field {
            return None;
        }
        rest.split(';')
            .find_map(|kv| kv.trim().strip_prefix("offset:"))
            .and_then(|v| v.parse().ok())
    })
}

/// Kernel dev_t (MAJOR << 20 | MINOR) of every leaf block device and its
/// partitions, each paired with its whole disk's dev_t. Devices stacked on
/// others (dm, md) have `slaves/` and are left out.
pub fn block_devices(class_dir: &Path) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(class_dir) else {
        return out;
    };
    for e in entries.flatten() {
        let dir = e.path();
        let Some(dev) = read_dev(&dir.join("dev")) else {
            continue;
        };
        let disk_dir = if dir.join("partition").exists() {
            match std::fs::canonicalize(&dir)
                .ok()
                .and_then(|p| p.parent().map(|p| p.to_path_buf()))
            {
                Some(p) => p,
                None => continue,
            }
        } else {
            dir.clone()
        };
        let stacked = std::fs::read_dir(disk_dir.join("slaves"))
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if stacked {
            continue;
        }
        if let Some(disk) = read_dev(&disk_dir.join("dev")) {
            out.push((dev, disk));
        }
    }
    out
}

fn read_dev(path: &Path) -> Option<u32> {
    let s = std::fs::read_to_string(path).ok()?;
    let (maj, min) = s.trim().split_once(':')?;
    Some((maj.parse::<u32>().ok()? << 20) | min.parse::<u32>().ok()?)
}

/// The event ring buffers are shared by every tree the agent watches, and
/// whichever tree reads first takes all queued records. What it reads for
/// another tree waits here until that tree drains, so concurrent trees
/// each get every record of their own. A mailbox is bounded; a record that
/// does not fit is dropped and counted against its slot.
struct Mailboxes<T> {
    by_slot: std::collections::BTreeMap<u32, (std::collections::VecDeque<T>, u64)>,
    max: usize,
}

impl<T> Mailboxes<T> {
    fn new(max: usize) -> Self {
        Mailboxes {
            by_slot: Default::default(),
            max,
        }
    }

    fn put(&mut self, slot: u32, item: T) {
        let (q, dropped) = self.by_slot.entry(slot).or_default();
        if q.len() < self.max {
            q.push_back(item);
        } else {
            *dropped += 1;
        }
    }

    /// The slot's waiting records; its dropped count stays.
    fn take(&mut self, slot: u32) -> std::collections::VecDeque<T> {
        self.by_slot
            .get_mut(&slot)
            .map(|(q, _)| std::mem::take(q))
            .unwrap_or_default()
    }

    fn dropped(&self, slot: u32) -> u64 {
        self.by_slot.get(&slot).map_or(0, |(_, d)| *d)
    }

    fn clear(&mut self, slot: u32) {
        self.by_slot.remove(&slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tracefs_format() {
        let fmt = "name: sched_process_exit\nID: 1\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n";
        assert_eq!(parse_field_offset(fmt, "group_dead"), Some(32));
        assert_eq!(parse_field_offset(fmt, "comm"), Some(8));
        assert_eq!(parse_field_offset(fmt, "nope"), None);
    }

    #[test]
    fn finds_this_hosts_disks() {
        let devs = block_devices(Path::new("/sys/class/block"));
        // Every entry maps to a whole disk that maps to itself.
        for (dev, disk) in &devs {
            assert!(
                devs.iter().any(|(d, w)| d == disk && w == disk),
                "{dev:#x} -> {disk:#x} has no disk entry"
            );
        }
    }
}
