//! End to end: real packets between network namespaces through
//! `regionwall run` on a veth, v4 and v6, with the events it prints.
//! Every namespace is unique to the test and removed on drop, pass or fail.

mod common;

use std::time::Duration;

use common::{demo_policy_copy, exe, xdp_attached};
use regionwall_testkit::{
    sandbox::{Controller, GATEWAY_LAN, Topology},
    traffic::send_traffic,
};

#[test]
fn blocked_ranges_dropped_allowed_delivered_with_events() {
    let topology = Topology::create("e2e").expect("create namespaces");
    let policy = demo_policy_copy();
    let controller =
        Controller::start(&exe(), &topology, &policy, &["--json"]).expect("start regionwall run");
    assert!(
        xdp_attached(&topology),
        "XDP attached to the gateway's {GATEWAY_LAN}"
    );
    // veth has native XDP: what `auto` picked is said.
    assert!(
        controller
            .log_text()
            .contains("XDP native (chosen by the kernel for --xdp-mode auto)"),
        "{}",
        controller.log_text()
    );

    let mut results = Vec::new();
    for (label, addr) in regionwall_testkit::sandbox::TARGETS {
        let d = send_traffic(&topology, label, addr, 5).expect("send traffic");
        println!(
            "{label:<11} {addr:<18} sent {} delivered {} tcp upload {}",
            d.udp_sent, d.udp_delivered, d.tcp_upload
        );
        results.push(d);
    }
    for d in &results {
        if d.label.starts_with("blocked") {
            assert_eq!(d.udp_delivered, 0, "{}: nothing delivered", d.label);
            assert!(!d.tcp_upload, "{}: TCP upload blocked", d.label);
        } else {
            assert_eq!(
                d.udp_delivered, d.udp_sent,
                "{}: everything delivered",
                d.label
            );
            assert!(d.tcp_upload, "{}: TCP upload delivered", d.label);
        }
    }

    // 5 UDP datagrams per blocked family, plus TCP SYN (re)transmissions.
    let lines = controller.drain_lines(10, Duration::from_secs(5));
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let udp: Vec<&serde_json::Value> = events.iter().filter(|e| e["protocol"] == "udp").collect();
    assert_eq!(udp.len(), 10, "one event per dropped datagram: {lines:#?}");
    for e in &events {
        assert_eq!(e["verdict"], "drop", "{e}");
        assert_eq!(e["device"], "phone", "{e}");
        assert_eq!(e["region"], "blocked-zone", "{e}");
        assert_eq!(e["rule"], "phone-no-blocked-zone", "{e}");
        assert_eq!(e["interface"], GATEWAY_LAN, "{e}");
        let dst = e["dst_ip"].as_str().expect("dst_ip");
        assert!(dst == "198.51.100.10" || dst == "2001:db8:bad::10", "{e}");
        let src = e["src_ip"].as_str().expect("src_ip");
        assert!(src == "192.0.2.10" || src == "2001:db8:1::10", "{e}");
        assert!(
            e["timestamp"].as_str().is_some_and(|t| t.starts_with("20")),
            "{e}"
        );
        assert_eq!(e["src_mac"].as_str().map(str::len), Some(17), "{e}");
    }
    assert!(
        udp.iter().all(|e| e["dst_port"] == 9),
        "UDP port 9 in every UDP event"
    );
    assert!(
        events
            .iter()
            .any(|e| e["protocol"] == "tcp" && e["dst_port"] == 8080),
        "TCP upload attempt reported"
    );

    let status = controller.stop().expect("stop");
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    assert!(!xdp_attached(&topology), "detached after SIGTERM");
}

/// A policy that fails to parse on SIGHUP is rejected and the previous one
/// keeps enforcing; a valid new policy then takes over.
#[test]
fn rejected_reload_keeps_the_old_policy_enforcing() {
    let topology = Topology::create("reload").expect("create namespaces");
    let policy = demo_policy_copy();
    let controller =
        Controller::start(&exe(), &topology, &policy, &[]).expect("start regionwall run");

    std::fs::write(
        &policy,
        "[regions.blocked-zone]\ncidrs = [\"198.51.100.0/33\"]\n",
    )
    .expect("write bad policy");
    controller.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    let log = controller.log.lock().map(|l| l.clone()).unwrap_or_default();
    assert!(
        log.contains("rejected, previous policy") && log.contains(":2:10:"),
        "rejection logged with position:\n{log}"
    );
    let d = send_traffic(&topology, "blocked v4", "198.51.100.10", 5).expect("traffic");
    assert_eq!(d.udp_delivered, 0, "old policy still drops");

    // Now a valid policy that blocks nothing for the phone.
    std::fs::write(
        &policy,
        "[regions.other]\ncidrs = [\"192.0.2.200/32\"]\n[[rules]]\ndevices = [\"default\"]\nblock = [\"other\"]\n",
    )
    .expect("write new policy");
    controller.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    let d = send_traffic(&topology, "blocked v4", "198.51.100.10", 5).expect("traffic");
    assert_eq!(d.udp_delivered, 5, "new policy delivers");
    let status = controller.stop().expect("stop");
    assert!(status.success());
}

