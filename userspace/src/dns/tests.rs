//! Decoding answers into names: chains, transports, hostile messages, and
//! the cache's bounds.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use regionwall_testkit::{
    dns::{self, Rr, TYPE_A, TYPE_AAAA},
    frames::{self, DST_MAC, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6},
    rng::Rng,
};

use super::{NameCache, Names, frame, message};

const GW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const PHONE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const SRC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn udp_answer(message: &[u8]) -> Vec<u8> {
    frames::ethernet(
        SRC_MAC,
        &[],
        ETH_P_IP,
        &frames::ipv4(GW, PHONE, 17, 0, 0, &frames::udp(53, 40_000, message)),
    )
}

fn chain() -> Vec<u8> {
    dns::response(
        7,
        "Telemetry.Example.com",
        TYPE_A,
        0,
        &[
            Rr::Cname("telemetry.example.com", "edge.cdn.example.net", 60),
            Rr::Cname("edge.cdn.example.net", "pop-7.cdn.example.net", 600),
            Rr::A("pop-7.cdn.example.net", Ipv4Addr::new(203, 0, 113, 7), 30),
            Rr::A("pop-7.cdn.example.net", Ipv4Addr::new(203, 0, 113, 8), 3000),
            // Not on the question's chain: never named after it.
            Rr::A("other.example.org", Ipv4Addr::new(198, 51, 100, 9), 30),
        ],
    )
}

#[test]
fn a_cname_chain_names_every_address_with_query_and_canonical() {
    let r = message::parse(&chain()).expect("parses");
    assert_eq!(r.query, "telemetry.example.com");
    assert_eq!(r.addresses.len(), 2);
    assert_eq!(r.addresses[0].addr, v4(203, 0, 113, 7));
    assert_eq!(r.addresses[0].canonical, "pop-7.cdn.example.net");
    // The smallest TTL on the way: the first CNAME's 60 s bounds the 3000.
    assert_eq!(r.addresses[0].ttl, 30);
    assert_eq!(r.addresses[1].ttl, 60);

    let mut names = Names::new(NameCache::new(16));
    let now = Instant::now();
    names.ingest_frame(&udp_answer(&chain()), now);
    let found = names
        .lookup(&DST_MAC, v4(203, 0, 113, 8), now)
        .expect("named");
    assert_eq!(&*found.name, "telemetry.example.com");
    assert_eq!(&*found.canonical, "pop-7.cdn.example.net");
    assert!(names.lookup(&DST_MAC, v4(198, 51, 100, 9), now).is_none());
    // Another device never looked it up.
    assert!(
        names
            .lookup(&[2, 0, 0, 0, 0, 9], v4(203, 0, 113, 8), now)
            .is_none()
    );
    let s = names.stats();
    assert_eq!((s.answers, s.addresses, s.malformed), (1, 2, 0));
}

#[test]
fn aaaa_answers_behind_two_vlan_tags_are_named() {
    let phone6: Ipv6Addr = "2001:db8::10".parse().expect("addr");
    let gw6: Ipv6Addr = "2001:db8::1".parse().expect("addr");
    let server: Ipv6Addr = "2001:db8:5::7".parse().expect("addr");
    let msg = dns::response(
        9,
        "tv.example",
        TYPE_AAAA,
        0,
        &[Rr::Aaaa("tv.example", server, 300)],
    );
    let f = frames::ethernet(
        SRC_MAC,
        &[ETH_P_8021AD, ETH_P_8021Q],
        ETH_P_IPV6,
        &frames::ipv6(gw6, phone6, &[], 17, &frames::udp(53, 5353, &msg)),
    );
    let parsed = frame::parse(&f).expect("frame");
    assert_eq!(parsed.client, IpAddr::V6(phone6));
    let mut names = Names::new(NameCache::new(16));
    let now = Instant::now();
    names.ingest_frame(&f, now);
    let found = names
        .lookup(&DST_MAC, IpAddr::V6(server), now)
        .expect("named");
    assert_eq!(&*found.name, "tv.example");
    assert_eq!(found.name, found.canonical);
}

