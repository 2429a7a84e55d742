//! `regionwall update` against a loopback server of the test's own: a good
//! update that a running controller in a sandbox enforces with no gap
//! (its pinned program probed all through the switch), and every way a
//! download can be bad (truncated, corrupt, shrunk, checksum mismatch,
//! 404, 429, slow, oversized, a canary moved, data the policy no longer
//! loads with), each rejected with its reason while the old data keeps
//! enforcing and nothing but good versions stays in the data directory;
//! unchanged sources download nothing; MaxMind's protocol and a country
//! archive; `--rollback`.

mod common;

use std::{net::Ipv4Addr, path::Path, time::Duration};

use aya::programs::Xdp;
use aya_obj::programs::XdpAttachType;
use common::{
    exe,
    flow::Flow,
    origin::{MaxMind, Origin, Route, tar_gz},
    pins::PinRoot,
    probe::Prober,
    text, udp4_frame,
    update_case::{Case, apnic_records, record, rir},
};
use regionwall_testkit::{
    sandbox::{Controller, Topology},
    xdp::{XDP_DROP, XDP_PASS},
};

/// 01:00 UTC of some day: the steps of one day stay within it.
const T0: u64 = 1_800_057_600 + 3600;
const DAY: u64 = 86_400;
const STEP: u64 = 7200;

/// The base data: 400 real records, 203.0.113.0/24 as CN, one XA (which
/// the controller's policy blocks) and one XB (which update's policy does).
fn base() -> Vec<String> {
    let mut r = apnic_records(400);
    r.push(record("CN", "203.0.113.0", 256));
    r.push(record("XA", "100.64.0.0", 256));
    r.push(record("XB", "100.64.1.0", 256));
    r
}

/// A policy blocking CN and the country `extra` from the fetched data.
fn policy_text(origin: &Origin, checksum: bool, extra: &str) -> String {
    let checksum = if checksum {
        format!("checksum_url = \"{}\"\n", origin.url("/apnic.txt.sha256"))
    } else {
        String::new()
    };
    format!(
        r#"[update]
dir = "data"
interval = "1h"
timeout = "2s"
connect_timeout = "2s"
max_size = "1M"
canary = {{ "1.0.1.1" = "CN" }}

[sources.apnic]
format = "rir"
path = "data/current/apnic.txt"
url = "{}"
{checksum}
[regions.cn]
countries = ["CN"]
from = ["apnic"]

[regions.extra]
countries = ["{extra}"]
from = ["apnic"]

[[rules]]
name = "no-cn"
devices = ["default"]
block = ["cn", "extra"]
"#,
        origin.url("/apnic.txt")
    )
}

fn serve(origin: &Origin, body: Vec<u8>, etag: &str) {
    origin.route(
        "/apnic.txt",
        Route::File {
            body,
            etag: format!("\"{etag}\""),
        },
    );
}

fn sha256_file(bytes: &[u8]) -> Vec<u8> {
    format!(
        "{}  apnic.txt\n",
        regionwall::update::fetch::sha256_hex(bytes)
    )
    .into_bytes()
}

