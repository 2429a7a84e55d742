//! Reliability, with the real controller in sandbox namespaces: pinned
//! state that survives SIGKILL and is adopted without a gap, upgrades
//! across layouts, 100 atomic reloads under traffic, file watching and
//! rejected input. Every namespace and pin is removed on drop.

mod common;

use regionwall_testkit::xdp::{XDP_DROP, XDP_PASS};
use std::{
    path::PathBuf,
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
    regionwall, udp4_frame, xdp_attached,
};
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
