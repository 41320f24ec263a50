//! backstop's probes: tracepoint programs that follow tracked process trees
//! and aggregate what those trees do into per-CPU counters, one set per
//! stream slot.
//!
//! Why this shape:
//! - Only tracepoints, raw tracepoints and tp_btf exist on our kernels
//!   (kprobes are compiled out, fentry is refused), so every hook is one.
//! - The syscall and scheduler hooks fire for every task on the host, so
//!   they are raw tracepoints (no perf record is built) and the first thing
//!   they do is an array lookup the verifier inlines: an untracked task pays
//!   a few loads and returns.
//! - Counting happens here, in per-CPU maps: exact, cheap, nothing to lose.
//!   The ring buffer carries only exec, exit and OOM records, for detail.
#![no_std]
#![no_main]

mod block;
mod changes;
mod memory;
mod net;
mod process;
mod sched;
mod syscalls;
mod writeback;

use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use backstop_common::{
    BioKey, BioStart, CpuSyscall, KernelOffsets, MAX_SLOTS, PENDING_EXEC, SlotCounters, SockOwner,
    SyscallCounts, ThreadState, counter, hist_bucket,
};

/// Stream slot per tid (0: not tracked). Indexed by tid; the agent sizes it
/// to the host's pid_max at load, so lookups are inlined array loads.
#[map]
static TRACKED: Array<u32> = Array::with_max_entries(32768, 0);

/// Running totals per slot, per CPU.
#[map]
static COUNTERS: PerCpuArray<SlotCounters> = PerCpuArray::with_max_entries(MAX_SLOTS, 0);

/// Syscalls entered, per slot and syscall number; the agent folds numbers
/// into classes.
#[map]
static SYSCALL_COUNTS: PerCpuArray<SyscallCounts> = PerCpuArray::with_max_entries(MAX_SLOTS, 0);

/// The syscall a tracked thread has in flight on each CPU (see CpuSyscall).
#[map]
static CPU_SYSCALL: PerCpuArray<CpuSyscall> = PerCpuArray::with_max_entries(1, 0);

/// Timing state of tracked threads only.
#[map]
static THREADS: HashMap<u32, ThreadState> = HashMap::with_max_entries(65536, 0);

/// Bios a tracked tree submitted, until their request completes. LRU: a bio
/// merged into another request never completes under its own key.
#[map]
static BIO_INFLIGHT: LruHashMap<BioKey, BioStart> = LruHashMap::with_max_entries(16384, 0);

/// Devices whose bios count: leaf disks and their partitions, each mapped to
/// its whole disk (requests complete under the disk's dev, bios are queued
/// under the partition's). Stacked devices (dm, md) are absent, so a bio is
/// not counted twice on its way down. Filled by the agent.
#[map]
static BLOCK_DEVS: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

/// TCP sockets a tracked tree connected or sent on, by `struct sock *`.
#[map]
static SOCKS: HashMap<u64, SockOwner> = HashMap::with_max_entries(16384, 0);

/// Per slot, the largest anonymous RSS a tracked process reached since the
/// agent last read it (the agent reads and zeroes it once per window).
#[map]
static ANON_PEAK: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_SLOTS, 0);

/// Per slot, the tgid of the tree's root (the process the agent started
/// and tracks it from), written by the agent; [`ROOT_GONE`] once that
/// process has exited. What is still alive then is killed with the tree's
/// end (a pid namespace dies with its init, a rollback kills a cgroup),
/// and those SIGKILLs are not the install's deaths (process.rs).
#[map]
static ROOTS: Array<u32> = Array::with_max_entries(MAX_SLOTS, 0);

/// A root no pid can be.
const ROOT_GONE: u32 = u32::MAX;

/// Exec, exit and OOM records.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Change records (see ChangeEvent), apart from EVENTS so a busy install's
/// writes cannot crowd out its exits.
#[map]
static CHANGES: RingBuf = RingBuf::with_byte_size(1024 * 1024, 0);

/// Per slot: 1 when the agent wants that tree's filesystem changes.
#[map]
static CHANGE_SLOTS: Array<u32> = Array::with_max_entries(MAX_SLOTS, 0);

