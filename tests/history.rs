//! History, with the real controller in sandbox namespaces: events and
//! per-minute counter rollups land in the database with the right fields
//! and counts, `history` and `events --since` read them back, a `kill -9`
//! loses at most the last seconds, restarts do not count twice, foreign
//! and corrupt files are refused untouched, a full disk only costs
//! history, and retention removes old rows.

mod common;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use aya::programs::Xdp;
use aya_obj::programs::XdpAttachType;
use common::{exe, pins::PinRoot, regionwall, text, udp4_frame};
use regionwall::history::{self, Store, store::Counted};
use regionwall_testkit::sandbox::{Controller, Topology};

const BLOCKED: &str = "198.51.100.10";
const ALLOWED: &str = "203.0.113.10";

/// A directory of the test's own, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("rw-hist-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("mkdir");
        Self(p)
    }
    fn arg(&self) -> &str {
        self.0.to_str().expect("UTF-8")
    }
    fn db(&self) -> PathBuf {
        self.0.join(history::FILE)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Countries "AA" (198.51.100.0/25) and "CC" (203.0.113.0/24), and a
/// policy blocking AA for the phone.
fn policy(dir: &TempDir) -> PathBuf {
    for (cc, v4) in [("aa", "198.51.100.0/25\n"), ("cc", "203.0.113.0/24\n")] {
        let d = dir.0.join("countries").join(cc);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("ipv4-aggregated.txt"), v4).expect("write");
        std::fs::write(d.join("ipv6-aggregated.txt"), "").expect("write");
    }
    common::policy_file(&format!(
        "regions_dir = \"{}\"\nmode = \"enforce\"\n[regions.aa-zone]\ncountries = [\"AA\"]\n[devices.phone]\nip = [\"192.0.2.10\", \"2001:db8:1::10\"]\n[[rules]]\nname = \"phone-no-aa\"\ndevices = [\"phone\"]\nblock = [\"aa-zone\"]\n",
        dir.0.join("countries").display()
    ))
}

/// Sends `n` UDP datagrams from the phone to `addr`, `gap` apart.
fn udp(t: &Topology, addr: &str, n: u64, gap: Duration) {
    regionwall_testkit::traffic::udp_burst(t, &format!("{addr}:9"), n, 23, gap).expect("send");
}

