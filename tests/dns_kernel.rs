//! The TC egress DNS copier: copies of crafted frames through BPF_PROG_TEST_RUN, and its pinned TCX link.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};

use aya::{
    maps::{MapData, RingBuf},
    programs::{SchedClassifier, TcAttachType, TestRun as _, TestRunOptions, XdpMode},
};
use common::{
    dns::{Record, drain},
    frames::*,
};
use regionwall::{
    datapath::{Datapath, DnsCounts, Readings as _},
    pin::PinDir,
};
use regionwall_common::dns::{DNS_COPY_BYTES, DNS_RING_BYTES};

use regionwall_testkit::{
    dns,
    netns::{NetNs, unique_name},
};

/// `TC_ACT_UNSPEC` = `TCX_NEXT` (-1): the classifier's only verdict.
const PASS_ON: u32 = u32::MAX;
const RESOLVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x53];
const RESOLVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const PHONE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("valid IPv6 literal")
}

/// Runs the classifier once on `frame`; asserts the pass-through verdict
/// and that the frame comes out unchanged.
fn run(prog: &SchedClassifier, frame: &[u8]) {
    let mut out = vec![0u8; frame.len() + 256];
    let result = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })
        .unwrap_or_else(|e| panic!("test_run failed: {e:?}"));
    assert_eq!(result.return_value, PASS_ON, "verdict must be TCX_NEXT");
    out.truncate(result.data_size_out as usize);
    assert_eq!(out, frame, "the frame must leave unchanged");
}

struct Harness {
    dp: Datapath,
    ring: RingBuf<MapData>,
}

impl Harness {
    fn new() -> Self {
        let mut dp = Datapath::load().expect("loading the object (root?)");
        let ring = dp.take_dns().expect("DNS ring");
        Self { dp, ring }
    }

    fn prog(&self) -> &SchedClassifier {
        self.dp.dns_program().expect("DNS copier loaded")
    }

    fn counts(&self) -> DnsCounts {
        self.dp.dns_counts().expect("DNS counters")
    }

    /// Runs `frame`; returns the records it produced.
    fn copies(&mut self, frame: &[u8]) -> Vec<Record> {
        run(self.prog(), frame);
        drain(&mut self.ring)
    }

    /// `frame` must be copied whole, byte for byte.
    fn copied_whole(&mut self, frame: &[u8]) {
        let before = self.counts();
        let copies = self.copies(frame);
        assert_eq!(copies.len(), 1, "one record");
        let c = &copies[0];
        assert_eq!(c.wire_len as usize, frame.len());
        assert_eq!(c.captured as usize, frame.len());
        assert_eq!(c.frame, frame, "the record holds the frame");
        assert_ne!(c.ifindex, 0, "test runs come from loopback");
        let after = self.counts();
        assert_eq!(after.copied, before.copied + 1);
        assert_eq!((after.lost, after.clipped), (before.lost, before.clipped));
    }

    fn not_copied(&mut self, frame: &[u8], what: &str) {
        let before = self.counts();
        assert!(self.copies(frame).is_empty(), "{what} must not be copied");
        assert_eq!(self.counts(), before, "{what} counts nothing");
    }
}

fn answer_v4(vlans: &[u16], records: u16) -> Vec<u8> {
    let msg = dns::compressed_answer(0x1234, "example.com", records);
    ethernet(
        RESOLVER_MAC,
        vlans,
        ETH_P_IP,
        &ipv4(RESOLVER, PHONE, IPPROTO_UDP, 0, 0, &udp(53, 40000, &msg)),
    )
}

