//! Reject: a rejected packet is answered in place and sent back out the
//! interface it came in on (XDP_TX): a TCP RST for TCP (RFC 9293 section
//! 3.10.7.1), an ICMP "communication administratively prohibited" (type 3
//! code 13) or ICMPv6 "communication with destination administratively
//! prohibited" (type 1 code 1) for the rest, so a blocked application fails
//! at once instead of retrying into silence.
//!
//! Only the reject verdict reaches this module, and it re-reads the headers
//! it needs: the parser, on every packet's path, carries nothing for it.
//! Never answered (dropped, counted `RejectsUnanswerable`): a RST, an ICMP
//! or ICMPv6 error, a later fragment, a broadcast or multicast address (L2
//! or L3), a frame too short to quote. Answers are rate limited per device
//! and CPU (`REJECT_LIMIT`); over the limit the packet is dropped
//! (`RejectsSuppressed`).
//!
//! Checksums are summed over words read natively (the one's-complement sum
//! does not depend on byte order, RFC 1071 section 2(B)), so every constant
//! below is written as its wire bytes.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_ktime_get_boot_ns, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use regionwall_common::{Control, Counter, MAX_DEVICES, MAX_IPV6_EXT_HEADERS, MAX_VLAN_TAGS};

use crate::{
    counters::count,
    maps::REJECT_LIMIT,
    parse::{
        ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPPROTO_AH, IPPROTO_FRAGMENT, IPPROTO_TCP, MAX_L4_OFFSET,
        be16, is_ext_header, is_vlan, ptr_at, read,
    },
    report::spend,
};

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
/// TTL / hop limit of every answer.
const TTL: u8 = 64;
/// Bytes of the original IPv6 packet an ICMPv6 answer quotes at most.
const V6_QUOTE: usize = 64;
/// Words of the longest quote: an IPv4 header with 40 bytes of options
/// plus 8 bytes of its payload (68), or [`V6_QUOTE`].
const QUOTE_WORDS: usize = 17;

/// What the answer is built from.
#[derive(Clone, Copy)]
enum Reply {
    /// A TCP RST over the L3 header at `l3`; `ports` is the original
    /// port word (wire order).
    Rst {
        l3: usize,
        v6: bool,
        ports: u32,
        seq: u32,
        ack: u32,
        flags: u8,
    },
    /// An ICMP error quoting the first `quote` bytes (a multiple of 4) of
    /// the packet at `l3`.
    Icmp { l3: usize, v6: bool, quote: usize },
}

/// Answers a rejected packet; returns the XDP action (TX, or DROP when it
/// must not or may not be answered).
#[inline(always)]
pub fn answer(ctx: &XdpContext, control: &Control, device: u32) -> u32 {
    let Some(reply) = classify(ctx) else {
        count(Counter::RejectsUnanswerable);
        return xdp_action::XDP_DROP;
    };
    if !admit(control, device) {
        count(Counter::RejectsSuppressed);
        return xdp_action::XDP_DROP;
    }
    let built = match reply {
        Reply::Rst {
            l3,
            v6,
            ports,
            seq,
            ack,
            flags,
        } => rst(ctx, l3, v6, ports, seq, ack, flags),
        Reply::Icmp {
            l3,
            v6: false,
            quote,
        } => icmp4(ctx, l3, quote),
        Reply::Icmp {
            l3,
            v6: true,
            quote,
        } => icmp6(ctx, l3, quote),
    };
    if built.is_some() {
        count(Counter::RejectsSent);
        xdp_action::XDP_TX
    } else {
        count(Counter::RejectsUnanswerable);
        xdp_action::XDP_DROP
    }
}

/// The device's reject token bucket on this CPU; cost 0 answers all.
#[inline(always)]
fn admit(control: &Control, device: u32) -> bool {
    let cost = u64::from(control.reject_cost_ns);
    if cost == 0 || device >= MAX_DEVICES {
        return true;
    }
    let Some(b) = REJECT_LIMIT.get_ptr_mut(device) else {
        return true;
    };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    // SAFETY: per-CPU slot, only this CPU writes it while we run.
    spend(unsafe { &mut *b }, cost, control.reject_burst, now)
}

