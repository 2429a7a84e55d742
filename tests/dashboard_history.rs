//! The dashboard's history endpoints over a history of 1,000 devices
//! built by the real writer code (`Store::record_counters`, compaction,
//! retention), asked over real HTTP (the endpoints' own router): series
//! over 24 h, 7 d and 30 d add up to what was recorded, minutes and
//! compacted hours alike; top-N lists and a device's charts stay N lines
//! plus "other", and nothing is lost from the sums. Without history, the
//! 24 h series is the ring and the longer ranges are refused clearly.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::Arc,
    time::{Duration, SystemTime},
};

use regionwall::{
    controller::web::{
        reader::{self, Reader},
        series::{self, Range},
    },
    history::{
        self, Store,
        rollup::{HOSTS_PER_DEVICE, OTHER_HOST},
        store::{Counted, Kind, Origin},
    },
    views::Dim,
};

const DEVICES: u64 = 1000;
const HOSTS: u64 = 15;
const REGIONS: [&str; 2] = ["blocked", "allowed"];
const COUNTRIES: [&str; 3] = ["AA", "BB", "CC"];

/// Seconds before now of each counter snapshot: two that compaction turns
/// into hours (older than 48 h), one outside 24 h, three inside.
const AGES: [u64; 6] = [72 * 3600, 50 * 3600, 30 * 3600, 2 * 3600, 3600, 600];

/// What one snapshot adds for `device` to `key` (packets; bytes are 100×).
fn grow(device: u64, key: u64) -> u64 {
    1 + (device * 7 + key * 13) % 50
}

/// The cumulative counters after snapshot `s` (0-based).
fn rows(s: u64) -> Vec<Counted> {
    let mut out = Vec::new();
    for d in 0..DEVICES {
        let device = format!("device{d:04}");
        let row = |kind, key: &str, verdict: &str, k: u64| Counted {
            kind,
            device: device.clone(),
            key: key.into(),
            verdict: verdict.into(),
            packets: (s + 1) * grow(d, k),
            bytes: (s + 1) * grow(d, k) * 100,
        };
        for (k, region) in (0u64..).zip(REGIONS) {
            let verdict = if k == 0 { "drop" } else { "pass" };
            out.push(row(Kind::Region, region, verdict, k));
        }
        for (k, cc) in (0u64..).zip(COUNTRIES) {
            let verdict = if k == 0 { "drop" } else { "pass" };
            out.push(row(Kind::Country, cc, verdict, 10 + k));
        }
        for h in 0..HOSTS {
            out.push(row(Kind::Host, &format!("h{h}.example"), "pass", 20 + h));
        }
    }
    out
}

