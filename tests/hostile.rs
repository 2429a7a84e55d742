//! Hostile frames: over a million random and mutated frames through the
//! XDP program (BPF_PROG_TEST_RUN), each checked against a userspace
//! reference parser and the policy reference (`compile::decide`): the
//! verdict must be the expected one, so nothing is dropped that the policy
//! does not block and nothing it blocks gets through; the kernel's
//! per-reason counters must equal the reference's tallies.
//!
//! Frames start valid (VLAN stacks, IPv4 options and fragments, IPv6
//! extension-header chains, TCP/UDP/SCTP/ICMP, IPv4-mapped IPv6) and are
//! then truncated, bit-flipped, given bogus IHL, versions and lengths,
//! other ethertypes, or replaced by random bytes.

mod common;

use regionwall_testkit::xdp::{XDP_DROP, XDP_PASS};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::{Rng, frames::*};
use regionwall::{
    compile,
    datapath::{Datapath, Readings as _},
    policy::{PacketKey, Policy},
};
use regionwall_common::{Counter, MAX_IPV6_EXT_HEADERS, MAX_VLAN_TAGS, UnparsedAction, Verdict};

const FRAMES: u64 = 1_048_576;

/// What the reference parser reads from a frame (the kernel's rules, see
/// ebpf/src/parse.rs, written independently over a byte slice).
#[derive(Debug, PartialEq, Eq)]
enum Ref {
    NonIp,
    Unparsed(Counter),
    Ip {
        mac: [u8; 6],
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        port: Option<u16>,
        later_fragment: bool,
    },
}

fn get<const N: usize>(f: &[u8], off: usize) -> Option<[u8; N]> {
    f.get(off..off + N)?.try_into().ok()
}

fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

const MAX_L4: usize = 4096;

/// Destination port of protocols that have ports, if the 4 bytes are there.
fn ports(f: &[u8], proto: u8, l4: usize) -> Option<u16> {
    if matches!(proto, 6 | 17 | 132 | 136) && l4 <= MAX_L4 {
        get::<4>(f, l4).map(|p| be16([p[2], p[3]]))
    } else {
        None
    }
}

fn reference(f: &[u8]) -> Ref {
    let (Some(mac), Some(et)) = (get::<6>(f, 6), get::<2>(f, 12)) else {
        return Ref::Unparsed(Counter::Malformed);
    };
    let is_vlan = |t: u16| matches!(t, 0x8100 | 0x88a8 | 0x9100);
    let mut ethertype = be16(et);
    let mut off = 14;
    let mut tags = 0;
    while is_vlan(ethertype) {
        if tags == MAX_VLAN_TAGS {
            return Ref::Unparsed(Counter::UnparsedVlan);
        }
        let Some(tag) = get::<4>(f, off) else {
            return Ref::Unparsed(Counter::Malformed);
        };
        ethertype = be16([tag[2], tag[3]]);
        off += 4;
        tags += 1;
    }
    let ports = |proto: u8, l4: usize| ports(f, proto, l4);
    match ethertype {
        0x0800 => {
            let Some(h) = get::<20>(f, off) else {
                return Ref::Unparsed(Counter::Malformed);
            };
            let ihl = usize::from(h[0] & 0x0f);
            if h[0] >> 4 != 4 || ihl < 5 || off + ihl * 4 > f.len() {
                return Ref::Unparsed(Counter::Malformed);
            }
            let src = IpAddr::from([h[12], h[13], h[14], h[15]]);
            let dst = IpAddr::from([h[16], h[17], h[18], h[19]]);
            let later = be16([h[6], h[7]]) & 0x1fff != 0;
            Ref::Ip {
                mac,
                src,
                dst,
                proto: h[9],
                port: if later {
                    None
                } else {
                    ports(h[9], off + ihl * 4)
                },
                later_fragment: later,
            }
        }
        0x86dd => ipv6_ref(f, off, mac),
        0x8864 => Ref::Unparsed(Counter::UnparsedPppoe),
        _ => Ref::NonIp,
    }
}

