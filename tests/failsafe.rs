//! Sequences that once failed open or miscounted, each with the real
//! controller in a sandbox and real traffic: half-written and empty
//! policies, two controllers on one pin directory, a failing event output,
//! reloads that block, unprivileged socket clients, failed starts.

mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::{demo_policy_copy, exe, flow::Flow, pins::PinRoot, regionwall, text, xdp_attached};
use regionwall_testkit::{
    sandbox::{Controller, GATEWAY_LAN, Topology},
    traffic::send_traffic,
};

const BLOCKED: &str = "198.51.100.10";
const ALLOWED: &str = "203.0.113.10";

#[test]
fn empty_or_half_written_policies_never_reach_the_kernel() {
    let t = Topology::create("halfw").expect("namespaces");
    let policy = demo_policy_copy();
    let full = std::fs::read_to_string(&policy).expect("policy");
    let root = PinRoot::new();
    let c = Controller::start(&exe(), &t, &policy, &["--pin-root", root.arg()]).expect("start");
    let flow = Flow::start(&t, &[BLOCKED, ALLOWED], Duration::from_millis(1), 100_000);

    // 1. Truncated, left so for 0.6 s (longer than the debounce), restored.
    std::fs::write(&policy, "").expect("truncate");
    assert!(
        common::wait_count(&c, "rejected", 1, Duration::from_secs(5)),
        "{}",
        c.log_text()
    );
    std::thread::sleep(Duration::from_millis(600));
    std::fs::write(&policy, &full).expect("restore");
    assert!(
        common::wait_count(&c, "reloaded policy", 1, Duration::from_secs(5)),
        "{}",
        c.log_text()
    );

    // 2. Truncated, SIGHUP at once, restored 150 ms later.
    std::fs::write(&policy, "").expect("truncate");
    c.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(150));
    std::fs::write(&policy, &full).expect("restore");
    assert!(
        common::wait_count(&c, "reloaded policy", 2, Duration::from_secs(5)),
        "{}",
        c.log_text()
    );

    // 3. Regions first, rules 0.6 s later (an editor saving in two steps).
    let regions_only = full.split("[[rules]]").next().expect("regions part");
    std::fs::write(&policy, regions_only).expect("regions only");
    std::thread::sleep(Duration::from_millis(600));
    std::fs::write(&policy, &full).expect("restore");
    assert!(
        common::wait_count(&c, "reloaded policy", 3, Duration::from_secs(5)),
        "{}",
        c.log_text()
    );

    let counts = flow.stop();
    let log = c.log_text();
    let rejected = log.matches("refused: the new policy has no rules").count();
    println!("half-written policies: {rejected} reloads refused; traffic:");
    for (a, n) in &counts {
        println!("  {a}: sent {} delivered {}", n.sent, n.delivered);
    }
    assert!(rejected >= 3, "each empty state refused:\n{log}");
    assert!(!log.contains("every packet passes"), "{log}");
    let blocked = counts[0].1;
    let allowed = counts[1].1;
    assert!(blocked.sent > 1000, "{blocked:?}");
    assert_eq!(blocked.delivered, 0, "no blocked datagram through");
    assert!(allowed.delivered * 10 >= allowed.sent * 9, "{allowed:?}");
}

