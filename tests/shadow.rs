//! Shadow policies with the real controller in sandbox namespaces: a
//! staged candidate counts exactly the disagreements real traffic causes
//! while the live verdicts hold, survives kill -9, pauses when the live
//! policy changes (promote refused), is cleared by discard, and promotes
//! atomically under traffic (BPF_PROG_TEST_RUN probes see the old policy,
//! then the new one, never a mix). Candidates that add or remove regions
//! are evaluated over a refined live table, the live verdicts and counts
//! unchanged. Every namespace and pin is removed on drop.

mod common;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use aya::programs::Xdp;
use aya_obj::programs::XdpAttachType;
use common::{exe, pins::PinRoot, regionwall, text, udp4_frame};
use regionwall::{candidate::Status, verdict::Verdict};
use regionwall_testkit::{
    sandbox::{Controller, GATEWAY_LAN, Topology},
    traffic::udp_burst,
    xdp::{XDP_DROP, XDP_PASS},
};

/// Live: the phone may not reach zone-a.
const LIVE: &str = r#"
[regions.zone-a]
cidrs = ["198.51.100.0/24"]

[regions.zone-b]
cidrs = ["203.0.113.0/24"]

[devices.phone]
ip = ["192.0.2.10"]

[[rules]]
name = "no-a"
devices = ["phone"]
block = ["zone-a"]
"#;

/// Candidate: zone-b blocked instead (blocks what live passes, passes
/// what live blocks); regions and devices unchanged.
const CANDIDATE: &str = r#"
[regions.zone-a]
cidrs = ["198.51.100.0/24"]

[regions.zone-b]
cidrs = ["203.0.113.0/24"]

[devices.phone]
ip = ["192.0.2.10"]

[[rules]]
name = "no-b"
devices = ["phone"]
block = ["zone-b"]
"#;

/// UDP payload bytes of every test datagram; the XDP frame is 42 more
/// (Ethernet 14, IPv4 20, UDP 8).
const PAYLOAD: usize = 100;
const FRAME: u64 = PAYLOAD as u64 + 42;

fn cli(c: &Controller, root: &PinRoot, args: &[&str]) -> std::process::Output {
    common::at_controller(c, root, args)
}

