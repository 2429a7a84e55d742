//! `run --metrics`, with the real controller in sandbox namespaces: the
//! scraped series equal what was sent and dropped, `promtool check
//! metrics` accepts the output, a real Prometheus server scrapes it, and
//! kernel counters never go backwards across a reload and a controller
//! restart. Every namespace, pin and temporary directory is removed.

mod common;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    process::Stdio,
    time::{Duration, Instant},
};

use aya::programs::Xdp;
use aya_obj::programs::XdpAttachType;
use common::{demo_policy_copy, exe, pins::PinRoot, regionwall, udp4_frame};
use regionwall::verdict::Verdict;
use regionwall_testkit::{
    sandbox::{Controller, Topology},
    traffic::send_traffic,
    xdp::{XDP_DROP, XDP_PASS},
};

/// The metrics address inside the (unique) gateway namespace.
const METRICS: &str = "127.0.0.1:9465";

use common::gateway_get as get;

/// The scrape as series -> value (`name{labels}` exactly as served).
fn scrape(t: &Topology) -> (String, BTreeMap<String, f64>) {
    let text = get(t, &format!("http://{METRICS}/metrics"));
    let series = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("series value");
            (k.to_string(), v.parse::<f64>().expect("number"))
        })
        .collect();
    (text, series)
}

fn value(s: &BTreeMap<String, f64>, key: &str) -> f64 {
    s.get(key)
        .copied()
        .unwrap_or_else(|| panic!("no series {key} in {s:#?}"))
}