/// Kernel layout facts, read from BTF by the agent and written here at load.
#[unsafe(no_mangle)]
static OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets {
    task_pid: u32::MAX,
    task_tgid: u32::MAX,
    task_exit_code: u32::MAX,
    task_runtime: u32::MAX,
    folio_flags: u32::MAX,
    folio_nr_pages: u32::MAX,
    pg_head_bit: u32::MAX,
    page_size: 4096,
    tp_exit_group_dead: u32::MAX,
    rq_sector: u32::MAX,
    rq_q: u32::MAX,
    q_disk: u32::MAX,
    disk_major: u32::MAX,
    disk_first_minor: u32::MAX,
    sk_protocol: u32::MAX,
    mapping_host: u32::MAX,
    inode_mode: u32::MAX,
    task_files: u32::MAX,
    task_fs: u32::MAX,
    files_fdt: u32::MAX,
    fdtable_fd: u32::MAX,
    file_inode: u32::MAX,
    inode_ino: u32::MAX,
    fs_pwd_dentry: u32::MAX,
    fs_root_dentry: u32::MAX,
    dentry_inode: u32::MAX,
    task_mm: u32::MAX,
    mm_rss_stat: u32::MAX,
    rss_counter_size: u32::MAX,
    percpu_counter_count: u32::MAX,
});

#[inline(always)]
fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

#[inline(always)]
fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: the helper has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// The stream slot of a tid, 0 when untracked.
#[inline(always)]
fn slot_of(tid: u32) -> u32 {
    let raw = raw_slot(tid);
    if raw & PENDING_EXEC != 0 { 0 } else { raw }
}

/// The TRACKED entry as stored, pending bit included.
#[inline(always)]
fn raw_slot(tid: u32) -> u32 {
    TRACKED.get(tid).copied().unwrap_or(0)
}

#[inline(always)]
fn set_slot(tid: u32, slot: u32) -> bool {
    match TRACKED.get_ptr_mut(tid) {
        Some(p) => {
            // SAFETY: the pointer comes from the map and is valid for a u32.
            unsafe { *p = slot };
            true
        }
        None => false,
    }
}

#[inline(always)]
fn counters(slot: u32) -> Option<&'static mut SlotCounters> {
    // SAFETY: per-CPU value; tracing programs do not nest on one CPU for the
    // same hook, and the pointer is valid for the program's run.
    COUNTERS.get_ptr_mut(slot).map(|p| unsafe { &mut *p })
}

#[inline(always)]
fn add(slot: u32, idx: usize, v: u64) {
    if let Some(c) = counters(slot)
        && let Some(x) = c.c.get_mut(idx)
    {
        *x += v;
    }
}

#[inline(always)]
fn lost(slot: u32) {
    add(slot, counter::LOST_EVENTS, 1);
}

#[inline(always)]
fn record(slot: u32, hist: usize, ns: u64) {
    if let Some(c) = counters(slot)
        && let Some(h) = c.hist.get_mut(hist)
        && let Some(b) = h.get_mut(hist_bucket(ns))
    {
        *b += 1;
    }
}

/// The timing state of a tracked thread, created on first use (the root of
/// a tree is registered by the agent, which cannot create it).
#[inline(always)]
fn thread_state(slot: u32, tid: u32) -> Option<&'static mut ThreadState> {
    if THREADS.get_ptr_mut(tid).is_none() && THREADS.insert(tid, ThreadState::default(), 0).is_err()
    {
        lost(slot);
        return None;
    }
    // SAFETY: the entry exists (just checked or inserted); hash map values
    // stay valid while the program runs.
    THREADS.get_ptr_mut(tid).map(|p| unsafe { &mut *p })
}

/// The kernel's own count of the CPU time `task` has had
/// (`se.sum_exec_runtime`): exact at a switch, up to a tick behind while
/// the task runs.
#[inline(always)]
fn task_runtime(task: *const u8) -> Option<u64> {
    read_kernel::<u64>(task, OFFSETS.load().task_runtime)
}

/// Read a kernel value at `base + off`; `None` when the offset is unknown
/// or the read faults.
#[inline(always)]
fn read_kernel<T>(base: *const u8, off: u32) -> Option<T> {
    if off == u32::MAX || base.is_null() {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(base.add(off as usize) as *const T).ok() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
