//! Counts stay attached to the device and region names they were counted
//! under: across a reload that adds names sorting first, and across kill -9
//! and adoption, with the real controller and real traffic.

mod common;

use std::{path::Path, time::Duration};

use common::{demo_policy_copy, exe, pins::PinRoot, regionwall, text};
use regionwall::verdict::Verdict;
use regionwall_testkit::{
    sandbox::{Controller, GATEWAY_LAN, Topology},
    traffic::send_traffic,
};

const BLOCKED: &str = "198.51.100.10";

/// Packets of (device, region, verdict) in a stats snapshot.
fn packets(
    stats: &regionwall::control::Stats,
    device: &str,
    region: &str,
    verdict: Verdict,
) -> u64 {
    stats
        .traffic
        .iter()
        .filter(|r| r.device == device && r.region == region && r.verdict == verdict)
        .map(|r| r.packets)
        .sum()
}

#[test]
fn counts_keep_their_names_across_reloads_and_restarts() {
    let t = Topology::create("names").expect("namespaces");
    let root = PinRoot::new();
    let policy = demo_policy_copy();
    let full = std::fs::read_to_string(&policy).expect("policy");
    let c = Controller::start(
        &exe(),
        &t,
        &policy,
        &["--pin-root", root.arg(), "--no-watch"],
    )
    .expect("start");
    let first = send_traffic(&t, "blocked", BLOCKED, 7).expect("traffic");
    assert_eq!(first.udp_delivered, 0);
    // A region that sorts before the blocked one and a device before the
    // phone: with numbering by position both would take over its counts.
    let grown = format!(
        "{full}\n[regions.aaa-first]\ncidrs = [\"203.0.113.200/32\"]\n\n[devices.aaa-tv]\nip = [\"192.0.2.99\"]\n\n[[rules]]\nname = \"tv-audit\"\ndevices = [\"aaa-tv\"]\nblock = [\"aaa-first\"]\nmode = \"audit\"\n"
    );
    std::fs::write(&policy, grown).expect("write");
    c.signal(libc::SIGHUP);
    assert!(
        c.wait_log("(SIGHUP; epoch 2)", Duration::from_secs(5)),
        "{}",
        c.log_text()
    );
    let second = send_traffic(&t, "blocked", BLOCKED, 5).expect("traffic");
    assert_eq!(second.udp_delivered, 0);
    let socket = c.socket.clone();
    let before = common::stats(&root, &socket);
    let phone = packets(&before, "phone", "blocked-zone", Verdict::Drop);
    println!("after a reload that adds aaa-first and aaa-tv: phone/blocked-zone drops {phone}");
    // Each send_traffic also makes one TCP attempt (SYN retries included).
    assert!(phone >= first.udp_sent + second.udp_sent, "{before:?}");
    assert_eq!(
        packets(&before, "aaa-tv", "aaa-first", Verdict::Audit),
        0,
        "{before:?}"
    );
    assert!(
        before.traffic.iter().all(|r| r.device != "aaa-tv"),
        "{before:?}"
    );
    // A filter naming no device of the policy says so instead of waiting.
    let typo = |socket: &Path| {
        regionwall(&[
            "events",
            "--iface",
            GATEWAY_LAN,
            "--pin-root",
            root.arg(),
            "--socket",
            socket.to_str().expect("UTF-8"),
            "--device",
            "phoen",
        ])
    };
    let out = typo(&socket);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("unknown device \"phoen\": expected one of"),
        "{}",
        text(&out)
    );
    // Killed and restarted: the new controller adopts the pins and the
    // counts keep their names.
    c.kill9().expect("kill");
    // With no controller, the pinned names answer the same.
    let out = typo(&socket);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("unknown device \"phoen\""),
        "{}",
        text(&out)
    );
    let c = Controller::start(
        &exe(),
        &t,
        &policy,
        &["--pin-root", root.arg(), "--no-watch"],
    )
    .expect("restart");
    assert!(
        c.log_text().contains("adopted the pinned state"),
        "{}",
        c.log_text()
    );
    let third = send_traffic(&t, "blocked", BLOCKED, 4).expect("traffic");
    assert_eq!(third.udp_delivered, 0);
    let after = common::stats(&root, &c.socket);
    let phone_after = packets(&after, "phone", "blocked-zone", Verdict::Drop);
    println!("after kill -9 and adoption: phone/blocked-zone drops {phone_after}");
    assert!(phone_after >= phone + third.udp_sent, "{after:?}");
    assert!(
        after.traffic.iter().all(|r| r.device != "aaa-tv"),
        "{after:?}"
    );
}
