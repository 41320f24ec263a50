//! Network: socket bytes, TCP connects (attempts, failures, latency) and
//! retransmits.
//!
//! State changes and retransmits happen in softirq context, not in the
//! owner's, so sockets are remembered by address when a tracked task
//! connects or sends on them.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use backstop_common::{SockOwner, counter, hist};

use crate::{SOCKS, add, current_tid, lost, now, record, slot_of};

const IPPROTO_TCP: u16 = 6;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;

/// sock:inet_sock_set_state. Record: skaddr@8, oldstate@16, newstate@20, protocol@30.
#[tracepoint]
pub fn bs_inet_sock_set_state(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets from the tracepoint's format file.
    let protocol: u16 = unsafe { ctx.read_at(30) }.unwrap_or(0);
    if protocol != IPPROTO_TCP {
        return 0;
    }
    let sk: u64 = unsafe { ctx.read_at(8) }.unwrap_or(0);
    let old: i32 = unsafe { ctx.read_at(16) }.unwrap_or(0);
    let new: i32 = unsafe { ctx.read_at(20) }.unwrap_or(0);
    if new == TCP_SYN_SENT {
        // connect() runs in the caller's context.
        let slot = slot_of(current_tid());
        if slot == 0 {
            return 0;
        }
        add(slot, counter::NET_CONNECT_ATTEMPTS, 1);
        let owner = SockOwner {
            connect_start_ns: now(),
            slot,
            _pad: 0,
        };
        if SOCKS.insert(sk, owner, 0).is_err() {
            lost(slot);
        }
        return 0;
    }
    if let Some(o) = SOCKS.get_ptr_mut(sk) {
        // SAFETY: map value pointer.
        let o = unsafe { &mut *o };
        if old == TCP_SYN_SENT {
            if new == TCP_ESTABLISHED {
                record(
                    o.slot,
                    hist::CONNECT_LATENCY,
                    now().saturating_sub(o.connect_start_ns),
                );
            } else {
                add(o.slot, counter::NET_CONNECT_FAILURES, 1);
            }
        }
        if new == TCP_CLOSE {
            let _ = SOCKS.remove(sk);
        }
    }
    0
}

/// tcp:tcp_retransmit_skb. Record: skaddr@16.
#[tracepoint]
pub fn bs_tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    // SAFETY: offset from the tracepoint's format file.
    let sk: u64 = unsafe { ctx.read_at(16) }.unwrap_or(0);
    if let Some(o) = SOCKS.get_ptr(sk) {
        // SAFETY: map value pointer.
        let slot = unsafe { (*o).slot };
        add(slot, counter::NET_TCP_RETRANSMITS, 1);
    }
    0
}

/// sock:sock_send_length / sock_recv_length. Record: sk@8, protocol@18, ret@20.
#[inline(always)]
fn length(ctx: &TracePointContext, idx: usize) -> u32 {
    let slot = slot_of(current_tid());
    if slot == 0 {
        return 0;
    }
    // SAFETY: offsets from the tracepoint's format file.
    let ret: i32 = unsafe { ctx.read_at(20) }.unwrap_or(0);
    if ret <= 0 {
        return 0;
    }
    add(slot, idx, ret as u64);
    let protocol: u16 = unsafe { ctx.read_at(18) }.unwrap_or(0);
    if protocol == IPPROTO_TCP {
        // Remember accepted sockets too, so their retransmits count.
        let sk: u64 = unsafe { ctx.read_at(8) }.unwrap_or(0);
        if SOCKS.get_ptr(sk).is_none() {
            let owner = SockOwner {
                connect_start_ns: 0,
                slot,
                _pad: 0,
            };
            if SOCKS.insert(sk, owner, 0).is_err() {
                lost(slot);
            }
        }
    }
    0
}

#[tracepoint]
pub fn bs_sock_send_length(ctx: TracePointContext) -> u32 {
    length(&ctx, counter::NET_TX_BYTES)
}

#[tracepoint]
pub fn bs_sock_recv_length(ctx: TracePointContext) -> u32 {
    length(&ctx, counter::NET_RX_BYTES)
}