fn ipv6_ref(f: &[u8], off: usize, mac: [u8; 6]) -> Ref {
    let Some(h) = get::<40>(f, off) else {
        return Ref::Unparsed(Counter::Malformed);
    };
    if h[0] >> 4 != 6 {
        return Ref::Unparsed(Counter::Malformed);
    }
    let src = IpAddr::from(<[u8; 16]>::try_from(&h[8..24]).expect("16"));
    let dst = IpAddr::from(<[u8; 16]>::try_from(&h[24..40]).expect("16"));
    let is_ext = |n: u8| matches!(n, 0 | 43 | 44 | 51 | 60 | 135 | 139 | 140);
    let ip = |proto: u8, port: Option<u16>, later_fragment: bool| Ref::Ip {
        mac,
        src,
        dst,
        proto,
        port,
        later_fragment,
    };
    let mut nh = h[6];
    let mut l4 = off + 40;
    let mut first = true;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !is_ext(nh) || !first {
            break;
        }
        let Some(e) = get::<4>(f, l4) else {
            // The chain runs off the frame: destination known, no L4.
            return ip(nh, None, false);
        };
        let len = match nh {
            44 => {
                first = be16([e[2], e[3]]) >> 3 == 0;
                8
            }
            51 => (usize::from(e[1]) + 2) * 4,
            _ => (usize::from(e[1]) + 1) * 8,
        };
        nh = e[0];
        l4 += len;
        if l4 > MAX_L4 {
            return Ref::Unparsed(Counter::Malformed);
        }
    }
    if !first {
        return ip(nh, None, true);
    }
    if is_ext(nh) {
        return Ref::Unparsed(Counter::UnparsedExtHeaders);
    }
    ip(nh, ports(f, nh, l4), false)
}

const POLICY: &str = r#"
[regions.r1]
cidrs = ["198.51.100.0/24", "2001:db8:bad::/48"]
[regions.r2]
cidrs = ["203.0.113.0/25", "2001:db8:2::/48"]
[regions.r3]
cidrs = ["192.0.2.128/26", "203.0.113.64/26"]

[devices.phone]
mac = ["02:00:5e:00:53:01"]
ip = ["192.0.2.10", "2001:db8:1::10"]
[devices.tv]
mac = ["02:00:5e:00:53:02"]
ip = ["192.0.2.20/31"]

[[rules]]
name = "phone-no-r1"
devices = ["phone"]
block = ["r1"]
[[rules]]
name = "tv-no-r2"
devices = ["tv"]
block = ["r2"]
[[rules]]
name = "tv-r2-https"
devices = ["tv"]
allow = ["r2"]
ports = ["tcp/443"]
[[rules]]
name = "default-dns-r1"
devices = ["default"]
block = ["r1"]
ports = ["udp/53"]
[[rules]]
name = "default-audit-r3"
devices = ["default"]
block = ["r3"]
mode = "audit"
"#;

/// The verdict the policy gives a parsed packet.
fn expected(policy: &Policy, r: &Ref, unparsed: UnparsedAction) -> u32 {
    match r {
        Ref::NonIp => XDP_PASS,
        Ref::Unparsed(_) => match unparsed {
            UnparsedAction::Pass => XDP_PASS,
            UnparsedAction::Drop => XDP_DROP,
        },
        Ref::Ip {
            mac,
            src,
            dst,
            proto,
            port,
            ..
        } => {
            // IPv4-mapped IPv6 destinations are looked up as IPv4.
            let dst = match dst {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(*dst, IpAddr::V4),
                IpAddr::V4(_) => *dst,
            };
            let device = compile::device_for(policy, Some(*mac), Some(*src));
            let regions = compile::regions_containing(policy, dst);
            let key = PacketKey {
                proto: *proto,
                port: *port,
            };
            let d = compile::decide(policy, device, &regions, key);
            if d.verdict == Verdict::Drop as u8 {
                XDP_DROP
            } else {
                XDP_PASS
            }
        }
    }
}

struct Gen {
    rng: Rng,
}

