//! raw_syscalls: counts by number, failures by errno class, and latency.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use backstop_common::{MAX_SYSCALLS, counter, errno_counter, hist, hist_bucket};

use crate::{CPU_SYSCALL, SYSCALL_COUNTS, THREADS, counters, current_tid, now, slot_of};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn bs_sys_enter(ctx: RawTracePointContext) -> i32 {
    let tid = current_tid();
    let slot = slot_of(tid);
    if slot == 0 {
        return 0;
    }
    let nr: i64 = ctx.arg(1);
    if let Some(p) = SYSCALL_COUNTS.get_ptr_mut(slot) {
        // SAFETY: valid per-CPU map value for this run.
        let counts = unsafe { &mut *p };
        // Numbers beyond the table share its last entry ("other").
        let i = if nr >= 0 && (nr as u64) < MAX_SYSCALLS as u64 {
            nr as usize
        } else {
            MAX_SYSCALLS as usize - 1
        };
        if let Some(n) = counts.n.get_mut(i) {
            *n += 1;
        }
    }
    if let Some(d) = crate::changes::describe(nr) {
        crate::changes::record(&ctx, slot, tid, nr as u32, d);
    }
    if let Some(c) = CPU_SYSCALL.get_ptr_mut(0) {
        // SAFETY: valid per-CPU map value for this run.
        let c = unsafe { &mut *c };
        c.tid = tid;
        c.nr = nr as u32;
        c.start_ns = now();
    }
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn bs_sys_exit(ctx: RawTracePointContext) -> i32 {
    let tid = current_tid();
    let slot = slot_of(tid);
    if slot == 0 {
        return 0;
    }
    let ret: i64 = ctx.arg(1);
    let Some(counters) = counters(slot) else {
        return 0;
    };
    if (-4095..0).contains(&ret) {
        counters.c[counter::SYSCALL_ERRORS_TOTAL] += 1;
        if let Some(x) = counters.c.get_mut(errno_counter(-ret)) {
            *x += 1;
        }
    }
    // Fast path: entered on this CPU with no switch since.
    let mut start = 0;
    if let Some(c) = CPU_SYSCALL.get_ptr_mut(0) {
        // SAFETY: valid per-CPU map value for this run.
        let c = unsafe { &mut *c };
        if c.tid == tid {
            start = c.start_ns;
            c.tid = 0;
        }
    }
    if start == 0 {
        // The thread left the CPU inside the syscall; sched_switch moved
        // the start to its thread state.
        // SAFETY: hash map value pointer, valid for this run.
        if let Some(t) = THREADS.get_ptr_mut(tid).map(|p| unsafe { &mut *p }) {
            start = t.syscall_start_ns;
            t.syscall_start_ns = 0;
        }
    }
    if start != 0 {
        let ns = now().saturating_sub(start);
        if let Some(h) = counters.hist.get_mut(hist::SYSCALL_LATENCY)
            && let Some(b) = h.get_mut(hist_bucket(ns))
        {
            *b += 1;
        }
    }
    0
}
