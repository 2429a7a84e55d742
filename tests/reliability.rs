//! Reliability and operations, with the real controller in sandbox
//! namespaces: pinned state that survives SIGKILL and is adopted without a
//! gap, upgrades across layouts, 100 atomic reloads under traffic, file
//! watching and rejected input, event floods, interfaces that come and go,
//! the control socket's clients and permissions, and the systemd unit's
//! capability set. Every namespace and pin is removed on drop.

mod common;

use regionwall_testkit::xdp::{XDP_DROP, XDP_PASS};
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aya::{
    maps::{Array, Map, MapData},
    programs::Xdp,
};
use aya_obj::programs::XdpAttachType;
use common::{
    demo_policy_copy, exe,
    flow::{Count, Flow},
    pins::PinRoot,
    udp4_frame, xdp_attached,
};
use regionwall::{control::Stats, verdict::Verdict};
use regionwall_common::{LAYOUT_SLOT_VERSION, LAYOUT_VERSION};
use regionwall_testkit::{
    kernel::XDP_LINK,
    sandbox::{Controller, GATEWAY_LAN, Topology},
    traffic::send_traffic,
};

const BLOCKED: &str = "198.51.100.10";
const ALLOWED: &str = "203.0.113.10";

fn print_counts(what: &str, counts: &[(std::net::IpAddr, Count)]) {
    for (a, c) in counts {
        println!("{what}: {a}: sent {} delivered {}", c.sent, c.delivered);
    }
}

/// `regionwall detach` of the sandbox gateway's LAN side.
fn detach(root: &PinRoot, socket: &str) -> std::process::Output {
    regionwall(&[
        "detach",
        "--iface",
        GATEWAY_LAN,
        "--pin-root",
        root.arg(),
        "--socket",
        socket,
    ])
}

fn regionwall(args: &[&str]) -> std::process::Output {
    Command::new(exe())
        .args(args)
        .output()
        .expect("run regionwall")
}