#[test]
fn tcp_segments_give_every_whole_message_and_count_the_partial_one() {
    let a = dns::response(
        1,
        "a.example",
        TYPE_A,
        0,
        &[Rr::A("a.example", Ipv4Addr::new(203, 0, 113, 1), 60)],
    );
    let b = dns::response(
        2,
        "b.example",
        TYPE_A,
        0,
        &[Rr::A("b.example", Ipv4Addr::new(203, 0, 113, 2), 60)],
    );
    let mut stream = dns::tcp_stream(&[&a, &b]);
    let (messages, partial) = frame::tcp_messages(&stream);
    assert_eq!((messages.len(), partial), (2, false));
    stream.extend_from_slice(&[0, 200, 1, 2, 3]);
    let (messages, partial) = frame::tcp_messages(&stream);
    assert_eq!((messages.len(), partial), (2, true));
}

#[test]
fn failures_queries_and_other_opcodes_are_ignored_not_malformed() {
    let mut names = Names::new(NameCache::new(16));
    let now = Instant::now();
    let nx = dns::response(3, "gone.example", TYPE_A, 3, &[]);
    names.ingest_frame(&udp_answer(&nx), now);
    names.ingest_frame(&udp_answer(&dns::query(4, "q.example", TYPE_A)), now);
    let s = names.stats();
    assert_eq!((s.ignored, s.malformed, s.answers), (2, 0, 0));
}

#[test]
fn a_compression_pointer_loop_is_malformed_and_ends() {
    // Header with one question whose name is a pointer to itself (offset 12).
    let mut m = vec![0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
    m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    // An answer whose owner points at the question's loop.
    m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 203, 0, 113, 1]);
    assert!(matches!(
        message::parse(&m),
        Err(message::MessageError::Malformed(_))
    ));
    // Two pointers pointing at each other.
    let mut m = vec![0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&[0xc0, 14, 0xc0, 12, 0, 1, 0, 1]);
    assert!(matches!(
        message::parse(&m),
        Err(message::MessageError::Malformed(_))
    ));
}

#[test]
fn a_cname_loop_ends_and_names_only_what_is_on_the_chain() {
    let m = dns::response(
        5,
        "a.example",
        TYPE_A,
        0,
        &[
            Rr::Cname("a.example", "b.example", 60),
            Rr::Cname("b.example", "a.example", 60),
            Rr::A("b.example", Ipv4Addr::new(203, 0, 113, 3), 60),
        ],
    );
    let r = message::parse(&m).expect("parses");
    assert_eq!(r.addresses.len(), 1);
    assert_eq!(r.addresses[0].canonical, "b.example");
}

#[test]
fn an_answer_with_more_addresses_than_kept_counts_the_rest() {
    let rrs: Vec<Rr> = (0..100u8)
        .map(|i| Rr::A("many.example", Ipv4Addr::new(198, 51, 100, i), 60))
        .collect();
    let m = dns::response(6, "many.example", TYPE_A, 0, &rrs);
    let r = message::parse(&m).expect("parses");
    assert_eq!(r.addresses.len(), message::MAX_ADDRESSES);
    assert_eq!(r.dropped, 100 - message::MAX_ADDRESSES);
}

#[test]
fn every_truncation_of_an_answer_frame_is_handled() {
    let f = udp_answer(&chain());
    let mut names = Names::new(NameCache::new(16));
    let now = Instant::now();
    for len in 0..f.len() {
        names.ingest_frame(&f[..len], now);
    }
    let s = names.stats();
    // Every cut loses at least the last record: none decodes as an answer
    // naming both addresses, and all are accounted.
    assert_eq!(s.answers + s.malformed + s.ignored, f.len() as u64);
    assert!(names.lookup(&DST_MAC, v4(203, 0, 113, 8), now).is_none());
}