#[test]
fn answers_are_copied_byte_for_byte() {
    let mut h = Harness::new();
    let msg = dns::compressed_answer(7, "example.com", 2);
    h.copied_whole(&answer_v4(&[], 2));
    h.copied_whole(&answer_v4(&[ETH_P_8021Q], 2));
    h.copied_whole(&answer_v4(&[ETH_P_8021AD, ETH_P_8021Q], 2));
    // IPv4 options (IHL 8).
    h.copied_whole(&ethernet(
        RESOLVER_MAC,
        &[],
        ETH_P_IP,
        &ipv4(RESOLVER, PHONE, IPPROTO_UDP, 3, 0, &udp(53, 40000, &msg)),
    ));
    let (r6, p6) = (v6("2001:db8:1::1"), v6("2001:db8:1::10"));
    h.copied_whole(&ethernet(
        RESOLVER_MAC,
        &[],
        ETH_P_IPV6,
        &ipv6(r6, p6, &[], IPPROTO_UDP, &udp(53, 40000, &msg)),
    ));
    h.copied_whole(&ethernet(
        RESOLVER_MAC,
        &[ETH_P_8021Q],
        ETH_P_IPV6,
        &ipv6(r6, p6, &[], IPPROTO_UDP, &udp(53, 40000, &msg)),
    ));
    // Extension headers are walked as the XDP parser walks them.
    h.copied_whole(&ethernet(
        RESOLVER_MAC,
        &[],
        ETH_P_IPV6,
        &ipv6(r6, p6, &[Ext::DestOpts], IPPROTO_UDP, &udp(53, 40000, &msg)),
    ));
    // DNS over TCP, v4 and v6.
    let seg = tcp_data(53, 40001, &dns::tcp_stream(&[&msg]));
    h.copied_whole(&ethernet(
        RESOLVER_MAC,
        &[],
        ETH_P_IP,
        &ipv4(RESOLVER, PHONE, IPPROTO_TCP, 0, 0, &seg),
    ));
    h.copied_whole(&ethernet(
        RESOLVER_MAC,
        &[],
        ETH_P_IPV6,
        &ipv6(r6, p6, &[], IPPROTO_TCP, &seg),
    ));
    assert_eq!(h.counts().copied, 9);
}

#[test]
fn a_large_answer_is_copied_whole() {
    let mut h = Harness::new();
    // 84 A records: a ~1,400-byte frame.
    let frame = answer_v4(&[ETH_P_8021Q], 84);
    assert!((1_350..=1_514).contains(&frame.len()), "{}", frame.len());
    h.copied_whole(&frame);
}

#[test]
fn a_frame_longer_than_the_copy_is_clipped() {
    let mut h = Harness::new();
    let frame = answer_v4(&[], 190);
    assert!(frame.len() > DNS_COPY_BYTES, "{}", frame.len());
    let copies = h.copies(&frame);
    assert_eq!(copies.len(), 1);
    let c = &copies[0];
    assert_eq!(c.wire_len as usize, frame.len());
    assert_eq!(c.captured as usize, DNS_COPY_BYTES);
    assert_eq!(c.frame, frame[..DNS_COPY_BYTES]);
    assert_eq!(
        h.counts(),
        DnsCounts {
            copied: 1,
            lost: 0,
            clipped: 1
        }
    );
}