/// The L3 offset (VLAN tags walked as the parser does) and what to answer.
#[inline(always)]
fn classify(ctx: &XdpContext) -> Option<Reply> {
    // Group bit of the destination MAC: broadcast or multicast.
    let eth = read::<[u8; ETH_HLEN]>(ctx, 0)?;
    if eth[0] & 1 != 0 {
        return None;
    }
    let mut ethertype = be16([eth[12], eth[13]]);
    let mut l3 = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if !is_vlan(ethertype) {
            break;
        }
        let tag = read::<[u8; 4]>(ctx, l3)?;
        ethertype = be16([tag[2], tag[3]]);
        l3 += 4;
    }
    match ethertype {
        ETH_P_IP => classify_v4(ctx, l3),
        ETH_P_IPV6 => classify_v6(ctx, l3),
        _ => None,
    }
}

/// The byte at `offset`, read as the first of two: a one-byte read's bound
/// check compiles to `end > p`, which the verifier cannot use.
#[inline(always)]
fn first_byte(ctx: &XdpContext, offset: usize) -> Option<u8> {
    read::<[u8; 2]>(ctx, offset).map(|b| b[0])
}

/// Bytes of the frame from `l3` on.
#[inline(always)]
fn from_l3(ctx: &XdpContext, l3: usize) -> Option<usize> {
    (ctx.data_end() - ctx.data()).checked_sub(l3)
}

#[inline(always)]
fn classify_v4(ctx: &XdpContext, l3: usize) -> Option<Reply> {
    let h = read::<[u8; 20]>(ctx, l3)?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if h[0] >> 4 != 4 || ihl < 20 {
        return None;
    }
    // A later fragment; a multicast, broadcast or class E destination; a
    // source that names no one host.
    if be16([h[6], h[7]]) & 0x1fff != 0 || h[16] >= 224 || h[12] >= 224 || h[12] == 0 {
        return None;
    }
    let total = usize::from(be16([h[2], h[3]]));
    let l4 = l3 + ihl;
    match h[9] {
        IPPROTO_TCP => classify_tcp(ctx, l3, l4, total.checked_sub(ihl)?, false),
        IPPROTO_ICMP => {
            // Only queries (echo, timestamp, ...) are answered.
            let kind = first_byte(ctx, l4)?;
            if matches!(kind, 3 | 4 | 5 | 11 | 12) {
                return None;
            }
            quote_v4(ctx, l3, ihl, total)
        }
        _ => quote_v4(ctx, l3, ihl, total),
    }
}

/// RFC 792: the IP header and the first 8 bytes of its payload (as much
/// of it as the packet has, in whole words).
#[inline(always)]
fn quote_v4(ctx: &XdpContext, l3: usize, ihl: usize, total: usize) -> Option<Reply> {
    let quote = (ihl + 8).min(total).min(from_l3(ctx, l3)?) & !3;
    if quote < 20 {
        return None;
    }
    Some(Reply::Icmp {
        l3,
        v6: false,
        quote,
    })
}

#[inline(always)]
fn classify_v6(ctx: &XdpContext, l3: usize) -> Option<Reply> {
    let h = read::<[u8; 8]>(ctx, l3)?;
    let src0 = first_byte(ctx, l3 + 8)?;
    let dst0 = first_byte(ctx, l3 + 24)?;
    if h[0] >> 4 != 6 || src0 == 0xff || dst0 == 0xff {
        return None;
    }
    let end = l3 + 40 + usize::from(be16([h[4], h[5]]));
    let mut nh = h[6];
    let mut off = l3 + 40;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !is_ext_header(nh) {
            break;
        }
        let e = read::<[u8; 4]>(ctx, off)?;
        let len = match nh {
            IPPROTO_FRAGMENT => {
                if be16([e[2], e[3]]) >> 3 != 0 {
                    return None;
                }
                8
            }
            IPPROTO_AH => (usize::from(e[1]) + 2) * 4,
            _ => (usize::from(e[1]) + 1) * 8,
        };
        nh = e[0];
        off += len;
        if off > MAX_L4_OFFSET {
            return None;
        }
    }
    match nh {
        IPPROTO_TCP => classify_tcp(ctx, l3, off, end.checked_sub(off)?, true),
        // Errors are types 0..127.
        IPPROTO_ICMPV6 if first_byte(ctx, off)? < 128 => None,
        _ if is_ext_header(nh) => None,
        _ => {
            let quote = V6_QUOTE.min(end - l3).min(from_l3(ctx, l3)?) & !3;
            Some(Reply::Icmp {
                l3,
                v6: true,
                quote,
            })
        }
    }
}

