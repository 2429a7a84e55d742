//! A failing or stalled event output never stops or stalls enforcement:
//! stdout a closed pipe, /dev/full, or a pipe whose reader stopped
//! reading, with the real controller in a sandbox and real traffic.

mod common;

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use common::{demo_policy_copy, exe, pins::PinRoot, regionwall};
use regionwall_testkit::{
    sandbox::{Controller, GATEWAY_LAN, Topology},
    traffic::send_traffic,
};

const BLOCKED: &str = "198.51.100.10";

#[test]
fn a_failing_event_output_never_stops_enforcement() {
    // stdout a pipe whose reader went away: EPIPE on the first write.
    let t = Topology::create("epipe").expect("namespaces");
    let root = PinRoot::new();
    let mut c = Controller::start(
        &exe(),
        &t,
        &demo_policy_copy(),
        &["--pin-root", root.arg(), "--event-rate", "0"],
    )
    .expect("start");
    drop(std::mem::replace(
        &mut c.lines,
        std::sync::mpsc::channel().1,
    ));
    for round in 0..3 {
        let blocked = send_traffic(&t, "blocked", BLOCKED, 20).expect("traffic");
        assert_eq!(blocked.udp_delivered, 0, "round {round}: still enforcing");
    }
    assert!(
        c.wait_log(
            "writing events to the output failed",
            Duration::from_secs(3)
        ),
        "{}",
        c.log_text()
    );
    assert_eq!(
        c.log_text()
            .matches("writing events to the output failed")
            .count(),
        1,
        "logged once"
    );
    let stats = regionwall(&[
        "stats",
        "--json",
        "--iface",
        GATEWAY_LAN,
        "--pin-root",
        root.arg(),
        "--socket",
        c.socket.to_str().expect("UTF-8"),
    ]);
    let stats: regionwall::control::Stats =
        serde_json::from_slice(&stats.stdout).expect("stats JSON");
    println!(
        "EPIPE: {} events not written, {} written",
        stats.not_logged.not_written, stats.events_logged
    );
    assert!(stats.not_logged.not_written > 0, "{stats:?}");
    assert!(root.pins().link().exists());
    drop(c);

    // stdout /dev/full: ENOSPC on every write.
    let t = Topology::create("devfull").expect("namespaces");
    let root = PinRoot::new();
    let socket = std::env::temp_dir().join(regionwall_testkit::netns::unique_name("full.sock"));
    let policy = demo_policy_copy();
    let mut child = spawn_run(
        &t,
        &root,
        &socket,
        &policy,
        std::fs::File::create("/dev/full").expect("/dev/full"),
    );
    let blocked = send_traffic(&t, "blocked", BLOCKED, 20).expect("traffic");
    assert_eq!(blocked.udp_delivered, 0);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "still running with stdout on /dev/full"
    );
    let blocked = send_traffic(&t, "blocked", BLOCKED, 20).expect("traffic");
    assert_eq!(blocked.udp_delivered, 0, "still enforcing");
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(
            libc::pid_t::try_from(child.id()).expect("pid"),
            libc::SIGTERM,
        )
    };
    let exit = child.wait().expect("wait");
    assert!(exit.success(), "clean exit on SIGTERM: {exit}");
}

#[test]
fn a_reader_that_stops_reading_never_stalls_the_controller() {
    use aya::programs::{TestRun as _, TestRunOptions, Xdp};
    let t = Topology::create("stall").expect("namespaces");
    let root = PinRoot::new();
    let socket = std::env::temp_dir().join(regionwall_testkit::netns::unique_name("stall.sock"));
    let policy = demo_policy_copy();
    // A pipe whose reader is alive but never reads (a paused pager).
    let (_reader, writer) = std::io::pipe().expect("pipe");
    let mut child = spawn_run(&t, &root, &socket, &policy, writer);
    // 100,000 drop events: far more than the pipe and the output queue hold.
    let prog = Xdp::from_pin(
        root.pins().prog(),
        aya_obj::programs::XdpAttachType::Interface,
    )
    .expect("pinned program");
    let frame = common::udp4_frame(
        "192.0.2.10".parse().expect("ip"),
        BLOCKED.parse().expect("ip"),
        9,
    );
    for _ in 0..10 {
        let ret = prog
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                repeat: 10_000,
                ..TestRunOptions::default()
            })
            .expect("test_run")
            .return_value;
        assert_eq!(ret, regionwall_testkit::xdp::XDP_DROP);
    }
    // The controller works through its queue; stats answer meanwhile.
    let queued = u64::try_from(regionwall::controller::output::QUEUE).expect("queue");
    let accounted = |s: &regionwall::control::Stats| {
        let n = s.not_logged;
        s.events_logged + n.not_written + n.queue_dropped + n.ring_lost
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let (stats, took) = loop {
        let asked = Instant::now();
        let stats = common::stats(&root, &socket);
        let took = asked.elapsed();
        assert!(took < Duration::from_secs(2), "stats took {took:?}");
        if accounted(&stats) + queued + 2048 >= 100_000 || Instant::now() > deadline {
            break (stats, took);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let n = stats.not_logged;
    println!(
        "stalled reader: stats in {took:?}; events written {}, not written {}, dropped from the queue {}, lost in the ring {}",
        stats.events_logged, n.not_written, n.queue_dropped, n.ring_lost
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(n.not_written > queued, "{stats:?}");
    // Every drop is accounted: printed, waiting in the output queue or the
    // pipe, or counted where it was lost.
    assert!(accounted(&stats) + queued + 2048 >= 100_000, "{stats:?}");
    // The interface is still supervised: re-created, re-attached, enforcing.
    t.gateway
        .ip(&["link", "set", GATEWAY_LAN, "down"])
        .expect("down");
    t.gateway
        .ip(&["link", "set", GATEWAY_LAN, "up"])
        .expect("up");
    let blocked = send_traffic(&t, "blocked", BLOCKED, 10).expect("traffic");
    assert_eq!(blocked.udp_delivered, 0, "still enforcing");
    // SIGTERM is served, the stuck reader notwithstanding.
    let stopping = Instant::now();
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(
            libc::pid_t::try_from(child.id()).expect("pid"),
            libc::SIGTERM,
        )
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "SIGTERM not served with a stuck reader"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "SIGTERM with a stuck reader: exited in {:?}",
        stopping.elapsed()
    );
}

/// `regionwall run --event-rate 0` in the sandbox gateway with `stdout`,
/// waited for until its link is pinned and its socket bound.
fn spawn_run(
    t: &Topology,
    root: &PinRoot,
    socket: &Path,
    policy: &Path,
    stdout: impl Into<Stdio>,
) -> std::process::Child {
    let child = t
        .gateway
        .command(exe().to_str().expect("UTF-8"))
        .args([
            "run",
            "--iface",
            GATEWAY_LAN,
            "--event-rate",
            "0",
            "--pin-root",
            root.arg(),
            // The default state directory is shared by every lan0.
            "--no-history",
        ])
        .arg("--policy")
        .arg(policy)
        .arg("--socket")
        .arg(socket)
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    // The link is pinned first, the program and maps right after it (the
    // DNS copier goes live in between): wait for all of them.
    while !root.pins().link().exists() || !root.pins().prog().exists() || !socket.exists() {
        assert!(Instant::now() < deadline, "controller did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}
