//! Hand-built frames for BPF_PROG_TEST_RUN, with correct checksums.
//!
//! [`ipv4`] fills in the header checksum; [`ipv4`] and [`ipv6`] fill in the
//! UDP, TCP and ICMP checksums of a complete (unfragmented) L4 payload.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;
pub const ETH_P_PPP_SES: u16 = 0x8864;
pub const ETH_P_LLDP: u16 = 0x88CC;

pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

/// Ethernet header, `vlans` as (TPID) from outermost, then `ethertype`.
#[must_use]
pub fn ethernet(src_mac: [u8; 6], vlans: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(64 + payload.len());
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&src_mac);
    for (i, tpid) in vlans.iter().enumerate() {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(100 + u16::try_from(i).unwrap_or(0)).to_be_bytes()); // VLAN id
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// UDP header and payload; the IP builder fills in the checksum.
#[must_use]
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&(u16::try_from(8 + payload.len()).unwrap_or(u16::MAX)).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// Minimal TCP SYN header; the IP builder fills in the checksum.
#[must_use]
pub fn tcp(sport: u16, dport: u16) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

/// TCP segment (PSH, ACK) carrying `payload`; the IP builder fills in
/// the checksum.
#[must_use]
pub fn tcp_data(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

/// IPv4 header with `option_words` 4-byte NOP option words, then `payload`.
#[must_use]
pub fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    option_words: u8,
    frag_off: u16,
    payload: &[u8],
) -> Vec<u8> {
    let ihl = 5 + option_words;
    let total = usize::from(ihl) * 4 + payload.len();
    let mut h = vec![0x40 | ihl, 0];
    h.extend_from_slice(&(u16::try_from(total).unwrap_or(u16::MAX)).to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&frag_off.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    for _ in 0..option_words {
        h.extend_from_slice(&[1, 1, 1, 1]);
    }
    let sum = checksum(&[&h]);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    let l4 = h.len();
    h.extend_from_slice(payload);
    // Offset 0 and no more-fragments flag: the whole L4 payload is here.
    let (offset, more_fragments) = (frag_off & 0x1fff, frag_off & 0x2000 != 0);
    if offset == 0 && !more_fragments {
        let len = u16::try_from(payload.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes();
        let pseudo = [&src.octets()[..], &dst.octets()[..], &[0, proto], &len];
        fill_l4_checksum(&mut h[l4..], proto, &pseudo, proto == IPPROTO_ICMP);
    }
    h
}

/// One IPv6 extension header (next header is filled in by [`ipv6`]).
#[derive(Clone, Copy, Debug)]
pub enum Ext {
    HopByHop,
    Routing,
    DestOpts,
    /// Fragment header with this fragment offset (in 8-byte units).
    Fragment(u16),
}

impl Ext {
    const fn proto(self) -> u8 {
        match self {
            Self::HopByHop => 0,
            Self::Routing => 43,
            Self::DestOpts => 60,
            Self::Fragment(_) => 44,
        }
    }
}

/// IPv6 header, the extension header chain, then an L4 header of `proto`.
#[must_use]
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, exts: &[Ext], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut chain = Vec::new();
    for (i, e) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(proto, |n| n.proto());
        match e {
            Ext::Fragment(off) => {
                chain.push(next);
                chain.push(0);
                chain.extend_from_slice(&(off << 3).to_be_bytes());
                chain.extend_from_slice(&[0, 0, 0, 1]);
            }
            Ext::Routing => {
                // Type 0 routing header, 16 bytes (length 1).
                chain.extend_from_slice(&[next, 1, 0, 0, 0, 0, 0, 0]);
                chain.extend_from_slice(&[0; 8]);
            }
            _ => chain.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]), // PadN
        }
    }
    let first = exts.first().map_or(proto, |e| e.proto());
    let plen = chain.len() + payload.len();
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(u16::try_from(plen).unwrap_or(u16::MAX)).to_be_bytes());
    h.push(first);
    h.push(64);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(&chain);
    let l4 = h.len();
    h.extend_from_slice(payload);
    if !exts
        .iter()
        .any(|e| matches!(e, Ext::Fragment(_) | Ext::Routing))
    {
        let len = u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes();
        let pseudo = [
            &src.octets()[..],
            &dst.octets()[..],
            &len,
            &[0, 0, 0, proto],
        ];
        fill_l4_checksum(&mut h[l4..], proto, &pseudo, false);
    }
    h
}

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// ICMP (or ICMPv6) message: type, code, checksum (filled in by the IP
/// builder), then `rest` (for an echo: identifier, sequence, data).
#[must_use]
pub fn icmp(kind: u8, code: u8, rest: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0];
    m.extend_from_slice(rest);
    m
}