#[test]
fn a_second_controller_on_the_same_pins_is_refused() {
    let t = Topology::create("twoctl").expect("namespaces");
    let root = PinRoot::new();
    let c = Controller::start(&exe(), &t, &demo_policy_copy(), &["--pin-root", root.arg()])
        .expect("start");
    let other_socket =
        std::env::temp_dir().join(regionwall_testkit::netns::unique_name("other.sock"));
    let other = other_socket.to_str().expect("UTF-8");
    let second = Controller::start(
        &exe(),
        &t,
        &demo_policy_copy(),
        &["--pin-root", root.arg(), "--socket", other],
    );
    let Err(e) = second else {
        panic!("a second controller started on the same pins");
    };
    let e = e.to_string();
    println!(
        "second controller: {}",
        e.lines().last().unwrap_or_default()
    );
    assert!(e.contains("another controller owns"), "{e}");
    assert!(
        e.contains(&format!("pid {}", c.pid())),
        "names the owner: {e}"
    );
    assert!(
        e.contains(c.socket.to_str().expect("UTF-8")),
        "names its socket: {e}"
    );

    // detach through a socket nobody answers on must not take the pins
    // from the running controller.
    let out = regionwall(&[
        "detach",
        "--iface",
        GATEWAY_LAN,
        "--pin-root",
        root.arg(),
        "--socket",
        other,
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("another controller owns"),
        "{}",
        text(&out)
    );
    assert!(root.pins().link().exists(), "pins kept");
    let blocked = send_traffic(&t, "blocked", BLOCKED, 5).expect("traffic");
    assert_eq!(blocked.udp_delivered, 0, "still enforcing");
    assert!(xdp_attached(&t));
    // The owner's own SIGTERM still detaches (it was not asked to persist).
    c.stop().expect("stop");
    assert!(!root.pins().path().exists(), "owner removed its pins");
}

#[test]
fn a_blocking_reload_does_not_freeze_the_controller() {
    let t = Topology::create("fifo").expect("namespaces");
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
    // A `file =` list that is a FIFO nobody writes to.
    let fifo = policy.with_file_name("list.fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    let hostile = full.replace(
        "cidrs = [\"198.51.100.0/24\", \"2001:db8:bad::/48\"]",
        &format!(
            "cidrs = [\"198.51.100.0/24\", \"2001:db8:bad::/48\"]\nfile = \"{}\"",
            fifo.display()
        ),
    );
    std::fs::write(&policy, hostile).expect("write");
    c.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(200));
    // The socket answers meanwhile.
    let asked = Instant::now();
    let out = regionwall(&[
        "stats",
        "--json",
        "--iface",
        GATEWAY_LAN,
        "--pin-root",
        root.arg(),
        "--socket",
        c.socket.to_str().expect("UTF-8"),
    ]);
    let took = asked.elapsed();
    println!("stats answered in {took:?} during a reload reading a FIFO");
    assert!(out.status.success(), "{}", text(&out));
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The interface is still watched: deleted and re-created, re-attached.
    t.gateway
        .ip(&["link", "set", GATEWAY_LAN, "down"])
        .expect("down");
    t.gateway
        .ip(&["link", "set", GATEWAY_LAN, "up"])
        .expect("up");
    assert!(xdp_attached(&t));
    let blocked = send_traffic(&t, "blocked", BLOCKED, 5).expect("traffic");
    assert_eq!(blocked.udp_delivered, 0, "old policy still enforcing");
    // SIGTERM is served at once too.
    let stopping = Instant::now();
    c.stop().expect("stop");
    println!(
        "SIGTERM during the stuck reload: exited in {:?}",
        stopping.elapsed()
    );
    assert!(stopping.elapsed() < Duration::from_secs(3));
    let _ = std::fs::remove_file(&fifo);
}

/// Runs the regionwall client as uid/gid 65534 (nobody/nogroup).
fn as_nobody(args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(exe())
        .args(args)
        .output()
        .expect("setpriv")
}

#[test]
fn the_control_socket_checks_who_asks() {
    let t = Topology::create("peercred").expect("namespaces");
    let root = PinRoot::new();
    let c = Controller::start(&exe(), &t, &demo_policy_copy(), &["--pin-root", root.arg()])
        .expect("start");
    let socket = c.socket.to_str().expect("UTF-8").to_string();
    // Opened up by hand: the file mode no longer protects it.
    for p in [
        Path::new(&socket),
        Path::new(&socket).parent().expect("dir"),
    ] {
        if p != Path::new("/tmp") {
            std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                .expect("chmod");
        }
    }
    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .expect("chmod");
    let target = [
        "--iface",
        GATEWAY_LAN,
        "--pin-root",
        root.arg(),
        "--socket",
        &socket,
    ];
    let out = as_nobody(&[&["detach"][..], &target[..]].concat());
    println!("detach as nobody: {}", text(&out).trim());
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("permission denied"), "{}", text(&out));
    let out = as_nobody(&[&["stats"][..], &target[..]].concat());
    assert!(
        !out.status.success(),
        "stats refused too without --socket-group"
    );
    assert!(xdp_attached(&t), "still attached");
    assert!(
        c.wait_log("refused uid 65534", Duration::from_secs(2)),
        "{}",
        c.log_text()
    );
    drop(c);
}