#[test]
fn random_and_mutated_bytes_never_panic_and_stay_bounded() {
    let mut rng = Rng(0x0d15_ea5e);
    let mut names = Names::new(NameCache::new(64));
    let now = Instant::now();
    let good = udp_answer(&chain());
    for i in 0..20_000u32 {
        let mut f = if i % 2 == 0 {
            good.clone()
        } else {
            let len = usize::try_from(rng.below(2048)).unwrap_or(0);
            (0..len)
                .map(|_| u8::try_from(rng.below(256)).unwrap_or(0))
                .collect()
        };
        if i % 2 == 0 {
            for _ in 0..4 {
                let at = usize::try_from(rng.below(f.len() as u64)).unwrap_or(0);
                f[at] = u8::try_from(rng.below(256)).unwrap_or(0);
            }
        }
        names.ingest_frame(&f, now);
    }
    assert!(names.cache().len() <= 64);
}

#[test]
fn the_cache_holds_at_most_its_cap_and_counts_evictions() {
    let mut cache = NameCache::new(100);
    let now = Instant::now();
    for i in 0..300u32 {
        let [_, _, c, d] = i.to_be_bytes();
        let r = message::Resolution {
            query: format!("host{i}.example"),
            addresses: vec![message::Resolved {
                addr: v4(198, 51, c, d),
                canonical: format!("host{i}.example"),
                ttl: 60,
            }],
            dropped: 0,
        };
        cache.insert(DST_MAC, &r, now);
    }
    assert_eq!(cache.len(), 100);
    assert_eq!(cache.evicted, 200);
    assert!(cache.bytes() <= cache.max_bytes());
    // The newest survive.
    assert!(cache.lookup(&DST_MAC, v4(198, 51, 1, 43), now).is_some());
    assert!(cache.lookup(&DST_MAC, v4(198, 51, 0, 0), now).is_none());
}

#[test]
fn ttls_are_clamped_and_a_hit_keeps_a_name_in_use() {
    let mut cache = NameCache::with_ttl(16, Duration::from_secs(10), Duration::from_secs(100));
    let now = Instant::now();
    let answer = |ttl| message::Resolution {
        query: "x.example".into(),
        addresses: vec![message::Resolved {
            addr: v4(203, 0, 113, 50),
            canonical: "x.example".into(),
            ttl,
        }],
        dropped: 0,
    };
    // A 1 s TTL lives the 10 s minimum.
    cache.insert(DST_MAC, &answer(1), now);
    assert!(
        cache
            .lookup(&DST_MAC, v4(203, 0, 113, 50), now + Duration::from_secs(9))
            .is_some()
    );
    // ... and the hit at 9 s carried it to 19 s.
    assert!(
        cache
            .lookup(&DST_MAC, v4(203, 0, 113, 50), now + Duration::from_secs(18))
            .is_some()
    );
    assert!(
        cache
            .lookup(&DST_MAC, v4(203, 0, 113, 50), now + Duration::from_secs(40))
            .is_none()
    );
    assert_eq!(cache.expired, 1);
    // A week-long TTL lives at most the 100 s maximum.
    cache.insert(DST_MAC, &answer(604_800), now);
    assert!(
        cache
            .lookup(
                &DST_MAC,
                v4(203, 0, 113, 50),
                now + Duration::from_secs(101)
            )
            .is_none()
    );
}

#[test]
fn long_names_are_kept_within_the_dns_limit() {
    let long: &'static str = Box::leak(
        [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".")
        .into_boxed_str(),
    );
    let m = dns::response(
        8,
        long,
        TYPE_A,
        0,
        &[Rr::A(long, Ipv4Addr::new(203, 0, 113, 9), 60)],
    );
    let mut names = Names::new(NameCache::new(4));
    let now = Instant::now();
    names.ingest_frame(&udp_answer(&m), now);
    let found = names
        .lookup(&DST_MAC, v4(203, 0, 113, 9), now)
        .expect("named");
    assert!(found.name.len() <= 253);
}