impl Gen {
    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        #[expect(clippy::cast_possible_truncation, reason = "small index")]
        items[self.below(items.len() as u64) as usize]
    }
    fn byte(&mut self) -> u8 {
        self.rng.next_u64().to_le_bytes()[0]
    }

    fn v4(&mut self) -> Ipv4Addr {
        let base: [u8; 4] = self.pick(&[
            [198, 51, 100, 0],
            [203, 0, 113, 0],
            [192, 0, 2, 0],
            [10, 1, 2, 0],
        ]);
        if self.below(8) == 0 {
            return Ipv4Addr::from(
                self.rng.next_u64().to_le_bytes()[..4]
                    .try_into()
                    .unwrap_or([0; 4]),
            );
        }
        Ipv4Addr::new(base[0], base[1], base[2], self.byte())
    }

    fn v6(&mut self) -> Ipv6Addr {
        match self.below(5) {
            0 => self.v4().to_ipv6_mapped(),
            1 => Ipv6Addr::from(
                u128::from(self.rng.next_u64()) << 64 | u128::from(self.rng.next_u64()),
            ),
            _ => {
                let prefix: u64 = self.pick(&[
                    0x2001_0db8_0bad_0000,
                    0x2001_0db8_0002_0000,
                    0x2001_0db8_0001_0000,
                    0x2001_0db8_ffff_0000,
                ]);
                let low = if self.below(2) == 0 {
                    0x10
                } else {
                    self.rng.next_u64()
                };
                Ipv6Addr::from(u128::from(prefix) << 64 | u128::from(low))
            }
        }
    }

    fn l4(&mut self, proto: u8) -> Vec<u8> {
        let port = self.pick(&[53u16, 443, 80, 9, 0, 65535]);
        match proto {
            6 => tcp(40000, port),
            17 | 136 => udp(40000, port, b"payload"),
            132 => {
                let mut s = udp(40000, port, b"");
                s.extend_from_slice(&[0; 4]);
                s
            }
            _ => icmp_echo(1, 1, b""),
        }
    }

    /// A valid frame of some kind.
    fn valid(&mut self) -> Vec<u8> {
        let mac = match self.below(4) {
            0 => [2, 0, 0x5e, 0, 0x53, 1],
            1 => [2, 0, 0x5e, 0, 0x53, 2],
            _ => [2, 0, 0, 0, 0, self.byte()],
        };
        let vlans: Vec<u16> = (0..self.pick(&[0usize, 0, 0, 1, 2, 3]))
            .map(|_| self.pick(&[ETH_P_8021Q, ETH_P_8021AD, 0x9100]))
            .collect();
        let proto = self.pick(&[6u8, 17, 17, 132, 136, 1, 58]);
        let payload = self.l4(proto);
        match self.below(10) {
            0 => ethernet(mac, &vlans, ETH_P_ARP, &[0; 28]),
            1 => ethernet(mac, &vlans, ETH_P_PPP_SES, &[0x11, 0, 0, 1, 0, 20, 0, 0x21]),
            2..=5 => {
                let src = if self.below(2) == 0 {
                    Ipv4Addr::new(192, 0, 2, self.pick(&[10, 20, 21, 99]))
                } else {
                    self.v4()
                };
                let frag = if self.below(6) == 0 {
                    self.pick(&[0x00b9u16, 0x2000, 0x2001])
                } else {
                    0
                };
                #[expect(clippy::cast_possible_truncation, reason = "below(4)")]
                let options = self.below(4) as u8;
                let dst = self.v4();
                ethernet(
                    mac,
                    &vlans,
                    ETH_P_IP,
                    &ipv4(src, dst, proto, options, frag, &payload),
                )
            }
            _ => {
                let src = if self.below(2) == 0 {
                    "2001:db8:1::10".parse().unwrap_or(Ipv6Addr::LOCALHOST)
                } else {
                    self.v6()
                };
                let exts: Vec<Ext> = (0..self.pick(&[0usize, 0, 1, 2, 3, 6, 7]))
                    .map(|_| match self.below(5) {
                        0 => Ext::HopByHop,
                        1 => Ext::Routing,
                        2 => Ext::DestOpts,
                        3 => Ext::Fragment(0),
                        _ => Ext::Fragment(self.pick(&[1u16, 185])),
                    })
                    .collect();
                let dst = self.v6();
                ethernet(
                    mac,
                    &vlans,
                    ETH_P_IPV6,
                    &ipv6(src, dst, &exts, proto, &payload),
                )
            }
        }
    }

    /// A valid frame, then (mostly) broken.
    #[expect(clippy::cast_possible_truncation, reason = "lengths below 4096")]
    fn frame(&mut self) -> Vec<u8> {
        if self.below(50) == 0 {
            let len = 14 + self.below(200) as usize;
            return (0..len).map(|_| self.byte()).collect();
        }
        let mut f = self.valid();
        // Where the L3 header starts, if the frame has VLAN tags.
        let mut l3 = 14;
        while l3 + 4 <= f.len() && matches!(be16([f[l3 - 2], f[l3 - 1]]), 0x8100 | 0x88a8 | 0x9100)
        {
            l3 += 4;
        }
        for _ in 0..self.below(3) {
            match self.below(8) {
                0 => {
                    let keep = 14 + self.below(f.len() as u64 - 13) as usize;
                    f.truncate(keep);
                }
                1 if f.len() > l3 => {
                    // Bogus IHL / version nibble.
                    f[l3] = self.byte();
                }
                2 if f.len() > l3 + 5 => {
                    // Wrong total / payload length.
                    let i = l3 + self.pick(&[2usize, 3, 4, 5]);
                    f[i] = self.byte();
                }
                3 if f.len() > l3 + 9 => {
                    // Another next header / protocol / fragment field.
                    let i = l3 + self.pick(&[6usize, 7, 9]);
                    let any = self.byte();
                    f[i] = self.pick(&[0u8, 6, 17, 43, 44, 51, 60, 135, 139, 140, 59, any]);
                }
                4 => {
                    let i = self.below(f.len() as u64) as usize;
                    f[i] ^= 1 << self.below(8);
                }
                5 if f.len() > l3 + 44 => {
                    // An extension header's length byte.
                    let i = l3 + 40 + self.pick(&[1usize, 9, 17]);
                    if i < f.len() {
                        f[i] = self.byte();
                    }
                }
                6 => {
                    let junk = self.below(64) as usize;
                    for _ in 0..junk {
                        let b = self.byte();
                        f.push(b);
                    }
                }
                _ => {
                    let et =
                        self.pick(&[0x0800u16, 0x86dd, 0x8100, 0x88a8, 0x8864, 0x0806, 0x9100]);
                    f[12..14].copy_from_slice(&et.to_be_bytes());
                }
            }
        }
        f.truncate(3000);
        f
    }
}

