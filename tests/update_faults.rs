//! `regionwall update` under faults the first tests missed: overlapping
//! fetched paths, a clock moved back, checksum files of many entries,
//! validators of unchanged content, a changed checksum behind a stale
//! ETag; every version left byte-identical.

mod common;

use std::{collections::BTreeMap, path::Path};

use common::{
    origin::{Origin, Route},
    text,
    update_case::{Case, apnic_records, record, rir},
};

/// 01:00 UTC of some day.
const T0: u64 = 1_800_057_600 + 3600;
const STEP: u64 = 7200;
const DAY: u64 = 86_400;

/// Every file under `dir` with its sha256, by path relative to `dir`.
fn hashes(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() && !p.is_symlink() {
                walk(root, &p, out);
            } else if p.is_file() {
                let bytes = std::fs::read(&p).expect("read");
                out.insert(
                    p.strip_prefix(root)
                        .expect("under root")
                        .display()
                        .to_string(),
                    regionwall::update::fetch::sha256_hex(&bytes),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn base() -> Vec<String> {
    let mut r = apnic_records(400);
    r.push(record("CN", "203.0.113.0", 256));
    r
}

/// A policy fetching `apnic.txt` from a file mirror.
fn mirror_policy(case: &Case, extra_update: &str, sources: &str) -> String {
    let url = format!("file://{}", case.dir.join("apnic.txt").display());
    policy_from(&url, extra_update, sources)
}

/// A policy fetching `apnic.txt` from `url`.
fn policy_from(url: &str, extra_update: &str, sources: &str) -> String {
    format!(
        r#"[update]
dir = "data"
{extra_update}
[sources.apnic]
format = "rir"
path = "data/current/apnic.txt"
url = "{url}"
{sources}
[regions.cn]
countries = ["CN"]
from = ["apnic"]

[[rules]]
name = "no-cn"
devices = ["default"]
block = ["cn"]
"#
    )
}

/// A second source whose path lies inside or on the first's is refused
/// at its line and column before anything is fetched: a download must
/// never write through a file another version shares.
#[test]
fn overlapping_targets_are_refused_and_versions_stay_identical() {
    let case = Case::new("faults-overlap");
    std::fs::write(case.dir.join("apnic.txt"), rir(&base())).expect("mirror");
    case.write_policy(&mirror_policy(&case, "", ""));
    for i in 0..2u64 {
        if i == 1 {
            let mut more = base();
            more.push(record("CN", "198.51.100.0", 256));
            std::fs::write(case.dir.join("apnic.txt"), rir(&more)).expect("mirror");
        }
        let out = case.update(T0 + i * STEP, None, &[]);
        assert!(out.status.success(), "{}", text(&out));
    }
    case.assert_clean(&["1", "2"], "2");
    let before = hashes(&case.data.join("versions"));
    std::fs::write(case.dir.join("apnic.txt"), b"2|apnic|trunc").expect("mirror");
    for (what, path) in [
        ("a duplicate", "data/current/apnic.txt"),
        ("a nested", "data/current/apnic.txt/x"),
    ] {
        let dup = format!(
            "[sources.again]\nformat = \"rir\"\npath = \"{path}\"\nurl = \"file://{}\"\n",
            case.dir.join("apnic.txt").display()
        );
        case.write_policy(&mirror_policy(&case, "", &dup));
        let out = case.update(T0 + 3 * STEP, None, &["--force"]);
        let all = text(&out);
        assert!(!out.status.success(), "{what} path accepted:\n{all}");
        assert!(
            all.contains("policy.toml:6:8: this path overlaps the fetched path on line 10"),
            "{what}: {all}"
        );
        case.assert_clean(&["1", "2"], "2");
        assert_eq!(hashes(&case.data.join("versions")), before, "{what}");
    }
    // A failed download of the lone source leaves every version as it was.
    case.write_policy(&mirror_policy(&case, "", ""));
    let out = case.update(T0 + 4 * STEP, None, &["--force"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(hashes(&case.data.join("versions")), before);
}

fn serve(origin: &Origin, records: &[String], etag: &str) {
    origin.route(
        "/apnic.txt",
        Route::File {
            body: rir(records),
            etag: format!("\"{etag}\""),
        },
    );
}

/// A run with the clock far ahead (a wrong RTC) records a fetch and an
/// HTTP 429 back-off in the future; once the clock is right again the
/// source is due at once, not a month later.
#[test]
fn a_clock_moved_back_does_not_hold_updates() {
    let origin = Origin::start();
    let case = Case::new("faults-clock");
    case.write_policy(&policy_from(&origin.url("/apnic.txt"), "", ""));
    serve(&origin, &base(), "a");
    assert!(case.update(T0, None, &[]).status.success());
    origin.route("/apnic.txt", Route::Status(429));
    let out = case.update(T0 + 30 * DAY, None, &[]);
    assert!(text(&out).contains("429"), "{}", text(&out));
    let mut more = base();
    more.push(record("CN", "198.51.100.0", 256));
    serve(&origin, &more, "b");
    let out = case.update(T0 + STEP, None, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("CN: +1 prefixes"), "{}", text(&out));
    case.assert_clean(&["1", "2"], "2");
    // A future last fetch alone (no back-off) is no reason to wait either,
    // with or without --force.
    assert!(
        case.update(T0 + 30 * DAY, None, &["--force"])
            .status
            .success()
    );
    more.push(record("CN", "198.51.100.0", 256).replace("198.51.100.0", "192.0.2.0"));
    serve(&origin, &more, "c");
    let out = case.update(T0 + 2 * STEP, None, &[]);
    assert!(text(&out).contains("CN: +1 prefixes"), "{}", text(&out));
    case.assert_clean(&["1", "2", "3"], "3");
    // A sane back-off (until the next day) still holds, even --force.
    origin.route("/apnic.txt", Route::Status(429));
    assert!(!case.update(T0 + 3 * STEP, None, &[]).status.success());
    let hits = origin.hits("/apnic.txt").len();
    let out = case.update(T0 + 3 * STEP + 60, None, &["--force"]);
    assert!(
        text(&out).contains("backed off after HTTP 429"),
        "{}",
        text(&out)
    );
    assert_eq!(
        origin.hits("/apnic.txt").len(),
        hits,
        "asked during a back-off"
    );
}

/// A `SHA256SUMS`-style file of several entries: the line naming the
/// downloaded file counts, wherever it is; none naming it is an error.
#[test]
fn a_checksum_file_of_many_entries() {
    let origin = Origin::start();
    let case = Case::new("faults-sums");
    let sums_url = origin.url("/SHA256SUMS");
    case.write_policy(&policy_from(
        &origin.url("/apnic.txt"),
        "",
        &format!("checksum_url = \"{sums_url}\"\n"),
    ));
    let body = rir(&base());
    serve(&origin, &base(), "a");
    let sha = |b: &[u8]| regionwall::update::fetch::sha256_hex(b);
    let sums = |name: &str| {
        format!("{}  other.txt\n{} *./{name}\n", sha(b"other"), sha(&body)).into_bytes()
    };
    origin.route(
        "/SHA256SUMS",
        Route::File {
            body: sums("apnic.txt"),
            etag: "\"s1\"".into(),
        },
    );
    let out = case.update(T0, None, &[]);
    assert!(out.status.success(), "{}", text(&out));
    case.assert_clean(&["1"], "1");
    origin.route(
        "/SHA256SUMS",
        Route::File {
            body: sums("elsewhere.txt"),
            etag: "\"s2\"".into(),
        },
    );
    case.assert_rejected(
        &case.update(T0 + STEP, None, &[]),
        "no md5 or sha256 digest for apnic.txt in the checksum file",
        &["1"],
        "1",
    );
}

/// A server that starts sending a new ETag for the same content: the
/// ETag is kept though nothing changed, so the next request is
/// conditional on it and answered 304.
#[test]
fn validators_of_unchanged_content_are_kept() {
    let origin = Origin::start();
    let case = Case::new("faults-etag");
    case.write_policy(&policy_from(&origin.url("/apnic.txt"), "", ""));
    serve(&origin, &base(), "a");
    assert!(case.update(T0, None, &[]).status.success());
    serve(&origin, &base(), "b");
    let out = case.update(T0 + STEP, None, &[]);
    assert!(
        text(&out).contains("unchanged (same content)"),
        "{}",
        text(&out)
    );
    let out = case.update(T0 + 2 * STEP, None, &[]);
    assert!(
        text(&out).contains("unchanged (304 not modified)"),
        "{}",
        text(&out)
    );
    let last = origin.hits("/apnic.txt").pop().expect("asked");
    assert_eq!(
        (last.if_none_match.as_deref(), last.status),
        (Some("\"b\""), 304)
    );
    case.assert_clean(&["1"], "1");
}

/// The published checksum changed but the server still answers the old
/// ETag with 304 (a stale mirror or cache): the file is asked for without
/// validators, so the change is downloaded, checked and switched.
#[test]
fn a_changed_checksum_is_fetched_past_a_stale_etag() {
    let origin = Origin::start();
    let case = Case::new("faults-stale");
    case.write_policy(&policy_from(
        &origin.url("/apnic.txt"),
        "",
        &format!("checksum_url = \"{}\"\n", origin.url("/apnic.txt.sha256")),
    ));
    let publish = |records: &[String], etag: &str| {
        let body = rir(records);
        let sum = format!(
            "{}  apnic.txt\n",
            regionwall::update::fetch::sha256_hex(&body)
        );
        origin.route(
            "/apnic.txt.sha256",
            Route::File {
                body: sum.into_bytes(),
                etag: format!("\"sum-{etag}\""),
            },
        );
        // The same ETag whatever the body: a conditional request for the
        // old one is answered 304.
        origin.route(
            "/apnic.txt",
            Route::File {
                body,
                etag: "\"stale\"".into(),
            },
        );
    };
    publish(&base(), "a");
    assert!(case.update(T0, None, &[]).status.success());
    let mut more = base();
    more.push(record("CN", "198.51.100.0", 256));
    publish(&more, "b");
    let out = case.update(T0 + STEP, None, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("CN: +1 prefixes"), "{}", text(&out));
    let last = origin.hits("/apnic.txt").pop().expect("asked");
    assert_eq!((last.if_none_match, last.status), (None, 200));
    case.assert_clean(&["1", "2"], "2");
}

/// Copies the files of `from` into a new directory `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

/// A run killed between commit and switch leaves a version never made
/// current: the next run removes it (and `.current.tmp`), never gives its
/// number again, and `--rollback` goes to the version live before. A
/// `current` that is a real directory is refused before anything is
/// staged.
#[test]
fn orphans_are_removed_and_rollback_follows_the_history() {
    let case = Case::new("faults-orphan");
    let mirror = case.dir.join("apnic.txt");
    case.write_policy(&mirror_policy(&case, "", ""));
    let mut records = base();
    for (i, net) in ["192.0.2.0", "198.51.100.0"].into_iter().enumerate() {
        records.push(record("CN", net, 256));
        std::fs::write(&mirror, rir(&records)).expect("mirror");
        let out = case.update(T0 + i as u64 * STEP, None, &[]);
        assert!(out.status.success(), "{}", text(&out));
    }
    case.assert_clean(&["1", "2"], "2");
    // What kill -9 between the rename into versions/ and the switch leaves.
    std::fs::write(case.data.join("last-version"), "3\n").expect("counter");
    copy_dir(&case.data.join("versions/2"), &case.data.join("versions/3"));
    std::os::unix::fs::symlink("versions/3", case.data.join(".current.tmp")).expect("tmp");
    records.push(record("CN", "203.0.113.0", 128).replace("203.0.113.0", "100.64.0.0"));
    std::fs::write(&mirror, rir(&records)).expect("mirror");
    let out = case.update(T0 + 2 * STEP, None, &[]);
    assert!(out.status.success(), "{}", text(&out));
    case.assert_clean(&["1", "2", "4"], "4");
    let out = case.update(T0 + 2 * STEP + 60, None, &["--rollback"]);
    assert!(
        text(&out).contains("rolled back from version 4 to version 2"),
        "{}",
        text(&out)
    );
    case.assert_clean(&["1", "2"], "2");

    // `current` a real directory: refused at once, nothing staged.
    std::fs::remove_file(case.data.join("current")).expect("unlink");
    std::fs::create_dir(case.data.join("current")).expect("mkdir");
    let out = case.update(T0 + 3 * STEP, None, &["--force"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("current is not a symlink"),
        "{}",
        text(&out)
    );
    let mut left: Vec<String> = std::fs::read_dir(&case.data)
        .expect("data")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            ".lock",
            "current",
            "history",
            "last-version",
            "status.json",
            "versions"
        ]
    );
    assert_eq!(case.versions(), ["1", "2"]);
}

fn status(case: &Case) -> regionwall::update::status::Status {
    regionwall::update::status::read(&case.data).expect("status.json")
}

/// The status file tells the truth: a source's success only once the
/// whole update is verified and live; a run that asks nobody keeps an
/// earlier failure; a status that cannot be written after a switch still
/// prints the changes and says the version is live; a corrupt status is
/// moved aside with a warning; a status that disagrees with `current`
/// (killed between switch and status write) is corrected.
#[test]
fn the_status_tells_the_truth() {
    let case = Case::new("faults-status");
    let mirror = case.dir.join("apnic.txt");
    case.write_policy(&mirror_policy(&case, "", ""));
    std::fs::write(&mirror, rir(&base())).expect("mirror");
    assert!(case.update(T0, None, &[]).status.success());
    std::fs::write(&mirror, b"2|apnic|garbage\n").expect("mirror");
    assert!(!case.update(T0 + STEP, None, &[]).status.success());
    let failed = status(&case);
    assert_eq!(
        failed.sources["apnic"].last_success,
        Some(T0),
        "not verified"
    );
    assert!(failed.error.is_some());
    let out = case.update(T0 + STEP + 60, None, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not asked"), "{}", text(&out));
    let after = status(&case);
    assert_eq!(
        after.error, failed.error,
        "an earlier failure stays reported"
    );
    assert_eq!(after.last_success, Some(T0));
    assert_eq!(after.sources["apnic"].last_success, Some(T0));

    // Unwritable status after the switch: changes printed, version live.
    let mut more = base();
    more.push(record("CN", "198.51.100.0", 256));
    std::fs::write(&mirror, rir(&more)).expect("mirror");
    let saved = std::fs::read(case.data.join("status.json")).expect("status");
    std::fs::remove_file(case.data.join("status.json")).expect("rm");
    std::fs::create_dir(case.data.join("status.json")).expect("mkdir");
    let out = case.update(T0 + 2 * STEP, None, &[]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("CN: +1 prefixes"), "{all}");
    assert!(
        all.contains("version 2 IS current and live, but writing status"),
        "{all}"
    );
    assert!(!case.data.join(".status.tmp").exists());
    std::fs::remove_dir(case.data.join("status.json")).expect("rmdir");

    // The status said version 1 (written before the switch to 2).
    std::fs::write(case.data.join("status.json"), &saved).expect("status");
    let out = case.update(T0 + STEP + 120, None, &[]);
    assert!(
        text(&out).contains("the status file said version 1, but version 2 is current: corrected"),
        "{}",
        text(&out)
    );
    assert_eq!(status(&case).version, Some(2));

    // Corrupt: moved aside with a warning, a fresh status written.
    std::fs::write(case.data.join("status.json"), b"{\"version\": ").expect("status");
    let now = T0 + 3 * STEP;
    let out = case.update(now, None, &[]);
    assert!(
        text(&out).contains("status.json is corrupt"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read(case.data.join(format!("status.json.bad-{now}"))).expect("moved aside"),
        b"{\"version\": "
    );
    // Its validators lost, the source was asked again.
    let v = status(&case).version.expect("a version");
    assert_eq!(case.current(), format!("versions/{v}"));
}

/// A 304 answers only a conditional request: asked without validators
/// (a server that sent none), "not modified" is an error, not "unchanged".
#[test]
fn a_304_to_an_unconditional_request_is_refused() {
    let origin = Origin::start();
    let case = Case::new("faults-304");
    case.write_policy(&policy_from(&origin.url("/apnic.txt"), "", ""));
    serve(&origin, &base(), "a");
    assert!(case.update(T0, None, &[]).status.success());
    let mut st = status(&case);
    let apnic = st.sources.get_mut("apnic").expect("apnic");
    apnic.etag = None;
    apnic.last_modified = None;
    regionwall::update::status::write(&case.data, &st).expect("write status");
    origin.route("/apnic.txt", Route::Status(304));
    case.assert_rejected(
        &case.update(T0 + STEP, None, &[]),
        "answered 304 to an unconditional request",
        &["1"],
        "1",
    );
}

/// A redirect to a scheme that is not followed (file://) names where it
/// led rather than "HTTP 302".
#[test]
fn a_redirect_to_a_file_url_is_reported_as_such() {
    let origin = Origin::start();
    let case = Case::new("faults-redirect");
    case.write_policy(&policy_from(&origin.url("/apnic.txt"), "", ""));
    serve(&origin, &base(), "a");
    assert!(case.update(T0, None, &[]).status.success());
    origin.route("/apnic.txt", Route::Redirect("file:///etc/passwd".into()));
    case.assert_rejected(
        &case.update(T0 + STEP, None, &[]),
        "redirected (HTTP 302) to file:///etc/passwd, which is not followed",
        &["1"],
        "1",
    );
}

/// Most of one country's prefixes replaced by others of the same size:
/// the shares hold and the total churn is small, but that country's
/// churn is over `max_churn`, so the download is refused.
#[test]
fn one_country_mostly_replaced_is_refused() {
    let case = Case::new("faults-churn");
    let mirror = case.dir.join("apnic.txt");
    case.write_policy(&mirror_policy(&case, "", ""));
    let us: Vec<String> = (0..100)
        .map(|i| record("US", &format!("10.{i}.0.0"), 256))
        .collect();
    let cn = |from: u8, n: u8, net: u8| -> Vec<String> {
        (from..from + n)
            .map(|i| record("CN", &format!("172.{net}.{i}.0"), 256))
            .collect()
    };
    let mut before = us.clone();
    before.extend(cn(0, 20, 16));
    std::fs::write(&mirror, rir(&before)).expect("mirror");
    assert!(case.update(T0, None, &[]).status.success());
    let mut after = us;
    after.extend(cn(0, 5, 16));
    after.extend(cn(0, 15, 17));
    std::fs::write(&mirror, rir(&after)).expect("mirror");
    case.assert_rejected(
        &case.update(T0 + STEP, None, &[]),
        "CN: 30 prefixes added or removed of 20 (150 %, over the limit of 50 %)",
        &["1"],
        "1",
    );
}