const Y: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);
const X: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 77);

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one controller through every case, in order"
)]
fn bad_downloads_are_refused_and_a_good_one_switches_with_no_gap() {
    let origin = Origin::start();
    let mut case = Case::new("http");
    case.write_policy(&policy_text(&origin, false, "XA"));
    case.write_update_policy(&policy_text(&origin, false, "XB"));
    let v1 = rir(&base());
    serve(&origin, v1.clone(), "v1");
    let out = case.update(T0, None, &[]);
    assert!(out.status.success(), "first download");
    case.assert_clean(&["1"], "1");

    let t = Topology::create("rwupd").expect("namespaces");
    let root = PinRoot::new();
    let c = Controller::start(
        &exe(),
        &t,
        &case.policy,
        &["--pin-root", root.arg(), "--metrics", "127.0.0.1:9465"],
    )
    .expect("controller");
    let socket = c.socket.clone();
    let frame = |d| udp4_frame(Ipv4Addr::new(192, 0, 2, 99), d, 53);
    let prober = Prober::start(root.pins().prog(), vec![frame(Y), frame(X)]);
    let flow = Flow::start(
        &t,
        &["198.51.100.10", "203.0.113.10"],
        Duration::from_millis(5),
        40_000,
    );
    let now = std::cell::Cell::new(T0);
    let step = |case: &Case| {
        now.set(now.get() + STEP);
        case.update(now.get(), Some(&socket), &[])
    };

    // Unchanged: a conditional request, answered 304 with no body.
    let out = step(&case);
    assert!(out.status.success());
    assert!(text(&out).contains("apnic: unchanged (304 not modified)"));
    let last = origin.hits("/apnic.txt").pop().expect("a request");
    assert_eq!(last.if_none_match.as_deref(), Some("\"v1\""));
    assert_eq!((last.status, last.sent), (304, 0));
    case.assert_clean(&["1"], "1");

    // Truncated mid-record: the loader refuses it.
    serve(&origin, v1[..v1.len() * 6 / 10].to_vec(), "trunc");
    case.assert_rejected(&step(&case), "the new data does not load", &["1"], "1");

    // Corrupt: a bad address, reported at its line.
    let mut corrupt = base();
    corrupt[10] = record("AU", "999.1.2.3", 256);
    serve(&origin, rir(&corrupt), "corrupt");
    case.assert_rejected(&step(&case), "apnic.txt:13:", &["1"], "1");

    // Shrunk by half.
    let half: Vec<String> = base().into_iter().step_by(2).collect();
    serve(&origin, rir(&half), "half");
    case.assert_rejected(&step(&case), "would fall to", &["1"], "1");

    // 404.
    origin.route("/apnic.txt", Route::Status(404));
    case.assert_rejected(&step(&case), "HTTP 404", &["1"], "1");

    // Slow: the 2 s timeout ends it.
    origin.route("/apnic.txt", Route::Slow(Duration::from_secs(10)));
    case.assert_rejected(&step(&case), "timed out", &["1"], "1");

    // Oversized: 2 MiB chunked (no Content-Length) over a 1 MiB limit.
    origin.route("/apnic.txt", Route::Endless(2 << 20));
    case.assert_rejected(&step(&case), "over the limit of 1048576 bytes", &["1"], "1");

    // A canary moved to another country.
    let moved: Vec<String> = base()
        .into_iter()
        .map(|r| r.replace("apnic|CN|ipv4|1.0.1.0|", "apnic|JP|ipv4|1.0.1.0|"))
        .collect();
    serve(&origin, rir(&moved), "moved");
    case.assert_rejected(
        &step(&case),
        "canary 1.0.1.1 maps to JP, expected CN",
        &["1"],
        "1",
    );

    // 429: refused, and not asked again before the next day.
    origin.route("/apnic.txt", Route::Status(429));
    case.assert_rejected(&step(&case), "HTTP 429", &["1"], "1");
    let asked = origin.hits("/apnic.txt").len();
    let out = step(&case);
    assert!(out.status.success());
    assert!(text(&out).contains("apnic: not asked (backed off after HTTP 429)"));
    assert_eq!(
        origin.hits("/apnic.txt").len(),
        asked,
        "no request the same day"
    );

    // The next day, with a published checksum: a mismatch first.
    now.set(T0 + DAY - STEP);
    case.write_policy(&policy_text(&origin, true, "XA"));
    case.write_update_policy(&policy_text(&origin, true, "XB"));
    let mut v2_records = base();
    v2_records.push(record("CN", "198.51.100.0", 256));
    let v2 = rir(&v2_records);
    serve(&origin, v2.clone(), "v2");
    origin.route(
        "/apnic.txt.sha256",
        Route::File {
            body: sha256_file(&v1),
            etag: "\"s1\"".into(),
        },
    );
    case.assert_rejected(&step(&case), "checksum mismatch", &["1"], "1");
    assert_eq!(
        origin.hits("/apnic.txt").len(),
        asked + 1,
        "asked again the next day"
    );

    // The good update: 198.51.100.0/24 joins CN.
    origin.route(
        "/apnic.txt.sha256",
        Route::File {
            body: sha256_file(&v2),
            etag: "\"s2\"".into(),
        },
    );
    let out = step(&case);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("CN: +1 prefixes (+256 addresses), -0 prefixes (-0 addresses)"));
    assert!(
        all.contains("region cn: +1 prefixes (+256 addresses), -0 prefixes (-0 addresses)"),
        "per policy region too:\n{all}"
    );
    assert!(
        all.contains("reloaded (epoch"),
        "the controller reloaded:\n{all}"
    );
    case.assert_clean(&["1", "2"], "2");
    status_is_shown(&t, &root, &socket, now.get());

    // Unchanged by the published checksum: the data is not asked for.
    let before = origin.hits("/apnic.txt").len();
    let out = step(&case);
    assert!(out.status.success());
    assert!(text(&out).contains("apnic: unchanged (same published checksum)"));
    assert_eq!(origin.hits("/apnic.txt").len(), before);

    // Data update's policy no longer loads with (XB gone): switched back
    // and deleted before any controller is asked.
    let serve_checked = |records: &[String], tag: &str| {
        let body = rir(records);
        serve(&origin, body.clone(), tag);
        origin.route(
            "/apnic.txt.sha256",
            Route::File {
                body: sha256_file(&body),
                etag: format!("\"s-{tag}\""),
            },
        );
    };
    let without = |cc: &str| -> Vec<String> {
        v2_records
            .iter()
            .filter(|r| !r.contains(&format!("|{cc}|")))
            .cloned()
            .collect()
    };
    serve_checked(&without("XB"), "v3");
    let reloads = c.log_text().matches("(reload requested").count();
    case.assert_rejected(
        &step(&case),
        "the policy does not load with the new data",
        &["1", "2"],
        "2",
    );
    assert_eq!(
        c.log_text().matches("(reload requested").count(),
        reloads,
        "no controller was asked"
    );

    // Data the controller's policy no longer loads with (XA gone): the
    // controller rejects the reload and keeps enforcing; update switches
    // back, deletes the version, and fails naming the controller.
    serve_checked(&without("XA"), "v4");
    let out = step(&case);
    case.assert_rejected(&out, "refused: reload rejected", &["1", "2"], "2");
    assert!(text(&out).contains("unknown country code \"XA\""));
    assert!(
        c.log_text().contains("rejected, previous policy"),
        "{}",
        c.log_text()
    );

    std::thread::sleep(Duration::from_millis(200));
    let counts = flow.stop();
    let seen = prober.stop();
    println!(
        "probes: y {:?}, x {:?}; real packets {counts:?}",
        seen[0], seen[1]
    );
    assert_eq!(
        seen[0].verdicts,
        [XDP_PASS, XDP_DROP],
        "y: passed, then dropped, once"
    );
    assert_eq!(seen[1].verdicts, [XDP_DROP], "x: dropped throughout");
    assert_eq!(counts[1].1.delivered, 0, "203.0.113.10: none delivered");
    assert!(counts[0].1.delivered > 0 && counts[0].1.delivered < counts[0].1.sent);

    // Rollback: version 1 again, and the controller enforces it.
    let changed = c.log_text().matches("(policy file changed").count();
    let out = case.update(now.get() + STEP, Some(&c.socket), &["--rollback"]);
    assert!(out.status.success(), "{}", text(&out));
    case.assert_clean(&["1"], "1");
    let prog = Xdp::from_pin(root.pins().prog(), XdpAttachType::Interface).expect("program");
    assert_eq!(common::prog::verdict(&prog, &frame(Y)), XDP_PASS);
    assert_eq!(common::prog::verdict(&prog, &frame(X)), XDP_DROP);

    // Not told through its socket (--no-reload), the controller still
    // sees `current` replaced and reloads on its own. First the reload its
    // watcher makes of the rollback (version 2 deleted under it) settles.
    assert!(
        common::wait_count(
            &c,
            "(policy file changed",
            changed + 1,
            Duration::from_secs(20)
        ),
        "the rollback was seen"
    );
    serve_checked(&v2_records, "v2-again");
    let out = case.update(now.get() + 2 * STEP, None, &["--force"]);
    assert!(out.status.success(), "{}", text(&out));
    // Numbers are never given twice: 2 was rolled back, 3 rejected.
    case.assert_clean(&["1", "4"], "4");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while common::prog::verdict(&prog, &frame(Y)) == XDP_PASS
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        common::prog::verdict(&prog, &frame(Y)),
        XDP_DROP,
        "the watcher saw the switch:\n{}",
        c.log_text()
    );
    drop(c);
}

