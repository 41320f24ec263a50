//! Block I/O submitted from the tracked tree's own context.
//!
//! Bios are attributed at block_bio_queue, which runs in the submitter's
//! context; latency runs from there to block_rq_complete, matched by
//! (whole-disk dev, sector).

use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use backstop_common::{BioKey, BioStart, counter, hist};

use crate::{
    BIO_INFLIGHT, BLOCK_DEVS, OFFSETS, add, current_tid, now, read_kernel, record, slot_of,
};

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

/// block_rq_complete: TP_PROTO(struct request *rq, blk_status_t error,
/// unsigned int nr_bytes). A raw tracepoint: it fires in interrupt context,
/// where a classic tracepoint program is skipped whenever it interrupts
/// another of our programs on the same CPU (the kernel allows one perf-event
/// BPF program per CPU at a time). The record's dev_t is rebuilt from the
/// request's disk, as the tracepoint itself does.
#[raw_tracepoint(tracepoint = "block_rq_complete")]
pub fn bs_block_rq_complete(ctx: RawTracePointContext) -> i32 {
    let rq: *const u8 = ctx.arg(0);
    let error: u64 = ctx.arg(1);
    let off = OFFSETS.load();
    let Some(sector) = read_kernel::<u64>(rq, off.rq_sector) else {
        return 0;
    };
    let q: *const u8 = read_kernel::<u64>(rq, off.rq_q).unwrap_or(0) as *const u8;
    let disk: *const u8 = read_kernel::<u64>(q, off.q_disk).unwrap_or(0) as *const u8;
    let (Some(major), Some(minor)) = (
        read_kernel::<i32>(disk, off.disk_major),
        read_kernel::<i32>(disk, off.disk_first_minor),
    ) else {
        return 0;
    };
    let key = BioKey {
        dev: ((major as u32) << 20) | minor as u32,
        _pad: 0,
        sector,
    };
    let Some(start) = BIO_INFLIGHT.get_ptr(key) else {
        return 0;
    };
    // SAFETY: map value pointer.
    let start = unsafe { *start };
    record(
        start.slot,
        hist::BLOCK_LATENCY,
        now().saturating_sub(start.start_ns),
    );
    // blk_status_t is a u8; 0 is BLK_STS_OK.
    if error & 0xff != 0 {
        add(start.slot, counter::BLOCK_ERRORS, 1);
    }
    let _ = BIO_INFLIGHT.remove(key);
    0
}