/// RFC 9293 section 3.10.7.1: a segment with ACK is answered
/// `<SEQ=SEG.ACK><CTL=RST>`, any other `<SEQ=0><ACK=SEG.SEQ+SEG.LEN>
/// <CTL=RST,ACK>` (SYN and FIN count one each in SEG.LEN). `len` is the
/// TCP segment's length by the IP header.
#[inline(always)]
fn classify_tcp(ctx: &XdpContext, l3: usize, l4: usize, len: usize, v6: bool) -> Option<Reply> {
    if l4 > MAX_L4_OFFSET {
        return None;
    }
    let t = read::<[u8; 20]>(ctx, l4)?;
    let flags = t[13];
    if flags & TCP_RST != 0 {
        return None;
    }
    let ports = u32::from_ne_bytes([t[0], t[1], t[2], t[3]]);
    let seg_seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
    let seg_ack = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
    let data = len.saturating_sub(usize::from(t[12] >> 4) * 4) as u32;
    let (seq, ack, flags) = if flags & TCP_ACK != 0 {
        (seg_ack, 0, TCP_RST)
    } else {
        let seg_len = data + u32::from(flags & TCP_SYN != 0) + u32::from(flags & TCP_FIN != 0);
        (0, seg_seq.wrapping_add(seg_len), TCP_RST | TCP_ACK)
    };
    Some(Reply::Rst {
        l3,
        v6,
        ports,
        seq,
        ack,
        flags,
    })
}

/// A word of the given wire bytes, read natively (see the module comment).
#[inline(always)]
const fn wire(b: [u8; 4]) -> u32 {
    u32::from_ne_bytes(b)
}

#[inline(always)]
fn add(sum: u64, w: u32) -> u64 {
    sum + u64::from(w & 0xffff) + u64::from(w >> 16)
}