/// `stats` and the metrics show the status file after a good update at `now`.
fn status_is_shown(t: &Topology, root: &PinRoot, socket: &Path, now: u64) {
    let stats = common::stats(root, socket);
    let update = stats.update.expect("stats carries the update status");
    assert_eq!(update.last_success, Some(now));
    assert_eq!(update.version, Some(2));
    assert_eq!(update.error, None);
    let apnic = &update.sources["apnic"];
    assert_eq!(apnic.etag.as_deref(), Some("\"v2\""));
    let out = t
        .gateway
        .command("curl")
        .args(["-sS", "http://127.0.0.1:9465/metrics"])
        .output()
        .expect("curl");
    let metrics = String::from_utf8_lossy(&out.stdout);
    for line in [
        format!("regionwall_data_update_last_success_timestamp_seconds {now}"),
        "regionwall_data_update_ok 1".to_string(),
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(&line)),
            "{line} in:\n{metrics}"
        );
    }
}

fn maxmind_policy(origin: &Origin) -> String {
    format!(
        r#"regions_dir = "data/current/countries"

[update]
dir = "data"
interval = "1h"
regions_url = "{}"

[sources.maxmind]
format = "mmdb"
path = "data/current/GeoLite2-Country.mmdb"
edition = "GeoLite2-Country"
account_id = "42"
license_key_file = "maxmind.key"
url = "{}"

[regions.cn]
countries = ["CN"]

[regions.au]
countries = ["AU"]
from = ["maxmind"]

[[rules]]
devices = ["default"]
block = ["cn", "au"]
"#,
        origin.url("/countries.tar.gz"),
        origin.url("")
    )
}

