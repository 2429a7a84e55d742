//! Hand-built frames for BPF_PROG_TEST_RUN.

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

/// UDP header (checksum 0) and payload.
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

/// Minimal TCP SYN header.
#[must_use]
pub fn tcp(sport: u16, dport: u16) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
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
    h.extend_from_slice(payload);
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
    h.extend_from_slice(payload);
    h
}