#[test]
fn killed_controller_keeps_enforcing_restart_adopts_detach_removes() {
    // XDP links: attached, swapped (adoption, replacement) and detached.
    if !XDP_LINK.supported() {
        return;
    }
    let t = Topology::create("pin").expect("namespaces");
    let policy = demo_policy_copy();
    let root = PinRoot::new();
    let pins = root.pins();
    let first = Controller::start(&exe(), &t, &policy, &["--pin-root", root.arg(), "--json"])
        .expect("start");
    let before = pins.link_facts().expect("link").expect("pinned link");
    println!(
        "pinned in {}: link {} program {}",
        pins.path().display(),
        before.id,
        before.prog_id
    );

    first.kill9().expect("kill -9");
    assert!(pins.exists(), "pins outlive the controller");
    assert!(xdp_attached(&t), "still attached after kill -9");
    let blocked = send_traffic(&t, "blocked", BLOCKED, 5).expect("traffic");
    let allowed = send_traffic(&t, "allowed", ALLOWED, 5).expect("traffic");
    println!(
        "without a controller: blocked {}/{} delivered, allowed {}/{}",
        blocked.udp_delivered, blocked.udp_sent, allowed.udp_delivered, allowed.udp_sent
    );
    assert_eq!(blocked.udp_delivered, 0, "still dropped after kill -9");
    assert_eq!(allowed.udp_delivered, allowed.udp_sent);

    // Restart under traffic: adopted, the link kept, no packet through.
    let flow = Flow::start(&t, &[BLOCKED, ALLOWED], Duration::from_millis(2), 5000);
    std::thread::sleep(Duration::from_millis(100));
    let second = Controller::start(&exe(), &t, &policy, &["--pin-root", root.arg(), "--json"])
        .expect("restart");
    std::thread::sleep(Duration::from_millis(200));
    let counts = flow.stop();
    print_counts("across the restart", &counts);
    assert_eq!(
        counts[0].1.delivered, 0,
        "no blocked datagram during adoption"
    );
    assert_eq!(
        counts[1].1.delivered, counts[1].1.sent,
        "allowed all delivered"
    );
    assert!(
        second.log_text().contains("adopted the pinned state"),
        "{}",
        second.log_text()
    );
    let after = pins.link_facts().expect("link").expect("pinned link");
    println!("adopted: link {} program {}", after.id, after.prog_id);
    assert_eq!(after.id, before.id, "same link: never detached");
    assert_ne!(
        after.prog_id, before.prog_id,
        "the new controller's program"
    );

    // Events from while no controller ran, named by the adopted policy,
    // then new ones.
    let lines = second.drain_lines(5, Duration::from_secs(3));
    let records: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let queued = records
        .iter()
        .filter(|r| r["policy_epoch"] == 1 && r["rule"] == "phone-no-blocked-zone")
        .count();
    println!("events queued while no controller ran, delivered after restart: {queued}");
    assert!(queued >= 5, "queued drop events resumed: {lines:?}");
    let _ = send_traffic(&t, "blocked", BLOCKED, 3).expect("traffic");
    let later = second.drain_lines(3, Duration::from_secs(3));
    assert!(
        later
            .iter()
            .any(|l| l.contains("\"policy_epoch\":2") && l.contains("phone-no-blocked-zone")),
        "new events stream: {later:?}"
    );

    // Detach through the control socket: the controller detaches and exits.
    let socket = second.socket.to_str().expect("UTF-8").to_string();
    let out = detach(&root, &socket);
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(out.status.success() && text.contains("detached"));
    let mut second = second;
    assert!(
        second
            .wait_exit(Duration::from_secs(5))
            .expect("exit")
            .success()
    );
    assert!(!pins.exists(), "no pins left");
    assert!(!xdp_attached(&t), "detached");
    let open = send_traffic(&t, "blocked", BLOCKED, 3).expect("traffic");
    assert_eq!(open.udp_delivered, 3, "nothing enforces after detach");
}

#[test]
fn detach_without_a_controller_removes_a_crashed_controllers_pins() {
    // XDP links: attached, swapped (adoption, replacement) and detached.
    if !XDP_LINK.supported() {
        return;
    }
    let t = Topology::create("detach").expect("namespaces");
    let root = PinRoot::new();
    let c = Controller::start(&exe(), &t, &demo_policy_copy(), &["--pin-root", root.arg()])
        .expect("start");
    let socket = c.socket.to_str().expect("UTF-8").to_string();
    c.kill9().expect("kill -9");
    assert!(xdp_attached(&t));
    let out = detach(&root, &socket);
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success());
    assert!(!root.pins().exists());
    assert!(!xdp_attached(&t), "BPF_LINK_DETACH took it off");
}

