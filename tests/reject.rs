//! `mode = "reject"` on crafted frames through BPF_PROG_TEST_RUN: the
//! answer the program sends back (XDP_TX) checked byte by byte, the
//! packets it must never answer, and the per-device rate limit.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::maps::{MapData, RingBuf};
use common::frames::*;
use regionwall::datapath::{Datapath, Readings as _};
use regionwall_common::{Counter, Verdict};
use regionwall_testkit::xdp::{XDP_DROP, XDP_PASS, XDP_TX};

const PHONE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const PHONE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const BLOCKED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const DROPPED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const ALLOWED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);

fn phone6() -> Ipv6Addr {
    "2001:db8:1::10".parse().expect("IPv6 literal")
}
fn blocked6() -> Ipv6Addr {
    "2001:db8:bad::7".parse().expect("IPv6 literal")
}

/// Multicast ranges are in the rejected region so that the program sees a
/// reject verdict for them and must still stay silent.
const POLICY: &str = r#"
[regions.blocked]
cidrs = ["198.51.100.0/24", "2001:db8:bad::/48", "224.0.0.0/4", "ff00::/8"]

[regions.dropped]
cidrs = ["203.0.113.0/24", "2001:db8:d0d::/48"]

[[rules]]
name = "refuse"
devices = ["default"]
block = ["blocked"]
mode = "reject"

[[rules]]
name = "silent"
devices = ["default"]
block = ["dropped"]
"#;

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;

/// A TCP segment (20-byte header) with `payload`; checksum by the IP builder.
fn tcp_seg(seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&40000u16.to_be_bytes());
    t.extend_from_slice(&443u16.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

fn v4(vlans: &[u16], dst: Ipv4Addr, proto: u8, opts: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
    ethernet(
        PHONE_MAC,
        vlans,
        ETH_P_IP,
        &ipv4(PHONE, dst, proto, opts, frag, l4),
    )
}

fn v6(vlans: &[u16], dst: Ipv6Addr, exts: &[Ext], proto: u8, l4: &[u8]) -> Vec<u8> {
    ethernet(
        PHONE_MAC,
        vlans,
        ETH_P_IPV6,
        &ipv6(phone6(), dst, exts, proto, l4),
    )
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

struct Harness {
    dp: Datapath,
    ring: RingBuf<MapData>,
}

impl Harness {
    fn new() -> Self {
        let (mut dp, _) = common::datapath_with(POLICY);
        let ring = dp.take_events().expect("event ring");
        Self { dp, ring }
    }

    fn counter(&self, c: Counter) -> u64 {
        self.dp.counters().expect("counters")[c as usize]
    }

    /// Runs the frame; returns the action and the frame as left.
    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        common::prog::run_out(self.dp.program().expect("program"), frame)
    }

    /// Verdicts of the events since the last call.
    fn event_verdicts(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            out.push(
                regionwall::events::decode(&item)
                    .expect("event of full size")
                    .verdict,
            );
        }
        out
    }

    /// Runs a frame that must be answered; returns the answer after
    /// checking the counters and the event.
    fn answered(&mut self, name: &str, frame: &[u8]) -> Vec<u8> {
        let sent = self.counter(Counter::RejectsSent);
        let (action, out) = self.run(frame);
        assert_eq!(action, XDP_TX, "{name}: answered with XDP_TX");
        assert_eq!(
            self.counter(Counter::RejectsSent),
            sent + 1,
            "{name}: counted"
        );
        assert_eq!(
            self.event_verdicts(),
            vec![Verdict::Reject as u8],
            "{name}: one reject event"
        );
        out
    }

    /// Runs a frame that must be dropped unanswered.
    fn silent(&mut self, name: &str, frame: &[u8]) {
        let unanswerable = self.counter(Counter::RejectsUnanswerable);
        let (action, _) = self.run(frame);
        assert_eq!(action, XDP_DROP, "{name}: dropped, not answered");
        assert_eq!(
            self.counter(Counter::RejectsUnanswerable),
            unanswerable + 1,
            "{name}: counted unanswerable"
        );
        assert_eq!(
            self.event_verdicts(),
            vec![Verdict::Reject as u8],
            "{name}: still reported as a reject"
        );
    }
}