#[test]
fn a_socket_group_reads_but_cannot_detach() {
    let t = Topology::create("sockgrp").expect("namespaces");
    let root = PinRoot::new();
    let sock_dir = std::env::temp_dir().join(regionwall_testkit::netns::unique_name("grp"));
    let socket = sock_dir.join("lan0.sock");
    let c = Controller::start(
        &exe(),
        &t,
        &demo_policy_copy(),
        &[
            "--pin-root",
            root.arg(),
            "--socket",
            socket.to_str().expect("UTF-8"),
            "--socket-group",
            "65534",
        ],
    )
    .expect("start");
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).expect("stat").permissions())
            & 0o777
    };
    assert_eq!(mode(&socket), 0o660);
    assert_eq!(mode(&sock_dir), 0o750);
    // An existing directory (here a shared 1777 one) is never changed.
    let shared_dir = std::env::temp_dir().join(regionwall_testkit::netns::unique_name("shared"));
    std::fs::create_dir(&shared_dir).expect("dir");
    std::fs::set_permissions(
        &shared_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .expect("chmod");
    let root2 = PinRoot::new();
    let t2 = Topology::create("sockgrp2").expect("namespaces");
    let shared_socket = shared_dir.join("lan0.sock");
    let c2 = Controller::start(
        &exe(),
        &t2,
        &demo_policy_copy(),
        &[
            "--pin-root",
            root2.arg(),
            "--socket",
            shared_socket.to_str().expect("UTF-8"),
            "--socket-group",
            "65534",
        ],
    )
    .expect("start");
    let perms = std::fs::metadata(&shared_dir).expect("stat").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&perms) & 0o7777,
        0o1777,
        "left as it was"
    );
    drop(c2);
    let _ = std::fs::remove_dir_all(&shared_dir);
    let socket = socket.to_str().expect("UTF-8");
    let target = [
        "--iface",
        GATEWAY_LAN,
        "--pin-root",
        root.arg(),
        "--socket",
        socket,
    ];
    let out = as_nobody(&[&["stats", "--json"][..], &target[..]].concat());
    assert!(
        out.status.success(),
        "group member reads stats: {}",
        text(&out)
    );
    let out = as_nobody(&[&["detach"][..], &target[..]].concat());
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("detach needs root"), "{}", text(&out));
    assert!(xdp_attached(&t));
    drop(c);
    let _ = std::fs::remove_dir_all(&sock_dir);
}

