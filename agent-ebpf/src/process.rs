//! Process life: tree membership (fork), exec, exit with its status, OOM.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_comm, bpf_get_current_task, bpf_probe_read_kernel_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use backstop_common::{EVENT_EXEC, EVENT_EXIT, EVENT_OOM_KILL, PENDING_EXEC, ProcRecord, counter};

use crate::{
    CPU_SYSCALL, EVENTS, OFFSETS, ROOT_GONE, ROOTS, THREADS, add, current_tgid, current_tid, lost,
    now, raw_slot, read_kernel, set_slot, slot_of, task_runtime, thread_state,
};

const CLONE_THREAD: u64 = 0x0001_0000;
/// The signal a writer gets when its pipe's reader has gone.
const SIGPIPE: i32 = 13;
/// The signal a pid namespace's end and a cgroup's kill send.
const SIGKILL: i32 = 9;

/// task:task_newtask runs in the parent's context before the child can run,
/// so the child is tracked from its first instruction.
/// Record: pid@8 (child), clone_flags@32.
#[tracepoint]
pub fn bs_task_newtask(ctx: TracePointContext) -> u32 {
    let slot = slot_of(current_tid());
    if slot == 0 {
        return 0;
    }
    // SAFETY: offsets from the tracepoint's format file.
    let child: i32 = unsafe { ctx.read_at(8) }.unwrap_or(0);
    let flags: u64 = unsafe { ctx.read_at(32) }.unwrap_or(0);
    if child <= 0 || !set_slot(child as u32, slot) {
        lost(slot);
        aya_log_ebpf::warn!(
            &ctx,
            "backstop: pid {} is beyond the tracked-pid map; its tree is lost",
            child
        );
        return 0;
    }
    if flags & CLONE_THREAD != 0 {
        add(slot, counter::PROC_THREADS, 1);
    } else {
        add(slot, counter::PROC_FORKS, 1);
    }
    0
}

#[inline(always)]
fn emit(
    slot: u32,
    kind: u32,
    pid: u32,
    tgid: u32,
    exit_code: i32,
) -> Option<aya_ebpf::maps::ring_buf::RingBufEntry<ProcRecord>> {
    match EVENTS.reserve::<ProcRecord>(0) {
        Some(mut e) => {
            let ev = e.as_mut_ptr();
            // SAFETY: the reservation is sized for a ProcRecord; every field
            // is written before submit.
            unsafe {
                (*ev).kind = kind;
                (*ev).slot = slot;
                (*ev).pid = pid;
                (*ev).tgid = tgid;
                (*ev).ts_ns = now();
                (*ev).exit_code = exit_code;
                (*ev)._pad = 0;
                (*ev).comm = bpf_get_current_comm().unwrap_or([0; 16]);
                (*ev).filename = [0; backstop_common::FILENAME_LEN];
            }
            Some(e)
        }
        None => {
            lost(slot);
            None
        }
    }
}

/// sched:sched_process_exec. Record: filename (__data_loc)@8, pid@12, old_pid@16.
#[tracepoint]
pub fn bs_sched_process_exec(ctx: TracePointContext) -> u32 {
    let tid = current_tid();
    let raw = raw_slot(tid);
    let mut slot = raw & !PENDING_EXEC;
    if raw & PENDING_EXEC != 0 {
        // The registered command's first exec: counting starts here.
        set_slot(tid, slot);
        // It is on a CPU now, running this tracepoint, but it was switched
        // in while pending, so sched_switch did not start its stretch. A
        // command that never sleeps would go uncounted until its first
        // switch (CI once saw 0.4 s of a 0.9 s spin lost that way).
        if let Some(s) = thread_state(slot, tid) {
            if s.on_cpu_since_ns == 0 {
                s.on_cpu_since_ns = now();
            }
            // What it ran before its exec (the agent's fork) is not the
            // command's.
            // SAFETY: bpf_get_current_task has no preconditions.
            let task = unsafe { bpf_get_current_task() } as *const u8;
            if let Some(ran) = task_runtime(task) {
                s.cpu_seen_ns = ran;
            }
        }
    }
    // SAFETY: offsets from the tracepoint's format file.
    let old_pid: i32 = unsafe { ctx.read_at(16) }.unwrap_or(0);
    if slot == 0 && old_pid > 0 {
        // A non-leader thread exec'd and took the leader's pid.
        slot = slot_of(old_pid as u32);
        if slot == 0 {
            return 0;
        }
        set_slot(tid, slot);
    }
    if slot == 0 {
        return 0;
    }
    if old_pid > 0 && old_pid as u32 != tid {
        set_slot(old_pid as u32, 0);
    }
    add(slot, counter::PROC_EXECS, 1);
    if let Some(mut e) = emit(slot, EVENT_EXEC, tid, current_tgid(), 0) {
        let loc: u32 = unsafe { ctx.read_at(8) }.unwrap_or(0);
        let off = (loc & 0xffff) as usize;
        // SAFETY: __data_loc points inside the tracepoint record; the helper
        // bounds the copy by the destination.
        unsafe {
            let dst = &mut (*e.as_mut_ptr()).filename;
            let _ = bpf_probe_read_kernel_str_bytes((ctx.as_ptr() as *const u8).add(off), dst);
        }
        e.submit(0);
    }
    0
}