#[test]
fn other_frames_are_left_alone() {
    let mut h = Harness::new();
    let msg = dns::compressed_answer(7, "example.com", 1);
    // A query (destination port 53) leaving for a device.
    h.not_copied(
        &ethernet(
            RESOLVER_MAC,
            &[],
            ETH_P_IP,
            &ipv4(RESOLVER, PHONE, IPPROTO_UDP, 0, 0, &udp(40000, 53, &msg)),
        ),
        "a query",
    );
    h.not_copied(
        &ethernet(
            RESOLVER_MAC,
            &[],
            ETH_P_IP,
            &ipv4(RESOLVER, PHONE, IPPROTO_UDP, 0, 0, &udp(443, 40000, &msg)),
        ),
        "other UDP",
    );
    h.not_copied(
        &ethernet(
            RESOLVER_MAC,
            &[],
            ETH_P_IP,
            &ipv4(RESOLVER, PHONE, IPPROTO_TCP, 0, 0, &tcp(80, 40000)),
        ),
        "other TCP",
    );
    // A later fragment whose first payload bytes look like port 53.
    h.not_copied(
        &ethernet(
            RESOLVER_MAC,
            &[],
            ETH_P_IP,
            &ipv4(RESOLVER, PHONE, IPPROTO_UDP, 0, 185, &udp(53, 40000, &msg)),
        ),
        "an IPv4 later fragment",
    );
    h.not_copied(
        &ethernet(
            RESOLVER_MAC,
            &[],
            ETH_P_IPV6,
            &ipv6(
                v6("2001:db8:1::1"),
                v6("2001:db8:1::10"),
                &[Ext::Fragment(20)],
                IPPROTO_UDP,
                &udp(53, 40000, &msg),
            ),
        ),
        "an IPv6 later fragment",
    );
    h.not_copied(&ethernet(RESOLVER_MAC, &[], ETH_P_ARP, &[0u8; 28]), "ARP");
    // ICMP (an error quoting a DNS answer is not an answer).
    h.not_copied(
        &ethernet(
            RESOLVER_MAC,
            &[],
            ETH_P_IP,
            &ipv4(RESOLVER, PHONE, 1, 0, 0, &icmp_echo(1, 1, b"53")),
        ),
        "ICMP",
    );
    // Three VLAN tags: beyond the parser.
    h.not_copied(
        &answer_v4(&[ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q], 1),
        "a frame with three tags",
    );
    // Truncated: the UDP header is cut off.
    let mut cut = answer_v4(&[], 1);
    cut.truncate(14 + 20 + 2);
    h.not_copied(&cut, "a truncated frame");
}

#[test]
fn a_full_ring_counts_lost_answers() {
    let mut h = Harness::new();
    let frame = answer_v4(&[], 4);
    // Each record takes its size plus an 8-byte header, rounded to 8.
    let fits = DNS_RING_BYTES as usize / (16 + DNS_COPY_BYTES + 8);
    let sent = fits + 20;
    for _ in 0..sent {
        run(h.prog(), &frame);
    }
    let c = h.counts();
    assert_eq!(c.copied + c.lost, sent as u64);
    assert!(c.lost >= 20, "{c:?}");
    assert_eq!(c.copied, fits as u64, "{c:?}");
    let copies = drain(&mut h.ring);
    assert_eq!(copies.len() as u64, c.copied);
    assert!(copies.iter().all(|r| r.frame == frame));
    // Room again once read.
    h.copied_whole(&frame);
}

/// Nanoseconds per DNS answer and per other frame (printed with
/// `--nocapture`; the figures are for the report, not asserted).
#[test]
fn cost_per_frame() {
    let h = Harness::new();
    let time = |frame: &[u8]| {
        let r = h
            .prog()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: 200,
                ..TestRunOptions::default()
            })
            .expect("test_run");
        r.duration.as_nanos()
    };
    let other = ethernet(
        RESOLVER_MAC,
        &[],
        ETH_P_IP,
        &ipv4(RESOLVER, PHONE, IPPROTO_TCP, 0, 0, &tcp(443, 40000)),
    );
    println!(
        "DNS copier: {} ns per 100-byte answer, {} ns per 1,400-byte answer, {} ns per other frame",
        time(&answer_v4(&[], 2)),
        time(&answer_v4(&[], 84)),
        time(&other)
    );
}

/// The copier on a veth's egress inside a namespace of the test's own:
/// attached with a TCX link, pinned, kept when the datapath is dropped,
/// adopted (same link, new program) by the next one, and copying a real
/// answer sent from port 53.
#[test]
fn tcx_link_is_pinned_and_adopted() {
    let name = unique_name(&format!("rwtc-{}", std::process::id()));
    let ns = NetNs::create(&name).expect("namespace");
    ns.ip(&[
        "link", "add", "lan0", "type", "veth", "peer", "name", "dev0",
    ])
    .expect("veth");
    ns.ip(&["addr", "add", "10.9.0.1/24", "dev", "lan0"])
        .expect("addr");
    ns.ip(&["link", "set", "lan0", "up"]).expect("up");
    ns.ip(&["link", "set", "dev0", "up"]).expect("up");
    ns.ip(&[
        "neigh",
        "add",
        "10.9.0.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "lan0",
    ])
    .expect("neighbour");
    let root = regionwall_testkit::pins::PinRoot::new();
    let handle = ns
        .run(move || {
            let pins = PinDir::new(root.path(), "lan0");
            attach_adopt_copy(&pins);
            drop(root);
        })
        .expect("thread in the namespace");
    handle
        .join()
        .expect("test thread panicked")
        .expect("entering the namespace");
}