#[test]
fn oversized_answers_clipped_by_the_kernel_are_counted_not_trusted() {
    // 300 addresses: a ~5 KiB message, as over TCP or with EDNS; the kernel
    // copies the first 2,048 bytes of the frame.
    let rrs: Vec<Rr> = (0..300u16)
        .map(|i| {
            let [c, d] = i.to_be_bytes();
            Rr::A("big.example", Ipv4Addr::new(198, 51, c, d), 60)
        })
        .collect();
    let msg = dns::response(11, "big.example", TYPE_A, 0, &rrs);
    assert!(msg.len() > 4096);
    let full = udp_answer(&msg);
    let mut copy = regionwall_common::dns::DnsCopy {
        wire_len: u32::try_from(full.len()).expect("len"),
        captured: u32::try_from(regionwall_common::dns::DNS_COPY_BYTES).expect("fits"),
        ifindex: 1,
        _pad: 0,
        frame: [0; regionwall_common::dns::DNS_COPY_BYTES],
    };
    copy.frame
        .copy_from_slice(&full[..regionwall_common::dns::DNS_COPY_BYTES]);
    let mut names = Names::new(NameCache::new(16));
    let now = Instant::now();
    names.ingest_copy(&copy, now);
    let s = names.stats();
    assert_eq!((s.clipped, s.malformed, s.answers), (1, 1, 0));
    assert!(names.cache().is_empty());
    // A captured length beyond the buffer is cut to it.
    copy.captured = u32::MAX;
    names.ingest_copy(&copy, now);
    assert_eq!(names.stats().malformed, 2);

    // Over TCP the same message is a partial one.
    let stream = dns::tcp_stream(&[&msg]);
    let (messages, partial) = frame::tcp_messages(&stream[..2000]);
    assert_eq!((messages.len(), partial), (0, true));
}

#[test]
fn control_bytes_in_names_are_escaped_not_printed() {
    let owner = "evil\u{1b}[31m\u{7}.example";
    let m = dns::response(
        12,
        owner,
        TYPE_A,
        0,
        &[Rr::A(owner, Ipv4Addr::new(203, 0, 113, 66), 60)],
    );
    let r = message::parse(&m).expect("parses");
    assert!(!r.query.chars().any(char::is_control), "{:?}", r.query);
    assert!(r.query.contains("\\033"), "{:?}", r.query);
    assert_eq!(r.addresses.len(), 1);
}

#[test]
fn answers_to_group_or_broadcast_macs_are_not_remembered() {
    let mut f = udp_answer(&chain());
    f[..6].copy_from_slice(&[0xff; 6]);
    let mut names = Names::new(NameCache::new(16));
    let now = Instant::now();
    names.ingest_frame(&f, now);
    f[..6].copy_from_slice(&[0x01, 0, 0x5e, 0, 0, 0xfb]);
    names.ingest_frame(&f, now);
    assert!(names.cache().is_empty());
    assert_eq!(names.stats().ignored, 2);
}

#[test]
fn escaped_names_grow_up_to_four_times_and_the_cache_clips_them() {
    // Four labels of 63 control bytes: 255 bytes on the wire, each byte an
    // octal escape of four characters in text.
    let label = "\u{1}".repeat(63);
    let owner: &'static str = Box::leak(
        [label.as_str(), &label, &label, &"\u{1}".repeat(61)]
            .join(".")
            .into_boxed_str(),
    );
    let m = dns::response(
        13,
        owner,
        TYPE_A,
        0,
        &[Rr::A(owner, Ipv4Addr::new(203, 0, 113, 77), 60)],
    );
    let r = message::parse(&m).expect("parses");
    assert!(
        r.query.len() > 255 && r.query.len() <= 4 * 255,
        "{}",
        r.query.len()
    );
    let mut names = Names::new(NameCache::new(4));
    let now = Instant::now();
    names.ingest_frame(&udp_answer(&m), now);
    let found = names
        .lookup(&DST_MAC, v4(203, 0, 113, 77), now)
        .expect("named");
    assert!(found.name.chars().count() <= 253);
}
