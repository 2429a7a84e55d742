//! The TC egress copier: DNS answers leaving for devices go whole into `DNS_RING`.
//!
//! Attached to egress of the LAN interface (TCX, first in the chain), it
//! sees every frame the gateway sends to a device. A frame the shared parser
//! ([`crate::parse::parse`]) reads as IPv4 or IPv6 carrying UDP or TCP from
//! source port 53 (a first or only fragment; IPv6 extension headers walked as
//! the XDP program walks them) is copied, from the Ethernet header on, up to
//! [`DNS_COPY_BYTES`], with `bpf_skb_load_bytes`, which also reads the paged
//! part of a non-linear skb. Nothing is ever changed or dropped: every frame
//! gets [`TC_PASS_ON`].
//!
//! A VLAN tag the stack keeps out of band (`skb->vlan_tci`, transmit VLAN
//! offload) is not in the copied bytes; the parser then sees IP directly.

use core::mem::{MaybeUninit, size_of};

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, TC_ACT_UNSPEC},
    helpers::generated::bpf_skb_load_bytes,
    programs::TcContext,
};
use regionwall_common::{
    Counter,
    dns::{DNS_COPY_BYTES, DNS_PORT, DnsCopy, DnsCounter},
};

use crate::{
    maps::{DNS_COUNTERS, DNS_RING},
    parse::{Frame, IPPROTO_TCP, IPPROTO_UDP, Parsed, parse},
};

/// The classifier's only verdict: `TC_ACT_UNSPEC` (-1), which TCX also
/// defines as `TCX_NEXT` — run the next program of the chain, and when
/// there is none, let the frame go on as if no program were attached
/// (`sch_handle_egress` in net/core/dev.c, kernel 6.6+; with legacy cls_bpf
/// in direct-action mode -1 likewise means "no opinion, next filter").
/// `TC_ACT_OK` would end the chain and hide frames from programs after us.
pub const TC_PASS_ON: i32 = TC_ACT_UNSPEC;

/// A socket buffer read through `bpf_skb_load_bytes` (header reads copy a
/// few bytes to the stack; the skb is never pulled or written).
struct Skb<'a>(&'a TcContext);

/// A stack buffer for one header read, 8-byte aligned: the verifier
/// refuses misaligned stack access, and LLVM merges byte reads of a
/// `[u8; N]` into wider loads at whatever offset they start.
#[repr(C, align(8))]
struct Aligned<T>(MaybeUninit<T>);

impl Skb<'_> {
    #[inline(always)]
    fn load<T: Copy>(&self, offset: usize) -> Option<T> {
        let mut buf = Aligned(MaybeUninit::<T>::uninit());
        // SAFETY: the helper writes exactly size_of::<T>() bytes into
        // `buf` (a constant length), or fails and we never read it.
        let ret = unsafe {
            bpf_skb_load_bytes(
                self.0.as_ptr(),
                offset as u32,
                buf.0.as_mut_ptr().cast(),
                size_of::<T>() as u32,
            )
        };
        // SAFETY: filled by the helper above (any bytes are a valid T: T
        // is a byte or word array).
        (ret == 0).then(|| unsafe { buf.0.assume_init() })
    }
}

impl Frame for Skb<'_> {
    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        self.load(offset)
    }

    #[inline(always)]
    fn words<const N: usize>(&self, offset: usize) -> Option<[u32; N]> {
        self.load(offset)
    }

    #[inline(always)]
    fn has(&self, end: usize) -> bool {
        end <= self.0.len() as usize
    }

    /// The XDP program's parser counters are for the frames it decides on;
    /// egress frames are not counted there.
    #[inline(always)]
    fn count(&self, _counter: Counter) {}
}

/// Copies `ctx`'s frame into the ring when it is a DNS answer. Always
/// returns [`TC_PASS_ON`].
#[inline(always)]
pub fn copy_answers(ctx: &TcContext) -> i32 {
    if is_answer(ctx) {
        copy(ctx);
    }
    TC_PASS_ON
}

#[inline(always)]
fn is_answer(ctx: &TcContext) -> bool {
    let Parsed::Ip(pkt) = parse(&Skb(ctx)) else {
        return false;
    };
    pkt.has_ports && pkt.src_port == DNS_PORT && matches!(pkt.proto, IPPROTO_UDP | IPPROTO_TCP)
}

#[inline(always)]
fn copy(ctx: &TcContext) {
    let wire_len = ctx.len();
    let Some(mut entry) = DNS_RING.reserve::<DnsCopy>(0) else {
        bump(DnsCounter::Lost);
        return;
    };
    // Bounded for the verifier: the helper's length must be a known
    // 1..=DNS_COPY_BYTES (ARG_CONST_SIZE, no zero-size reads). Every frame
    // that parsed holds at least an Ethernet and an IP header, so the
    // lower bound is only a formality.
    let captured = (wire_len as usize).min(DNS_COPY_BYTES);
    let rec = entry.as_mut_ptr();
    let skb = ctx.as_ptr();
    // SAFETY: `rec` points to the reserved, writable DnsCopy; the helper
    // writes at most `captured` <= DNS_COPY_BYTES bytes into `frame`.
    let loaded = captured > 0
        && unsafe { bpf_skb_load_bytes(skb, 0, (&raw mut (*rec).frame).cast(), captured as u32) }
            == 0;
    if !loaded {
        // Cannot happen for a frame that parsed; the record is given back
        // rather than submitted half filled.
        entry.discard(0);
        return;
    }
    // SAFETY: header fields of the reserved record; `skb` is the
    // context the kernel passed in.
    unsafe {
        (*rec).wire_len = wire_len;
        (*rec).captured = captured as u32;
        (*rec).ifindex = (*skb.cast::<__sk_buff>()).ifindex;
        (*rec)._pad = 0;
    }
    entry.submit(0);
    bump(DnsCounter::Copied);
    if wire_len as usize > DNS_COPY_BYTES {
        bump(DnsCounter::Clipped);
    }
}

/// Adds one to `counter` on this CPU.
#[inline(always)]
fn bump(counter: DnsCounter) {
    if let Some(p) = DNS_COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *p += 1 };
    }
}
