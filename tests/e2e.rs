//! End to end: real packets between network namespaces through
//! `regionwall run` on a veth, v4 and v6, with the events it prints.
//! Every namespace is unique to the test and removed on drop, pass or fail.

mod common;

use std::time::Duration;

use common::{demo_policy_copy, exe, xdp_attached};
use regionwall::datapath::Datapath;
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

/// What a blocked TCP connect and UDP exchange from the phone ran into:
/// (error kind, errno) and how long it took.
struct Attempt {
    addr: std::net::SocketAddr,
    tcp: (Option<(std::io::ErrorKind, Option<i32>)>, Duration),
    udp: (Option<(std::io::ErrorKind, Option<i32>)>, Duration),
}

/// Connects to `host:8080`, then sends to `host:9` on a connected UDP
/// socket and waits for the answer or its error (3 s at most each).
fn attempt(host: std::net::IpAddr) -> Attempt {
    use std::net::{SocketAddr, TcpStream, UdpSocket};
    let err = |e: std::io::Error| (e.kind(), e.raw_os_error());
    let addr = SocketAddr::new(host, 8080);
    let started = std::time::Instant::now();
    let connect = TcpStream::connect_timeout(&addr, Duration::from_secs(3));
    let tcp = (connect.err().map(err), started.elapsed());
    let bind = if host.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(bind).expect("bind");
    sock.connect(SocketAddr::new(host, 9)).expect("connect udp");
    sock.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let started = std::time::Instant::now();
    sock.send(b"hello").expect("send");
    let recv = sock.recv(&mut [0u8; 64]);
    let udp = (recv.err().map(err), started.elapsed());
    Attempt { addr, tcp, udp }
}

/// A program that passes everything, attached to `dev` in `ns` while the
/// returned datapath lives.
fn pass_all_xdp(ns: &regionwall_testkit::netns::NetNs, dev: &std::ffi::CStr) -> Datapath {
    let _inside = ns.enter().expect("enter the namespace");
    let (mut dp, _) = common::datapath_with("");
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(dev.as_ptr()) };
    dp.attach(ifindex, aya::programs::XdpMode::Driver)
        .expect("attach XDP");
    dp
}

/// `mode = "reject"`: a blocked TCP connect from the phone is refused and
/// a blocked UDP exchange fails at once (the XDP program answers with a
/// RST or an ICMP error), v4 and v6; allowed connections still work.
#[test]
fn rejected_connections_fail_fast() {
    use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};

    let topology = Topology::create("reject").expect("create namespaces");
    let policy = common::policy_file(
        r#"
[regions.blocked-zone]
cidrs = ["198.51.100.0/24", "2001:db8:bad::/48"]

[[rules]]
name = "refuse"
devices = ["default"]
block = ["blocked-zone"]
mode = "reject"
"#,
    );
    // The answers go back out lan0 (XDP_TX) to the phone's end of the veth,
    // which hands such frames to its stack only when it runs an XDP
    // program of its own (veth_xdp_flush kicks the receiving NAPI only
    // then): the phone's eth0 gets one that passes everything.
    let _phone_xdp = pass_all_xdp(&topology.phone, c"eth0");
    let controller =
        Controller::start(&exe(), &topology, &policy, &["--json"]).expect("start regionwall run");

    // Listeners for the allowed hosts, one connection each.
    let allowed: Vec<SocketAddr> = ["203.0.113.10:8080", "[2001:db8:600d::10]:8080"]
        .iter()
        .map(|a| a.parse().expect("socket address"))
        .collect();
    let listen = allowed.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let _server = topology
        .internet
        .run(move || -> std::io::Result<()> {
            let listeners: Vec<TcpListener> = listen
                .iter()
                .map(TcpListener::bind)
                .collect::<Result<_, _>>()?;
            let _ = ready_tx.send(());
            let mut held = Vec::new();
            for l in &listeners {
                held.push(l.accept()?);
            }
            Ok(())
        })
        .expect("internet thread");
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("listeners ready");

    let (blocked, allowed_ok) = topology
        .phone
        .run(move || {
            let blocked: Vec<Attempt> = ["198.51.100.10", "2001:db8:bad::10"]
                .iter()
                .map(|h| attempt(h.parse::<IpAddr>().expect("address")))
                .collect();
            let ok: Vec<bool> = allowed
                .iter()
                .map(|a| TcpStream::connect_timeout(a, Duration::from_secs(3)).is_ok())
                .collect();
            (blocked, ok)
        })
        .expect("phone thread")
        .join()
        .expect("phone thread joins")
        .expect("phone namespace");
    for a in &blocked {
        let (addr, (tcp_err, tcp_time), (udp_err, udp_time)) = (a.addr, a.tcp, a.udp);
        println!("{addr}: connect {tcp_err:?} in {tcp_time:?}; udp {udp_err:?} in {udp_time:?}");
        assert_eq!(
            tcp_err,
            Some((
                std::io::ErrorKind::ConnectionRefused,
                Some(libc::ECONNREFUSED)
            )),
            "{addr}: connect refused"
        );
        assert!(
            tcp_time < Duration::from_millis(100),
            "{addr}: {tcp_time:?}"
        );
        // ICMP type 3 code 13 is EHOSTUNREACH (icmp_err_convert); ICMPv6
        // type 1 code 1 is EACCES (icmpv6_err_convert), both fatal for a
        // connected socket.
        let errno = if addr.is_ipv4() {
            libc::EHOSTUNREACH
        } else {
            libc::EACCES
        };
        assert_eq!(
            udp_err.and_then(|(_, e)| e),
            Some(errno),
            "{addr}: UDP error"
        );
        assert!(
            udp_time < Duration::from_millis(100),
            "{addr}: {udp_time:?}"
        );
    }
    assert_eq!(allowed_ok, [true, true], "allowed connections work");

    let lines = controller.drain_lines(4, Duration::from_secs(5));
    assert!(
        lines.iter().any(|l| l.contains("\"verdict\":\"reject\"")),
        "reject events: {lines:#?}"
    );
    let status = controller.stop().expect("stop");
    assert!(status.success(), "clean exit on SIGTERM: {status}");
}