/// MaxMind's endpoint for account 42 with key k3y, announcing `announced`
/// and serving `mmdb` as its download.
fn edition(mmdb: &[u8], announced: &str) -> MaxMind {
    MaxMind {
        edition: "GeoLite2-Country".into(),
        account: "42".into(),
        key: "k3y".into(),
        md5: announced.into(),
        date: "2026-12-01".into(),
        tarball: tar_gz(&[("GeoLite2-Country_20261201/GeoLite2-Country.mmdb", mmdb)]),
    }
}

/// Four real countries as the country-ip-blocks repository's tar.gz has them.
fn country_archive() -> Vec<u8> {
    let countries = common::countries_dir();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for cc in ["cn", "au", "nz", "tv"] {
        for f in ["ipv4-aggregated.txt", "ipv6-aggregated.txt"] {
            let data = std::fs::read(countries.join(cc).join(f)).expect("country file");
            files.push((format!("country-ip-blocks-main/country/{cc}/{f}"), data));
        }
    }
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    tar_gz(&refs)
}

#[test]
fn maxmind_protocol_and_a_country_archive() {
    let origin = Origin::start();
    let case = Case::new("maxmind");
    case.write_policy(&maxmind_policy(&origin));
    std::fs::write(case.dir.join("maxmind.key"), "k3y\n").expect("key");
    let countries = country_archive();
    origin.route(
        "/countries.tar.gz",
        Route::File {
            body: countries.clone(),
            etag: "\"c1\"".into(),
        },
    );
    let mmdb1 = common::mmdb::build(&[
        ("1.0.0.0/24", Some("AU"), None),
        ("1.0.4.0/22", Some("AU"), None),
    ]);
    let mmdb2 = common::mmdb::build(&[
        ("1.0.0.0/24", Some("AU"), None),
        ("1.0.4.0/22", Some("AU"), None),
        ("1.0.16.0/20", Some("AU"), None),
    ]);
    let md5 = regionwall::update::fetch::md5_hex;
    origin.maxmind(edition(&mmdb1, &md5(&mmdb1)));
    let metadata = "/geoip/updates/metadata";
    let download = "/geoip/databases/GeoLite2-Country/download";

    let out = case.update(T0, None, &[]);
    assert!(out.status.success());
    case.assert_clean(&["1"], "1");
    let meta = origin.hits(metadata);
    assert_eq!(meta.len(), 1);
    assert!(
        meta[0]
            .query
            .contains(&format!("db_md5={}", "0".repeat(32)))
    );
    assert_eq!(meta[0].authorization.as_deref(), Some("Basic NDI6azN5"));
    assert_eq!(origin.hits(download).len(), 1);
    assert_eq!(
        std::fs::read(case.data.join("current/GeoLite2-Country.mmdb")).expect("mmdb"),
        mmdb1
    );
    assert!(
        case.data
            .join("current/countries/cn/ipv4-aggregated.txt")
            .exists()
    );

    // Unchanged: the metadata call carries our md5; nothing downloaded,
    // and the archive is asked conditionally (304).
    let out = case.update(T0 + STEP, None, &[]);
    assert!(out.status.success());
    let meta = origin.hits(metadata);
    assert!(meta[1].query.contains(&format!("db_md5={}", md5(&mmdb1))));
    assert_eq!(origin.hits(download).len(), 1, "no download");
    let archive = origin.hits("/countries.tar.gz");
    assert_eq!((archive[1].status, archive[1].sent), (304, 0));
    case.assert_clean(&["1"], "1");

    // Wrong credentials.
    std::fs::write(case.dir.join("maxmind.key"), "wrong\n").expect("key");
    case.assert_rejected(
        &case.update(T0 + 2 * STEP, None, &[]),
        "refused our credentials (HTTP 401)",
        &["1"],
        "1",
    );
    std::fs::write(case.dir.join("maxmind.key"), "k3y\n").expect("key");

    // The announced md5 is not the download's.
    origin.maxmind(edition(&mmdb1, &md5(&mmdb2)));
    case.assert_rejected(
        &case.update(T0 + 3 * STEP, None, &[]),
        "checksum mismatch",
        &["1"],
        "1",
    );

    // A new edition.
    origin.maxmind(edition(&mmdb2, &md5(&mmdb2)));
    let out = case.update(T0 + 4 * STEP, None, &[]);
    assert!(out.status.success());
    assert!(text(&out).contains("AU: +1 prefixes (+4096 addresses)"));
    assert!(text(&out).contains("region au: +1 prefixes (+4096 addresses), -0 prefixes"));
    case.assert_clean(&["1", "2"], "2");

    let out = case.update(T0 + 5 * STEP, None, &["--rollback"]);
    assert!(out.status.success(), "{}", text(&out));
    case.assert_clean(&["1"], "1");
    assert_eq!(
        std::fs::read(case.data.join("current/GeoLite2-Country.mmdb")).expect("mmdb"),
        mmdb1
    );

    // A corrupt (cut short) archive.
    origin.route(
        "/countries.tar.gz",
        Route::File {
            body: countries[..countries.len() / 2].to_vec(),
            etag: "\"c2\"".into(),
        },
    );
    case.assert_rejected(
        &case.update(T0 + 6 * STEP, None, &[]),
        "corrupt archive",
        &["1"],
        "1",
    );
}