#[test]
fn pinned_state_of_another_layout_is_replaced_without_a_gap() {
    // XDP links: attached, swapped (adoption, replacement) and detached.
    if !XDP_LINK.supported() {
        return;
    }
    let t = Topology::create("upgrade").expect("namespaces");
    let policy = demo_policy_copy();
    let root = PinRoot::new();
    let pins = root.pins();
    let first = Controller::start(&exe(), &t, &policy, &["--pin-root", root.arg()]).expect("start");
    let before = pins.link_facts().expect("link").expect("link pinned");
    first.kill9().expect("kill -9");
    // Make the pinned maps an older layout.
    let old = LAYOUT_VERSION - 1;
    let data = MapData::from_pin(pins.map("LAYOUT")).expect("pinned LAYOUT");
    let mut layout: Array<MapData, u32> = Array::try_from(Map::Array(data)).expect("array");
    layout
        .set(LAYOUT_SLOT_VERSION, &old, 0)
        .expect("set layout");

    let flow = Flow::start(&t, &[BLOCKED, ALLOWED], Duration::from_millis(2), 5000);
    std::thread::sleep(Duration::from_millis(100));
    let second =
        Controller::start(&exe(), &t, &policy, &["--pin-root", root.arg()]).expect("restart");
    std::thread::sleep(Duration::from_millis(200));
    let counts = flow.stop();
    print_counts("across the upgrade", &counts);
    let log = second.log_text();
    assert!(
        log.contains("replaced the pinned state") && log.contains(&format!("pinned layout {old}")),
        "{log}"
    );
    assert_eq!(
        counts[0].1.delivered, 0,
        "no blocked datagram during the upgrade"
    );
    assert_eq!(counts[1].1.delivered, counts[1].1.sent);
    let after = pins.link_facts().expect("link").expect("link pinned");
    println!(
        "upgraded: link {} -> {}, program {} -> {}",
        before.id, after.id, before.prog_id, after.prog_id
    );
    assert_eq!(
        after.id, before.id,
        "the program was swapped on the same link"
    );
    assert_ne!(after.prog_id, before.prog_id);
    let data = MapData::from_pin(pins.map("LAYOUT")).expect("pinned LAYOUT");
    let layout: Array<MapData, u32> = Array::try_from(Map::Array(data)).expect("array");
    assert_eq!(
        layout.get(&LAYOUT_SLOT_VERSION, 0).expect("get"),
        LAYOUT_VERSION,
        "the new maps are pinned"
    );
    let blocked = send_traffic(&t, "blocked", BLOCKED, 3).expect("traffic");
    assert_eq!(blocked.udp_delivered, 0);
    drop(second);
}

/// Y (198.51.100.0/24, real traffic) passes under both policies and X
/// (203.0.113.0/24, real traffic) is dropped under both, but their region
/// classes differ between the two, so a packet that saw the new lookup
/// tables with the old decisions (or the reverse) would get a verdict
/// neither policy gives. W (192.0.2.128/25, test_run only) is dropped only
/// by the second policy.
const POLICY_A: &str = r#"
[regions.y]
cidrs = ["198.51.100.0/24"]
[regions.x]
cidrs = ["203.0.113.0/24"]
[[rules]]
name = "block-x"
devices = ["default"]
block = ["x"]
"#;
const POLICY_B: &str = r#"
[regions.w]
cidrs = ["192.0.2.128/25"]
[regions.y]
cidrs = ["198.51.100.0/24"]
[regions.x]
cidrs = ["203.0.113.0/24"]
[[rules]]
name = "block-x"
devices = ["default"]
block = ["x", "w"]
"#;

/// test_run on the controller's own (pinned) program from another thread
/// until stopped: tallies of (destination, verdict).
struct Prober {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<[[u64; 2]; 3]>,
}

impl Prober {
    fn start(prog: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let prog = Xdp::from_pin(&prog, XdpAttachType::Interface).expect("pinned program");
            let dsts = [
                std::net::Ipv4Addr::new(198, 51, 100, 77), // y
                std::net::Ipv4Addr::new(203, 0, 113, 77),  // x
                std::net::Ipv4Addr::new(192, 0, 2, 200),   // w
            ];
            let frames: Vec<Vec<u8>> = dsts
                .iter()
                .map(|d| udp4_frame(std::net::Ipv4Addr::new(192, 0, 2, 99), *d, 53))
                .collect();
            let mut tally = [[0u64; 2]; 3];
            while !s.load(Ordering::Relaxed) {
                for (i, f) in frames.iter().enumerate() {
                    let r = common::prog::verdict(&prog, f);
                    match r {
                        XDP_PASS => tally[i][0] += 1,
                        XDP_DROP => tally[i][1] += 1,
                        other => panic!("unexpected XDP action {other}"),
                    }
                }
            }
            tally
        });
        Self { stop, thread }
    }

    /// [y, x, w] x [pass, drop].
    fn stop(self) -> [[u64; 2]; 3] {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("prober")
    }
}

