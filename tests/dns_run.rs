//! The DNS copier under `regionwall run`: attached, kept, adopted, re-attached, and copying real traffic.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    time::Duration,
};

use common::dns::drain;
use regionwall::{datapath::Readings as _, pin::PinnedMaps};
use regionwall_common::dns::DNS_COPY_BYTES;
use regionwall_testkit::sandbox::{Controller, GATEWAY_LAN, Topology};

/// `regionwall run --persist` puts the copier on egress with a pinned TCX
/// link, kept when it exits; a restarted controller adopts it (same link,
/// its own program); `run --no-dns` takes it off.
#[test]
fn run_attaches_and_adopts_the_copier() {
    let t = Topology::create(&format!("rwtc-{}", std::process::id())).expect("namespaces");
    let root = common::pins::PinRoot::new();
    let pins = root.pins();
    let policy = common::demo_policy_copy();
    let exe = common::exe();
    let start = |extra: &[&str]| {
        let mut args = vec!["--pin-root", root.arg()];
        args.extend_from_slice(extra);
        Controller::start(&exe, &t, &policy, &args).expect("start")
    };

    let c = start(&["--persist"]);
    assert!(
        c.wait_log("copying DNS answers", Duration::from_secs(5)),
        "{}",
        c.log_text()
    );
    let first = pins
        .dns_link_facts()
        .expect("facts")
        .expect("DNS link pinned");
    assert_ne!(first.ifindex, 0, "attached");
    c.stop().expect("stop");
    let kept = pins.dns_link_facts().expect("facts").expect("still pinned");
    assert_eq!((kept.id, kept.prog_id), (first.id, first.prog_id), "kept");

    let c = start(&["--persist"]);
    assert!(
        c.wait_log("copying DNS answers", Duration::from_secs(5)),
        "{}",
        c.log_text()
    );
    assert!(c.log_text().contains("adopt"), "{}", c.log_text());
    let second = pins
        .dns_link_facts()
        .expect("facts")
        .expect("DNS link pinned");
    assert_eq!(second.id, first.id, "the same link, adopted");
    assert_ne!(
        second.prog_id, first.prog_id,
        "the new controller's program"
    );
    assert_eq!(second.ifindex, first.ifindex);
    c.stop().expect("stop");

    let c = start(&["--no-dns"]);
    assert!(!pins.dns_link().exists(), "{}", c.log_text());
    assert!(!pins.dns_prog().exists());
    assert!(pins.link().exists(), "XDP still pinned");
    c.stop().expect("stop");
    assert!(!pins.link().exists(), "SIGTERM without --persist unpins");
}

/// The interface deleted and made again: the supervisor re-attaches the
/// copier to the new interface with the XDP program.
#[test]
fn the_copier_follows_a_recreated_interface() {
    let (t, root, c) = started("rwtc");
    let pins = root.pins();
    let before = pins.dns_link_facts().expect("facts").expect("DNS link");
    t.gateway
        .ip(&["link", "del", GATEWAY_LAN])
        .expect("delete veth");
    assert!(
        c.wait_log("is gone", Duration::from_secs(2)),
        "{}",
        c.log_text()
    );
    t.add_lan_veth().expect("re-create veth");
    t.gateway
        .ip(&["link", "set", GATEWAY_LAN, "up"])
        .expect("up");
    assert!(
        c.wait_log("re-attached the DNS copier", Duration::from_secs(3)),
        "{}",
        c.log_text()
    );
    let after = pins.dns_link_facts().expect("facts").expect("DNS link");
    assert_ne!(after.ifindex, 0, "attached");
    assert_ne!(after.ifindex, before.ifindex, "to the new interface");
    assert_ne!(after.id, before.id, "on a new link");
    let xdp = pins.link_facts().expect("facts").expect("XDP link");
    assert_eq!(xdp.ifindex, after.ifindex, "beside the XDP program");
    c.stop().expect("stop");
}