fn diff(c: &Controller, root: &PinRoot) -> Status {
    let out = cli(c, root, &["diff", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("diff JSON")
}

fn stage(c: &Controller, root: &PinRoot, file: &Path) {
    let out = cli(c, root, &["stage", file.to_str().expect("UTF-8")]);
    assert!(out.status.success(), "stage: {}", text(&out));
}

/// The diff once `(live, candidate)` has counted `packets` (veth hands
/// frames to XDP on the gateway's NAPI, after the sender returned), or
/// after 20 s; the caller asserts on what it returns.
fn diff_when(
    c: &Controller,
    root: &PinRoot,
    live: Verdict,
    candidate: Verdict,
    packets: u64,
) -> Status {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = diff(c, root);
        if counted(&s, live, candidate).0 >= packets || std::time::Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Packets and bytes of the diff rows from `live` to `candidate`.
fn counted(s: &Status, live: Verdict, candidate: Verdict) -> (u64, u64) {
    s.rows
        .iter()
        .filter(|r| r.live == live && r.candidate == candidate)
        .fold((0, 0), |(p, b), r| (p + r.packets, b + r.bytes))
}

fn send(t: &Topology, to: &str, n: u64) {
    udp_burst(t, to, n, PAYLOAD, Duration::ZERO).expect("udp burst");
}

/// `explain ADDR --candidate --json` for the phone, the candidate found
/// through the controller.
fn explain_both(c: &Controller, live: &Path, addr: &str) -> serde_json::Value {
    let out = regionwall(&[
        "explain",
        addr,
        "--device",
        "phone",
        "--policy",
        live.to_str().expect("UTF-8"),
        "--iface",
        GATEWAY_LAN,
        "--socket",
        c.socket.to_str().expect("UTF-8"),
        "--candidate",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("explain JSON")
}

#[test]
fn candidate_counts_what_was_sent_and_survives_restarts() {
    let t = Topology::create("rwshd-diff").expect("namespaces");
    let live = common::policy_file(LIVE);
    let candidate = common::policy_file(CANDIDATE);
    let root = PinRoot::new();
    let c = Controller::start(
        &exe(),
        &t,
        &live,
        &["--pin-root", root.arg(), "--no-history"],
    )
    .expect("start");

    // A candidate with other devices cannot share the lookup: refused,
    // with the reason.
    let other = common::policy_file(&CANDIDATE.replace("192.0.2.10", "192.0.2.11"));
    let out = cli(&c, &root, &["stage", other.to_str().expect("UTF-8")]);
    assert!(!out.status.success());
    assert!(text(&out).contains("devices"), "{}", text(&out));
    assert!(!diff(&c, &root).staged);

    stage(&c, &root, &candidate);
    send(&t, "198.51.100.10:9", 50);
    send(&t, "203.0.113.10:9", 30);
    diff_when(&c, &root, Verdict::Drop, Verdict::Pass, 50);
    let s = diff_when(&c, &root, Verdict::Pass, Verdict::Drop, 30);
    assert!(s.staged && s.evaluated, "{s:?}");
    assert_eq!(counted(&s, Verdict::Drop, Verdict::Pass), (50, 50 * FRAME));
    assert_eq!(counted(&s, Verdict::Pass, Verdict::Drop), (30, 30 * FRAME));
    assert_eq!(s.rows.len(), 2, "{s:?}");
    let newly = s
        .rows
        .iter()
        .find(|r| r.candidate == Verdict::Drop)
        .expect("newly blocked row");
    assert_eq!(
        (
            newly.device.as_str(),
            newly.region.as_str(),
            newly.rule.as_str()
        ),
        ("phone", "zone-b", "no-b")
    );
    // Live verdicts unchanged: zone-a dropped, zone-b passed (by region:
    // the phone's own IPv6 link-local chatter passes in no region).
    assert_eq!(phone_count(&c, &root, "zone-a", "drop"), 50);
    assert_eq!(phone_count(&c, &root, "zone-b", "pass"), 30);
    assert_eq!(common::stats(&root, &c.socket).packets(Verdict::Drop), 50);
    let human = cli(&c, &root, &["diff"]);
    assert!(
        text(&human)
            .contains("would newly block 30 packets / 4.3 kB from phone to zone-b (rule no-b)"),
        "{}",
        text(&human)
    );

    // explain --candidate answers for both, the candidate found through
    // the controller.
    let both = explain_both(&c, &live, "203.0.113.10");
    assert_eq!(both["live"]["verdict"], "pass", "{both}");
    assert_eq!(both["candidate"]["verdict"], "drop", "{both}");

    // kill -9: the candidate and its counts are adopted.
    let socket = c.socket.clone();
    c.kill9().expect("kill -9");
    let c = Controller::start(
        &exe(),
        &t,
        &live,
        &[
            "--pin-root",
            root.arg(),
            "--no-history",
            "--socket",
            socket.to_str().expect("UTF-8"),
        ],
    )
    .expect("restart");
    let s = diff(&c, &root);
    assert!(s.staged && s.evaluated, "adopted: {s:?}");
    assert_eq!(counted(&s, Verdict::Pass, Verdict::Drop), (30, 30 * FRAME));
    send(&t, "203.0.113.10:9", 5);
    let s = diff_when(&c, &root, Verdict::Pass, Verdict::Drop, 35);
    assert_eq!(counted(&s, Verdict::Pass, Verdict::Drop), (35, 35 * FRAME));

    pause_and_resume(&c, &root, &live);

    // Discard clears the counts: staged again, it starts from zero.
    let out = cli(&c, &root, &["discard"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!diff(&c, &root).staged);
    stage(&c, &root, &candidate);
    let s = diff(&c, &root);
    assert!(s.rows.is_empty(), "counts cleared: {s:?}");
    drop(c);
}

/// The live policy changes: the candidate pauses (said in the diff),
/// promote is refused; changed back, it counts again and the log says
/// there is a gap.
fn pause_and_resume(c: &Controller, root: &PinRoot, live: &Path) {
    std::fs::write(
        live,
        LIVE.replace("name = \"no-a\"", "name = \"no-a\"\nmode = \"audit\""),
    )
    .expect("rewrite live");
    c.signal(libc::SIGHUP);
    assert!(
        common::wait_count(c, "reloaded policy", 1, Duration::from_secs(20)),
        "{}",
        c.log_text()
    );
    let s = diff(c, root);
    assert!(s.staged && !s.evaluated, "paused: {s:?}");
    assert!(s.paused.contains("live policy changed"), "{s:?}");
    let out = cli(c, root, &["promote"]);
    assert!(!out.status.success(), "promote after a live change refused");
    assert!(text(&out).contains("changed since"), "{}", text(&out));
    // Changed back: it counts again, and the log says there is a gap.
    std::fs::write(live, LIVE).expect("restore live");
    c.signal(libc::SIGHUP);
    assert!(
        common::wait_count(c, "counts again", 1, Duration::from_secs(20)),
        "{}",
        c.log_text()
    );
    assert!(diff(c, root).evaluated);
}

/// `events --candidate` streams "would drop" events naming the
/// candidate's rule, marked as candidate events, with the live verdict.
fn candidate_events_stream(t: &Topology, c: &Controller, root: &PinRoot) {
    let args = [
        "events",
        "--candidate",
        "--json",
        "--count",
        "2",
        "--iface",
        GATEWAY_LAN,
        "--pin-root",
        root.arg(),
        "--socket",
        c.socket.to_str().expect("UTF-8"),
    ];
    let mut child = std::process::Command::new(exe())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("events --candidate");
    // Sent until the client has printed its two events (it subscribes
    // after it starts; at most 200 datagrams).
    for _ in 0..200 {
        if child.try_wait().expect("events client").is_some() {
            break;
        }
        send(t, "203.0.113.10:9", 1);
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("events output");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("event JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for e in &lines {
        assert_eq!(e["candidate"], true, "{e}");
        assert_eq!(e["verdict"], "drop", "{e}");
        assert_eq!(e["live_verdict"], "pass", "{e}");
        assert_eq!(e["rule"], "no-b", "{e}");
        assert_eq!(e["device"], "phone", "{e}");
    }
}

#[test]
fn promote_under_traffic_is_old_then_new_never_a_mix() {
    let t = Topology::create("rwshd-promote").expect("namespaces");
    let live = common::policy_file(LIVE);
    let candidate = common::policy_file(CANDIDATE);
    let root = PinRoot::new();
    let c = Controller::start(
        &exe(),
        &t,
        &live,
        &["--pin-root", root.arg(), "--no-history"],
    )
    .expect("start");
    stage(&c, &root, &candidate);
    candidate_events_stream(&t, &c, &root);
    let prog = Xdp::from_pin(root.pins().prog(), XdpAttachType::Interface).expect("program");
    let phone = Ipv4Addr::new(192, 0, 2, 10);
    let to_a = udp4_frame(phone, Ipv4Addr::new(198, 51, 100, 20), 9);
    let to_b = udp4_frame(phone, Ipv4Addr::new(203, 0, 113, 20), 9);
    // Old: a dropped, b passed. New: a passed, b dropped.
    assert_eq!(common::prog::verdict(&prog, &to_a), XDP_DROP);
    assert_eq!(common::prog::verdict(&prog, &to_b), XDP_PASS);

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let t = &t;
        std::thread::scope(|scope| {
            let sending = Arc::clone(&stop);
            let sender = scope.spawn(move || {
                let mut sent = 0u64;
                while !sending.load(Ordering::Relaxed) {
                    send(t, "198.51.100.10:9", 20);
                    send(t, "203.0.113.10:9", 20);
                    sent += 40;
                }
                sent
            });
            let probes = {
                let stop = Arc::clone(&stop);
                let (prog, to_a, to_b) = (&prog, &to_a, &to_b);
                scope.spawn(move || {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let a = common::prog::verdict(prog, to_a);
                        let b = common::prog::verdict(prog, to_b);
                        seen.push((a, b));
                    }
                    seen
                })
            };
            std::thread::sleep(Duration::from_millis(300));
            let out = cli(&c, &root, &["promote"]);
            assert!(out.status.success(), "promote: {}", text(&out));
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::Relaxed);
            (
                sender.join().expect("sender"),
                probes.join().expect("probes"),
            )
        })
    };
    let (sent, seen) = traffic;
    assert!(sent > 0);
    // Each probe packet saw the old policy or the new one; once one saw
    // the new one, none saw the old one again.
    let old = |v: u32, a: bool| v == if a { XDP_DROP } else { XDP_PASS };
    let mut switched = false;
    let mut old_pairs = 0;
    let mut new_pairs = 0;
    for &(a, b) in &seen {
        for (v, is_a) in [(a, true), (b, false)] {
            if old(v, is_a) {
                assert!(
                    !switched,
                    "a probe saw the old policy after the new one: {seen:?}"
                );
            } else {
                switched = true;
            }
        }
        if old(a, true) && old(b, false) {
            old_pairs += 1;
        } else if !old(a, true) && !old(b, false) {
            new_pairs += 1;
        }
    }
    println!(
        "{} probe pairs: {old_pairs} old, {new_pairs} new, {} across the flip; {sent} datagrams sent",
        seen.len(),
        seen.len() - old_pairs - new_pairs
    );
    assert!(
        old_pairs > 0 && new_pairs > 0,
        "probes on both sides of the flip"
    );
    assert!(
        seen.len() - old_pairs - new_pairs <= 1,
        "one pair at most spans the flip"
    );
    // Promoted: the candidate is gone, the new policy enforces.
    assert!(!diff(&c, &root).staged);
    assert_eq!(common::prog::verdict(&prog, &to_a), XDP_PASS);
    assert_eq!(common::prog::verdict(&prog, &to_b), XDP_DROP);
    drop(c);
}

/// Adds zone-c, new prefixes inside zone-b, and blocks it for the phone.
const ADDS_C: &str = r#"
[regions.zone-a]
cidrs = ["198.51.100.0/24"]

[regions.zone-b]
cidrs = ["203.0.113.0/24"]

[regions.zone-c]
cidrs = ["203.0.113.128/25"]

[devices.phone]
ip = ["192.0.2.10"]

[[rules]]
name = "no-a"
devices = ["phone"]
block = ["zone-a"]

[[rules]]
name = "no-c"
devices = ["phone"]
block = ["zone-c"]
"#;

/// Removes zone-a and zone-c and every rule (what `ADDS_C` blocks passes).
const REMOVES_A_C: &str = r#"
# Passing everything is intended: promote keeps the reload's guard.
allow_empty = true

[regions.zone-b]
cidrs = ["203.0.113.0/24"]

[devices.phone]
ip = ["192.0.2.10"]
"#;

/// Live packets per (device, region, verdict).
fn live_counts(c: &Controller, root: &PinRoot) -> BTreeMap<(String, String, String), u64> {
    let mut out = BTreeMap::new();
    for r in common::stats(root, &c.socket).traffic {
        *out.entry((r.device, r.region, r.verdict.as_str().to_string()))
            .or_default() += r.packets;
    }
    out
}

/// The phone's live packets to `region` with `verdict`.
fn phone_count(c: &Controller, root: &PinRoot, region: &str, verdict: &str) -> u64 {
    let counts = live_counts(c, root);
    let key = ("phone".to_string(), region.to_string(), verdict.to_string());
    counts.get(&key).copied().unwrap_or(0)
}

/// What `after` counted beyond `before`, zero rows left out.
fn counted_since(
    before: &BTreeMap<(String, String, String), u64>,
    after: &BTreeMap<(String, String, String), u64>,
) -> Vec<(String, String, String, u64)> {
    after
        .iter()
        .map(|(k, n)| (k, n - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .map(|((d, r, v), n)| (d.clone(), r.clone(), v.clone(), n))
        .collect()
}

fn row(device: &str, region: &str, verdict: &str, n: u64) -> (String, String, String, u64) {
    (device.into(), region.into(), verdict.into(), n)
}

#[test]
fn candidates_adding_or_removing_regions_are_evaluated_then_promoted() {
    let t = Topology::create("rwshd-regions").expect("namespaces");
    let live = common::policy_file(LIVE);
    let adds = common::policy_file(ADDS_C);
    let removes = common::policy_file(REMOVES_A_C);
    let root = PinRoot::new();
    let c = Controller::start(
        &exe(),
        &t,
        &live,
        &["--pin-root", root.arg(), "--no-history"],
    )
    .expect("start");

    // A candidate with a new region: the live table is republished over
    // the refined classes, the live verdicts and counts as before.
    stage(&c, &root, &adds);
    assert!(
        common::wait_count(&c, "republished the live policy", 1, Duration::from_secs(5)),
        "{}",
        c.log_text()
    );
    // Staged through the socket, the refined table was compiled off the
    // controller's event loop.
    assert!(
        c.log_text().contains("(compiled off the event loop)"),
        "{}",
        c.log_text()
    );
    let before = live_counts(&c, &root);
    send(&t, "203.0.113.10:9", 40); // zone-b: passes in both
    send(&t, "198.51.100.10:9", 20); // zone-a: dropped in both
    send(&t, "203.0.113.200:9", 25); // zone-c: live passes, candidate drops
    let s = diff_when(&c, &root, Verdict::Pass, Verdict::Drop, 25);
    assert!(s.staged && s.evaluated, "{s:?}");
    assert_eq!(counted(&s, Verdict::Pass, Verdict::Drop), (25, 25 * FRAME));
    assert_eq!(s.rows.len(), 1, "{s:?}");
    assert_eq!(
        (s.rows[0].region.as_str(), s.rows[0].rule.as_str()),
        ("zone-c", "no-c")
    );
    assert_eq!(
        counted_since(&before, &live_counts(&c, &root)),
        vec![
            row("phone", "zone-a", "drop", 20),
            row("phone", "zone-b", "pass", 65),
        ]
    );
    // kill -9: the restarted controller publishes the live policy plain,
    // refines it again for the adopted candidate, and counts go on.
    let socket = c.socket.clone();
    c.kill9().expect("kill -9");
    let c = Controller::start(
        &exe(),
        &t,
        &live,
        &[
            "--pin-root",
            root.arg(),
            "--no-history",
            "--socket",
            socket.to_str().expect("UTF-8"),
        ],
    )
    .expect("restart");
    let s = diff(&c, &root);
    assert!(s.staged && s.evaluated, "adopted: {s:?}\n{}", c.log_text());
    send(&t, "203.0.113.200:9", 5);
    let s = diff_when(&c, &root, Verdict::Pass, Verdict::Drop, 30);
    assert_eq!(counted(&s, Verdict::Pass, Verdict::Drop), (30, 30 * FRAME));
    // Promoted: the candidate enforces.
    let prog = Xdp::from_pin(root.pins().prog(), XdpAttachType::Interface).expect("program");
    let phone = Ipv4Addr::new(192, 0, 2, 10);
    let probe = |dst: [u8; 4]| common::prog::verdict(&prog, &udp4_frame(phone, dst.into(), 9));
    let out = cli(&c, &root, &["promote"]);
    assert!(out.status.success(), "promote: {}", text(&out));
    assert_eq!(probe([203, 0, 113, 200]), XDP_DROP);
    assert_eq!(probe([203, 0, 113, 10]), XDP_PASS);
    assert_eq!(probe([198, 51, 100, 10]), XDP_DROP);

    // A candidate without zone-a and zone-c: what they drop would pass.
    stage(&c, &root, &removes);
    let before = live_counts(&c, &root);
    send(&t, "203.0.113.10:9", 10); // zone-b: passes in both
    send(&t, "203.0.113.200:9", 12); // zone-c: live drops, candidate passes
    send(&t, "198.51.100.10:9", 15); // zone-a: live drops, candidate passes
    let s = diff_when(&c, &root, Verdict::Drop, Verdict::Pass, 27);
    assert!(s.staged && s.evaluated, "{s:?}");
    assert_eq!(counted(&s, Verdict::Drop, Verdict::Pass), (27, 27 * FRAME));
    assert_eq!(counted(&s, Verdict::Pass, Verdict::Drop), (0, 0));
    assert_eq!(
        counted_since(&before, &live_counts(&c, &root)),
        vec![
            row("phone", "zone-a", "drop", 15),
            row("phone", "zone-b", "pass", 10),
            row("phone", "zone-c", "drop", 12),
        ]
    );
    let out = cli(&c, &root, &["promote"]);
    assert!(out.status.success(), "promote: {}", text(&out));
    assert!(!diff(&c, &root).staged);
    for dst in [[203, 0, 113, 200], [203, 0, 113, 10], [198, 51, 100, 10]] {
        assert_eq!(probe(dst), XDP_PASS, "{dst:?}");
    }
    drop(c);
}
