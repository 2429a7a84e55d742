//! Frame parsing, one function per protocol layer, all reads through a
//! [`Frame`] (XDP: [`ptr_at`]; TC: `bpf_skb_load_bytes`). The parser never
//! guesses: a frame it cannot read completely up to the L3 destination is
//! `Unparsed` with the reason counted.

use aya_ebpf::programs::XdpContext;
use regionwall_common::{Counter, MAX_IPV6_EXT_HEADERS, MAX_VLAN_TAGS};

use crate::counters::count;

pub(crate) const ETH_HLEN: usize = 14;
pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
/// Pre-standard QinQ outer tag, still emitted by some switches.
const ETH_P_QINQ1: u16 = 0x9100;
const ETH_P_PPP_SES: u16 = 0x8864;

const IPPROTO_HOPOPTS: u8 = 0;
pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
pub(crate) const IPPROTO_FRAGMENT: u8 = 44;
pub(crate) const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_MH: u8 = 135;
const IPPROTO_HIP: u8 = 139;
const IPPROTO_SHIM6: u8 = 140;
const IPPROTO_SCTP: u8 = 132;
const IPPROTO_UDPLITE: u8 = 136;

/// Largest L3 header offset we accept: keeps every packet offset provably
/// bounded for the verifier (variable-offset packet access needs a known
/// maximum, see check_packet_access in kernel/bpf/verifier.c).
pub(crate) const MAX_L4_OFFSET: usize = 4096;

/// What the parser learned about an IP packet.
///
/// Addresses are kept as 32-bit words holding the bytes in wire order
/// (`u32::from_ne_bytes` of each 4 bytes; IPv4 in word 0), the MAC as one
/// word: byte arrays here would be split by LLVM into dozens of one-byte
/// values spilled to the stack on every packet.
#[derive(Clone, Copy)]
pub struct Packet {
    /// The 6 source MAC bytes in wire order in the low bytes of the word
    /// (`u64::from_ne_bytes([m0, .., m5, 0, 0])`).
    pub src_mac: u64,
    /// 4 or 6 (0 if unknown).
    pub family: u8,
    pub proto: u8,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub src_port: u16,
    pub dst_port: u16,
    /// Whether the L4 ports were read (TCP/UDP/SCTP/UDP-Lite first fragments).
    pub has_ports: bool,
}

impl Packet {
    const fn empty() -> Self {
        Self {
            src_mac: 0,
            family: 0,
            proto: 0,
            src: [0; 4],
            dst: [0; 4],
            src_port: 0,
            dst_port: 0,
            has_ports: false,
        }
    }
}

/// Wire-order bytes of address words (see [`Packet`]).
#[inline(always)]
pub fn bytes16(w: [u32; 4]) -> [u8; 16] {
    // SAFETY: [u32; 4] and [u8; 16] have the same size and any bytes are valid.
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(w) }
}

pub enum Parsed {
    Ip(Packet),
    /// ARP, LLDP and every other ethertype that is not IP.
    NonIp,
    /// Beyond the parser's limits or malformed: the counter says why, the
    /// packet holds what was read before giving up.
    Unparsed(Counter, Packet),
}

/// Where the parser reads a frame from: the XDP buffer (direct packet
/// access) or a socket buffer (helper copies, which also reach the paged
/// part of a non-linear skb). The parser is written once against it, so
/// the TC DNS copier classifies frames exactly as the XDP program does.
pub trait Frame {
    /// `size_of::<T>()` bytes at `offset`, if the frame has them.
    fn read<T: Copy>(&self, offset: usize) -> Option<T>;
    /// `N` 32-bit words in wire order at `offset` (see [`Packet`]).
    fn words<const N: usize>(&self, offset: usize) -> Option<[u32; N]>;
    /// Whether the frame is at least `end` bytes long.
    fn has(&self, end: usize) -> bool;
    /// Counts what the parser saw (the XDP program's counters; other
    /// readers keep counters of their own, or none).
    fn count(&self, counter: Counter);
}