/// Generic (skb) XDP gives the same verdicts as native XDP on the veth.
#[test]
fn generic_xdp_mode_enforces_too() {
    let topology = Topology::create("generic").expect("create namespaces");
    let policy = demo_policy_copy();
    let controller = Controller::start(&exe(), &topology, &policy, &["--xdp-mode", "generic"])
        .expect("start regionwall run --xdp-mode generic");
    let out = topology
        .gateway
        .command("ip")
        .args(["link", "show", GATEWAY_LAN])
        .output()
        .expect("ip link");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("xdpgeneric"),
        "attached in generic mode"
    );
    assert!(
        controller.log_text().contains("XDP generic,"),
        "{}",
        controller.log_text()
    );
    let blocked = send_traffic(&topology, "blocked v6", "2001:db8:bad::10", 3).expect("traffic");
    let allowed = send_traffic(&topology, "allowed v4", "203.0.113.10", 3).expect("traffic");
    assert_eq!((blocked.udp_delivered, allowed.udp_delivered), (0, 3));
    assert!(controller.stop().expect("stop").success());
}

/// A country-based policy loaded through `--regions-dir` (a country
/// database holding a user-assigned code over documentation ranges), with a
/// protocol qualifier: only UDP to the country is blocked, so the TCP
/// upload still gets through — with real packets.
#[test]
fn country_region_via_regions_dir_and_udp_only_rule() {
    let policy = common::policy_file(
        r#"
[regions.xa]
countries = ["XA"]

[devices.phone]
ip = ["192.0.2.10", "2001:db8:1::10"]

[[rules]]
name = "phone-no-udp-to-xa"
devices = ["phone"]
block = ["xa"]
ports = ["udp"]
"#,
    );
    let db = policy.with_file_name("countries");
    std::fs::create_dir_all(db.join("xa")).expect("mkdir");
    std::fs::write(
        db.join("xa/ipv4-aggregated.txt"),
        "# test\n198.51.100.0/24\n",
    )
    .expect("v4");
    std::fs::write(db.join("xa/ipv6-aggregated.txt"), "2001:db8:bad::/48\n").expect("v6");
    let topology = Topology::create("e2e-cc").expect("create namespaces");
    let db_arg = db.to_str().expect("utf-8 path");
    let controller = Controller::start(
        &exe(),
        &topology,
        &policy,
        &["--json", "--regions-dir", db_arg],
    )
    .expect("start regionwall run");
    for (label, addr) in regionwall_testkit::sandbox::TARGETS {
        let d = send_traffic(&topology, label, addr, 5).expect("send traffic");
        println!(
            "{label:<11} {addr:<18} sent {} delivered {} tcp upload {}",
            d.udp_sent, d.udp_delivered, d.tcp_upload
        );
        let want_udp = if label.starts_with("blocked") {
            0
        } else {
            d.udp_sent
        };
        assert_eq!(d.udp_delivered, want_udp, "{label}: UDP");
        assert!(d.tcp_upload, "{label}: TCP is not qualified, so it passes");
    }
    let lines = controller.drain_lines(10, Duration::from_secs(5));
    assert_eq!(
        lines.len(),
        10,
        "one event per dropped datagram: {lines:#?}"
    );
    for l in &lines {
        let e: serde_json::Value = serde_json::from_str(l).expect("JSON event");
        assert_eq!(e["protocol"], "udp", "{e}");
        assert_eq!(e["region"], "xa", "{e}");
        assert_eq!(e["rule"], "phone-no-udp-to-xa", "{e}");
        assert_eq!(e["dst_port"], 9, "{e}");
    }
    let status = controller.stop().expect("stop");
    assert!(status.success(), "{status}");
}