/// `regionwall history ARGS --state-dir DIR --json` as JSON values.
fn history_json(dir: &TempDir, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["history", "--state-dir", dir.arg(), "--json"];
    all.extend_from_slice(args);
    let out = regionwall(&all);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// Packets (or events) of the row of `history --by device,country` for
/// (phone, `country`) with `verdict`.
fn total(dir: &TempDir, country: &str, verdict: &str) -> u64 {
    history_json(
        dir,
        &[
            "--by",
            "device,country",
            "--verdict",
            verdict,
            "--country",
            country,
        ],
    )
    .iter()
    .filter(|r| r["device"] == "phone" && r["country"] == country)
    .map(|r| r["packets"].as_u64().expect("packets"))
    .sum()
}

/// Waits until `f` holds, up to `wait`.
fn eventually(wait: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    f()
}

fn start(t: &Topology, policy: &Path, state: &TempDir, extra: &[&str]) -> Controller {
    let mut args = vec![
        "--state-dir",
        state.arg(),
        "--history-interval",
        "1s",
        "--event-rate",
        "0",
        "--json",
    ];
    args.extend_from_slice(extra);
    Controller::start(&exe(), t, policy, &args).expect("controller")
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, set up and checked")]
fn events_and_rollups_land_and_read_back() {
    let t = Topology::create("hist-land").expect("sandbox");
    let state = TempDir::new("land");
    let policy = policy(&state);
    let c = start(&t, &policy, &state, &["--retention", "1d"]);
    udp(&t, BLOCKED, 25, Duration::from_millis(4));
    udp(&t, ALLOWED, 15, Duration::from_millis(4));
    let printed = c.drain_lines(25, Duration::from_secs(5));
    assert_eq!(printed.len(), 25, "every drop printed");
    assert!(
        eventually(Duration::from_secs(10), || total(&state, "AA", "drop")
            == 25
            && total(&state, "CC", "pass") >= 15),
        "rollups: AA drop {} CC pass {}\n{}",
        total(&state, "AA", "drop"),
        total(&state, "CC", "pass"),
        c.log_text()
    );
    assert_eq!(total(&state, "CC", "pass"), 15, "passed to CC");
    // Every event printed is in the database, field for field.
    let stored = history_json(&state, &["--no-aggregate"]);
    let printed: Vec<serde_json::Value> = printed
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON event"))
        .collect();
    assert_eq!(stored, printed);
    let first = &stored[0];
    for (field, want) in [
        ("device", "phone"),
        ("src_ip", "192.0.2.10"),
        ("dst_ip", BLOCKED),
        ("country", "AA"),
        ("region", "aa-zone"),
        ("rule", "phone-no-aa"),
        ("verdict", "drop"),
    ] {
        assert_eq!(first[field], want, "{field} in {first}");
    }
    assert_eq!(first["dst_port"], 9);
    assert!(first["bytes"].as_u64().unwrap_or(0) > 0, "{first}");
    // Aggregated: one line for the flow, with its count.
    let flows = history_json(&state, &["--aggregate", "--interval", "1h"]);
    let counts: u64 = flows
        .iter()
        .map(|f| f["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(counts, 25);
    assert!(flows.len() <= 2, "one flow per hour: {flows:?}");
    // CSV totals equal the JSON ones.
    let out = regionwall(&[
        "history",
        "--state-dir",
        state.arg(),
        "--by",
        "device,country,verdict",
        "--csv",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let csv = String::from_utf8(out.stdout).expect("UTF-8");
    assert_eq!(
        csv.lines().next(),
        Some("device,country,verdict,packets,bytes")
    );
    assert!(
        csv.lines().any(|l| l.starts_with("phone,AA,drop,25,")),
        "{csv}"
    );
    // Events by host come from the events table.
    let hosts = history_json(&state, &["--by", "host"]);
    assert_eq!(hosts[0]["host"], BLOCKED, "{hosts:?}");
    assert_eq!(hosts[0]["events"], 25, "{hosts:?}");
    // `events --since` replays from the database, then follows live.
    let socket = c.socket.to_str().expect("UTF-8");
    let out = regionwall(&[
        "events",
        "--iface",
        "lan0",
        "--socket",
        socket,
        "--state-dir",
        state.arg(),
        "--since",
        "1h",
        "--json",
        "--count",
        "25",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 25);
    // Stats show what was written.
    let snap = common::stats(&PinRoot::default(), &c.socket);
    let written = snap.history.expect("history stats");
    assert!(
        written.recording && written.events_written >= 25 && written.not_written == 0,
        "{written:?}"
    );
    // Retention runs continuously: a row older than --retention goes.
    {
        let conn = rusqlite::Connection::open(state.db()).expect("open");
        conn.busy_timeout(Duration::from_secs(5)).expect("timeout");
        let old = history::micros(SystemTime::now() - Duration::from_hours(3 * 24));
        conn.execute(
            "INSERT INTO events (ts, interface, device, mac, proto, country, region, rule, verdict, reason, bytes, policy_epoch)
             VALUES (?1, 'lan0', 'old', '-', 'udp', '-', '-', '-', 'drop', '-', 1, 1)",
            [old],
        )
        .expect("insert an old row");
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM events WHERE device = 'old'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(n, 1, "the old row is in");
    }
    let old_rows = || history_json(&state, &["--no-aggregate", "--device", "old"]).len();
    assert!(
        eventually(Duration::from_secs(5), || old_rows() == 0),
        "the old row was not removed"
    );
    c.stop().expect("stop");
}

#[test]
fn kill9_loses_at_most_the_last_seconds_and_restart_does_not_double_count() {
    let t = Topology::create("hist-kill").expect("sandbox");
    let state = TempDir::new("kill");
    let policy = policy(&state);
    let root = PinRoot::new();
    let c = start(&t, &policy, &state, &["--pin-root", root.arg()]);
    // 20 drops a second for 4 s, then the crash right after the last.
    udp(&t, BLOCKED, 80, Duration::from_millis(50));
    let killed_at = SystemTime::now();
    let socket = c.socket.clone();
    let _ = c.kill9();
    // A killed controller leaves its socket behind.
    let _ = std::fs::remove_file(&socket);
    let store = Store::open_read_only(&state.db()).expect("history");
    let (n, last): (i64, i64) = store
        .conn()
        .query_row("SELECT count(*), max(ts) FROM events", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("count");
    drop(store);
    let n = u64::try_from(n).expect("count");
    let behind =
        Duration::from_micros(u64::try_from(history::micros(killed_at) - last).unwrap_or(0));
    println!(
        "kill -9: {} of 80 events lost, the last stored {behind:?} before the kill",
        80 - n
    );
    assert!(behind <= Duration::from_secs(2), "lost the last {behind:?}");
    assert!(n >= 80 - 40, "only {n} of 80 events stored");
    // Drops while no controller runs are enforced and counted by the
    // pins; the next controller rolls them up once.
    udp(&t, BLOCKED, 10, Duration::from_millis(5));
    let c = start(
        &t,
        &policy,
        &state,
        &["--pin-root", root.arg(), "--persist"],
    );
    udp(&t, BLOCKED, 7, Duration::from_millis(5));
    assert!(
        eventually(Duration::from_secs(10), || total(&state, "AA", "drop")
            == 97),
        "rollups count every drop once: {}",
        total(&state, "AA", "drop")
    );
    c.stop().expect("stop");
    // A clean stop with --persist, and one more start: still no double
    // count, and the first controller's events are still there.
    let c = start(&t, &policy, &state, &["--pin-root", root.arg()]);
    udp(&t, BLOCKED, 3, Duration::from_millis(5));
    assert!(
        eventually(Duration::from_secs(10), || total(&state, "AA", "drop")
            == 100),
        "after a second restart: {}",
        total(&state, "AA", "drop")
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(total(&state, "AA", "drop"), 100, "no count twice");
    let events = history_json(&state, &["--no-aggregate"]).len();
    assert!(
        events >= usize::try_from(n).unwrap_or(0) + 3,
        "{events} events"
    );
    c.stop().expect("stop");
}

#[test]
fn corrupt_and_foreign_files_are_refused_untouched() {
    let t = Topology::create("hist-bad").expect("sandbox");
    let state = TempDir::new("bad");
    let policy = policy(&state);
    let garbage = b"these bytes are no database at all, and must stay as they are".repeat(100);
    std::fs::write(state.db(), &garbage).expect("write");
    let c = start(&t, &policy, &state, &[]);
    assert!(
        c.wait_log("history is NOT being recorded", Duration::from_secs(5)),
        "{}",
        c.log_text()
    );
    assert!(
        c.log_text().contains("is not a SQLite database"),
        "{}",
        c.log_text()
    );
    // Enforcement goes on.
    udp(&t, BLOCKED, 5, Duration::from_millis(5));
    assert_eq!(c.drain_lines(5, Duration::from_secs(5)).len(), 5);
    let h = common::stats(&PinRoot::default(), &c.socket)
        .history
        .expect("history stats");
    assert!(!h.recording && h.error.is_some(), "{h:?}");
    c.stop().expect("stop");
    assert_eq!(
        std::fs::read(state.db()).expect("read"),
        garbage,
        "left untouched"
    );
    let out = regionwall(&["history", "--state-dir", state.arg(), "--by", "device"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not a SQLite database"),
        "{}",
        text(&out)
    );

    // Another program's SQLite file.
    std::fs::remove_file(state.db()).expect("rm");
    let conn = rusqlite::Connection::open(state.db()).expect("create");
    conn.execute_batch("CREATE TABLE contacts (name TEXT); INSERT INTO contacts VALUES ('x');")
        .expect("foreign schema");
    drop(conn);
    let before = std::fs::read(state.db()).expect("read");
    let e = Store::open(&state.db()).err().expect("refused").to_string();
    assert!(
        e.contains("another program") && e.contains("contacts"),
        "{e}"
    );
    let c = start(&t, &policy, &state, &[]);
    assert!(
        c.wait_log("another program", Duration::from_secs(5)),
        "{}",
        c.log_text()
    );
    c.stop().expect("stop");
    assert_eq!(
        std::fs::read(state.db()).expect("read"),
        before,
        "left untouched"
    );
}

/// A tmpfs mount, unmounted on drop.
struct Tmpfs(TempDir);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0.0).status();
    }
}

#[test]
fn a_full_disk_costs_only_history() {
    let t = Topology::create("hist-full").expect("sandbox");
    let state = Tmpfs(TempDir::new("full"));
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=192k", "tmpfs", state.0.arg()])
        .status()
        .expect("mount");
    assert!(ok.success(), "mount a tmpfs");
    let conf = TempDir::new("full-conf");
    let policy = policy(&conf);
    let root = PinRoot::new();
    let c = start(
        &t,
        &policy,
        &state.0,
        &[
            "--pin-root",
            root.arg(),
            "--metrics",
            "127.0.0.1:9465",
            "--web",
            "127.0.0.1:8080",
        ],
    );
    let prog = Xdp::from_pin(root.pins().prog(), XdpAttachType::Interface).expect("program");
    let frame = udp4_frame(
        std::net::Ipv4Addr::new(192, 0, 2, 10),
        std::net::Ipv4Addr::new(198, 51, 100, 20),
        9,
    );
    let started = Instant::now();
    for _ in 0..20 {
        common::prog::run(&prog, &frame, 2_000);
        std::thread::sleep(Duration::from_millis(50));
    }
    let full = eventually(Duration::from_secs(15), || {
        common::stats(&root, &c.socket)
            .history
            .is_some_and(|h| h.write_failed > 0)
    });
    let s = common::stats(&root, &c.socket);
    let h = s.history.clone().expect("history stats");
    println!("after {:?}: {h:?}", started.elapsed());
    assert!(
        full,
        "nothing failed to be written: {h:?}\n{}",
        c.log_text()
    );
    // The error is logged (stats show it until a write succeeds again).
    assert!(c.log_text().contains("full"), "{}", c.log_text());
    // /metrics and the dashboard's strip count what was not written too.
    let get = |url: &str| common::gateway_get(&t, url);
    let metrics = get("http://127.0.0.1:9465/metrics");
    let scraped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("regionwall_history_events_not_written_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(scraped >= h.not_written && scraped > 0, "{scraped} < {h:?}");
    let status: serde_json::Value =
        serde_json::from_str(&get("http://127.0.0.1:8080/api/status")).expect("JSON");
    let shown = status["lost"]["history_not_written"].as_u64().unwrap_or(0);
    assert!(shown >= h.not_written && shown > 0, "{status}");
    // Enforcement and the live stream go on.
    let before = s.events_logged;
    udp(&t, BLOCKED, 5, Duration::from_millis(5));
    let delivered =
        regionwall_testkit::traffic::send_traffic(&t, "allowed", ALLOWED, 5).expect("traffic");
    assert_eq!(delivered.udp_delivered, 5, "allowed traffic passes");
    assert!(
        eventually(Duration::from_secs(5), || common::stats(&root, &c.socket)
            .events_logged
            >= before + 5),
        "the live stream stopped"
    );
    c.stop().expect("stop");
}

#[test]
fn retention_by_age_and_size() {
    let dir = TempDir::new("retention");
    let mut store = Store::open(&dir.db()).expect("open");
    let now = SystemTime::now();
    let day = Duration::from_hours(24);
    let insert = |store: &Store, at: SystemTime, n: usize| {
        let tx = store.conn().unchecked_transaction().expect("tx");
        for _ in 0..n {
            tx.execute(
                "INSERT INTO events (ts, interface, device, mac, proto, country, region, rule, verdict, reason, bytes, policy_epoch)
                 VALUES (?1, 'lan0', 'phone', '02:00:5e:00:53:01', 'udp', 'AA', 'aa-zone', 'phone-no-aa', 'drop', 'rule', 60, 1)",
                [history::micros(at)],
            )
            .expect("insert");
        }
        tx.commit().expect("commit");
    };
    insert(&store, now - 40 * day, 10);
    insert(&store, now - day, 10);
    let row = |minute_ago: Duration| Counted {
        kind: history::store::Kind::Country,
        device: "phone".into(),
        key: "AA".into(),
        verdict: "drop".into(),
        packets: history::micros(now - minute_ago).unsigned_abs(),
        bytes: 1,
    };
    store
        .record_counters(
            now - 40 * day,
            &[row(40 * day)],
            history::store::Origin::Zero,
        )
        .expect("rollup");
    store
        .record_counters(
            now,
            &[row(Duration::ZERO)],
            history::store::Origin::Continued,
        )
        .expect("rollup");
    let removed = store
        .enforce_retention(now, 30 * day, 1 << 30)
        .expect("retention");
    assert_eq!(removed.events, 10);
    assert_eq!(removed.rollups, 1);
    // By size: 40,000 more events (several MB), kept under 1 MiB, the
    // newest kept.
    insert(&store, now - 2 * day, 20_000);
    insert(&store, now, 20_000);
    let max = 1 << 20;
    store
        .enforce_retention(now, 30 * day, max)
        .expect("retention");
    let size = store.size().expect("size");
    let file = std::fs::metadata(dir.db()).expect("stat").len();
    assert!(size <= max && file <= max, "{size} / {file} bytes");
    let newest: i64 = store
        .conn()
        .query_row("SELECT max(ts) FROM events", [], |r| r.get(0))
        .expect("max");
    assert_eq!(newest, history::micros(now));
    // Read without a writer (the log checkpointed away on close).
    drop(store);
    let out = regionwall(&[
        "history",
        "--state-dir",
        dir.arg(),
        "--by",
        "device,country",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"phone\""));
}

/// A burst of drops through the pinned program: every event the
/// controller streamed is written, and the rate is printed.
#[test]
fn a_burst_of_events_is_written() {
    let t = Topology::create("hist-burst").expect("sandbox");
    let state = TempDir::new("burst");
    let policy = policy(&state);
    let root = PinRoot::new();
    let c = start(&t, &policy, &state, &["--pin-root", root.arg()]);
    let prog = Xdp::from_pin(root.pins().prog(), XdpAttachType::Interface).expect("program");
    let frame = udp4_frame(
        std::net::Ipv4Addr::new(192, 0, 2, 10),
        std::net::Ipv4Addr::new(198, 51, 100, 20),
        9,
    );
    let started = Instant::now();
    for _ in 0..10 {
        common::prog::run(&prog, &frame, 2_000);
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut s = common::stats(&root, &c.socket);
    let done = eventually(Duration::from_secs(20), || {
        s = common::stats(&root, &c.socket);
        s.history
            .as_ref()
            .is_some_and(|h| h.events_written + h.not_written >= s.events_logged)
    });
    let h = s.history.clone().expect("history stats");
    let secs = started.elapsed().as_secs_f64();
    #[expect(clippy::cast_precision_loss, reason = "a printed rate")]
    let rate = h.events_written as f64 / secs;
    println!(
        "{} events streamed, {} written in {secs:.1} s ({rate:.0}/s, bounded by the 1 s commit and the poll), {} not written",
        s.events_logged, h.events_written, h.not_written
    );
    assert!(done, "{h:?}");
    assert_eq!(h.not_written, 0, "{h:?}");
    assert_eq!(h.events_written, s.events_logged);
    c.stop().expect("stop");
}

#[test]
fn an_until_before_since_is_an_error_not_an_empty_answer() {
    let out = regionwall(&[
        "history",
        "--state-dir",
        "/nonexistent",
        "--since",
        "2026-11-30",
        "--until",
        "2026-11-01",
    ]);
    assert!(!out.status.success());
    let e = text(&out);
    assert!(
        e.contains("--until (2026-11-01T00:00:00Z) is before --since (2026-11-30T00:00:00Z)"),
        "{e}"
    );
}

/// `regionwall history` reads a state directory it may not write (a
/// read-only mount): the file alone, as immutable.
#[test]
fn history_reads_a_read_only_state_dir() {
    let dir = TempDir::new("ro-src");
    {
        let store = Store::open(&dir.db()).expect("open");
        let tx = store.conn().unchecked_transaction().expect("tx");
        for _ in 0..3 {
            tx.execute(
                "INSERT INTO events (ts, interface, device, mac, proto, country, region, rule, verdict, reason, bytes, policy_epoch)
                 VALUES (?1, 'lan0', 'phone', '02:00:5e:00:53:01', 'udp', 'AA', 'aa-zone', 'phone-no-aa', 'drop', 'rule', 60, 1)",
                [history::micros(SystemTime::now())],
            )
            .expect("insert");
        }
        tx.commit().expect("commit");
        store
            .conn()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
    }
    let ro = Tmpfs(TempDir::new("ro-view"));
    for args in [
        vec!["--bind", dir.arg(), ro.0.arg()],
        vec!["-o", "remount,ro,bind", ro.0.arg()],
    ] {
        let ok = std::process::Command::new("mount")
            .args(&args)
            .status()
            .expect("mount");
        assert!(ok.success(), "mount {args:?}");
    }
    let out = common::regionwall(&[
        "history",
        "--state-dir",
        ro.0.arg(),
        "--since",
        "1h",
        "--json",
    ]);
    assert!(out.status.success(), "{}", common::text(&out));
    let rows = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"phone\""))
        .count();
    assert!(rows >= 1, "{}", common::text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("aa-zone"),
        "{}",
        common::text(&out)
    );
}