impl Frame for XdpContext {
    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        read(self, offset)
    }

    #[inline(always)]
    fn words<const N: usize>(&self, offset: usize) -> Option<[u32; N]> {
        words(self, offset)
    }

    #[inline(always)]
    fn has(&self, end: usize) -> bool {
        self.data() + end <= self.data_end()
    }

    #[inline(always)]
    fn count(&self, counter: Counter) {
        count(counter);
    }
}

/// The one bounds-checked accessor for packet reads.
#[inline(always)]
pub(crate) fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

#[inline(always)]
pub(crate) fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    // SAFETY: ptr_at checked that size_of::<T>() bytes at offset are in the
    // packet; the read is unaligned because headers are not aligned.
    ptr_at::<T>(ctx, offset).map(|p| unsafe { p.read_unaligned() })
}

/// Reads `N` 32-bit words in wire order (see [`Packet`]).
#[inline(always)]
fn words<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<[u32; N]> {
    let p = ptr_at::<[u32; N]>(ctx, offset)?;
    let mut out = [0u32; N];
    let mut i = 0;
    while i < N {
        // SAFETY: ptr_at checked the N words are in the packet; unaligned.
        out[i] = unsafe { p.cast::<u32>().add(i).read_unaligned() };
        i += 1;
    }
    Some(out)
}

#[inline(always)]
pub(crate) fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[inline(always)]
pub fn parse<F: Frame>(ctx: &F) -> Parsed {
    let mut pkt = Packet::empty();
    let (Some(mac), Some(ethertype)) = (ctx.read::<[u8; 8]>(6), ctx.read::<[u8; 2]>(12)) else {
        return Parsed::Unparsed(Counter::Malformed, pkt);
    };
    // Bytes 6..12 are the source MAC; 12..14 (the ethertype) are masked off.
    pkt.src_mac =
        u64::from_ne_bytes(mac) & u64::from_ne_bytes([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]);
    let (ethertype, l3) = match vlan(ctx, be16(ethertype)) {
        Ok(v) => v,
        Err(cause) => return Parsed::Unparsed(cause, pkt),
    };
    match ethertype {
        ETH_P_IP => ipv4(ctx, l3, pkt),
        ETH_P_IPV6 => ipv6(ctx, l3, pkt),
        ETH_P_PPP_SES => Parsed::Unparsed(Counter::UnparsedPppoe, pkt),
        _ => Parsed::NonIp,
    }
}

#[inline(always)]
pub(crate) const fn is_vlan(ethertype: u16) -> bool {
    matches!(ethertype, ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ1)
}

/// Walks up to [`MAX_VLAN_TAGS`] tags; returns the inner ethertype and the L3 offset.
#[inline(always)]
fn vlan<F: Frame>(ctx: &F, outer: u16) -> Result<(u16, usize), Counter> {
    let mut ethertype = outer;
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if !is_vlan(ethertype) {
            return Ok((ethertype, off));
        }
        // TCI (2 bytes) then the encapsulated ethertype.
        let tag = ctx.read::<[u8; 4]>(off).ok_or(Counter::Malformed)?;
        ethertype = be16([tag[2], tag[3]]);
        off += 4;
    }
    if is_vlan(ethertype) {
        Err(Counter::UnparsedVlan)
    } else {
        Ok((ethertype, off))
    }
}

#[inline(always)]
fn ipv4<F: Frame>(ctx: &F, l3: usize, mut pkt: Packet) -> Parsed {
    pkt.family = 4;
    let Some(h) = ctx.read::<[u8; 20]>(l3) else {
        return Parsed::Unparsed(Counter::Malformed, pkt);
    };
    let ihl = usize::from(h[0] & 0x0f);
    if h[0] >> 4 != 4 || ihl < 5 {
        return Parsed::Unparsed(Counter::Malformed, pkt);
    }
    let hlen = ihl * 4;
    // Options must be present in full: the header length is part of the header.
    if !ctx.has(l3 + hlen) {
        return Parsed::Unparsed(Counter::Malformed, pkt);
    }
    pkt.proto = h[9];
    let Some([src, dst]) = ctx.words::<2>(l3 + 12) else {
        return Parsed::Unparsed(Counter::Malformed, pkt);
    };
    pkt.src[0] = src;
    pkt.dst[0] = dst;
    let frag_off = be16([h[6], h[7]]) & 0x1fff;
    if frag_off != 0 {
        // A later fragment: no L4 header, but the destination is known and
        // the policy applies to it like to the first fragment.
        ctx.count(Counter::LaterFragments);
        return Parsed::Ip(pkt);
    }
    ports(ctx, l3 + hlen, &mut pkt);
    Parsed::Ip(pkt)
}

