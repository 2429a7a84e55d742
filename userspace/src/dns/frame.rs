//! The DNS message inside a copied answer frame: Ethernet, up to two VLAN
//! tags, IPv4 or IPv6, UDP or TCP from port 53, and the device it goes to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use regionwall_common::dns::DNS_PORT;

/// IPv6 extension headers skipped before giving up (as the XDP parser).
const MAX_EXT_HEADERS: usize = 6;
const MAX_VLAN_TAGS: usize = 2;

/// Where an answer goes and what it carries.
#[derive(Debug, PartialEq, Eq)]
pub struct AnswerFrame<'a> {
    /// The device's MAC (the frame's destination).
    pub mac: [u8; 6],
    /// The device's address (the packet's destination).
    pub client: IpAddr,
    pub transport: Transport,
    /// UDP: the datagram's payload as far as it was captured. TCP: the
    /// segment's payload (DNS messages with their two-byte length prefix).
    pub payload: &'a [u8],
    /// The payload is shorter than the packet said (the copy was clipped).
    pub clipped: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Why a frame holds no DNS answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame too short for its headers")]
    Short,
    #[error("not IPv4 or IPv6")]
    NotIp,
    #[error("not UDP or TCP from port 53")]
    NotDns,
    #[error("a later IP fragment")]
    Fragment,
}

fn be16(b: &[u8], at: usize) -> Result<u16, FrameError> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(FrameError::Short)
}

/// Parses one copied frame (`frame` holds the captured bytes only).
pub fn parse(frame: &[u8]) -> Result<AnswerFrame<'_>, FrameError> {
    let mac: [u8; 6] = frame
        .get(..6)
        .and_then(|m| m.try_into().ok())
        .ok_or(FrameError::Short)?;
    let mut at = 12;
    let mut ethertype = be16(frame, at)?;
    at += 2;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != 0x8100 && ethertype != 0x88a8 {
            break;
        }
        ethertype = be16(frame, at + 2)?;
        at += 4;
    }
    let (client, proto, l4, l3_end) = match ethertype {
        0x0800 => ipv4(frame, at)?,
        0x86dd => ipv6(frame, at)?,
        _ => return Err(FrameError::NotIp),
    };
    // What the IP header says the packet holds, cut to what was captured.
    let end = l3_end.min(frame.len());
    let clipped = l3_end > frame.len();
    let (transport, payload_at, payload_end) = match proto {
        17 => {
            if be16(frame, l4)? != DNS_PORT {
                return Err(FrameError::NotDns);
            }
            let len = usize::from(be16(frame, l4 + 4)?);
            (Transport::Udp, l4 + 8, (l4 + len.max(8)).min(end))
        }
        6 => {
            if be16(frame, l4)? != DNS_PORT {
                return Err(FrameError::NotDns);
            }
            let offset = usize::from(frame.get(l4 + 12).ok_or(FrameError::Short)? >> 4) * 4;
            (Transport::Tcp, l4 + offset.max(20), end)
        }
        _ => return Err(FrameError::NotDns),
    };
    let payload = frame
        .get(payload_at..payload_end.max(payload_at))
        .ok_or(FrameError::Short)?;
    Ok(AnswerFrame {
        mac,
        client,
        transport,
        payload,
        clipped,
    })
}

/// (destination, protocol, L4 offset, end of the packet by its header).
fn ipv4(frame: &[u8], at: usize) -> Result<(IpAddr, u8, usize, usize), FrameError> {
    let h = frame.get(at..at + 20).ok_or(FrameError::Short)?;
    if h[0] >> 4 != 4 {
        return Err(FrameError::NotIp);
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(FrameError::NotIp);
    }
    if u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
        return Err(FrameError::Fragment);
    }
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
    Ok((IpAddr::V4(dst), h[9], at + ihl, at + total.max(ihl)))
}

fn ipv6(frame: &[u8], at: usize) -> Result<(IpAddr, u8, usize, usize), FrameError> {
    let h = frame.get(at..at + 40).ok_or(FrameError::Short)?;
    if h[0] >> 4 != 6 {
        return Err(FrameError::NotIp);
    }
    let payload = usize::from(u16::from_be_bytes([h[4], h[5]]));
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&h[24..40]);
    let mut next = h[6];
    let mut l4 = at + 40;
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            // Hop-by-hop, routing, destination options.
            0 | 43 | 60 => {
                let ext = frame.get(l4..l4 + 2).ok_or(FrameError::Short)?;
                next = ext[0];
                l4 += (usize::from(ext[1]) + 1) * 8;
            }
            44 => return Err(FrameError::Fragment),
            _ => break,
        }
    }
    Ok((IpAddr::V6(Ipv6Addr::from(dst)), next, l4, at + 40 + payload))
}

/// The DNS messages of a TCP segment that hold whole messages (each after
/// its two-byte length); a message continued in a later segment is left
/// out, and `partial` says so.
#[must_use]
pub fn tcp_messages(payload: &[u8]) -> (Vec<&[u8]>, bool) {
    let mut out = Vec::new();
    let mut rest = payload;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let Some(message) = rest.get(2..2 + len) else {
            return (out, true);
        };
        out.push(message);
        rest = &rest[2 + len..];
    }
    (out, !rest.is_empty())
}
