//! raw_syscalls: counts by number, failures by errno class, and latency.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use backstop_common::{MAX_SYSCALLS, counter, errno_counter, hist};

use crate::{
    SYSCALL_COUNTS, THREADS, add, counters, current_tid, now, record, slot_of, thread_state,
};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn bs_sys_enter(ctx: RawTracePointContext) -> i32 {
    let tid = current_tid();
    let slot = slot_of(tid);
    if slot == 0 {
        return 0;
    }
    let nr: i64 = ctx.arg(1);
    if let Some(c) = counters(slot) {
        c.c[counter::SYSCALLS_TOTAL] += 1;
    }
    if nr >= 0
        && (nr as u64) < MAX_SYSCALLS as u64
        && let Some(p) = SYSCALL_COUNTS.get_ptr_mut(slot)
    {
        // SAFETY: valid per-CPU map value for this run.
        let counts = unsafe { &mut *p };
        if let Some(n) = counts.n.get_mut(nr as usize) {
            *n += 1;
        }
    }
    if let Some(t) = thread_state(slot, tid) {
        t.syscall_start_ns = now();
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
    if (-4095..0).contains(&ret) {
        add(slot, counter::SYSCALL_ERRORS_TOTAL, 1);
        add(slot, errno_counter(-ret), 1);
    }
    // SAFETY: hash map value pointer, valid for this run.
    if let Some(t) = THREADS.get_ptr_mut(tid).map(|p| unsafe { &mut *p }) {
        let start = t.syscall_start_ns;
        if start != 0 {
            record(slot, hist::SYSCALL_LATENCY, now().saturating_sub(start));
            t.syscall_start_ns = 0;
        }
    }
    0
}