/// DNS over TCP from the gateway to the phone: the stack hands egress
/// large GSO segments whose payload sits in page fragments, not in the
/// linear head. The copier reads through them (`bpf_skb_load_bytes`),
/// clips at `DNS_COPY_BYTES` and counts it.
#[test]
fn non_linear_tcp_answers_are_copied_and_clipped() {
    let (t, root, c) = started("rwtc");
    let pins = root.pins();
    let mut ring = PinnedMaps::dns(&pins).expect("pinned ring");
    drain(&mut ring);
    let maps = PinnedMaps::open(&pins).expect("pinned maps");
    let before = maps.dns_counts().expect("counts");

    // A byte pattern that shows where each byte came from.
    let body: Vec<u8> = (0..256 * 1024u32)
        .map(|i| u8::try_from(i % 251).unwrap_or(0))
        .collect();
    let listener = t
        .gateway
        .run(|| TcpListener::bind("192.0.2.1:53"))
        .expect("thread")
        .join()
        .expect("join")
        .expect("enter")
        .expect("bind 192.0.2.1:53");
    let reader = t
        .phone
        .run(|| {
            let mut s = TcpStream::connect("192.0.2.1:53").expect("connect");
            let mut got = Vec::new();
            s.read_to_end(&mut got).expect("read");
            got.len()
        })
        .expect("thread");
    let (mut conn, _) = listener.accept().expect("accept");
    conn.write_all(&body).expect("write");
    drop(conn);
    let got = reader.join().expect("join").expect("enter");
    assert_eq!(got, body.len(), "the phone read everything");

    std::thread::sleep(Duration::from_millis(100));
    let records = drain(&mut ring);
    let after = maps.dns_counts().expect("counts");
    let clipped: Vec<_> = records
        .iter()
        .filter(|r| r.wire_len as usize > DNS_COPY_BYTES)
        .collect();
    println!(
        "{} records, {} longer than the copy (largest {} bytes); counters {after:?}",
        records.len(),
        clipped.len(),
        records.iter().map(|r| r.wire_len).max().unwrap_or(0)
    );
    assert!(!clipped.is_empty(), "GSO segments longer than the copy");
    assert_eq!(after.lost, before.lost);
    assert_eq!(
        after.copied - before.copied,
        records.len() as u64,
        "each copy counted once"
    );
    assert_eq!(
        after.clipped - before.clipped,
        clipped.len() as u64,
        "each clipped copy counted"
    );
    for r in &clipped {
        assert_eq!(r.captured as usize, DNS_COPY_BYTES);
        // Ethernet, IPv4 (20), TCP header (data offset), then payload:
        // consecutive bytes of the pattern all the way to the end of the
        // copy, though most of them live in page fragments.
        let l4 = 14 + 20;
        let payload = l4 + usize::from(r.frame[l4 + 12] >> 4) * 4;
        let p = &r.frame[payload..];
        assert!(p.len() > 1_000);
        assert!(
            p.windows(2)
                .all(|w| u16::from(w[1]) == (u16::from(w[0]) + 1) % 251),
            "the payload as sent"
        );
    }
    c.stop().expect("stop");
}

/// Someone detaches the copier's link (`bpftool link detach`) while XDP
/// stays: the supervisor puts a new one in its place.
#[test]
fn an_outside_detach_of_the_copier_is_repaired() {
    let (_t, root, c) = started("rwtd");
    let pins = root.pins();
    let before = pins.dns_link_facts().expect("facts").expect("DNS link");
    assert!(pins.detach_dns_link().expect("detach"), "was attached");
    assert!(
        c.wait_log("re-attached the DNS copier", Duration::from_secs(3)),
        "{}",
        c.log_text()
    );
    let after = pins.dns_link_facts().expect("facts").expect("DNS link");
    assert_eq!(after.ifindex, before.ifindex, "on the same interface");
    assert_ne!(after.id, before.id, "on a new link");
    let xdp = pins.link_facts().expect("facts").expect("XDP link");
    assert_eq!(xdp.ifindex, after.ifindex, "XDP untouched");
    c.stop().expect("stop");
}

/// A sandbox with the demo policy enforced by `regionwall run` on a pin
/// root of its own.
fn started(tag: &str) -> (Topology, common::pins::PinRoot, Controller) {
    let t = Topology::create(&format!("{tag}-{}", std::process::id())).expect("namespaces");
    let root = common::pins::PinRoot::new();
    let c = Controller::start(
        &common::exe(),
        &t,
        &common::demo_policy_copy(),
        &["--pin-root", root.arg()],
    )
    .expect("start");
    (t, root, c)
}
