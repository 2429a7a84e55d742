//! Address prefixes and MAC addresses, with parsers whose errors say what
//! was expected.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// An IPv4 prefix: network address (host bits zero) and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct V4 {
    pub addr: u32,
    pub len: u8,
}

/// An IPv6 prefix: network address (host bits zero) and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct V6 {
    pub addr: u128,
    pub len: u8,
}

/// Either family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Prefix {
    V4(V4),
    V6(V6),
}

/// The host bits of a `len`-bit prefix in a `width`-bit family (32 or 128).
#[must_use]
pub const fn host_mask(width: u8, len: u8) -> u128 {
    let host = (width - len) as u32;
    let full = if width == 128 {
        u128::MAX
    } else {
        u32::MAX as u128
    };
    if host >= 128 {
        full
    } else {
        ((1u128 << host) - 1) & full
    }
}

/// Operations the table compiler needs, for both families.
#[expect(
    clippy::len_without_is_empty,
    reason = "len is a prefix length, not a size"
)]
pub trait Bits: Copy + Ord + std::hash::Hash + fmt::Debug {
    const WIDTH: u8;
    fn addr(&self) -> u128;
    fn len(&self) -> u8;
    fn make(addr: u128, len: u8) -> Self;
    /// Last address covered.
    fn last(&self) -> u128 {
        self.addr() | host_mask(Self::WIDTH, self.len())
    }
    fn contains_prefix(&self, other: &Self) -> bool {
        other.len() >= self.len() && other.addr() >= self.addr() && other.last() <= self.last()
    }
    fn contains_addr(&self, a: u128) -> bool {
        a >= self.addr() && a <= self.last()
    }
}

impl Bits for V4 {
    const WIDTH: u8 = 32;
    fn addr(&self) -> u128 {
        u128::from(self.addr)
    }
    fn len(&self) -> u8 {
        self.len
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "IPv4 addresses fit in u32 by construction"
    )]
    fn make(addr: u128, len: u8) -> Self {
        Self {
            addr: addr as u32,
            len,
        }
    }
}

impl Bits for V6 {
    const WIDTH: u8 = 128;
    fn addr(&self) -> u128 {
        self.addr
    }
    fn len(&self) -> u8 {
        self.len
    }
    fn make(addr: u128, len: u8) -> Self {
        Self { addr, len }
    }
}

impl V4 {
    #[must_use]
    pub fn octets(&self) -> [u8; 4] {
        self.addr.to_be_bytes()
    }
}

impl V6 {
    #[must_use]
    pub fn octets(&self) -> [u8; 16] {
        self.addr.to_be_bytes()
    }
}

impl fmt::Display for V4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.len)
    }
}
impl fmt::Display for V6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv6Addr::from(self.addr), self.len)
    }
}
impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(p) => p.fmt(f),
            Self::V6(p) => p.fmt(f),
        }
    }
}

impl Prefix {
    /// Whether `addr` (of the same family) is inside.
    #[must_use]
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self, addr) {
            (Self::V4(p), IpAddr::V4(a)) => p.contains_addr(u128::from(u32::from(a))),
            (Self::V6(p), IpAddr::V6(a)) => p.contains_addr(u128::from(a)),
            _ => false,
        }
    }

    #[must_use]
    #[expect(clippy::len_without_is_empty, reason = "a prefix length, not a size")]
    pub fn len(&self) -> u8 {
        match self {
            Self::V4(p) => p.len,
            Self::V6(p) => p.len,
        }
    }

    /// Parses `a.b.c.d/len`, `x::/len`, or a bare address (a host prefix).
    /// Host bits must be zero: `198.51.100.1/24` is almost always a typo.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr_text, len_text) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            format!("expected an IPv4 or IPv6 address or CIDR such as 198.51.100.0/24 or 2001:db8::/32, found `{text}`")
        })?;
        let width: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len_text {
            None => width,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= width => n,
                _ => {
                    return Err(format!(
                        "expected a prefix length from 0 to {width} after `/`, found `{l}`"
                    ));
                }
            },
        };
        match addr {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                let mask = if len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(len))
                };
                if a & !mask != 0 {
                    let p = V4 {
                        addr: a & mask,
                        len,
                    };
                    return Err(format!(
                        "`{text}` has host bits set; expected the network address, e.g. {p}"
                    ));
                }
                Ok(Self::V4(V4 { addr: a, len }))
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(len))
                };
                if a & !mask != 0 {
                    let p = V6 {
                        addr: a & mask,
                        len,
                    };
                    return Err(format!(
                        "`{text}` has host bits set; expected the network address, e.g. {p}"
                    ));
                }
                Ok(Self::V6(V6 { addr: a, len }))
            }
        }
    }
}

/// Parses `02:00:5e:00:53:01` (also with `-` separators).
pub fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let err = || format!("expected a MAC address like 02:00:5e:00:53:01, found `{text}`");
    let parts: Vec<&str> = text.trim().split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(err());
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return Err(err());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| err())?;
    }
    Ok(mac)
}

/// Formats a MAC address as lowercase colon-separated hex.
#[must_use]
pub fn format_mac(mac: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefixes_and_rejects_host_bits() {
        assert_eq!(
            Prefix::parse("198.51.100.0/24"),
            Ok(Prefix::V4(V4 {
                addr: 0xC633_6400,
                len: 24
            }))
        );
        assert_eq!(
            Prefix::parse("198.51.100.7"),
            Ok(Prefix::V4(V4 {
                addr: 0xC633_6407,
                len: 32
            }))
        );
        assert_eq!(
            Prefix::parse("2001:db8::/32").map(|p| p.to_string()),
            Ok("2001:db8::/32".into())
        );
        let e = Prefix::parse("198.51.100.1/24").unwrap_err();
        assert!(
            e.contains("host bits") && e.contains("198.51.100.0/24"),
            "{e}"
        );
        assert!(
            Prefix::parse("198.51.100.0/33")
                .unwrap_err()
                .contains("0 to 32")
        );
        assert!(
            Prefix::parse("not-an-ip")
                .unwrap_err()
                .contains("expected an IPv4 or IPv6")
        );
    }

    #[test]
    fn prefix_last_address() {
        assert_eq!(
            V4 {
                addr: 0xC633_6400,
                len: 24
            }
            .last(),
            0xC633_64FF
        );
        assert_eq!(V4 { addr: 0, len: 0 }.last(), u128::from(u32::MAX));
        assert_eq!(V6 { addr: 0, len: 0 }.last(), u128::MAX);
        assert_eq!(
            V6 {
                addr: 1 << 96,
                len: 32
            }
            .last(),
            (1 << 96) | ((1u128 << 96) - 1)
        );
    }

    #[test]
    fn parses_macs() {
        assert_eq!(parse_mac("02:00:5E:00:53:01"), Ok([2, 0, 0x5e, 0, 0x53, 1]));
        assert_eq!(parse_mac("02-00-5e-00-53-01"), Ok([2, 0, 0x5e, 0, 0x53, 1]));
        assert!(parse_mac("02:00:5e:00:53").is_err());
        assert!(parse_mac("02:00:5e:00:53:zz").is_err());
        assert_eq!(format_mac(&[2, 0, 0x5e, 0, 0x53, 1]), "02:00:5e:00:53:01");
    }
}