/// Ethernet addresses swapped, VLAN tags and ethertype kept.
fn check_l2(name: &str, orig: &[u8], reply: &[u8], l3: usize) {
    assert_eq!(reply[0..6], orig[6..12], "{name}: destination MAC");
    assert_eq!(reply[6..12], orig[0..6], "{name}: source MAC");
    assert_eq!(
        reply[12..l3],
        orig[12..l3],
        "{name}: VLAN tags and ethertype"
    );
}

/// The reply's IPv4 header: returns its payload.
fn check_ipv4<'a>(name: &str, o: &[u8], r: &'a [u8], proto: u8) -> &'a [u8] {
    assert_eq!(r[0], 0x45, "{name}: version and IHL");
    assert_eq!(usize::from(be16(&r[2..4])), r.len(), "{name}: total length");
    assert_eq!(be16(&r[6..8]) & 0x1fff, 0, "{name}: not a fragment");
    assert_eq!(r[8], 64, "{name}: TTL");
    assert_eq!(r[9], proto, "{name}: protocol");
    assert_eq!(
        r[12..16],
        o[16..20],
        "{name}: source is the original destination"
    );
    assert_eq!(
        r[16..20],
        o[12..16],
        "{name}: destination is the original source"
    );
    assert_eq!(checksum(&[&r[..20]]), 0, "{name}: IPv4 header checksum");
    &r[20..]
}

/// The reply's IPv6 header: returns its payload.
fn check_ipv6<'a>(name: &str, o: &[u8], r: &'a [u8], proto: u8) -> &'a [u8] {
    assert_eq!(r[0..4], [0x60, 0, 0, 0], "{name}: version, class, flow");
    assert_eq!(
        usize::from(be16(&r[4..6])),
        r.len() - 40,
        "{name}: payload length"
    );
    assert_eq!(r[6], proto, "{name}: next header");
    assert_eq!(r[7], 64, "{name}: hop limit");
    assert_eq!(
        r[8..24],
        o[24..40],
        "{name}: source is the original destination"
    );
    assert_eq!(
        r[24..40],
        o[8..24],
        "{name}: destination is the original source"
    );
    &r[40..]
}

/// Pseudo-header checksum of an L4 message (0 when correct).
fn l4_sum(v6: bool, r: &[u8], l4: &[u8], proto: u8) -> u16 {
    let len4 = u16::try_from(l4.len()).expect("short").to_be_bytes();
    let len6 = u32::try_from(l4.len()).expect("short").to_be_bytes();
    if v6 {
        checksum(&[&r[8..24], &r[24..40], &len6, &[0, 0, 0, proto], l4])
    } else {
        checksum(&[&r[12..16], &r[16..20], &[0, proto], &len4, l4])
    }
}

/// A RST answering the TCP header `ot`.
fn check_rst(name: &str, v6: bool, r: &[u8], ot: &[u8], seq: u32, ack: u32, flags: u8) {
    let t = &r[if v6 { 40 } else { 20 }..];
    assert_eq!(t.len(), 20, "{name}: a bare TCP header");
    assert_eq!(t[0..2], ot[2..4], "{name}: source port");
    assert_eq!(t[2..4], ot[0..2], "{name}: destination port");
    assert_eq!(be32(&t[4..8]), seq, "{name}: seq");
    assert_eq!(be32(&t[8..12]), ack, "{name}: ack");
    assert_eq!(t[12], 0x50, "{name}: data offset");
    assert_eq!(t[13], flags, "{name}: flags");
    assert_eq!(be16(&t[18..20]), 0, "{name}: urgent pointer");
    assert_eq!(l4_sum(v6, r, t, IPPROTO_TCP), 0, "{name}: TCP checksum");
}

