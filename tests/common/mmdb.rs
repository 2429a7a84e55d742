//! A minimal MaxMind DB writer for test fixtures (format 2.0: a binary
//! search tree with 24-bit records over IPv6, IPv4 under ::/96, a data
//! section of country maps, and the metadata map), so the MMDB loader is
//! tested on a real file that the `maxminddb` reader accepts.

use std::net::IpAddr;

/// (network, located country, registered country); networks must not overlap.
pub type Entry<'a> = (&'a str, Option<&'a str>, Option<&'a str>);

#[derive(Clone, Copy)]
enum Rec {
    Node(usize),
    Empty,
    Data(usize),
}

fn control(kind: u8, size: usize, out: &mut Vec<u8>) {
    let ext = kind > 7;
    let head = if ext { 0 } else { kind << 5 };
    let size_u8 = u8::try_from(size).expect("fixture sizes are small");
    assert!(size_u8 < 29, "fixture sizes are small");
    out.push(head | size_u8);
    if ext {
        out.push(kind - 7);
    }
}

fn string(s: &str, out: &mut Vec<u8>) {
    control(2, s.len(), out);
    out.extend_from_slice(s.as_bytes());
}

fn uint(kind: u8, v: u64, out: &mut Vec<u8>) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(kind, 8 - skip, out);
    out.extend_from_slice(&bytes[skip..]);
}

fn country_map(iso: Option<&str>, out: &mut Vec<u8>) {
    control(7, usize::from(iso.is_some()), out);
    if let Some(iso) = iso {
        string("iso_code", out);
        string(iso, out);
    }
}

/// Builds the bytes of an MMDB file holding `entries`.
#[must_use]
pub fn build(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty, Rec::Empty]];
    for (net, located, registered) in entries {
        let (addr, len) = net.split_once('/').expect("CIDR");
        let len: usize = len.parse().expect("length");
        let (bits, depth) = match addr.parse::<IpAddr>().expect("address") {
            IpAddr::V4(a) => (u128::from(u32::from(a)), len + 96),
            IpAddr::V6(a) => (u128::from(a), len),
        };
        let offset = data.len();
        let fields = usize::from(located.is_some()) + usize::from(registered.is_some());
        control(7, fields, &mut data);
        if located.is_some() {
            string("country", &mut data);
            country_map(*located, &mut data);
        }
        if registered.is_some() {
            string("registered_country", &mut data);
            country_map(*registered, &mut data);
        }
        let mut node = 0;
        for i in 0..depth {
            let bit = usize::from((bits >> (127 - i)) & 1 == 1);
            if i + 1 == depth {
                nodes[node][bit] = Rec::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Rec::Node(n) => n,
                    Rec::Empty => {
                        nodes.push([Rec::Empty, Rec::Empty]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Rec::Node(n);
                        n
                    }
                    Rec::Data(_) => panic!("overlapping fixture networks"),
                };
            }
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for pair in &nodes {
        for rec in pair {
            let v = match rec {
                Rec::Node(n) => *n,
                Rec::Empty => count,
                Rec::Data(off) => count + 16 + off,
            };
            let v = u32::try_from(v).expect("small tree");
            out.extend_from_slice(&v.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    let mut meta = Vec::new();
    control(7, 9, &mut meta);
    string("binary_format_major_version", &mut meta);
    uint(5, 2, &mut meta);
    string("binary_format_minor_version", &mut meta);
    uint(5, 0, &mut meta);
    string("build_epoch", &mut meta);
    uint(9, 1_764_000_000, &mut meta);
    string("database_type", &mut meta);
    string("GeoLite2-Country", &mut meta);
    string("description", &mut meta);
    control(7, 1, &mut meta);
    string("en", &mut meta);
    string("regionwall test fixture", &mut meta);
    string("ip_version", &mut meta);
    uint(5, 6, &mut meta);
    string("languages", &mut meta);
    control(11, 1, &mut meta);
    string("en", &mut meta);
    string("node_count", &mut meta);
    uint(6, u64::try_from(count).expect("small"), &mut meta);
    string("record_size", &mut meta);
    uint(5, 24, &mut meta);
    out.extend_from_slice(&meta);
    out
}
