//! raw_syscalls: counts by number, failures by errno class, and latency.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use backstop_common::{
    MAX_SYSCALLS, WAITS_FUTEX, WAITS_OPEN, WAITS_OTHERS, WAITS_PIPE, counter, errno_counter, hist,
    hist_bucket, waits_on_others,
};

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
    let waits = waits(&ctx, nr);
    if let Some(c) = CPU_SYSCALL.get_ptr_mut(0) {
        // SAFETY: valid per-CPU map value for this run.
        let c = unsafe { &mut *c };
        c.tid = tid;
        c.nr = nr as u32;
        c.start_ns = now();
        c.waits = waits;
    }
    0
}

/// What syscall `nr` may wait on: a futex, a pipe or FIFO (its fd's inode
/// is a FIFO), the other end of a FIFO being opened (known at exit), or
/// another task or time ([`waits_on_others`]).
#[inline(always)]
fn waits(ctx: &RawTracePointContext, nr: i64) -> u32 {
    if nr >= 0 && waits_on_others(nr as u64) {
        return WAITS_OTHERS;
    }
    match nr {
        202 | 449 => WAITS_FUTEX,    // futex futex_waitv
        2 | 257 | 437 => WAITS_OPEN, // open openat openat2
        0 | 1 | 19 | 20 | 275 | 276 => {
            // read write readv writev splice tee: the first argument's fd.
            let regs: *const u8 = ctx.arg(0);
            let fd = crate::changes::arg(regs, 1) as i32;
            if fd_is_fifo(fd) { WAITS_PIPE } else { 0 }
        }
        _ => 0,
    }
}

/// Whether the current task's descriptor `fd` is a pipe or FIFO.
#[inline(always)]
fn fd_is_fifo(fd: i32) -> bool {
    const S_IFMT: u16 = 0o170000;
    const S_IFIFO: u16 = 0o010000;
    let inode = crate::changes::fd_inode(fd);
    let off = crate::OFFSETS.load();
    crate::read_kernel::<u16>(inode, off.inode_mode).is_some_and(|m| m & S_IFMT == S_IFIFO)
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
    let mut waits = 0;
    if let Some(c) = CPU_SYSCALL.get_ptr_mut(0) {
        // SAFETY: valid per-CPU map value for this run.
        let c = unsafe { &mut *c };
        if c.tid == tid {
            start = c.start_ns;
            waits = c.waits;
            c.tid = 0;
        }
    }
    if start == 0 {
        // The thread left the CPU inside the syscall; sched_switch moved
        // the start to its thread state.
        // SAFETY: hash map value pointer, valid for this run.
        if let Some(t) = THREADS.get_ptr_mut(tid).map(|p| unsafe { &mut *p }) {
            start = t.syscall_start_ns;
            waits = t.syscall_waits;
            t.syscall_start_ns = 0;
        }
    }
    if start != 0 {
        let ns = now().saturating_sub(start);
        if waits & WAITS_FUTEX != 0 {
            counters.c[counter::FUTEX_WAIT_NS] += ns;
        }
        let pipe = waits & WAITS_PIPE != 0
            || (waits & WAITS_OPEN != 0 && ret >= 0 && fd_is_fifo(ret as i32));
        if pipe {
            counters.c[counter::PIPE_WAIT_NS] += ns;
        }
        // Latency is how long the host made a call take. A wait on another
        // task (a futex, a pipe's other end, children, clients) or on time
        // is as long as that task or the caller chose: a daemon's poll, a
        // script's `sleep 1`, a shell reading its child's output for 39 s.
        let on_others = pipe || waits & (WAITS_FUTEX | WAITS_OTHERS) != 0;
        if !on_others
            && let Some(h) = counters.hist.get_mut(hist::SYSCALL_LATENCY)
            && let Some(b) = h.get_mut(hist_bucket(ns))
        {
            *b += 1;
        }
    }
    0
}