/// A `file://` mirror: read like a download; the same content again is
/// no new version; a changed file is.
#[test]
fn file_mirror_and_unchanged_content() {
    let case = Case::new("file");
    let mirror = case.dir.join("mirror.txt");
    std::fs::write(&mirror, rir(&base())).expect("mirror");
    case.write_policy(&format!(
        r#"[update]
dir = "data"
[sources.apnic]
format = "rir"
path = "data/current/apnic.txt"
url = "file://{}"
"#,
        mirror.display()
    ));
    let out = case.update(T0, None, &[]);
    assert!(out.status.success());
    case.assert_clean(&["1"], "1");
    let out = case.update(T0 + STEP, None, &[]);
    assert!(out.status.success());
    assert!(text(&out).contains("apnic: unchanged (same content)"));
    case.assert_clean(&["1"], "1");
    let mut more = base();
    more.push(record("CN", "198.51.100.0", 256));
    std::fs::write(&mirror, rir(&more)).expect("mirror");
    // A socket a killed controller left: nobody listens, nothing to tell.
    let stale = case.dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    let out = case.update(T0 + 2 * STEP, Some(&stale), &[]);
    assert!(out.status.success());
    assert!(text(&out).contains("CN: +1 prefixes (+256 addresses)"));
    assert!(text(&out).contains("stale.sock: no controller listens (a stale socket), skipped"));
    case.assert_clean(&["1", "2"], "2");
    // Within the interval the mirror is not read again.
    std::fs::write(&mirror, b"garbage").expect("mirror");
    let out = case.update(T0 + 2 * STEP + 60, None, &[]);
    assert!(text(&out).contains("apnic: not asked (fetched within the interval)"));
    // --force asks anyway; the failed attempt counts against the interval.
    case.assert_rejected(
        &case.update(T0 + 2 * STEP + 120, None, &["--force"]),
        "the new data does not load",
        &["1", "2"],
        "2",
    );
    let out = case.update(T0 + 2 * STEP + 180, None, &[]);
    assert!(text(&out).contains("apnic: not asked (fetched within the interval)"));
    // Over the size limit (a file is checked before it is read).
    let policy = std::fs::read_to_string(&case.policy).expect("policy");
    case.write_policy(&policy.replace("[update]\n", "[update]\nmax_size = \"64K\"\n"));
    std::fs::write(&mirror, vec![b'#'; 100_000]).expect("mirror");
    case.assert_rejected(
        &case.update(T0 + 3 * STEP, None, &[]),
        "over the limit of 65536 bytes",
        &["1", "2"],
        "2",
    );
}