#[test]
fn a_million_hostile_frames_match_the_reference() {
    let policy = common::policy(POLICY);
    let compiled = compile::compile(&policy).expect("compile");
    let mut dp = Datapath::load().expect("load");
    dp.publish(&compiled, 1).expect("publish");
    let mut frames = Gen {
        rng: Rng(0x5eed_f00d_dead_beef),
    };
    let mut tally = std::collections::BTreeMap::<String, u64>::new();
    let mut verdicts = [0u64; 2];
    let start = std::time::Instant::now();
    for i in 0..FRAMES {
        // The second half with --unparsed drop.
        let unparsed = if i < FRAMES / 2 {
            UnparsedAction::Pass
        } else {
            UnparsedAction::Drop
        };
        if i == FRAMES / 2 {
            dp.set_unparsed(unparsed).expect("set unparsed");
        }
        let f = frames.frame();
        let r = reference(&f);
        let want = expected(&policy, &r, unparsed);
        let got = common::prog::verdict_of(&dp, &f);
        assert_eq!(
            got, want,
            "frame {i}: kernel {got}, reference {want} ({r:?})\n{f:02x?}"
        );
        verdicts[usize::from(got == XDP_DROP)] += 1;
        let kind = match &r {
            Ref::NonIp => "non-IP".to_string(),
            Ref::Unparsed(c) => format!("{c:?}"),
            Ref::Ip {
                later_fragment: true,
                ..
            } => "LaterFragments".into(),
            Ref::Ip { .. } => "IP".into(),
        };
        *tally.entry(kind).or_default() += 1;
    }
    println!(
        "{FRAMES} frames in {:?}: passed {}, dropped {}",
        start.elapsed(),
        verdicts[0],
        verdicts[1]
    );
    println!("reference classification: {tally:?}");
    let c = dp.counters().expect("counters");
    let t = |k: &str| tally.get(k).copied().unwrap_or(0);
    for (counter, key) in [
        (Counter::NonIp, "non-IP"),
        (Counter::Malformed, "Malformed"),
        (Counter::UnparsedVlan, "UnparsedVlan"),
        (Counter::UnparsedExtHeaders, "UnparsedExtHeaders"),
        (Counter::UnparsedPppoe, "UnparsedPppoe"),
        (Counter::LaterFragments, "LaterFragments"),
    ] {
        println!("kernel {counter:?} = {}", c[counter as usize]);
        assert_eq!(c[counter as usize], t(key), "{counter:?}");
    }
    assert_eq!(c[Counter::Frames as usize], FRAMES);
    assert_eq!(c[Counter::BadDecision as usize], 0);
    assert_eq!(c[Counter::BadLookup as usize], 0);
    for k in [
        "IP",
        "Malformed",
        "UnparsedVlan",
        "UnparsedExtHeaders",
        "UnparsedPppoe",
        "LaterFragments",
        "non-IP",
    ] {
        assert!(t(k) > 1000, "the generator covers {k}: {tally:?}");
    }
    assert!(verdicts[1] > 10_000, "policy drops exercised");
}
