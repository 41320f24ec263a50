//! rss_stat: how large the tree's processes grow.
//!
//! A memory leak shows as one process whose anonymous memory keeps growing
//! window after window, long before the OOM killer ends it; counting page
//! faults or mmap calls cannot tell that from many short processes that each
//! touch a little. The tracepoint fires whenever an mm's RSS counter
//! changes, so the largest value seen is the peak.
//!
//! A raw tracepoint: it fires on every page fault of the host while a tree
//! is tracked, and the classic one builds a perf record each time. The raw
//! one hands over the mm and the counter; the value is read from the mm
//! the way the tracepoint itself reads it (the counter's shared count).

use aya_ebpf::{
    helpers::bpf_get_current_task, macros::raw_tracepoint, programs::RawTracePointContext,
};

use crate::{ANON_PEAK, OFFSETS, current_tid, read_kernel, slot_of};

/// `MM_ANONPAGES` in the kernel's `enum { MM_FILEPAGES, MM_ANONPAGES, ... }`.
const MM_ANONPAGES: u64 = 1;

/// TP_PROTO(struct mm_struct *mm, int member)
#[raw_tracepoint(tracepoint = "rss_stat")]
pub fn bs_rss_stat(ctx: RawTracePointContext) -> i32 {
    let slot = slot_of(current_tid());
    if slot == 0 {
        return 0;
    }
    let member: u64 = ctx.arg(1);
    if member & 0xffff_ffff != MM_ANONPAGES {
        return 0;
    }
    let off = OFFSETS.load();
    if off.rss_counter_size == u32::MAX || off.percpu_counter_count == u32::MAX {
        return 0;
    }
    let mm: *const u8 = ctx.arg(0);
    // Only the current task's own mm belongs to its slot (the kernel also
    // changes other mms' counters, e.g. when reclaim unmaps their pages).
    // SAFETY: bpf_get_current_task has no preconditions.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let own: usize = read_kernel(task, off.task_mm).unwrap_or(0);
    if own == 0 || own != mm as usize {
        return 0;
    }
    let at = off
        .mm_rss_stat
        .saturating_add(off.rss_counter_size * MM_ANONPAGES as u32)
        .saturating_add(off.percpu_counter_count);
    let pages: i64 = read_kernel(mm, at).unwrap_or(0);
    if pages <= 0 {
        return 0;
    }
    let bytes = pages as u64 * off.page_size as u64;
    if let Some(p) = ANON_PEAK.get_ptr_mut(slot) {
        // SAFETY: valid per-CPU map value for this run.
        let peak = unsafe { &mut *p };
        if bytes > *peak {
            *peak = bytes;
        }
    }
    0
}
