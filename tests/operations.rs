//! Operations, with the real controller in sandbox namespaces: the control
//! socket's clients and permissions, interfaces that come and go, and the
//! systemd unit's capability set (event floods: `tests/flood.rs`). Every
//! namespace and pin is removed on drop.

mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::{demo_policy_copy, exe, pins::PinRoot, regionwall, xdp_attached};
use regionwall::{control::Stats, verdict::Verdict};
use regionwall_testkit::{
    sandbox::{Controller, GATEWAY_LAN, Topology},
    traffic::send_traffic,
};

const BLOCKED: &str = "198.51.100.10";
const ALLOWED: &str = "203.0.113.10";

fn wait_child(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one scenario: socket clients, then pins"
)]
fn events_and_stats_clients_through_the_socket_and_from_pins() {
    let t = Topology::create("clients").expect("namespaces");
    let policy = demo_policy_copy();
    let root = PinRoot::new();
    let c = Controller::start(&exe(), &t, &policy, &["--pin-root", root.arg()]).expect("start");
    let socket = c.socket.to_str().expect("UTF-8").to_string();
    let target = [
        "--iface",
        GATEWAY_LAN,
        "--pin-root",
        root.arg(),
        "--socket",
        &socket,
    ];

    // `events` with filters, through the socket.
    let mut tail = Command::new(exe())
        .arg("events")
        .args(target)
        .args([
            "--json",
            "--device",
            "phone",
            "--verdict",
            "drop",
            "--count",
            "3",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("events client");
    let mut other = Command::new(exe())
        .arg("events")
        .args(target)
        // Valid names, but the phone's rule never audits: nothing matches.
        .args([
            "--json",
            "--region",
            "blocked-zone",
            "--verdict",
            "audit",
            "--count",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("events client");
    assert!(c.wait_log("events client attached", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(200));
    let blocked = send_traffic(&t, "blocked", BLOCKED, 3).expect("traffic");
    let allowed = send_traffic(&t, "allowed", ALLOWED, 4).expect("traffic");
    assert!(wait_child(&mut tail, Duration::from_secs(5)).is_some_and(|s| s.success()));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut tail.stdout.take().expect("stdout"), &mut out)
        .expect("read");
    println!("events client got:\n{out}");
    let records: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON event"))
        .collect();
    assert_eq!(records.len(), 3);
    for r in &records {
        assert_eq!(r["device"], "phone");
        assert_eq!(r["verdict"], "drop");
        assert_eq!(r["region"], "blocked-zone");
        assert_eq!(r["rule"], "phone-no-blocked-zone");
        assert_eq!(r["dst_ip"], BLOCKED);
    }
    assert!(
        wait_child(&mut other, Duration::from_millis(300)).is_none(),
        "a filter nothing matches prints nothing"
    );

    // `stats` through the socket.
    let s = common::stats(&root, &c.socket);
    let row = |s: &Stats, verdict: Verdict| {
        s.traffic
            .iter()
            .filter(|r| r.device == "phone" && r.region == "blocked-zone" && r.verdict == verdict)
            .map(|r| (r.packets, r.bytes))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let (drops, drop_bytes) = row(&s, Verdict::Drop);
    let passed: u64 = s
        .traffic
        .iter()
        .filter(|r| r.device == "phone" && r.verdict == Verdict::Pass)
        .map(|r| r.packets)
        .sum();
    println!(
        "stats: phone -> blocked-zone dropped {drops} packets / {drop_bytes} bytes; phone passed {passed}; events logged {}",
        s.events_logged
    );
    assert!(
        drops >= blocked.udp_sent,
        "UDP and TCP SYNs dropped: {drops}"
    );
    assert!(drop_bytes > drops * 40);
    assert!(passed >= allowed.udp_delivered);
    let text = regionwall(&[
        "stats",
        "--iface",
        GATEWAY_LAN,
        "--pin-root",
        root.arg(),
        "--socket",
        &socket,
    ]);
    let text = String::from_utf8_lossy(&text.stdout);
    println!("{text}");
    assert!(text.contains("DEVICE") && text.contains("phone") && text.contains("blocked-zone"));

    // No controller: both read the pins (named with --policy).
    c.kill9().expect("kill -9");
    let _ = send_traffic(&t, "blocked", BLOCKED, 2).expect("traffic");
    let out = regionwall(&[
        "stats",
        "--iface",
        GATEWAY_LAN,
        "--pin-root",
        root.arg(),
        "--socket",
        &socket,
        "--json",
        "--policy",
        policy.to_str().expect("UTF-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pinned: Stats = serde_json::from_slice(&out.stdout).expect("stats JSON");
    let (pinned_drops, _) = row(&pinned, Verdict::Drop);
    println!("stats from the pins: phone -> blocked-zone dropped {pinned_drops}");
    assert!(pinned.named && pinned_drops >= drops + 2);
    let out = regionwall(&[
        "events",
        "--iface",
        GATEWAY_LAN,
        "--pin-root",
        root.arg(),
        "--socket",
        &socket,
        "--json",
        "--count",
        "2",
        "--policy",
        policy.to_str().expect("UTF-8"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    println!("events from the pinned ring:\n{text}");
    assert!(out.status.success());
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("phone-no-blocked-zone"))
            .count(),
        2
    );
}

#[test]
fn interface_deleted_and_recreated_is_reattached_within_a_second() {
    let t = Topology::create("iface").expect("namespaces");
    let root = PinRoot::new();
    let c = Controller::start(&exe(), &t, &demo_policy_copy(), &["--pin-root", root.arg()])
        .expect("start");
    t.gateway
        .ip(&["link", "del", GATEWAY_LAN])
        .expect("delete veth");
    assert!(
        c.wait_log("is gone", Duration::from_secs(2)),
        "{}",
        c.log_text()
    );
    std::thread::sleep(Duration::from_millis(300));
    // Re-made as the demo wires it; the controller may re-attach the
    // moment the interface exists (netlink), before it is even up.
    let mark = c.log_text().len();
    let recreated = Instant::now();
    t.add_lan_veth().expect("re-create veth");
    t.gateway
        .ip(&["addr", "add", "192.0.2.1/24", "dev", GATEWAY_LAN])
        .expect("addr");
    t.gateway
        .ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:1::1/64",
            "dev",
            GATEWAY_LAN,
            "nodad",
        ])
        .expect("addr");
    t.phone
        .ip(&["addr", "add", "192.0.2.10/24", "dev", "eth0"])
        .expect("addr");
    t.phone
        .ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:1::10/64",
            "dev",
            "eth0",
            "nodad",
        ])
        .expect("addr");
    t.gateway
        .ip(&["link", "set", GATEWAY_LAN, "up"])
        .expect("up");
    t.phone.ip(&["link", "set", "eth0", "up"]).expect("up");
    t.phone
        .ip(&["route", "add", "default", "via", "192.0.2.1"])
        .expect("route");
    assert!(
        wait_log_after(&c, mark, "re-attached to lan0", Duration::from_secs(1)),
        "re-attached within a second:\n{}",
        c.log_text()
    );
    let took = recreated.elapsed();
    let log = c.log_text();
    let gap = log[mark..]
        .lines()
        .find(|l| l.contains("unenforced gap"))
        .expect("gap reported");
    println!("re-attached {took:?} after the interface came back; {gap}");
    assert!(xdp_attached(&t));
    let blocked = send_traffic(&t, "blocked", BLOCKED, 3).expect("traffic");
    let allowed = send_traffic(&t, "allowed", ALLOWED, 3).expect("traffic");
    assert_eq!(blocked.udp_delivered, 0, "enforcing again");
    assert_eq!(allowed.udp_delivered, 3);

    // Someone detaches the link (as `bpftool link detach` does): put back.
    let mark = c.log_text().len();
    let detached = Instant::now();
    assert!(root.pins().detach_link().expect("BPF_LINK_DETACH"));
    assert!(
        wait_log_after(&c, mark, "re-attached to lan0", Duration::from_secs(1)),
        "re-attached after an outside detach:\n{}",
        c.log_text()
    );
    println!(
        "re-attached {:?} after an outside BPF_LINK_DETACH",
        detached.elapsed()
    );
    let blocked = send_traffic(&t, "blocked", BLOCKED, 3).expect("traffic");
    assert_eq!(blocked.udp_delivered, 0, "enforcing again");
}

/// Waits for `needle` in what the controller logged after byte `mark`.
fn wait_log_after(c: &Controller, mark: usize, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if c.log_text().get(mark..).is_some_and(|l| l.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Capabilities named by the unit's CapabilityBoundingSet.
fn unit_capabilities() -> Vec<String> {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/systemd/regionwall@.service"
    ))
    .expect("unit file");
    let setting = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} missing from the unit"))
            .to_string()
    };
    for (key, want) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("RuntimeDirectoryMode", "0700"),
        ("UMask", "0077"),
    ] {
        assert_eq!(setting(key), want, "{key}");
    }
    assert!(setting("ExecStart").contains(" run --iface %i "));
    let caps: Vec<String> = setting("CapabilityBoundingSet")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    for cap in &caps {
        assert!(
            [
                "CAP_BPF",
                "CAP_NET_ADMIN",
                "CAP_PERFMON",
                "CAP_SYS_RESOURCE"
            ]
            .contains(&cap.as_str()),
            "{cap} is more than regionwall needs"
        );
    }
    caps
}

#[test]
fn runs_with_only_the_units_capabilities_and_its_socket_is_root_only() {
    let caps = unit_capabilities();
    println!("unit CapabilityBoundingSet: {caps:?}");
    // The controller under exactly that bounding set (as systemd runs it).
    let bounding = format!(
        "-all,{}",
        caps.iter()
            .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
            .collect::<Vec<_>>()
            .join(",")
    );
    let dir = std::env::temp_dir().join(regionwall_testkit::netns::unique_name("caps"));
    std::fs::create_dir_all(&dir).expect("dir");
    let wrapper = dir.join("regionwall-limited");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec setpriv --bounding-set={bounding} --inh-caps=-all -- {} \"$@\"\n",
            exe().display()
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let t = Topology::create("caps").expect("namespaces");
    let root = PinRoot::new();
    // A socket in a directory that does not exist yet: run creates it 0700.
    let socket = dir.join("run").join("lan0.sock");
    let c = Controller::start(
        &wrapper,
        &t,
        &demo_policy_copy(),
        &[
            "--pin-root",
            root.arg(),
            "--socket",
            socket.to_str().expect("UTF-8"),
        ],
    )
    .expect("start with the unit's capabilities");
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.pid())).expect("status");
    let bnd = status
        .lines()
        .find(|l| l.starts_with("CapBnd:"))
        .expect("CapBnd")
        .to_string();
    println!("controller {bnd}");
    let blocked = send_traffic(&t, "blocked", BLOCKED, 3).expect("traffic");
    assert_eq!(
        blocked.udp_delivered, 0,
        "enforcing with the unit's capabilities only"
    );
    assert_ne!(bnd.split_whitespace().nth(1), Some("000001ffffffffff"));

    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).expect("stat").permissions())
            & 0o777
    };
    let (sock_mode, dir_mode) = (mode(&socket), mode(socket.parent().expect("dir")));
    println!("control socket mode {sock_mode:o}, directory mode {dir_mode:o}");
    assert_eq!(sock_mode, 0o600);
    assert_eq!(dir_mode, 0o700);
    // As nobody: refused.
    let errno = connect_as_nobody(&socket);
    println!(
        "connect as uid 65534: errno {errno} ({})",
        std::io::Error::from_raw_os_error(errno)
    );
    assert_eq!(errno, libc::EACCES, "not world-accessible");
    // As root: answered.
    let s = common::stats(&root, &socket);
    assert!(s.packets(Verdict::Drop) >= 3);
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Forks a child that drops to uid/gid 65534 and connects to `path`;
/// returns the errno it got (0 if it connected).
fn connect_as_nobody(path: &Path) -> i32 {
    use std::os::unix::ffi::OsStrExt as _;
    // Everything the child needs is prepared before fork (no allocation after).
    // SAFETY: sockaddr_un is plain data.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::sa_family_t::try_from(libc::AF_UNIX).expect("AF_UNIX");
    for (d, s) in addr.sun_path.iter_mut().zip(path.as_os_str().as_bytes()) {
        *d = (*s).cast_signed();
    }
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_un>()).expect("len");
    // SAFETY: the child calls only async-signal-safe functions, then _exit.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork");
        if pid == 0 {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                libc::_exit(255);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let r = libc::connect(fd, (&raw const addr).cast(), len);
            let code = if r == 0 { 0 } else { *libc::__errno_location() };
            libc::_exit(code);
        }
        let mut status = 0;
        libc::waitpid(pid, &raw mut status, 0);
        libc::WEXITSTATUS(status)
    }
}
