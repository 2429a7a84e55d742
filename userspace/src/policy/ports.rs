//! Protocol/port qualifiers of rules: `tcp`, `udp`, `tcp/443`,
//! `udp/5000-5100`, `icmp` (ICMP and ICMPv6).
//!
//! The kernel maps a packet's (protocol, destination port) to a *port slot*:
//! TCP and UDP packets whose ports were read index by port; every other
//! packet (other protocols, later fragments, truncated L4 headers) uses its
//! protocol's port-less slot. A bare `tcp` matches all TCP including the
//! port-less slot; `tcp/443` matches only packets whose port is known to be 443.

use std::fmt;

use regionwall_common::{PORT_SLOTS, PORTLESS_BASE, port_slot};

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// What a qualifier matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortMatch {
    pub proto: u8,
    /// Inclusive destination port range; `None`: any, port known or not.
    pub ports: Option<(u16, u16)>,
}

/// The part of a packet qualifiers look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PacketKey {
    pub proto: u8,
    /// Destination port, when the kernel could read it (TCP/UDP first fragments).
    pub port: Option<u16>,
}

impl PacketKey {
    /// The kernel's port slot for this packet.
    #[must_use]
    pub fn slot(self) -> u32 {
        port_slot(self.proto, self.port.is_some(), self.port.unwrap_or(0))
    }

    /// A representative packet of a kernel port slot.
    #[must_use]
    pub fn of_slot(slot: u32) -> Self {
        debug_assert!(slot < PORT_SLOTS);
        #[expect(
            clippy::cast_possible_truncation,
            reason = "slots are bounded by PORT_SLOTS"
        )]
        if slot >= PORTLESS_BASE {
            Self {
                proto: (slot - PORTLESS_BASE) as u8,
                port: None,
            }
        } else {
            Self {
                proto: if slot < 65_536 {
                    IPPROTO_TCP
                } else {
                    IPPROTO_UDP
                },
                port: Some((slot & 0xffff) as u16),
            }
        }
    }
}

impl PortMatch {
    #[must_use]
    pub fn matches(&self, key: PacketKey) -> bool {
        self.proto == key.proto
            && match (self.ports, key.port) {
                (None, _) => true,
                (Some((lo, hi)), Some(p)) => (lo..=hi).contains(&p),
                (Some(_), None) => false,
            }
    }

    /// Parses one qualifier into the matches it stands for.
    pub fn parse(text: &str) -> Result<Vec<Self>, String> {
        let expected = || {
            format!(
                "expected a protocol qualifier such as \"tcp\", \"udp/53\", \"tcp/8000-8999\" or \"icmp\", found \"{text}\""
            )
        };
        let t = text.trim().to_ascii_lowercase();
        let (proto, range) = split(&t);
        let proto = match proto {
            "tcp" => IPPROTO_TCP,
            "udp" => IPPROTO_UDP,
            "icmp" if range.is_none() => {
                return Ok(vec![
                    Self {
                        proto: IPPROTO_ICMP,
                        ports: None,
                    },
                    Self {
                        proto: IPPROTO_ICMPV6,
                        ports: None,
                    },
                ]);
            }
            _ => return Err(expected()),
        };
        let ports = match range {
            None => None,
            Some(r) => {
                let (lo, hi) = r.split_once('-').unwrap_or((r, r));
                match (lo.parse::<u16>(), hi.parse::<u16>()) {
                    (Ok(lo), Ok(hi)) if lo <= hi => Some((lo, hi)),
                    (Ok(lo), Ok(hi)) => {
                        return Err(format!(
                            "port range {lo}-{hi} is empty: expected the low port first"
                        ));
                    }
                    _ => {
                        return Err(format!(
                            "expected a port (0-65535) or a range such as 8000-8999 after `/`, found \"{r}\""
                        ));
                    }
                }
            }
        };
        Ok(vec![Self { proto, ports }])
    }
}

/// `proto/rest` -> (`proto`, Some(`rest`)); `proto` -> (`proto`, None).
fn split(text: &str) -> (&str, Option<&str>) {
    match text.split_once('/') {
        Some((p, rest)) => (p, Some(rest)),
        None => (text, None),
    }
}

/// Name of an IP protocol number as used in qualifiers, `explain` and
/// events; protocols without a name print as their number.
#[must_use]
pub fn proto_name(proto: u8) -> std::borrow::Cow<'static, str> {
    match proto {
        IPPROTO_TCP => "tcp".into(),
        IPPROTO_UDP => "udp".into(),
        IPPROTO_ICMP => "icmp".into(),
        IPPROTO_ICMPV6 => "icmpv6".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        p => p.to_string().into(),
    }
}

impl fmt::Display for PortMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = proto_name(self.proto);
        match self.ports {
            None => write!(f, "{name}"),
            Some((lo, hi)) if lo == hi => write!(f, "{name}/{lo}"),
            Some((lo, hi)) => write!(f, "{name}/{lo}-{hi}"),
        }
    }
}

impl fmt::Display for PacketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = proto_name(self.proto);
        match self.port {
            Some(p) => write!(f, "{name}/{p}"),
            None => write!(f, "{name}"),
        }
    }
}

impl std::str::FromStr for PacketKey {
    type Err = String;
    /// `tcp/443`, `udp/53`, `tcp` (port unknown), `icmp`, or a protocol number.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        let (proto, port) = split(&t);
        let proto = match proto {
            "tcp" => IPPROTO_TCP,
            "udp" => IPPROTO_UDP,
            "icmp" => IPPROTO_ICMP,
            "icmpv6" => IPPROTO_ICMPV6,
            n => n.parse::<u8>().map_err(|_| {
                format!(
                    "expected tcp/PORT, udp/PORT, icmp, icmpv6 or a protocol number, found \"{s}\""
                )
            })?,
        };
        let port = match port {
            None => None,
            Some(p) if matches!(proto, IPPROTO_TCP | IPPROTO_UDP) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("expected a port from 0 to 65535, found \"{p}\""))?,
            ),
            Some(_) => return Err(format!("only tcp and udp have ports, found \"{s}\"")),
        };
        Ok(Self { proto, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualifiers_parse_and_match() {
        let dns = PortMatch::parse("udp/53").unwrap();
        assert!(dns[0].matches("udp/53".parse().unwrap()));
        assert!(!dns[0].matches("udp/54".parse().unwrap()));
        assert!(!dns[0].matches("tcp/53".parse().unwrap()));
        assert!(!dns[0].matches("udp".parse().unwrap()), "port unknown");
        let tcp = PortMatch::parse("TCP").unwrap();
        assert!(tcp[0].matches("tcp".parse().unwrap()));
        assert!(tcp[0].matches("tcp/1".parse().unwrap()));
        let range = PortMatch::parse("tcp/8000-8999").unwrap();
        assert_eq!(range[0].to_string(), "tcp/8000-8999");
        assert_eq!(PortMatch::parse("icmp").unwrap().len(), 2);
        assert!(PortMatch::parse("tcp/9-1").unwrap_err().contains("empty"));
        assert!(
            PortMatch::parse("gre")
                .unwrap_err()
                .contains("expected a protocol")
        );
        assert!(
            PortMatch::parse("udp/70000")
                .unwrap_err()
                .contains("0-65535")
        );
    }

    #[test]
    fn slots_round_trip() {
        for key in ["tcp/0", "tcp/65535", "udp/53", "tcp", "udp", "icmp", "47"] {
            let k: PacketKey = key.parse().unwrap();
            assert_eq!(PacketKey::of_slot(k.slot()), k, "{key}");
        }
    }
}