/// Name, VLAN tags, TCP segment, IP option words; the answer's seq, ack
/// and flags.
type RstCase = (String, Vec<u16>, Vec<u8>, u8, u32, u32, u8);
/// Name, VLAN tags, protocol, IP option words, L4 bytes.
type IcmpCase = (&'static str, Vec<u16>, u8, u8, Vec<u8>);

#[test]
fn tcp_is_answered_with_a_rst() {
    let mut h = Harness::new();
    let payload = b"hello";
    let cases: Vec<RstCase> = vec![
        (
            "syn".into(),
            vec![],
            tcp_seg(1000, 0, SYN, b""),
            0,
            0,
            1001,
            RST | ACK,
        ),
        (
            "syn, 1 tag".into(),
            vec![ETH_P_8021Q],
            tcp_seg(1000, 0, SYN, b""),
            0,
            0,
            1001,
            RST | ACK,
        ),
        (
            "syn, 2 tags".into(),
            vec![ETH_P_8021AD, ETH_P_8021Q],
            tcp_seg(1000, 0, SYN, b""),
            0,
            0,
            1001,
            RST | ACK,
        ),
        (
            "syn with data".into(),
            vec![],
            tcp_seg(u32::MAX, 0, SYN, payload),
            0,
            0,
            5, // wraps: MAX + 1 + 5
            RST | ACK,
        ),
        (
            "fin with data, no ack".into(),
            vec![],
            tcp_seg(7, 0, FIN, payload),
            0,
            0,
            13,
            RST | ACK,
        ),
        (
            "ack: seq from the ack".into(),
            vec![],
            tcp_seg(7, 0xdead_beef, ACK, payload),
            0,
            0xdead_beef,
            0,
            RST,
        ),
        (
            "syn with IP options".into(),
            vec![ETH_P_8021Q],
            tcp_seg(1000, 0, SYN, b""),
            2,
            0,
            1001,
            RST | ACK,
        ),
    ];
    for (name, vlans, tcp, opts, seq, ack, flags) in &cases {
        let frame = v4(vlans, BLOCKED, IPPROTO_TCP, *opts, 0, tcp);
        let reply = h.answered(name, &frame);
        let l3 = 14 + 4 * vlans.len();
        assert_eq!(reply.len(), l3 + 40, "{name}: frame length");
        check_l2(name, &frame, &reply, l3);
        check_ipv4(name, &frame[l3..], &reply[l3..], IPPROTO_TCP);
        let ot = &frame[l3 + 20 + 4 * usize::from(*opts)..];
        check_rst(name, false, &reply[l3..], ot, *seq, *ack, *flags);
    }
    // IPv6, with and without an extension header (not sent back).
    for (name, vlans, exts) in [
        ("v6 syn", vec![], vec![]),
        ("v6 syn, 2 tags", vec![ETH_P_8021AD, ETH_P_8021Q], vec![]),
        ("v6 syn, hop-by-hop", vec![ETH_P_8021Q], vec![Ext::HopByHop]),
    ] {
        let tcp = tcp_seg(41, 0, SYN, payload);
        let frame = v6(&vlans, blocked6(), &exts, IPPROTO_TCP, &tcp);
        let reply = h.answered(name, &frame);
        let l3 = 14 + 4 * vlans.len();
        assert_eq!(reply.len(), l3 + 60, "{name}: frame length");
        check_l2(name, &frame, &reply, l3);
        check_ipv6(name, &frame[l3..], &reply[l3..], IPPROTO_TCP);
        check_rst(name, true, &reply[l3..], &tcp, 0, 41 + 1 + 5, RST | ACK);
    }
}

#[test]
fn other_ipv4_is_answered_with_icmp_admin_prohibited() {
    let mut h = Harness::new();
    let long = [0x5au8; 100];
    let cases: Vec<IcmpCase> = vec![
        ("udp", vec![], IPPROTO_UDP, 0, udp(40000, 53, b"query")),
        (
            "udp, 1 tag",
            vec![ETH_P_8021Q],
            IPPROTO_UDP,
            0,
            udp(1, 2, &long),
        ),
        (
            "udp, 2 tags, options",
            vec![ETH_P_8021AD, ETH_P_8021Q],
            IPPROTO_UDP,
            3,
            udp(1, 2, &long),
        ),
        (
            "echo request",
            vec![],
            IPPROTO_ICMP,
            0,
            icmp_echo(7, 1, b"ping"),
        ),
        ("gre", vec![], 47, 0, vec![0; 12]),
        ("first fragment", vec![], IPPROTO_UDP, 0, udp(1, 2, &long)),
    ];
    for (name, vlans, proto, opts, l4) in &cases {
        let frag = if *name == "first fragment" { 0x2000 } else { 0 };
        let frame = v4(vlans, BLOCKED, *proto, *opts, frag, l4);
        let reply = h.answered(name, &frame);
        let l3 = 14 + 4 * vlans.len();
        let quote = 20 + 4 * usize::from(*opts) + 8;
        assert_eq!(reply.len(), l3 + 28 + quote, "{name}: frame length");
        check_l2(name, &frame, &reply, l3);
        let icmp = check_ipv4(name, &frame[l3..], &reply[l3..], IPPROTO_ICMP);
        assert_eq!(icmp[0..2], [3, 13], "{name}: type 3 code 13");
        assert_eq!(icmp[4..8], [0; 4], "{name}: unused word");
        assert_eq!(checksum(&[icmp]), 0, "{name}: ICMP checksum");
        assert_eq!(
            icmp[8..],
            frame[l3..l3 + quote],
            "{name}: quotes the IP header and 8 bytes"
        );
    }
}

#[test]
fn other_ipv6_is_answered_with_icmpv6_admin_prohibited() {
    let mut h = Harness::new();
    let long = [0xa5u8; 100];
    for (name, vlans, exts, proto, l4, quote) in [
        // 40 + 8 + 7 = 55 bytes: the whole words of it.
        (
            "udp",
            vec![],
            vec![],
            IPPROTO_UDP,
            udp(1, 2, b"payload"),
            52,
        ),
        (
            "udp, 1 tag",
            vec![ETH_P_8021Q],
            vec![],
            IPPROTO_UDP,
            udp(1, 2, &long),
            64,
        ),
        (
            "udp, 2 tags, dest opts",
            vec![ETH_P_8021AD, ETH_P_8021Q],
            vec![Ext::DestOpts],
            IPPROTO_UDP,
            udp(1, 2, &long),
            64,
        ),
        (
            "echo request",
            vec![],
            vec![],
            IPPROTO_ICMPV6,
            icmp(128, 0, &[0, 1, 0, 1]),
            48,
        ),
    ] {
        let frame = v6(&vlans, blocked6(), &exts, proto, &l4);
        let reply = h.answered(name, &frame);
        let l3 = 14 + 4 * vlans.len();
        assert_eq!(reply.len(), l3 + 48 + quote, "{name}: frame length");
        check_l2(name, &frame, &reply, l3);
        let r = &reply[l3..];
        let icmp = check_ipv6(name, &frame[l3..], r, IPPROTO_ICMPV6);
        assert_eq!(icmp[0..2], [1, 1], "{name}: type 1 code 1");
        assert_eq!(icmp[4..8], [0; 4], "{name}: unused word");
        assert_eq!(
            l4_sum(true, r, icmp, IPPROTO_ICMPV6),
            0,
            "{name}: ICMPv6 checksum"
        );
        assert_eq!(
            icmp[8..],
            frame[l3..l3 + quote],
            "{name}: quotes the packet"
        );
    }
}

#[test]
fn never_answers_rst_icmp_errors_later_fragments_or_multicast() {
    let mut h = Harness::new();
    let long = [0u8; 64];
    let mut broadcast = v4(&[], BLOCKED, IPPROTO_UDP, 0, 0, &udp(1, 2, b"x"));
    broadcast[0..6].copy_from_slice(&[0xff; 6]);
    let mut l2_multicast = v6(&[], blocked6(), &[], IPPROTO_UDP, &udp(1, 2, b"x"));
    l2_multicast[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    let cases = [
        (
            "rst",
            v4(&[], BLOCKED, IPPROTO_TCP, 0, 0, &tcp_seg(1, 0, RST, b"")),
        ),
        (
            "rst+ack",
            v4(
                &[],
                BLOCKED,
                IPPROTO_TCP,
                0,
                0,
                &tcp_seg(1, 2, RST | ACK, b""),
            ),
        ),
        (
            "v6 rst",
            v6(&[], blocked6(), &[], IPPROTO_TCP, &tcp_seg(1, 0, RST, b"")),
        ),
        (
            "icmp unreachable",
            v4(&[], BLOCKED, IPPROTO_ICMP, 0, 0, &icmp(3, 1, &[0; 36])),
        ),
        (
            "icmp time exceeded",
            v4(&[], BLOCKED, IPPROTO_ICMP, 0, 0, &icmp(11, 0, &[0; 36])),
        ),
        (
            "icmpv6 packet too big",
            v6(&[], blocked6(), &[], IPPROTO_ICMPV6, &icmp(2, 0, &[0; 52])),
        ),
        (
            "later fragment",
            v4(&[], BLOCKED, IPPROTO_UDP, 0, 0x0010, &long),
        ),
        (
            "v6 later fragment",
            v6(&[], blocked6(), &[Ext::Fragment(8)], IPPROTO_UDP, &long),
        ),
        (
            "multicast",
            v4(
                &[],
                Ipv4Addr::new(239, 1, 2, 3),
                IPPROTO_UDP,
                0,
                0,
                &udp(1, 2, b"x"),
            ),
        ),
        (
            "v6 multicast",
            v6(
                &[],
                "ff02::fb".parse().expect("IPv6 literal"),
                &[],
                IPPROTO_UDP,
                &udp(1, 2, b"x"),
            ),
        ),
        ("broadcast MAC", broadcast),
        ("multicast MAC", l2_multicast),
    ];
    for (name, frame) in &cases {
        h.silent(name, frame);
    }
    // Other verdicts never reach the reject path.
    let (action, _) = h.run(&v4(
        &[],
        DROPPED,
        IPPROTO_TCP,
        0,
        0,
        &tcp_seg(1, 0, SYN, b""),
    ));
    assert_eq!(action, XDP_DROP, "enforce: a plain drop");
    let (action, _) = h.run(&v4(
        &[],
        ALLOWED,
        IPPROTO_TCP,
        0,
        0,
        &tcp_seg(1, 0, SYN, b""),
    ));
    assert_eq!(action, XDP_PASS, "no rule: pass");
    assert_eq!(h.counter(Counter::RejectsSent), 0, "nothing answered");
}

/// Pins this thread to the CPU it runs on: the limiter is per CPU.
fn pin_to_this_cpu() {
    // SAFETY: plain libc calls on a zeroed cpu_set_t of our own.
    unsafe {
        let cpu = usize::try_from(libc::sched_getcpu()).expect("sched_getcpu");
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set),
            0,
            "sched_setaffinity"
        );
    }
}