/// Counters (`_total`) whose values come from the kernel's pinned maps.
fn kernel_counters(s: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let userspace = [
        "regionwall_reloads_total",
        "regionwall_events_queue_dropped_total",
        "regionwall_events_not_written_total",
        "regionwall_history_events_not_written_total",
        "regionwall_dns_answers_decoded_total",
    ];
    s.iter()
        .filter(|(k, _)| {
            let name = k.split('{').next().unwrap_or(k);
            name.ends_with("_total") && !userspace.contains(&name)
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn start(t: &Topology, policy: &std::path::Path, root: &PinRoot) -> Controller {
    Controller::start(
        &exe(),
        t,
        policy,
        &["--pin-root", root.arg(), "--metrics", METRICS],
    )
    .expect("start")
}

const DROP_PKTS: &str = r#"regionwall_packets_total{verdict="drop"}"#;
const PASS_PKTS: &str = r#"regionwall_packets_total{verdict="pass"}"#;
const PHONE_BLOCKED: &str =
    r#"regionwall_region_packets_total{device="phone",region="blocked-zone",verdict="drop"}"#;
const PHONE_BLOCKED_BYTES: &str =
    r#"regionwall_region_bytes_total{device="phone",region="blocked-zone",verdict="drop"}"#;

#[test]
fn scraped_series_equal_what_was_sent_and_promtool_accepts_them() {
    let t = Topology::create("metrics").expect("namespaces");
    let root = PinRoot::new();
    let policy = demo_policy_copy();
    let c = start(&t, &policy, &root);
    // Real traffic through the gateway first.
    let blocked = send_traffic(&t, "blocked", "198.51.100.10", 3).expect("traffic");
    let allowed = send_traffic(&t, "allowed", "203.0.113.10", 3).expect("traffic");
    assert_eq!(blocked.udp_delivered, 0);
    assert!(allowed.udp_delivered > 0);
    let (_, before) = scrape(&t);
    assert!(value(&before, PHONE_BLOCKED) >= 3.0, "{before:#?}");
    // A page that rebinds its name to 127.0.0.1 sends its own Host: 403.
    let rebound = t
        .gateway
        .command("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(["-H", "Host: evil.example"])
        .arg(format!("http://{METRICS}/metrics"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&rebound.stdout), "403");
    // Then an exact number of frames through the controller's program.
    let prog = Xdp::from_pin(root.pins().prog(), XdpAttachType::Interface).expect("program");
    let phone = Ipv4Addr::new(192, 0, 2, 10);
    let drop_frame = udp4_frame(phone, Ipv4Addr::new(198, 51, 100, 20), 9);
    let pass_frame = udp4_frame(phone, Ipv4Addr::new(203, 0, 113, 20), 9);
    assert_eq!(
        common::prog::run(&prog, &drop_frame, 7).return_value,
        XDP_DROP
    );
    assert_eq!(
        common::prog::run(&prog, &pass_frame, 5).return_value,
        XDP_PASS
    );
    let (text, after) = scrape(&t);
    let delta = |k: &str| value(&after, k) - value(&before, k);
    assert!((delta(DROP_PKTS) - 7.0).abs() < 0.5, "7 drops: {text}");
    assert!((delta(PHONE_BLOCKED) - 7.0).abs() < 0.5, "{text}");
    assert!(delta(PASS_PKTS) >= 5.0, "{text}");
    // The same numbers the control socket reports.
    let stats = common::stats(&root, &c.socket);
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let drops = stats.packets(Verdict::Drop) as f64;
    assert!((value(&after, DROP_PKTS) - drops).abs() < 0.5);
    let row = stats
        .traffic
        .iter()
        .find(|r| r.device == "phone" && r.region == "blocked-zone" && r.verdict == Verdict::Drop)
        .expect("stats row");
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let bytes = row.bytes as f64;
    assert!((value(&after, PHONE_BLOCKED_BYTES) - bytes).abs() < 0.5);
    assert!((value(&after, r#"regionwall_attached{hook="xdp"}"#) - 1.0).abs() < 0.5);
    assert!(value(&after, "regionwall_policy_epoch") >= 1.0);
    assert!(value(&after, "regionwall_events_reported_total") >= 1.0);
    assert!(after.contains_key(r#"regionwall_map_capacity{map="destinations"}"#));
    assert!(after.contains_key("regionwall_policy_loaded_timestamp_seconds"));
    assert!(after.contains_key("regionwall_policy_inputs_modified_timestamp_seconds"));
    // No address as a label value.
    for addr in ["192.0.2.", "198.51.100.", "203.0.113.", "2001:db8"] {
        assert!(!text.contains(addr), "an address in the metrics: {text}");
    }
    // The official linter.
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/setup.sh installs it)");
    std::io::Write::write_all(&mut promtool.stdin.take().expect("stdin"), text.as_bytes())
        .expect("write to promtool");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(out.status.success(), "promtool: {}", common::text(&out));
    // OpenMetrics for a client that asks for it (Prometheus does).
    let out = t
        .gateway
        .command("curl")
        .args([
            "-sS",
            "--fail",
            "-H",
            "Accept: application/openmetrics-text; version=1.0.0",
        ])
        .arg(format!("http://{METRICS}/metrics"))
        .output()
        .expect("curl");
    let om = String::from_utf8_lossy(&out.stdout);
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE regionwall_packets counter"), "{om}");
    // Scrape time, as the endpoint reports it.
    println!(
        "scrape read the maps in {:.2} ms",
        value(&after, "regionwall_scrape_duration_seconds") * 1e3
    );
    drop(c);
}

#[test]
fn a_non_loopback_address_is_refused_without_allow_remote() {
    let policy = demo_policy_copy();
    let unique = regionwall_testkit::netns::unique_name("metrics-refused");
    let socket = std::env::temp_dir().join(format!("{unique}.sock"));
    let pin_root = format!("/sys/fs/bpf/{unique}");
    let out = regionwall(&[
        "run",
        "--iface",
        "lo",
        "--policy",
        policy.to_str().expect("UTF-8"),
        "--no-wait",
        "--metrics",
        "192.0.2.1:9465",
        "--socket",
        socket.to_str().expect("UTF-8"),
        "--pin-root",
        &pin_root,
    ]);
    assert!(!socket.exists(), "the control socket is removed again");
    assert!(
        !std::path::Path::new(&pin_root).exists(),
        "nothing was pinned"
    );
    assert!(!out.status.success());
    assert!(
        common::text(&out).contains("--metrics-allow-remote"),
        "{}",
        common::text(&out)
    );
}

/// Every counter series (`_total`), kernel and controller alike.
fn counters(s: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    s.iter()
        .filter(|(k, _)| k.split('{').next().unwrap_or(k).ends_with("_total"))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// Every series of `before` is in `after` with at least its value.
fn never_backwards(when: &str, before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) {
    for (k, v) in before {
        assert!(
            after.get(k).is_some_and(|now| now >= v),
            "{when}: {k}: {v} then {:?}",
            after.get(k)
        );
    }
}

/// The first scrape of a controller that just started.
fn first_scrape(t: &Topology) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = t
            .gateway
            .command("curl")
            .args(["-sS", "--fail", &format!("http://{METRICS}/metrics")])
            .output()
            .expect("curl");
        if out.status.success() || Instant::now() > deadline {
            break counters(&scrape(t).1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn counters_never_go_backwards_across_reloads_and_restarts() {
    let t = Topology::create("metrics-mono").expect("namespaces");
    let root = PinRoot::new();
    let policy = demo_policy_copy();
    // Beside the policy: a directory of this test's own.
    let state = policy.with_file_name("state");
    let state_arg = state.to_str().expect("UTF-8");
    let original = std::fs::read_to_string(&policy).expect("policy");
    // --persist: a clean stop keeps the pins (without it the kernel's
    // counters go with them: a documented reset).
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--pin-root",
            root.arg(),
            "--metrics",
            METRICS,
            "--persist",
            "--state-dir",
            state_arg,
        ];
        args.extend_from_slice(extra);
        Controller::start(&exe(), &t, &policy, &args).expect("start")
    };
    let c = run(&[]);
    let _ = send_traffic(&t, "blocked", "198.51.100.10", 3).expect("traffic");
    let _ = send_traffic(&t, "allowed", "203.0.113.10", 2).expect("traffic");
    let first = counters(&scrape(&t).1);
    assert!(kernel_counters(&first).len() > 10, "{first:#?}");
    // A reload put in force, and one refused (the file is watched).
    c.signal(libc::SIGHUP);
    assert!(c.wait_log("reloaded policy", Duration::from_secs(20)));
    std::fs::write(&policy, "this is [not a policy").expect("write");
    assert!(c.wait_log("rejected, previous policy", Duration::from_secs(20)));
    std::fs::write(&policy, &original).expect("write");
    let (_, reloaded) = scrape(&t);
    assert!(value(&reloaded, r#"regionwall_reloads_total{result="ok"}"#) >= 1.0);
    assert!(value(&reloaded, r#"regionwall_reloads_total{result="rejected"}"#) >= 1.0);
    assert!(value(&reloaded, "regionwall_policy_epoch") >= 2.0);
    let reloaded = counters(&reloaded);
    never_backwards("reload", &first, &reloaded);

    // A crash: the new controller adopts the pins and reads the counters
    // file the last scrape saved.
    c.kill9().expect("kill");
    let c = run(&[]);
    let crashed = first_scrape(&t);
    never_backwards("kill -9", &reloaded, &crashed);
    let _ = send_traffic(&t, "blocked", "198.51.100.10", 2).expect("traffic");
    let crashed = counters(&scrape(&t).1);

    // A clean stop, and a controller without history on the same state
    // directory.
    c.stop().expect("stop");
    assert!(state.join("counters.json").is_file());
    let c = run(&["--no-history"]);
    let stopped = first_scrape(&t);
    never_backwards("clean stop", &crashed, &stopped);
    assert!(value(&stopped, r#"regionwall_reloads_total{result="rejected"}"#) >= 1.0);
    drop(c);
    let _ = std::fs::remove_dir_all(policy.parent().expect("temp dir"));
}

#[test]
fn a_prometheus_server_scrapes_the_endpoint() {
    let t = Topology::create("metrics-prom").expect("namespaces");
    let root = PinRoot::new();
    let policy = demo_policy_copy();
    let c = start(&t, &policy, &root);
    let _ = send_traffic(&t, "blocked", "198.51.100.10", 4).expect("traffic");
    let (_, scraped) = scrape(&t);
    let want = value(&scraped, PHONE_BLOCKED);
    let dir = std::env::temp_dir().join(regionwall_testkit::netns::unique_name("prom"));
    std::fs::create_dir_all(&dir).expect("prometheus dir");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: regionwall\n    static_configs:\n      - targets: ['{METRICS}']\n"
        ),
    )
    .expect("write config");
    let web = "127.0.0.1:9490";
    let mut prom = t
        .gateway
        .command("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package prometheus; scripts/setup.sh installs it)");
    let query = "regionwall_region_packets_total{device=\"phone\",region=\"blocked-zone\",verdict=\"drop\"}";
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answer;
    let found = loop {
        let out = t
            .gateway
            .command("curl")
            .args(["-sS", "--fail", "-G", &format!("http://{web}/api/v1/query")])
            .args(["--data-urlencode", &format!("query={query}")])
            .output()
            .expect("curl");
        answer = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            let json: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
            if let Some(v) = json["data"]["result"][0]["value"][1].as_str() {
                break Some(v.parse::<f64>().expect("number"));
            }
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let up = get(&t, &format!("http://{web}/api/v1/query?query=up"));
    let _ = prom.kill();
    let _ = prom.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let found = found.unwrap_or_else(|| panic!("Prometheus never had {query}: {answer}"));
    assert!(
        (found - want).abs() < 0.5,
        "Prometheus {found}, scrape {want}"
    );
    assert!(
        up.contains(r#""value":["#) && up.contains(r#","1"]"#),
        "up: {up}"
    );
    drop(c);
}

#[test]
fn devices_over_the_cap_are_summed_as_other() {
    let t = Topology::create("metrics-cap").expect("namespaces");
    let root = PinRoot::new();
    let c = Controller::start(
        &exe(),
        &t,
        &demo_policy_copy(),
        &[
            "--pin-root",
            root.arg(),
            "--metrics",
            METRICS,
            "--metrics-max-devices",
            "0",
        ],
    )
    .expect("start");
    let _ = send_traffic(&t, "blocked", "198.51.100.10", 2).expect("traffic");
    let (text, s) = scrape(&t);
    assert!(!text.contains(r#"device="phone""#), "{text}");
    let other =
        r#"regionwall_region_packets_total{device="other",region="blocked-zone",verdict="drop"}"#;
    assert!(value(&s, other) >= 2.0, "{text}");
    println!("{text}");
    drop(c);
}

/// The demo policy with `extra` more devices (by MAC, sending nothing).
fn with_devices(demo: &str, extra: &[String]) -> String {
    use std::fmt::Write as _;
    let mut text = demo.to_string();
    for (i, name) in extra.iter().enumerate() {
        let [hi, lo] = u16::try_from(i).expect("few").to_be_bytes();
        writeln!(
            text,
            "\n[devices.{name}]\nmac = [\"02:00:5e:10:{hi:02x}:{lo:02x}\"]"
        )
        .expect("a String takes it");
    }
    text
}

#[test]
fn a_reused_counter_slot_never_takes_other_backwards() {
    let t = Topology::create("metrics-reuse").expect("namespaces");
    let root = PinRoot::new();
    let policy = demo_policy_copy();
    let demo = std::fs::read_to_string(&policy).expect("policy");
    // default + phone + 254 more: every device index is used, so a new
    // name can only take a retired one.
    let fillers: Vec<String> = (0..254).map(|i| format!("d{i}")).collect();
    std::fs::write(&policy, with_devices(&demo, &fillers)).expect("write");
    let c = Controller::start(
        &exe(),
        &t,
        &policy,
        &[
            "--pin-root",
            root.arg(),
            "--metrics",
            METRICS,
            "--metrics-max-devices",
            "0",
        ],
    )
    .expect("start");
    let _ = send_traffic(&t, "blocked", "198.51.100.10", 3).expect("traffic");
    let other =
        r#"regionwall_region_packets_total{device="other",region="blocked-zone",verdict="drop"}"#;
    let (_, before) = scrape(&t);
    assert!(value(&before, other) >= 3.0, "{before:#?}");
    // The phone leaves (its index keeps its counts under its name; its
    // addresses go to d253, which keeps its own index), then a new device
    // takes the phone's index, which is zeroed.
    // allow_empty: the phone's name leaves with its rule on purpose.
    let without_phone = "allow_empty = true\n".to_string()
        + &demo
            .replace("[devices.phone]", "[devices.d253]")
            .replace("devices = [\"phone\"]", "devices = [\"d253\"]");
    std::fs::write(&policy, with_devices(&without_phone, &fillers[..253])).expect("write");
    c.signal(libc::SIGHUP);
    assert!(
        c.wait_log("reloaded policy", Duration::from_secs(60)),
        "{}",
        c.log_text()
    );
    let (_, middle) = scrape(&t);
    never_backwards("phone removed", &counters(&before), &counters(&middle));
    let mut more = fillers[..253].to_vec();
    more.push("laptop".into());
    let log_before = c.log_text().matches("reloaded policy").count();
    std::fs::write(&policy, with_devices(&without_phone, &more)).expect("write");
    c.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.log_text().matches("reloaded policy").count() == log_before {
        assert!(Instant::now() < deadline, "{}", c.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (text, after) = scrape(&t);
    never_backwards("an index reused", &counters(&middle), &counters(&after));
    assert!(value(&after, other) >= value(&before, other), "{text}");
    drop(c);
    let _ = std::fs::remove_dir_all(policy.parent().expect("temp dir"));
}

/// Live: the phone may not reach 198.51.100.0/24.
const SHADOW_LIVE: &str = r#"
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

#[test]
fn a_staged_candidate_and_its_disagreements_are_scraped() {
    let t = Topology::create("metrics-cand").expect("namespaces");
    let root = PinRoot::new();
    let live = common::policy_file(SHADOW_LIVE);
    // The candidate blocks zone-b instead of zone-a.
    let candidate = common::policy_file(&SHADOW_LIVE.replace(
        "name = \"no-a\"\ndevices = [\"phone\"]\nblock = [\"zone-a\"]",
        "name = \"no-b\"\ndevices = [\"phone\"]\nblock = [\"zone-b\"]",
    ));
    let c = Controller::start(
        &exe(),
        &t,
        &live,
        &[
            "--pin-root",
            root.arg(),
            "--metrics",
            METRICS,
            "--candidate",
            candidate.to_str().expect("UTF-8"),
        ],
    )
    .expect("start");
    // Staging at start is logged, never waited for: ask until it shows.
    let deadline = Instant::now() + Duration::from_secs(20);
    let before = loop {
        let (_, s) = scrape(&t);
        if s.get("regionwall_candidate_staged") == Some(&1.0) || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(before.get("regionwall_candidate_staged"), Some(&1.0));
    let lost_before = value(&before, "regionwall_candidate_lost_total");
    let prog = Xdp::from_pin(root.pins().prog(), XdpAttachType::Interface).expect("program");
    let phone = Ipv4Addr::new(192, 0, 2, 10);
    let to_a = udp4_frame(phone, Ipv4Addr::new(198, 51, 100, 20), 9);
    let to_b = udp4_frame(phone, Ipv4Addr::new(203, 0, 113, 20), 9);
    // Live verdicts unchanged: the candidate is never enforced.
    assert_eq!(common::prog::run(&prog, &to_a, 4).return_value, XDP_DROP);
    assert_eq!(common::prog::run(&prog, &to_b, 6).return_value, XDP_PASS);
    let (text, after) = scrape(&t);
    let newly_blocked =
        r#"regionwall_candidate_packets_total{device="phone",live="pass",candidate="drop"}"#;
    let newly_allowed =
        r#"regionwall_candidate_packets_total{device="phone",live="drop",candidate="pass"}"#;
    let delta =
        |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    assert!((delta(newly_blocked) - 6.0).abs() < 0.5, "{text}");
    assert!((delta(newly_allowed) - 4.0).abs() < 0.5, "{text}");
    let bytes = r#"regionwall_candidate_bytes_total{device="phone",live="pass",candidate="drop"}"#;
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let frame = to_b.len() as f64;
    assert!((delta(bytes) - 6.0 * frame).abs() < 0.5, "{text}");
    assert!((value(&after, "regionwall_candidate_lost_total") - lost_before).abs() < 0.5);
    for addr in ["192.0.2.", "198.51.100.", "203.0.113."] {
        assert!(!text.contains(addr), "an address in the metrics: {text}");
    }
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(&mut promtool.stdin.take().expect("stdin"), text.as_bytes())
        .expect("write to promtool");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(out.status.success(), "promtool: {}", common::text(&out));
    // Discarded: the gauge falls to 0.
    let out = regionwall(&[
        "discard",
        "--iface",
        regionwall_testkit::sandbox::GATEWAY_LAN,
        "--pin-root",
        root.arg(),
        "--socket",
        c.socket.to_str().expect("UTF-8"),
    ]);
    assert!(out.status.success(), "discard: {}", common::text(&out));
    let (text, s) = scrape(&t);
    assert_eq!(s.get("regionwall_candidate_staged"), Some(&0.0), "{text}");
    drop(c);
}