/// The checksum of a sum of 16-bit words, to store natively.
#[inline(always)]
fn fold(sum: u64) -> u16 {
    let mut s = (sum & 0xffff) + (sum >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// Sum of the `words` words at `off` (at most [`QUOTE_WORDS`]).
#[inline(always)]
fn sum_words(ctx: &XdpContext, off: usize, words: usize) -> Option<u64> {
    let mut sum = 0;
    let mut i = 0;
    while i < QUOTE_WORDS {
        if i >= words {
            break;
        }
        sum = add(sum, read::<u32>(ctx, off + 4 * i)?);
        i += 1;
    }
    Some(sum)
}

/// Writable pointer to `N` bytes at `offset`, bounds checked.
#[inline(always)]
fn bytes_mut<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<*mut u8> {
    ptr_at::<[u8; N]>(ctx, offset).map(|p| p.cast_mut().cast::<u8>())
}

/// Writes `w` (wire-order word) at `p + at`.
///
/// # Safety
/// `p + at .. p + at + 4` must be in the packet.
#[inline(always)]
unsafe fn put(p: *mut u8, at: usize, w: u32) {
    // SAFETY: the caller checked the bounds; headers are unaligned.
    unsafe { p.add(at).cast::<u32>().write_unaligned(w) };
}

/// Writes the checksum `c` at `p + at`.
///
/// # Safety
/// `p + at .. p + at + 2` must be in the packet.
#[inline(always)]
unsafe fn put_sum(p: *mut u8, at: usize, c: u16) {
    // SAFETY: the caller checked the bounds; headers are unaligned.
    unsafe { p.add(at).cast::<u16>().write_unaligned(c) };
}

/// Ethernet addresses swapped; with the headers moved `shift` bytes down
/// by `bpf_xdp_adjust_head`, the VLAN tags and ethertype (bytes 12..l3)
/// are copied up from there too.
#[inline(always)]
fn l2(ctx: &XdpContext, l3: usize, shift: usize) -> Option<()> {
    let m = read::<[u16; 6]>(ctx, shift)?;
    let p = bytes_mut::<12>(ctx, 0)?;
    // SAFETY: bytes_mut checked the 12 bytes.
    unsafe {
        p.cast::<[u16; 6]>()
            .write_unaligned([m[3], m[4], m[5], m[0], m[1], m[2]])
    };
    if shift == 0 {
        return Some(());
    }
    let mut at = 12;
    while at < ETH_HLEN + 4 * MAX_VLAN_TAGS as usize {
        if at >= l3 {
            break;
        }
        let w = read::<u16>(ctx, shift + at)?;
        let p = bytes_mut::<2>(ctx, at)?;
        // SAFETY: bytes_mut checked the 2 bytes.
        unsafe { p.cast::<u16>().write_unaligned(w) };
        at += 2;
    }
    Some(())
}

/// Trims the frame from `len` bytes to `want`.
#[inline(always)]
fn trim(ctx: &XdpContext, len: usize, want: usize) -> Option<()> {
    if want == len {
        return Some(());
    }
    let delta = want as i32 - len as i32;
    // SAFETY: the helper checks its arguments; pointers are re-read after.
    (unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } == 0).then_some(())
}

/// Grows the frame by `by` bytes at the front.
#[inline(always)]
fn grow_head(ctx: &XdpContext, by: usize) -> Option<()> {
    // SAFETY: the helper checks the headroom; pointers are re-read after.
    (unsafe { bpf_xdp_adjust_head(ctx.ctx, -(by as i32)) } == 0).then_some(())
}

/// The TCP RST, written over the original headers; the frame is cut after
/// it (IP options, IPv6 extension headers and payload are not sent back).
#[inline(always)]
fn rst(
    ctx: &XdpContext,
    l3: usize,
    v6: bool,
    ports: u32,
    seq: u32,
    ack: u32,
    flags: u8,
) -> Option<()> {
    let len = ctx.data_end() - ctx.data();
    // Checksum and urgent pointer (word 4) are 0 while summing.
    let tcp = [
        ports.rotate_left(16),
        wire(seq.to_be_bytes()),
        wire(ack.to_be_bytes()),
        wire([0x50, flags, 0, 0]),
    ];
    let mut sum = 0;
    let mut i = 0;
    while i < 4 {
        sum = add(sum, tcp[i]);
        i += 1;
    }
    l2(ctx, l3, 0)?;
    let (ip_len, p) = if v6 {
        let a = read::<[u32; 8]>(ctx, l3 + 8)?;
        let p = bytes_mut::<60>(ctx, l3)?;
        sum = add(sum, wire([0, 0, 0, 20]));
        sum = add(sum, wire([0, 0, 0, IPPROTO_TCP]));
        // SAFETY: bytes_mut checked the 60 bytes of IPv6 + TCP.
        unsafe {
            put(p, 0, wire([0x60, 0, 0, 0]));
            put(p, 4, wire([0, 20, IPPROTO_TCP, TTL]));
            let mut i = 0;
            while i < 4 {
                put(p, 8 + 4 * i, a[4 + i]);
                put(p, 24 + 4 * i, a[i]);
                sum = add(add(sum, a[i]), a[4 + i]);
                i += 1;
            }
        }
        (40, p)
    } else {
        let a = read::<[u32; 2]>(ctx, l3 + 12)?;
        let p = bytes_mut::<40>(ctx, l3)?;
        let ip = [
            wire([0x45, 0, 0, 40]),
            wire([0, 0, 0x40, 0]),
            wire([TTL, IPPROTO_TCP, 0, 0]),
            a[1],
            a[0],
        ];
        let mut ipsum = 0;
        let mut i = 0;
        while i < 5 {
            ipsum = add(ipsum, ip[i]);
            i += 1;
        }
        sum = add(add(add(sum, a[0]), a[1]), wire([0, IPPROTO_TCP, 0, 20]));
        // SAFETY: bytes_mut checked the 40 bytes of IPv4 + TCP.
        unsafe {
            let mut i = 0;
            while i < 5 {
                put(p, 4 * i, ip[i]);
                i += 1;
            }
            put_sum(p, 10, fold(ipsum));
        }
        (20, p)
    };
    // SAFETY: the 20 TCP bytes after the IP header were checked above.
    unsafe {
        let t = p.add(ip_len);
        let mut i = 0;
        while i < 4 {
            put(t, 4 * i, tcp[i]);
            i += 1;
        }
        put(t, 16, 0);
        put_sum(t, 16, fold(sum));
    }
    trim(ctx, len, l3 + ip_len + 20)
}

/// ICMP type 3 code 13 quoting `quote` bytes from `l3`: the headers move
/// 28 bytes down, the new IPv4 + ICMP headers go between.
#[inline(always)]
fn icmp4(ctx: &XdpContext, l3: usize, quote: usize) -> Option<()> {
    const SHIFT: usize = 28;
    let len = ctx.data_end() - ctx.data();
    let a = read::<[u32; 2]>(ctx, l3 + 12)?;
    grow_head(ctx, SHIFT)?;
    l2(ctx, l3, SHIFT)?;
    let total = SHIFT + quote;
    let ip = [
        wire([0x45, 0, (total >> 8) as u8, total as u8]),
        0,
        wire([TTL, IPPROTO_ICMP, 0, 0]),
        a[1],
        a[0],
    ];
    let mut ipsum = 0;
    let mut i = 0;
    while i < 5 {
        ipsum = add(ipsum, ip[i]);
        i += 1;
    }
    let head = wire([3, 13, 0, 0]);
    let sum = add(sum_words(ctx, l3 + SHIFT, quote / 4)?, head);
    let p = bytes_mut::<28>(ctx, l3)?;
    // SAFETY: bytes_mut checked the 28 bytes of IPv4 + ICMP.
    unsafe {
        let mut i = 0;
        while i < 5 {
            put(p, 4 * i, ip[i]);
            i += 1;
        }
        put_sum(p, 10, fold(ipsum));
        put(p, 20, head);
        put_sum(p, 22, fold(sum));
        put(p, 24, 0);
    }
    trim(ctx, len + SHIFT, l3 + total)
}

/// ICMPv6 type 1 code 1 quoting `quote` bytes from `l3`: the headers move
/// 48 bytes down, the new IPv6 + ICMPv6 headers go between.
#[inline(always)]
fn icmp6(ctx: &XdpContext, l3: usize, quote: usize) -> Option<()> {
    const SHIFT: usize = 48;
    let len = ctx.data_end() - ctx.data();
    let a = read::<[u32; 8]>(ctx, l3 + 8)?;
    grow_head(ctx, SHIFT)?;
    l2(ctx, l3, SHIFT)?;
    // At most 8 + 64: the high byte of the payload length is 0.
    let plen = (8 + quote) as u8;
    let head = wire([1, 1, 0, 0]);
    let mut sum = add(sum_words(ctx, l3 + SHIFT, quote / 4)?, head);
    sum = add(sum, wire([0, 0, 0, plen]));
    sum = add(sum, wire([0, 0, 0, IPPROTO_ICMPV6]));
    let mut i = 0;
    while i < 8 {
        sum = add(sum, a[i]);
        i += 1;
    }
    let p = bytes_mut::<48>(ctx, l3)?;
    // SAFETY: bytes_mut checked the 48 bytes of IPv6 + ICMPv6.
    unsafe {
        put(p, 0, wire([0x60, 0, 0, 0]));
        put(p, 4, wire([0, plen, IPPROTO_ICMPV6, TTL]));
        let mut i = 0;
        while i < 4 {
            put(p, 8 + 4 * i, a[4 + i]);
            put(p, 24 + 4 * i, a[i]);
            i += 1;
        }
        put(p, 40, head);
        put_sum(p, 42, fold(sum));
        put(p, 44, 0);
    }
    trim(ctx, len + SHIFT, l3 + SHIFT + quote)
}