fn check_alternation(tally: [[u64; 2]; 3], counts: &[(std::net::IpAddr, Count)]) {
    println!(
        "test_run verdicts: y pass {} drop {}; x pass {} drop {}; w pass {} drop {}",
        tally[0][0], tally[0][1], tally[1][0], tally[1][1], tally[2][0], tally[2][1]
    );
    print_counts("real packets", counts);
    assert_eq!(tally[0][1], 0, "y passes under both policies");
    assert_eq!(tally[1][0], 0, "x is dropped under both policies");
    assert!(
        tally[2][0] > 0 && tally[2][1] > 0,
        "w saw both policies while traffic ran"
    );
    assert_eq!(counts[0].1.delivered, counts[0].1.sent, "y: all delivered");
    assert_eq!(counts[1].1.delivered, 0, "x: none delivered");
}

#[test]
fn hundred_reloads_under_traffic_never_mix_policies() {
    let t = Topology::create("reload100").expect("namespaces");
    let policy = common::policy_file(POLICY_A);
    let root = PinRoot::new();
    let c = Controller::start(
        &exe(),
        &t,
        &policy,
        &["--pin-root", root.arg(), "--no-watch"],
    )
    .expect("start");
    let prober = Prober::start(root.pins().prog());
    let flow = Flow::start(
        &t,
        &["198.51.100.10", "203.0.113.10"],
        Duration::from_millis(1),
        200_000,
    );
    let start = Instant::now();
    let reloads = 100;
    for i in 0..reloads {
        let text = if i % 2 == 0 { POLICY_B } else { POLICY_A };
        std::fs::write(&policy, text).expect("write policy");
        c.signal(libc::SIGHUP);
        let epoch = i + 2;
        assert!(
            c.wait_log(&format!("(SIGHUP; epoch {epoch})"), Duration::from_secs(10)),
            "reload {epoch} not seen:\n{}",
            c.log_text()
        );
    }
    let elapsed = start.elapsed();
    let counts = flow.stop();
    let tally = prober.stop();
    println!(
        "{reloads} SIGHUP reloads in {elapsed:?} ({:?} each)",
        elapsed / reloads
    );
    check_alternation(tally, &counts);
}

#[test]
fn policy_file_changes_reload_debounced() {
    let t = Topology::create("watch").expect("namespaces");
    let dir = common::policy_file(POLICY_A);
    let policy = dir.clone();
    let root = PinRoot::new();
    let c = Controller::start(&exe(), &t, &policy, &["--pin-root", root.arg()]).expect("start");
    let prober = Prober::start(root.pins().prog());
    let flow = Flow::start(
        &t,
        &["198.51.100.10", "203.0.113.10"],
        Duration::from_millis(1),
        200_000,
    );
    // 20 saves, each a reload, alternating policies: in place and by rename.
    let mut epoch = 1;
    for i in 0..20 {
        let text = if i % 2 == 0 { POLICY_B } else { POLICY_A };
        if i % 4 < 2 {
            std::fs::write(&policy, text).expect("write");
        } else {
            let tmp = policy.with_extension("toml.tmp");
            std::fs::write(&tmp, text).expect("write tmp");
            std::fs::rename(&tmp, &policy).expect("rename over");
        }
        epoch += 1;
        assert!(
            c.wait_log(
                &format!("(policy file changed; epoch {epoch})"),
                Duration::from_secs(5)
            ),
            "save {i} did not reload:\n{}",
            c.log_text()
        );
    }
    let counts = flow.stop();
    let tally = prober.stop();
    println!("20 file-change reloads");
    check_alternation(tally, &counts);

    // A burst of saves is one reload.
    let reloads_before = c.log_text().matches("reloaded policy").count();
    for i in 0..10 {
        std::fs::write(&policy, if i % 2 == 0 { POLICY_B } else { POLICY_A }).expect("write");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(800));
    let burst = c.log_text().matches("reloaded policy").count() - reloads_before;
    println!("10 saves within 100 ms: {burst} reload(s)");
    assert_eq!(burst, 1, "debounced");
}