#[test]
fn answers_are_rate_limited_per_device() {
    let mut h = Harness::new();
    pin_to_this_cpu();
    // One answer a second, bursts of 3: a burst of 8 gets 3 answers.
    h.dp.set_reject_limit(1, 3).expect("reject limit");
    let frame = v4(&[], BLOCKED, IPPROTO_TCP, 0, 0, &tcp_seg(1, 0, SYN, b""));
    let actions: Vec<u32> = (0..8).map(|_| h.run(&frame).0).collect();
    assert_eq!(
        actions,
        [
            XDP_TX, XDP_TX, XDP_TX, XDP_DROP, XDP_DROP, XDP_DROP, XDP_DROP, XDP_DROP
        ]
    );
    assert_eq!(h.counter(Counter::RejectsSent), 3);
    assert_eq!(h.counter(Counter::RejectsSuppressed), 5);
    assert_eq!(h.counter(Counter::RejectsUnanswerable), 0);
    // Every one is still a reject in the events and the traffic counters.
    assert_eq!(h.event_verdicts().len(), 8);
    let traffic = h.dp.traffic(1).expect("traffic");
    let rejected: u64 = traffic
        .iter()
        .filter(|t| t.verdict == regionwall::verdict::Verdict::Reject)
        .map(|t| t.counter.packets)
        .sum();
    assert_eq!(rejected, 8);
}