fn egress_prog_ids(ifindex: u32) -> Vec<u32> {
    SchedClassifier::query_tcx(ifindex, TcAttachType::Egress)
        .expect("query_tcx")
        .1
        .iter()
        .map(aya::programs::ProgramInfo::id)
        .collect()
}

fn attach_adopt_copy(pins: &PinDir) {
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(c"lan0".as_ptr()) };
    assert_ne!(ifindex, 0, "lan0 in the namespace");
    pins.create().expect("pin dir");

    let mut dp = Datapath::load().expect("load");
    dp.attach_pinned(ifindex, XdpMode::Default, pins)
        .expect("XDP attach");
    let first = dp.attach_dns(ifindex, pins).expect("TCX attach");
    dp.pin(pins).expect("pin");
    assert!(dp.dns_attached());
    assert_eq!(first.ifindex, ifindex);
    let prog1 = dp.dns_program().expect("loaded").info().expect("info").id();
    assert_eq!(first.prog_id, prog1);
    assert_eq!(egress_prog_ids(ifindex), vec![prog1], "on egress");
    let found = pins.inspect().expect("inspect").expect("pins");
    assert_eq!(found.dns_prog_id, Some(prog1));
    assert_eq!(found.refusal(regionwall_common::LAYOUT_VERSION, 0), None);
    drop(dp);

    // Survives its loader.
    let kept = pins.dns_link_facts().expect("facts").expect("pinned");
    assert_eq!(
        (kept.id, kept.ifindex, kept.prog_id),
        (first.id, ifindex, prog1)
    );
    assert_eq!(egress_prog_ids(ifindex), vec![prog1]);

    // The next controller adopts: same link, its own program, same maps.
    let found = pins.inspect().expect("inspect").expect("pins");
    assert_eq!(found.refusal(regionwall_common::LAYOUT_VERSION, 0), None);
    let mut dp =
        Datapath::adopt(regionwall::datapath::LoadOptions::default(), pins).expect("adopt");
    dp.take_over(pins).expect("XDP take over");
    let second = dp.attach_dns(ifindex, pins).expect("TCX take over");
    dp.pin(pins).expect("pin");
    let prog2 = dp.dns_program().expect("loaded").info().expect("info").id();
    assert_eq!(second.id, first.id, "the same link");
    assert_eq!(second.prog_id, prog2);
    assert_ne!(prog2, prog1);
    assert_eq!(
        egress_prog_ids(ifindex),
        vec![prog2],
        "one program on egress"
    );

    // A real answer from port 53 out of lan0.
    let before = dp.dns_counts().expect("counts");
    let mut ring = dp.take_dns().expect("ring");
    let sock = UdpSocket::bind("10.9.0.1:53").expect("bind port 53");
    let msg = dns::compressed_answer(9, "example.org", 3);
    sock.send_to(&msg, "10.9.0.2:40000").expect("send");
    let mut copies = Vec::new();
    for _ in 0..100 {
        copies.extend(drain(&mut ring));
        if !copies.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(copies.len(), 1, "{copies:?}");
    let c = &copies[0];
    assert_eq!(c.ifindex, ifindex);
    assert_eq!(c.captured, c.wire_len);
    assert!(c.frame.ends_with(&msg), "the answer is in the copy");
    assert_eq!(dp.dns_counts().expect("counts").copied, before.copied + 1);

    // Without the copier (`--no-dns`): link detached, pins gone.
    dp.remove_dns(pins).expect("remove");
    assert!(egress_prog_ids(ifindex).is_empty());
    assert!(!pins.dns_link().exists() && !pins.dns_prog().exists());
    pins.detach_link().expect("detach XDP");
}
