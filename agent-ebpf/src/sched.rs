//! Scheduler: on-CPU time, context switches and run-queue delay.
//!
//! Raw tracepoints: sched_switch fires on every context switch of the host,
//! and a raw tracepoint hands over the task pointers without building a
//! perf record. Pids are read at the BTF offset the agent supplied.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use backstop_common::{counter, hist};

use crate::{
    CPU_SYSCALL, OFFSETS, add, now, read_kernel, record, slot_of, task_runtime, thread_state,
};

#[inline(always)]
fn task_pid(task: *const u8) -> u32 {
    read_kernel::<i32>(task, OFFSETS.load().task_pid).unwrap_or(0) as u32
}

/// TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next,
/// unsigned int prev_state)
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn bs_sched_switch(ctx: RawTracePointContext) -> i32 {
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    let prev_pid = task_pid(prev);
    let next_pid = task_pid(next);
    let prev_slot = if prev_pid == 0 { 0 } else { slot_of(prev_pid) };
    let next_slot = if next_pid == 0 { 0 } else { slot_of(next_pid) };
    if prev_slot == 0 && next_slot == 0 {
        return 0;
    }
    let t = now();
    if prev_slot != 0 {
        let preempt: u64 = ctx.arg(0);
        let prev_state: u64 = ctx.arg(3);
        add(prev_slot, counter::SCHED_CTX_SWITCHES, 1);
        if preempt & 0xff != 0 {
            add(prev_slot, counter::SCHED_INVOLUNTARY, 1);
        }
        if let Some(s) = thread_state(prev_slot, prev_pid) {
            // A syscall in flight leaves the CPU with its thread.
            if let Some(c) = CPU_SYSCALL.get_ptr_mut(0) {
                // SAFETY: valid per-CPU map value for this run.
                let c = unsafe { &mut *c };
                if c.tid == prev_pid {
                    s.syscall_start_ns = c.start_ns;
                    s.syscall_nr = c.nr;
                    s.syscall_waits = c.waits;
                    c.tid = 0;
                }
            }
            let ran = task_runtime(prev);
            if s.on_cpu_since_ns != 0 {
                add(
                    prev_slot,
                    counter::SCHED_ON_CPU_NS,
                    t.saturating_sub(s.on_cpu_since_ns),
                );
                s.on_cpu_since_ns = 0;
            } else {
                // Its switch onto this CPU went unseen (ThreadState's
                // cpu_seen_ns says when that happens): the kernel's own
                // runtime says how long it has run since it was last
                // credited. Without this, CI lost 0.6 s of a 0.9 s spin.
                if let Some(ran) = ran {
                    add(
                        prev_slot,
                        counter::SCHED_ON_CPU_NS,
                        ran.saturating_sub(s.cpu_seen_ns),
                    );
                }
                // It ran, so it waits for a CPU no longer: a wait left
                // open would be recorded at its next switch-in as one
                // run-queue delay spanning its run and its sleep.
                s.runnable_since_ns = 0;
            }
            if let Some(ran) = ran {
                s.cpu_seen_ns = ran;
            }
            // Still runnable (preempted or yielding): it waits for a CPU now.
            if prev_state & 0xffff_ffff == 0 {
                s.runnable_since_ns = t;
            }
        }
    }
    if next_slot != 0
        && let Some(s) = thread_state(next_slot, next_pid)
    {
        s.on_cpu_since_ns = t;
        if s.runnable_since_ns != 0 {
            record(
                next_slot,
                hist::RUNQ_DELAY,
                t.saturating_sub(s.runnable_since_ns),
            );
            s.runnable_since_ns = 0;
        }
    }
    0
}

#[inline(always)]
fn wakeup(ctx: &RawTracePointContext) -> i32 {
    let task: *const u8 = ctx.arg(0);
    let pid = task_pid(task);
    if pid == 0 {
        return 0;
    }
    let slot = slot_of(pid);
    if slot == 0 {
        return 0;
    }
    if let Some(s) = thread_state(slot, pid)
        && s.runnable_since_ns == 0
    {
        s.runnable_since_ns = now();
    }
    0
}

/// TP_PROTO(struct task_struct *p)
#[raw_tracepoint(tracepoint = "sched_wakeup")]
pub fn bs_sched_wakeup(ctx: RawTracePointContext) -> i32 {
    wakeup(&ctx)
}

#[raw_tracepoint(tracepoint = "sched_wakeup_new")]
pub fn bs_sched_wakeup_new(ctx: RawTracePointContext) -> i32 {
    wakeup(&ctx)
}
