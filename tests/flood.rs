//! Event floods through the real controller in sandbox namespaces: 1M
//! drops rate-limited, then unlimited with history, `/metrics` and the
//! dashboard on and read throughout; every drop accounted for, RSS and the
//! database's size bounded. Every namespace, pin and state directory is
//! removed.

mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use aya::programs::Xdp;
use aya_obj::programs::XdpAttachType;
use common::{demo_policy_copy, exe, pins::PinRoot, udp4_frame};
use regionwall::{control::Stats, verdict::Verdict};
use regionwall_testkit::{
    sandbox::{Controller, Topology},
    xdp::XDP_DROP,
};

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

/// One million blocked packets through the controller's program; returns
/// the stats once every event is accounted for.
fn flood(c: &Controller, root: &PinRoot, packets: u32) -> Stats {
    let prog = Xdp::from_pin(root.pins().prog(), XdpAttachType::Interface).expect("program");
    let frame = udp4_frame(
        std::net::Ipv4Addr::new(192, 0, 2, 10),
        std::net::Ipv4Addr::new(198, 51, 100, 20),
        9,
    );
    let before = common::stats(root, &c.socket);
    let start = Instant::now();
    let run = common::prog::run(&prog, &frame, packets);
    assert_eq!(run.return_value, XDP_DROP);
    println!("{packets} blocked packets in {:?}", start.elapsed());
    // Wait for the controller to drain the ring.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = common::stats(root, &c.socket);
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

/// [`flood`] once, and again (twice at most: a loaded machine hands the
/// history fewer events per flood) until the history has written more
/// than its bound holds (an event row takes well over 100 bytes), so the
/// bound is enforced during the floods.
fn flood_past_the_bound(c: &Controller, root: &PinRoot) -> Stats {
    let mut s = flood(c, root, 1_000_000);
    for _ in 0..2 {
        common::wait_history_accounted(root, &c.socket);
        let written = common::stats(root, &c.socket)
            .history
            .map_or(0, |h| h.events_written);
        if written * 100 > MAX_DB {
            break;
        }
        s = flood(c, root, 1_000_000);
    }
    s
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
    // every event is still accounted for and memory stays bounded, with
    // history (kept under a small --max-db-size), /metrics and the
    // dashboard on and read throughout.
    let root = PinRoot::new();
    let state = policy.with_file_name("flood-state");
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
            "--state-dir",
            state.to_str().expect("UTF-8"),
            "--max-db-size",
            "512k",
            "--metrics",
            METRICS,
            "--web",
            WEB,
        ],
    )
    .expect("start");
    let (_, rss_before) = rss(c.pid());
    let readers = Readers::start(&t, &state);
    let s = flood_past_the_bound(&c, &root);
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
    // History recorded every event it was handed, or counted it as not
    // written: nothing vanishes between the two.
    common::wait_history_accounted(&root, &c.socket);
    let (scrapes, polls, largest) = readers.stop();
    let s = common::stats(&root, &c.socket);
    let history = s.history.clone().expect("history");
    let n = s.not_logged;
    assert_eq!(
        history.events_written + history.not_written + n.suppressed + n.ring_lost + n.queue_dropped,
        s.packets(Verdict::Drop),
        "written + not written + suppressed + lost + dropped from the queue = drops"
    );
    println!(
        "unlimited flood: {scrapes} scrapes and {polls} dashboard polls during it; the database and its log peaked at {} KiB (bound 512 KiB); {} events written",
        largest / 1024,
        history.events_written
    );
    assert!(scrapes > 0 && polls > 0, "read during the flood");
    // An event row takes well over 100 bytes: the flood wrote more than
    // the bound holds, so the bound was enforced during it.
    assert!(
        history.events_written * 100 > MAX_DB,
        "{} events written",
        history.events_written
    );
    assert!(
        largest <= MAX_DB + MAX_DB / 10,
        "--max-db-size 512k held within 10 %: {largest} bytes"
    );
    // The drain loop still prints everything it got.
    let printed = c.drain_lines(usize::MAX, Duration::from_millis(500)).len();
    println!("unlimited flood: {printed} event lines read from the controller's stdout");
    drop(c);
    let _ = std::fs::remove_dir_all(&state);
}

/// Addresses inside the (unique) gateway namespace.
const METRICS: &str = "127.0.0.1:9465";
const WEB: &str = "127.0.0.1:8080";

/// `--max-db-size` of the flood: its events take more (6k-10k events,
/// 1-1.6 MiB), so the bound is enforced during it. The database may pass
/// it by one commit past the trim threshold (95 %), a twentieth of the
/// bound.
const MAX_DB: u64 = 512 * 1024;

/// Scrapes `/metrics`, polls the dashboard's API and samples the
/// database's size on disk, until stopped.
struct Readers {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl Readers {
    fn start(t: &Topology, state: &Path) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut threads = Vec::new();
        for urls in [
            vec![format!("http://{METRICS}/metrics")],
            vec![
                format!("http://{WEB}/api/status"),
                format!("http://{WEB}/api/top"),
            ],
        ] {
            // A command runs again on every `output()`.
            let mut curls: Vec<Command> = urls
                .iter()
                .map(|url| {
                    let mut c = t.gateway.command("curl");
                    c.args(["-sS", "--fail", "-o", "/dev/null", "--max-time", "30", url]);
                    c
                })
                .collect();
            let stop = std::sync::Arc::clone(&stop);
            threads.push(std::thread::spawn(move || {
                let mut ok = 0;
                while !stop.load(Ordering::Relaxed) {
                    for curl in &mut curls {
                        if curl.output().is_ok_and(|o| o.status.success()) {
                            ok += 1;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                ok
            }));
        }
        let files = [state.join("history.db"), state.join("history.db-wal")];
        let stop2 = std::sync::Arc::clone(&stop);
        threads.push(std::thread::spawn(move || {
            let mut largest = 0;
            while !stop2.load(Ordering::Relaxed) {
                let size: u64 = files
                    .iter()
                    .filter_map(|f| std::fs::metadata(f).ok())
                    .map(|m| m.len())
                    .sum();
                largest = largest.max(size);
                std::thread::sleep(Duration::from_millis(10));
            }
            largest
        }));
        Self { stop, threads }
    }

    /// Scrapes answered, dashboard requests answered, the largest size.
    fn stop(self) -> (u64, u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut r = self.threads.into_iter().map(|t| t.join().expect("reader"));
        (
            r.next().unwrap_or(0),
            r.next().unwrap_or(0),
            r.next().unwrap_or(0),
        )
    }
}