/// Bytes one snapshot adds over every device for `kind`'s keys.
fn per_snapshot(keys: std::ops::Range<u64>) -> u64 {
    (0..DEVICES)
        .map(|d| keys.clone().map(|k| grow(d, k) * 100).sum::<u64>())
        .sum()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A history of 1,000 devices written as the recorder writes it.
fn build(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join(history::FILE);
    let mut store = Store::open(&path).expect("open");
    let now = SystemTime::now();
    for (s, age) in (0u64..).zip(AGES) {
        let origin = if s == 0 {
            Origin::Zero
        } else {
            Origin::Continued
        };
        store
            .record_counters(now - Duration::from_secs(age), &rows(s), origin)
            .expect("record");
    }
    // The writer's retention pass: compaction, then 30 days by age.
    store
        .enforce_retention(now, Duration::from_hours(30 * 24), 1 << 30)
        .expect("retention");
    let hourly: i64 = store
        .conn()
        .query_row("SELECT count(*) FROM rollups_hourly", [], |r| r.get(0))
        .expect("count");
    let old_minutes: i64 = store
        .conn()
        .query_row(
            "SELECT count(*) FROM rollups WHERE minute < ?1",
            [i64::try_from(self::now() - 49 * 3600).expect("time")],
            |r| r.get(0),
        )
        .expect("count");
    assert!(hourly > 0, "the two old snapshots were compacted");
    assert_eq!(old_minutes, 0, "no minute older than 48 h is left");
    path
}

/// One GET over HTTP/1.1: (status, JSON body).
fn get(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut all = String::new();
    s.read_to_string(&mut all).expect("answer");
    let (head, body) = all.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("status");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// Serves the history endpoints over `reader` on loopback.
fn serve(rt: &tokio::runtime::Runtime, reader: Reader) -> SocketAddr {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(async move {
        let _ = axum::serve(listener, reader::router(Arc::new(reader))).await;
    });
    addr
}

fn sum(v: &serde_json::Value) -> u64 {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("number"))
        .sum()
}

#[test]
fn a_thousand_devices_answer_top_n_plus_other_and_add_up() {
    let dir = std::env::temp_dir().join(regionwall_testkit::netns::unique_name("dash-hist"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = build(&dir);
    let region_bytes = per_snapshot(0..2);

    // The queries themselves, on a read-only connection.
    let ro = Store::open_read_only(&path).expect("read-only");
    let devices = series::totals(ro.conn(), Dim::Device, Range::Month, now()).expect("totals");
    assert_eq!(devices.len(), 1000, "every device is in the 30-day totals");
    drop(ro);

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let addr = serve(&rt, Reader::new(Some(path)));
    for (range, snapshots, steps) in [("24h", 3, None), ("7d", 6, Some(73)), ("30d", 6, None)] {
        let (status, s) = get(addr, &format!("/api/series?range={range}"));
        assert_eq!(status, 200, "{s}");
        assert_eq!(s["source"], "history");
        assert_eq!(sum(&s["upload_bytes"]), snapshots * region_bytes, "{range}");
        // Drops: region 0 ("blocked") only.
        assert_eq!(
            sum(&s["drop_packets"]) * 100,
            snapshots * per_snapshot(0..1),
            "{range}"
        );
        if let Some(n) = steps {
            // Every hour from 72 h back to now, quiet ones as zeros.
            assert_eq!(s["t"].as_array().expect("t").len(), n, "{range}");
        }
    }

    // Top 10 devices of the week, and the 990 others summed: complete.
    let (status, top) = get(addr, "/api/top?by=device&n=10&range=7d");
    assert_eq!(status, 200, "{top}");
    for (list, other) in [("blocked", "blocked_other"), ("allowed", "allowed_other")] {
        assert_eq!(top[list].as_array().expect(list).len(), 10, "{top}");
        assert_eq!(top[other]["name"], "other (990 more)", "{top}");
    }
    let listed = |list: &str, other: &str| -> u64 {
        top[list]
            .as_array()
            .expect("rows")
            .iter()
            .map(|e| e["bytes"].as_u64().expect("bytes"))
            .sum::<u64>()
            + top[other]["bytes"].as_u64().expect("bytes")
    };
    assert_eq!(
        listed("blocked", "blocked_other") + listed("allowed", "allowed_other"),
        6 * region_bytes
    );

    // A device's hosts over 30 days: 5 lines, the rest (the store's own
    // "(other)" included) in one; every byte of the device is there.
    let name = "device0500";
    let (status, d) = get(
        addr,
        &format!("/api/device/series?name={name}&by=host&range=30d&n=5"),
    );
    assert_eq!(status, 200, "{d}");
    let lines = d["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), 5, "{d}");
    assert!(lines.iter().all(|l| l["name"] != OTHER_HOST), "{d}");
    let hidden = usize::try_from(HOSTS).expect("small") - HOSTS_PER_DEVICE;
    assert_eq!(
        d["other"]["name"],
        format!("other ({} more)", HOSTS_PER_DEVICE - 5 + 1),
        "{hidden} hosts folded by the store count as one: {d}"
    );
    let device_hosts: u64 = (20..20 + HOSTS).map(|k| grow(500, k) * 100 * 6).sum();
    let charted: u64 =
        lines.iter().map(|l| sum(&l["bytes"])).sum::<u64>() + sum(&d["other"]["bytes"]);
    assert_eq!(charted, device_hosts);

    // By country over 24 hours: the three countries, nothing else.
    let (status, d) = get(
        addr,
        &format!("/api/device/series?name={name}&by=country&range=24h"),
    );
    assert_eq!(status, 200, "{d}");
    let mut names: Vec<&str> = d["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| l["name"].as_str().expect("name"))
        .collect();
    names.sort_unstable();
    assert_eq!(names, COUNTRIES);
    assert!(d["other"].is_null(), "{d}");

    let (status, e) = get(addr, "/api/series?range=1y");
    assert_eq!(status, 400);
    assert!(
        e["error"].as_str().expect("error").contains("\"1y\""),
        "{e}"
    );
    drop(rt);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_history_the_day_is_the_ring_and_longer_ranges_say_why_not() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let reader = Reader::new(None);
    let now = now();
    reader.add(
        now,
        regionwall::controller::web::ring::Minute {
            t: 0,
            upload_bytes: 500,
            drop_packets: 3,
            drop_bytes: 300,
        },
    );
    let addr = serve(&rt, reader);
    let (status, s) = get(addr, "/api/series");
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["source"], "memory");
    assert_eq!(sum(&s["drop_packets"]), 3);
    for path in [
        "/api/series?range=7d",
        "/api/series?range=30d",
        "/api/device/series?name=tv&by=host",
        "/api/top?by=device&range=7d",
    ] {
        let (status, e) = get(addr, path);
        assert_eq!(status, 409, "{path}: {e}");
        assert!(
            e["error"]
                .as_str()
                .expect("error")
                .contains("need the history"),
            "{e}"
        );
    }
}

#[test]
fn an_unreadable_history_leaves_the_ring_for_24_hours() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let missing = std::env::temp_dir()
        .join(regionwall_testkit::netns::unique_name("dash-missing"))
        .join(history::FILE);
    let addr = serve(&rt, Reader::new(Some(missing)));
    let (status, s) = get(addr, "/api/series?range=24h");
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["source"], "memory");
    let (status, e) = get(addr, "/api/series?range=30d");
    assert_eq!(status, 503, "{e}");
    assert!(
        e["error"].as_str().expect("error").contains("no history"),
        "{e}"
    );
}

#[test]
fn retention_by_age_covers_the_hourly_rows() {
    let dir = std::env::temp_dir().join(regionwall_testkit::netns::unique_name("dash-ret"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut store = Store::open(&dir.join(history::FILE)).expect("open");
    let now = SystemTime::now();
    let one = |age: u64| {
        vec![Counted {
            kind: Kind::Country,
            device: "tv".into(),
            key: "aa".into(),
            verdict: "drop".into(),
            packets: age,
            bytes: age,
        }]
    };
    for (s, age) in [(0, 100u64), (1, 80), (2, 60)] {
        let origin = if s == 0 {
            Origin::Zero
        } else {
            Origin::Continued
        };
        store
            .record_counters(now - Duration::from_secs(age * 3600), &one(1 + s), origin)
            .expect("record");
    }
    // 90 hours: the 100-hour-old hour goes, the 80- and 60-hour-old stay
    // (compacted into hours first).
    let removed = store
        .enforce_retention(now, Duration::from_hours(90), 1 << 30)
        .expect("retention");
    assert_eq!(removed.rollups, 1);
    let hours: i64 = store
        .conn()
        .query_row("SELECT count(*) FROM rollups_hourly", [], |r| r.get(0))
        .expect("count");
    assert_eq!(hours, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_host_that_left_the_kernel_lru_counts_from_zero_when_it_returns() {
    let dir = std::env::temp_dir().join(regionwall_testkit::netns::unique_name("dash-lru"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut store = Store::open(&dir.join(history::FILE)).expect("open");
    let host = |key: &str, packets: u64| Counted {
        kind: Kind::Host,
        device: "tv".into(),
        key: key.into(),
        verdict: "pass".into(),
        packets,
        bytes: packets * 10,
    };
    let now = SystemTime::now();
    let at = |m: u64| now - Duration::from_secs(m * 60);
    let snapshots = [
        (at(3), vec![host("a.example", 10), host("b.example", 10)]),
        // b.example was evicted from the kernel's LRU...
        (at(2), vec![host("a.example", 20)]),
        // ...and came back as a new entry, counting from zero.
        (at(1), vec![host("a.example", 20), host("b.example", 15)]),
    ];
    for (i, (t, rows)) in snapshots.iter().enumerate() {
        let origin = if i == 0 {
            Origin::Zero
        } else {
            Origin::Continued
        };
        store.record_counters(*t, rows, origin).expect("record");
    }
    let packets = |key: &str| -> i64 {
        store
            .conn()
            .query_row(
                "SELECT sum(packets) FROM rollups WHERE kind = 'host' AND key = ?1",
                [key],
                |r| r.get(0),
            )
            .expect("sum")
    };
    assert_eq!(packets("a.example"), 20);
    assert_eq!(packets("b.example"), 10 + 15);
    let _ = std::fs::remove_dir_all(&dir);
}