#[inline(always)]
pub(crate) const fn is_ext_header(nh: u8) -> bool {
    matches!(
        nh,
        IPPROTO_HOPOPTS
            | IPPROTO_ROUTING
            | IPPROTO_FRAGMENT
            | IPPROTO_AH
            | IPPROTO_DSTOPTS
            | IPPROTO_MH
            | IPPROTO_HIP
            | IPPROTO_SHIM6
    )
}

#[inline(always)]
fn ipv6<F: Frame>(ctx: &F, l3: usize, mut pkt: Packet) -> Parsed {
    pkt.family = 6;
    let Some(h) = ctx.read::<[u8; 8]>(l3) else {
        return Parsed::Unparsed(Counter::Malformed, pkt);
    };
    let Some(addrs) = ctx.words::<8>(l3 + 8) else {
        return Parsed::Unparsed(Counter::Malformed, pkt);
    };
    if h[0] >> 4 != 6 {
        return Parsed::Unparsed(Counter::Malformed, pkt);
    }
    pkt.src = [addrs[0], addrs[1], addrs[2], addrs[3]];
    pkt.dst = [addrs[4], addrs[5], addrs[6], addrs[7]];
    let mut nh = h[6];
    let mut off = l3 + 40;
    let mut first_fragment = true;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !is_ext_header(nh) || !first_fragment {
            break;
        }
        // Every extension header starts with (next header, length); a chain
        // cut short leaves the L4 header unknown but the destination read.
        let Some(e) = ctx.read::<[u8; 4]>(off) else {
            pkt.proto = nh;
            return Parsed::Ip(pkt);
        };
        let len = match nh {
            // Fixed 8 bytes; offset in the upper 13 bits of bytes 2..4.
            IPPROTO_FRAGMENT => {
                if be16([e[2], e[3]]) >> 3 != 0 {
                    first_fragment = false;
                }
                8
            }
            // RFC 4302: length in 4-octet units, minus 2.
            IPPROTO_AH => (usize::from(e[1]) + 2) * 4,
            // RFC 8200: length in 8-octet units, not counting the first 8.
            _ => (usize::from(e[1]) + 1) * 8,
        };
        nh = e[0];
        off += len;
        if off > MAX_L4_OFFSET {
            return Parsed::Unparsed(Counter::Malformed, pkt);
        }
    }
    pkt.proto = nh;
    if !first_fragment {
        ctx.count(Counter::LaterFragments);
        return Parsed::Ip(pkt);
    }
    if is_ext_header(nh) {
        return Parsed::Unparsed(Counter::UnparsedExtHeaders, pkt);
    }
    ports(ctx, off, &mut pkt);
    Parsed::Ip(pkt)
}

/// Reads source and destination ports of protocols that have them. A
/// truncated L4 header leaves them 0; the destination still decides.
#[inline(always)]
fn ports<F: Frame>(ctx: &F, l4: usize, pkt: &mut Packet) {
    if !matches!(
        pkt.proto,
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_UDPLITE
    ) {
        return;
    }
    if l4 > MAX_L4_OFFSET {
        return;
    }
    if let Some(p) = ctx.read::<[u8; 4]>(l4) {
        pkt.src_port = be16([p[0], p[1]]);
        pkt.dst_port = be16([p[2], p[3]]);
        pkt.has_ports = true;
    }
}
