//! Network: socket bytes, TCP connects (attempts, failures, latency) and
//! retransmits.
//!
//! State changes and retransmits happen in softirq context, not in the
//! owner's, so sockets are remembered by address when a tracked task
//! connects or sends on them.

use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use backstop_common::{SockOwner, counter, hist};

use crate::{OFFSETS, SOCKS, add, current_tid, lost, now, read_kernel, record, slot_of};

const IPPROTO_TCP: u16 = 6;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;

/// inet_sock_set_state: TP_PROTO(const struct sock *sk, const int oldstate,
/// const int newstate). Raw: state changes happen in softirq context (a
/// SYN-ACK or RST arriving), where a classic tracepoint program would be
/// skipped while another of ours runs on the CPU.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn bs_inet_sock_set_state(ctx: RawTracePointContext) -> i32 {
    let sk_ptr: *const u8 = ctx.arg(0);
    let old: u64 = ctx.arg(1);
    let new: u64 = ctx.arg(2);
    let (old, new) = (old as i32, new as i32);
    let off = OFFSETS.load();
    if off.sk_protocol != u32::MAX
        && read_kernel::<u16>(sk_ptr, off.sk_protocol).unwrap_or(0) != IPPROTO_TCP
    {
        return 0;
    }
    let sk = sk_ptr as u64;
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

/// tcp_retransmit_skb: TP_PROTO(const struct sock *sk, const struct sk_buff
/// *skb, int err). Raw, for the same reason: retransmits fire from timers.
#[raw_tracepoint(tracepoint = "tcp_retransmit_skb")]
pub fn bs_tcp_retransmit_skb(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
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