#[test]
fn failed_starts_and_detach_leave_nothing_behind_and_say_so() {
    let root = PinRoot::new();
    let policy = demo_policy_copy();
    let socket = std::env::temp_dir().join(regionwall_testkit::netns::unique_name("none.sock"));
    // `--no-wait`: without it `run` waits for the interface to appear.
    let out = regionwall(&[
        "run",
        "--iface",
        "rw-nonexistent0",
        "--no-wait",
        "--policy",
        policy.to_str().expect("UTF-8"),
        "--pin-root",
        root.arg(),
        "--socket",
        socket.to_str().expect("UTF-8"),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("rw-nonexistent0 not found"),
        "{}",
        text(&out)
    );
    assert!(
        !root.path().join("rw-nonexistent0").exists(),
        "no empty pin directory left"
    );
    assert!(!root.path().exists(), "nor the pin root it made");

    let out = regionwall(&[
        "detach",
        "--iface",
        "rw-nonexistent0",
        "--pin-root",
        root.arg(),
        "--socket",
        socket.to_str().expect("UTF-8"),
    ]);
    assert!(
        !out.status.success(),
        "detach of nothing fails: {}",
        text(&out)
    );
    assert!(text(&out).contains("nothing is pinned"), "{}", text(&out));

    // Detach through the socket: one message, success.
    let t = Topology::create("detach1").expect("namespaces");
    let c = Controller::start(&exe(), &t, &policy, &["--pin-root", root.arg()]).expect("start");
    let out = regionwall(&[
        "detach",
        "--iface",
        GATEWAY_LAN,
        "--pin-root",
        root.arg(),
        "--socket",
        c.socket.to_str().expect("UTF-8"),
    ]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert_eq!(
        said.matches("regionwall:").count(),
        1,
        "one message: {said}"
    );
    assert!(said.contains("removed"), "{said}");
    assert!(!said.contains("nothing"), "{said}");
    drop(c);

    // --persist: the exit message names the pin root and socket to use.
    let c = Controller::start(
        &exe(),
        &t,
        &policy,
        &["--pin-root", root.arg(), "--persist"],
    )
    .expect("start");
    let socket = c.socket.clone();
    let log = {
        let c = c;
        c.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !c.log_text().contains("exited;") {
            assert!(Instant::now() < deadline, "{}", c.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        c.log_text()
    };
    let expected = format!(
        "regionwall detach --iface {GATEWAY_LAN} --pin-root {} --socket {}",
        root.arg(),
        socket.display()
    );
    assert!(log.contains(&expected), "{log}");
}

#[test]
fn names_that_are_not_interfaces_never_become_paths() {
    let root = PinRoot::new();
    let policy = demo_policy_copy();
    let socket = std::env::temp_dir().join(regionwall_testkit::netns::unique_name("esc.sock"));
    let out = regionwall(&[
        "run",
        "--iface",
        "../../rw-escape",
        "--policy",
        policy.to_str().expect("UTF-8"),
        "--pin-root",
        root.arg(),
        "--socket",
        socket.to_str().expect("UTF-8"),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is not an interface name"),
        "{}",
        text(&out)
    );
    assert!(!root.path().exists() && !Path::new("/sys/fs/rw-escape").exists());
    let out = regionwall(&["detach", "--iface", "..", "--pin-root", root.arg()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is not an interface name"),
        "{}",
        text(&out)
    );
}

#[test]
fn an_interface_owned_by_another_pin_root_is_named_as_the_cause() {
    let t = Topology::create("ebusy").expect("namespaces");
    let first = PinRoot::new();
    let _c = Controller::start(
        &exe(),
        &t,
        &demo_policy_copy(),
        &["--pin-root", first.arg()],
    )
    .expect("start");
    let second = PinRoot::new();
    let Err(e) = Controller::start(
        &exe(),
        &t,
        &demo_policy_copy(),
        &["--pin-root", second.arg()],
    ) else {
        panic!("a second program attached to the same interface");
    };
    let e = e.to_string();
    println!("second pin root: {}", e.lines().last().unwrap_or_default());
    assert!(e.contains("another XDP program is attached"), "{e}");
    assert!(!e.contains("--xdp-mode generic"), "not the cause: {e}");
    assert!(
        !second.path().join(GATEWAY_LAN).exists(),
        "nothing left pinned"
    );
}

#[test]
fn racing_starts_leave_exactly_one_owner() {
    let t = Topology::create("race").expect("namespaces");
    let policy = demo_policy_copy();
    let mut won = 0;
    for round in 0..8 {
        let root = PinRoot::new();
        let spawn = |n: usize| {
            let socket = std::env::temp_dir().join(regionwall_testkit::netns::unique_name(
                &format!("race{n}.sock"),
            ));
            t.gateway
                .command(exe().to_str().expect("UTF-8"))
                .args(["run", "--iface", GATEWAY_LAN, "--pin-root", root.arg()])
                // The default state directory is shared by every lan0.
                .arg("--no-history")
                .arg("--policy")
                .arg(&policy)
                .arg("--socket")
                .arg(&socket)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        };
        let mut a = spawn(0);
        let mut b = spawn(1);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !root.pins().link().exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        let alive = [&mut a, &mut b]
            .into_iter()
            .map(|c| c.try_wait().expect("wait").is_none())
            .filter(|running| *running)
            .count();
        assert_eq!(alive, 1, "round {round}: exactly one controller runs");
        assert!(root.pins().link().exists(), "round {round}: pinned");
        assert!(xdp_attached(&t), "round {round}: attached");
        won += 1;
        for c in [&mut a, &mut b] {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(libc::pid_t::try_from(c.id()).expect("pid"), libc::SIGTERM) };
            let _ = c.wait();
        }
    }
    println!("racing starts: {won}/8 rounds with exactly one owner");
}