/// ICMP echo request (type 8; use 128 with [`icmp`] for ICMPv6).
#[must_use]
pub fn icmp_echo(id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut rest = Vec::with_capacity(4 + data.len());
    rest.extend_from_slice(&id.to_be_bytes());
    rest.extend_from_slice(&seq.to_be_bytes());
    rest.extend_from_slice(data);
    icmp(8, 0, &rest)
}

/// The Internet checksum (RFC 1071) of the concatenated `parts`.
#[must_use]
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for b in parts.iter().flat_map(|p| p.iter().copied()) {
        match odd.take() {
            Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
            None => odd = Some(b),
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    #[expect(clippy::cast_possible_truncation, reason = "folded to 16 bits")]
    let folded = sum as u16;
    !folded
}

/// Writes the checksum of a UDP, TCP, ICMP or ICMPv6 message in place,
/// if the message is long enough to have one. `pseudo` is the IP
/// pseudo-header (ignored when `no_pseudo`, as for ICMPv4).
fn fill_l4_checksum(l4: &mut [u8], proto: u8, pseudo: &[&[u8]], no_pseudo: bool) {
    let at = match proto {
        IPPROTO_UDP if l4.len() >= 8 => 6,
        IPPROTO_TCP if l4.len() >= 20 => 16,
        IPPROTO_ICMP | IPPROTO_ICMPV6 if l4.len() >= 4 => 2,
        _ => return,
    };
    l4[at..at + 2].copy_from_slice(&[0, 0]);
    let mut parts: Vec<&[u8]> = if no_pseudo {
        Vec::new()
    } else {
        pseudo.to_vec()
    };
    parts.push(l4);
    let mut sum = checksum(&parts);
    if proto == IPPROTO_UDP && sum == 0 {
        sum = 0xffff; // 0 means "no checksum" in UDP
    }
    l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

    #[test]
    fn ipv4_header_and_l4_checksums_verify() {
        for (proto, l4) in [
            (IPPROTO_UDP, udp(4000, 53, b"odd")),
            (IPPROTO_TCP, tcp(4000, 443)),
            (IPPROTO_ICMP, icmp_echo(1, 2, b"ping")),
        ] {
            let p = ipv4(A, B, proto, 1, 0, &l4);
            assert_eq!(checksum(&[&p[..24]]), 0, "header of {proto}");
            let seg = &p[24..];
            let len = u16::try_from(seg.len()).unwrap().to_be_bytes();
            let sum = if proto == IPPROTO_ICMP {
                checksum(&[seg])
            } else {
                checksum(&[&A.octets(), &B.octets(), &[0, proto], &len, seg])
            };
            assert_eq!(sum, 0, "L4 checksum of {proto}");
        }
        // A first fragment has only part of the L4 payload: no L4 checksum.
        let p = ipv4(A, B, IPPROTO_UDP, 0, 0x2000, &udp(1, 2, b""));
        assert_eq!(&p[26..28], &[0, 0]);
    }

    #[test]
    fn ipv6_l4_checksums_verify() {
        let (s, d): (Ipv6Addr, Ipv6Addr) = (
            "2001:db8:1::10".parse().unwrap(),
            "2001:db8::7".parse().unwrap(),
        );
        for (proto, l4) in [
            (IPPROTO_UDP, udp(4000, 53, b"x")),
            (IPPROTO_ICMPV6, icmp(128, 0, &[0, 1, 0, 1])),
        ] {
            let p = ipv6(s, d, &[Ext::HopByHop], proto, &l4);
            let seg = &p[48..];
            let len = u32::try_from(seg.len()).unwrap().to_be_bytes();
            let sum = checksum(&[&s.octets(), &d.octets(), &len, &[0, 0, 0, proto], seg]);
            assert_eq!(sum, 0, "L4 checksum of {proto}");
        }
    }
}