/// sched:sched_process_exit runs in the exiting task. Record: pid@24,
/// group_dead@32 (6.16+; offset supplied by the agent).
#[tracepoint]
pub fn bs_sched_process_exit(ctx: TracePointContext) -> u32 {
    let tid = current_tid();
    let raw = raw_slot(tid);
    if raw & PENDING_EXEC != 0 {
        // Registered but never exec'd (the exec failed): forget it.
        set_slot(tid, 0);
        return 0;
    }
    let slot = raw;
    if slot == 0 {
        return 0;
    }
    // SAFETY: bpf_get_current_task has no preconditions.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    // The tid may be reused by an unrelated task: forget it now. Its last
    // stretch on the CPU ends after this point, when it is no longer
    // tracked, so credit it here.
    if let Some(t) = THREADS.get_ptr(tid) {
        // SAFETY: map value pointer.
        let (since, seen) = unsafe { ((*t).on_cpu_since_ns, (*t).cpu_seen_ns) };
        if since != 0 {
            add(slot, counter::SCHED_ON_CPU_NS, now().saturating_sub(since));
        } else {
            // Switched in unseen (see sched.rs): the kernel's runtime,
            // which lags by at most a tick here.
            if let Some(ran) = task_runtime(task) {
                add(slot, counter::SCHED_ON_CPU_NS, ran.saturating_sub(seen));
            }
        }
    }
    set_slot(tid, 0);
    let _ = THREADS.remove(tid);
    // exit_group never returns: its syscall start is stale now.
    if let Some(c) = CPU_SYSCALL.get_ptr_mut(0) {
        // SAFETY: valid per-CPU map value for this run.
        let c = unsafe { &mut *c };
        if c.tid == tid {
            c.tid = 0;
        }
    }
    let tgid = current_tgid();
    let off = OFFSETS.load();
    let group_dead = if off.tp_exit_group_dead == u32::MAX {
        tid == tgid
    } else {
        // SAFETY: offset from the tracepoint's format file.
        unsafe { ctx.read_at::<u8>(off.tp_exit_group_dead as usize) }.unwrap_or(0) != 0
    };
    if !group_dead {
        return 0;
    }
    add(slot, counter::PROC_EXITS, 1);
    // do_exit() sets exit_code before this tracepoint: (status << 8) for
    // exit(), or the signal number (| 0x80 with a core dump).
    let code: i32 = read_kernel(task, off.task_exit_code).unwrap_or(0);
    let signal = code & 0x7f;
    // SIGPIPE is how a pipeline's writer ends when its reader is done
    // (`yes | head`): the shell sees a status of 141, not a crash, so it
    // counts as a non-zero exit. Counted as a death, a healthy script
    // looping over `cmd | head` piled deaths up like a crash loop.
    // What the root left alive is SIGKILLed when the tree ends: the
    // kernel kills a pid namespace's processes when its init (a shadow's
    // root) exits. Counted as deaths, every install that leaves a daemon
    // running looked, in its last window, like a crash. They still count
    // as exits.
    // (`root_gone` also marks the root's own exit: called for every one.)
    let after_root = root_gone(slot, tgid);
    let ended_with_root = signal == SIGKILL && after_root;
    if signal != 0 && signal != SIGPIPE && !ended_with_root {
        add(slot, counter::PROC_SIGNAL_DEATHS, 1);
    } else if signal == SIGPIPE || (code >> 8) & 0xff != 0 {
        add(slot, counter::PROC_EXITS_NONZERO, 1);
    }
    if let Some(e) = emit(slot, EVENT_EXIT, tid, tgid, code) {
        e.submit(0);
    }
    0
}

/// Whether `slot`'s root had exited before `tgid` did; marks the root
/// gone when `tgid` is the root.
#[inline(always)]
fn root_gone(slot: u32, tgid: u32) -> bool {
    let Some(r) = ROOTS.get_ptr_mut(slot) else {
        return false;
    };
    // SAFETY: map value pointer, valid for a u32.
    let r = unsafe { &mut *r };
    if *r == tgid {
        *r = ROOT_GONE;
        false
    } else {
        *r == ROOT_GONE
    }
}

/// oom:mark_victim runs in the OOM killer's context; the victim is in the
/// record. Record: pid@8.
#[tracepoint]
pub fn bs_oom_mark_victim(ctx: TracePointContext) -> u32 {
    // SAFETY: offset from the tracepoint's format file.
    let pid: i32 = unsafe { ctx.read_at(8) }.unwrap_or(0);
    if pid <= 0 {
        return 0;
    }
    let slot = slot_of(pid as u32);
    if slot == 0 {
        return 0;
    }
    add(slot, counter::PROC_OOM_KILLS, 1);
    if let Some(e) = emit(slot, EVENT_OOM_KILL, pid as u32, pid as u32, 0) {
        e.submit(0);
    }
    0
}
