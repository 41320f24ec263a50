//! Buffered writes, attributed when the tree dirties page-cache folios.
//!
//! The data reaches the disk later from the flusher threads, whose block
//! I/O belongs to no tree; the moment a folio turns dirty is the last point
//! where the writer is known. A folio may span many pages (large folios on
//! ext4, xfs), so its size is read from the folio itself.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use backstop_common::counter;

use crate::{OFFSETS, add, current_tid, read_kernel, slot_of};

const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;

/// writeback_dirty_folio: TP_PROTO(struct folio *folio, struct address_space *mapping)
#[raw_tracepoint(tracepoint = "writeback_dirty_folio")]
pub fn bs_writeback_dirty_folio(ctx: RawTracePointContext) -> i32 {
    let slot = slot_of(current_tid());
    if slot == 0 {
        return 0;
    }
    let folio: *const u8 = ctx.arg(0);
    let mapping: *const u8 = ctx.arg(1);
    let off = OFFSETS.load();
    // Regular files only: directories and the filesystem's own metadata
    // (dirtied in the block device's page cache) are not the tree's data.
    let host: u64 = read_kernel(mapping, off.mapping_host).unwrap_or(0);
    let mode: u16 = read_kernel(host as *const u8, off.inode_mode).unwrap_or(0);
    if mode & S_IFMT != S_IFREG {
        return 0;
    }
    let mut pages: u64 = 1;
    if off.pg_head_bit < 64 {
        let flags: u64 = read_kernel(folio, off.folio_flags).unwrap_or(0);
        if flags & (1u64 << off.pg_head_bit) != 0 {
            let n: u32 = read_kernel(folio, off.folio_nr_pages).unwrap_or(1);
            pages = if n == 0 { 1 } else { n as u64 };
        }
    }
    add(
        slot,
        counter::PAGE_DIRTIED_BYTES,
        pages * off.page_size as u64,
    );
    0
}
