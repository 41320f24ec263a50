//! kmem:rss_stat: how large the tree's processes grow.
//!
//! A memory leak shows as one process whose anonymous memory keeps growing
//! window after window, long before the OOM killer ends it; counting page
//! faults or mmap calls cannot tell that from many short processes that each
//! touch a little. The tracepoint fires whenever an mm's RSS counter changes
//! and carries the new size, so the largest one seen is the peak.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{ANON_PEAK, current_tid, slot_of};

/// `MM_ANONPAGES` in the kernel's `enum { MM_FILEPAGES, MM_ANONPAGES, ... }`.
const MM_ANONPAGES: i32 = 1;

/// kmem:rss_stat. Record: mm_id@8, curr@12, member@16, size@24 (bytes),
/// unchanged since Linux 5.5.
#[tracepoint]
pub fn bs_rss_stat(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets from the tracepoint's format file.
    let curr: u32 = unsafe { ctx.read_at(12) }.unwrap_or(0);
    let member: i32 = unsafe { ctx.read_at(16) }.unwrap_or(-1);
    // `curr`: the mm is the current task's, so the task's slot is the mm's.
    if curr == 0 || member != MM_ANONPAGES {
        return 0;
    }
    let slot = slot_of(current_tid());
    if slot == 0 {
        return 0;
    }
    let size: i64 = unsafe { ctx.read_at(24) }.unwrap_or(0);
    if size <= 0 {
        return 0;
    }
    if let Some(p) = ANON_PEAK.get_ptr_mut(slot) {
        // SAFETY: valid per-CPU map value for this run.
        let peak = unsafe { &mut *p };
        if size as u64 > *peak {
            *peak = size as u64;
        }
    }
    0
}