#[test]
fn bad_policy_or_data_file_is_rejected_like_check_and_the_old_policy_stays() {
    let t = Topology::create("badinput").expect("namespaces");
    let dir = common::policy_file(POLICY_A);
    let policy = dir.clone();
    let root = PinRoot::new();
    let c = Controller::start(&exe(), &t, &policy, &["--pin-root", root.arg()]).expect("start");
    let epoch = 1;
    // A broken policy: the same diagnostics as `check`, the old one stays.
    let broken = "[regions.x]\ncidrs = [\"203.0.113.0/33\"]\n";
    let copy = common::policy_file(broken);
    let check = regionwall(&["check", copy.to_str().expect("UTF-8")]);
    assert!(!check.status.success());
    let diag = String::from_utf8_lossy(&check.stderr).replace(
        copy.to_str().expect("UTF-8"),
        policy.to_str().expect("UTF-8"),
    );
    let expected: Vec<&str> = diag
        .lines()
        .filter(|l| l.contains(":2:10:") || l.contains('^'))
        .collect();
    assert!(!expected.is_empty(), "check output: {diag}");
    std::fs::write(&policy, broken).expect("write broken");
    assert!(c.wait_log("rejected, previous policy", Duration::from_secs(5)));
    let log = c.log_text();
    for line in &expected {
        assert!(
            log.contains(line),
            "the reload logs `{line}` like check:\n{log}"
        );
    }
    println!("rejected with the same diagnostics as check: {expected:?}");
    let prog = Xdp::from_pin(root.pins().prog(), XdpAttachType::Interface).expect("program");
    let x = udp4_frame(
        std::net::Ipv4Addr::new(192, 0, 2, 99),
        std::net::Ipv4Addr::new(203, 0, 113, 5),
        2,
    );
    let verdict = |f: &[u8]| common::prog::verdict(&prog, f);
    assert_eq!(verdict(&x), XDP_DROP, "the last good policy still drops x");

    // A broken data file (a country list with a bad line) is rejected too.
    let data = dir.parent().expect("dir").join("countries");
    std::fs::create_dir_all(data.join("zz")).expect("mkdir");
    std::fs::write(
        data.join("zz/ipv4-aggregated.txt"),
        "203.0.113.0/24\n203.0.113.300/32\n",
    )
    .expect("write data");
    std::fs::write(data.join("zz/ipv6-aggregated.txt"), "").expect("write data");
    let with_data = format!(
        "regions_dir = \"{}\"\n[regions.zz]\ncountries = [\"ZZ\"]\n[[rules]]\nname = \"no-zz\"\ndevices = [\"default\"]\nblock = [\"zz\"]\n",
        data.display()
    );
    std::fs::write(&policy, with_data).expect("write");
    assert!(
        c.wait_log("ipv4-aggregated.txt:2:", Duration::from_secs(5)),
        "the data file's line is named:\n{}",
        c.log_text()
    );
    assert_eq!(verdict(&x), XDP_DROP, "still the last good policy");
    assert!(
        !c.log_text().contains(&format!("epoch {}", epoch + 1)),
        "nothing was published after the last good policy"
    );
    println!("bad data file rejected with its position; epoch {epoch} still enforcing");
}