/// The benchmark object's `bench_syn*` drivers (the bench's reject row)
/// write a SYN the production path drops or answers, for each family.
#[test]
fn bench_drivers_are_dropped_and_answered() {
    let compiled = regionwall::compile::compile(&common::policy(POLICY)).expect("compile");
    let mut dp = Datapath::load_bench(regionwall::datapath::LoadOptions::default())
        .expect("load the benchmark object");
    dp.publish(&compiled, 1).expect("publish");
    for len in [54, 74] {
        let frame = vec![0u8; len];
        for (name, want) in [
            ("bench_syn", XDP_PASS),
            ("bench_syn_drop", XDP_DROP),
            ("bench_syn_reject", XDP_TX),
        ] {
            let prog = dp.program_named(name).expect("bench program");
            let (action, out) = common::prog::run_out(prog, &frame);
            assert_eq!(action, want, "{name} on {len} bytes");
            assert_eq!(out.len(), len, "{name}: same length");
            if name == "bench_syn_reject" {
                // A RST+ACK back to the SYN's source port 12345.
                let tcp = &out[len - 20..];
                assert_eq!(be16(&tcp[2..4]), 12345, "{name}: to the source port");
                assert_eq!(tcp[13], RST | ACK, "{name}: RST+ACK");
            }
        }
    }
}
