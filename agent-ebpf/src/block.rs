//! Block I/O submitted from the tracked tree's own context.
//!
//! Bios are attributed at block_bio_queue, which runs in the submitter's
//! context; latency runs from there to block_rq_complete, matched by
//! (whole-disk dev, sector).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use backstop_common::{BioKey, BioStart, counter, hist};

use crate::{BIO_INFLIGHT, BLOCK_DEVS, add, current_tid, now, record, slot_of};

/// block:block_bio_queue. Record: dev@8, sector@16, nr_sector@24, rwbs@28.
#[tracepoint]
pub fn bs_block_bio_queue(ctx: TracePointContext) -> u32 {
    let slot = slot_of(current_tid());
    if slot == 0 {
        return 0;
    }
    // SAFETY: offsets from the tracepoint's format file.
    let dev: u32 = unsafe { ctx.read_at(8) }.unwrap_or(0);
    let Some(disk) = BLOCK_DEVS.get_ptr(dev) else {
        return 0; // stacked device: its lower device's bio counts instead
    };
    // SAFETY: map value pointer.
    let disk = unsafe { *disk };
    let sector: u64 = unsafe { ctx.read_at(16) }.unwrap_or(0);
    let nr_sector: u32 = unsafe { ctx.read_at(24) }.unwrap_or(0);
    let rwbs: [u8; 2] = unsafe { ctx.read_at(28) }.unwrap_or([0; 2]);
    // rwbs starts with 'F' for a preflush, then the operation.
    let op = if rwbs[0] == b'F' { rwbs[1] } else { rwbs[0] };
    let bytes = nr_sector as u64 * 512;
    match op {
        b'R' => {
            add(slot, counter::BLOCK_READ_BYTES, bytes);
            add(slot, counter::BLOCK_READ_OPS, 1);
        }
        b'W' if bytes != 0 => {
            add(slot, counter::BLOCK_WRITE_BYTES, bytes);
            add(slot, counter::BLOCK_WRITE_OPS, 1);
        }
        _ => return 0,
    }
    let key = BioKey {
        dev: disk,
        _pad: 0,
        sector,
    };
    let start = BioStart {
        start_ns: now(),
        slot,
        _pad: 0,
    };
    let _ = BIO_INFLIGHT.insert(key, start, 0);
    0
}

/// block:block_rq_complete. Record: dev@8, sector@16, nr_sector@24, error@28.
#[tracepoint]
pub fn bs_block_rq_complete(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets from the tracepoint's format file.
    let dev: u32 = unsafe { ctx.read_at(8) }.unwrap_or(0);
    let sector: u64 = unsafe { ctx.read_at(16) }.unwrap_or(0);
    let key = BioKey {
        dev,
        _pad: 0,
        sector,
    };
    let Some(start) = BIO_INFLIGHT.get_ptr(key) else {
        return 0;
    };
    // SAFETY: map value pointer.
    let start = unsafe { *start };
    let error: i32 = unsafe { ctx.read_at(28) }.unwrap_or(0);
    record(
        start.slot,
        hist::BLOCK_LATENCY,
        now().saturating_sub(start.start_ns),
    );
    if error != 0 {
        add(start.slot, counter::BLOCK_ERRORS, 1);
    }
    let _ = BIO_INFLIGHT.remove(key);
    0
}