/// The controller's peak and current RSS in KiB.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn stats(root: &PinRoot, socket: &Path) -> Stats {
    let out = regionwall(&[
        "stats",
        "--iface",
        GATEWAY_LAN,
        "--pin-root",
        root.arg(),
        "--socket",
        socket.to_str().expect("UTF-8"),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stats JSON")
}

/// One million blocked packets through the controller's program; returns
/// the stats once every event is accounted for.
fn flood(c: &Controller, root: &PinRoot, packets: u32) -> Stats {
    let prog = Xdp::from_pin(root.pins().prog(), XdpAttachType::Interface).expect("program");
    let frame = udp4_frame(
        std::net::Ipv4Addr::new(192, 0, 2, 10),
        std::net::Ipv4Addr::new(198, 51, 100, 20),
        9,
    );
    let before = stats(root, &c.socket);
    let start = Instant::now();
    let run = common::prog::run(&prog, &frame, packets);
    assert_eq!(run.return_value, XDP_DROP);
    println!("{packets} blocked packets in {:?}", start.elapsed());
    // Wait for the controller to drain the ring.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = stats(root, &c.socket);
        let drops = s.packets(Verdict::Drop) - before.packets(Verdict::Drop);
        let n = s.not_logged;
        let accounted = (s.events_logged - before.events_logged)
            + (n.suppressed - before.not_logged.suppressed)
            + (n.ring_lost - before.not_logged.ring_lost)
            + (n.queue_dropped - before.not_logged.queue_dropped);
        if accounted == drops || Instant::now() > deadline {
            println!(
                "drops {drops} = logged {} + over the rate limit {} + lost in the ring {} + dropped from the queue {} (accounted {accounted})",
                s.events_logged - before.events_logged,
                n.suppressed - before.not_logged.suppressed,
                n.ring_lost - before.not_logged.ring_lost,
                n.queue_dropped - before.not_logged.queue_dropped
            );
            assert_eq!(drops, u64::from(packets), "every packet dropped");
            assert_eq!(accounted, drops, "events + suppressed + lost = drops");
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn event_floods_are_rate_limited_and_fully_accounted() {
    let t = Topology::create("flood").expect("namespaces");
    let policy = demo_policy_copy();
    // Default rate limit: most events suppressed in the kernel.
    let root = PinRoot::new();
    let c = Controller::start(&exe(), &t, &policy, &["--pin-root", root.arg(), "--json"])
        .expect("start");
    let (_, rss_before) = rss(c.pid());
    let s = flood(&c, &root, 1_000_000);
    assert!(
        s.not_logged.suppressed > 900_000,
        "rate limited in the kernel"
    );
    assert!(
        s.suppressed
            .iter()
            .any(|r| r.device == "phone" && r.region == "blocked-zone"),
        "suppression is reported per device and region: {:?}",
        s.suppressed
    );
    let (peak, now) = rss(c.pid());
    println!("rate-limited flood: controller RSS {rss_before} KiB -> {now} KiB (peak {peak} KiB)");
    drop(c);
    drop(root);

    // No rate limit and a small queue: the ring and the queue overflow,
    // every event is still accounted for and memory stays bounded.
    let root = PinRoot::new();
    let c = Controller::start(
        &exe(),
        &t,
        &policy,
        &[
            "--pin-root",
            root.arg(),
            "--json",
            "--event-rate",
            "0",
            "--queue",
            "1024",
        ],
    )
    .expect("start");
    let (_, rss_before) = rss(c.pid());
    let s = flood(&c, &root, 1_000_000);
    let (peak, now) = rss(c.pid());
    println!(
        "unlimited flood: logged {}, lost {}, queue-dropped {}; controller RSS {rss_before} KiB -> {now} KiB (peak {peak} KiB)",
        s.events_logged, s.not_logged.ring_lost, s.not_logged.queue_dropped
    );
    assert!(
        s.not_logged.ring_lost + s.not_logged.queue_dropped > 0,
        "overflowed"
    );
    assert!(
        now < rss_before + 32 * 1024,
        "memory bounded: {rss_before} -> {now} KiB"
    );
    // The drain loop still prints everything it got.
    let printed = c.drain_lines(usize::MAX, Duration::from_millis(500)).len();
    println!("unlimited flood: {printed} event lines read from the controller's stdout");
}

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
    let s = stats(&root, &c.socket);
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
    t.gateway
        .ip(&[
            "link",
            "add",
            GATEWAY_LAN,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            t.phone.name(),
        ])
        .expect("re-create veth");
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
    let s = stats(&root, &socket);
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
