//! Helpers shared by the integration tests: frame builders, policy loading
//! from text, and a loaded datapath with a published policy.
#![allow(dead_code, reason = "each test binary uses a different subset")]

#[allow(unused_imports, reason = "each test binary uses a different subset")]
pub use regionwall_testkit::{flow, frames, rng::Rng};
pub mod dns;
pub mod mmdb;
pub mod origin;
pub mod pins;
pub mod probe;
pub mod prog;
pub mod update_case;

use std::{
    io::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use regionwall::{compile, datapath::Datapath, policy};

/// Writes `text` to a fresh temporary policy file and returns its path.
pub fn policy_file(text: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("regionwall-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let path = dir.join("policy.toml");
    let mut f = std::fs::File::create(&path).expect("create policy file");
    f.write_all(text.as_bytes()).expect("write policy file");
    path
}

/// The `regionwall` binary under test.
pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_regionwall"))
}

/// Runs the `regionwall` binary with `args` and waits for it.
pub fn regionwall(args: &[&str]) -> std::process::Output {
    std::process::Command::new(exe())
        .args(args)
        .output()
        .expect("run regionwall")
}

/// `regionwall ARGS` aimed at controller `c` of the sandbox's gateway:
/// `--iface`, `--pin-root` and `--socket` appended.
pub fn at_controller(
    c: &regionwall_testkit::sandbox::Controller,
    root: &pins::PinRoot,
    args: &[&str],
) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend([
        "--iface",
        regionwall_testkit::sandbox::GATEWAY_LAN,
        "--pin-root",
        root.arg(),
        "--socket",
        c.socket.to_str().expect("UTF-8"),
    ]);
    regionwall(&all)
}

/// `GET url` from inside the sandbox's gateway namespace: the body (the
/// test fails on any error or HTTP error status).
pub fn gateway_get(t: &regionwall_testkit::sandbox::Topology, url: &str) -> String {
    let out = t
        .gateway
        .command("curl")
        .args(["-sS", "--fail", "--max-time", "10", url])
        .output()
        .expect("curl");
    assert!(out.status.success(), "GET {url}: {}", text(&out));
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// `regionwall stats --json` of the sandbox gateway's LAN side, through
/// `socket` or, with no controller, from the pins under `root`.
pub fn stats(root: &pins::PinRoot, socket: &Path) -> regionwall::control::Stats {
    let out = regionwall(&[
        "stats",
        "--json",
        "--iface",
        regionwall_testkit::sandbox::GATEWAY_LAN,
        "--pin-root",
        root.arg(),
        "--socket",
        socket.to_str().expect("UTF-8"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("stats JSON")
}

/// Waits up to `timeout` for the `n`-th occurrence of `needle` in what the
/// controller logged.
pub fn wait_count(
    c: &regionwall_testkit::sandbox::Controller,
    needle: &str,
    n: usize,
    timeout: std::time::Duration,
) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if c.log_text().matches(needle).count() >= n {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

/// What a command printed, stdout then stderr.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A private copy of policies/demo.toml (tests may rewrite it).
pub fn demo_policy_copy() -> PathBuf {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/demo.toml"
    ))
    .expect("demo policy");
    policy_file(&text)
}

/// Whether an XDP program is attached to the sandbox gateway's LAN side.
pub fn xdp_attached(t: &regionwall_testkit::sandbox::Topology) -> bool {
    let out = t
        .gateway
        .command("ip")
        .args(["link", "show", regionwall_testkit::sandbox::GATEWAY_LAN])
        .output()
        .expect("ip link show");
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}

/// Ethernet + IPv4 + UDP from `src` to `dst` (source MAC 02:00:00:00:00:09).
pub fn udp4_frame(src: Ipv4Addr, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    frames::ethernet(
        [2, 0, 0, 0, 0, 9],
        &[],
        frames::ETH_P_IP,
        &frames::ipv4(src, dst, 17, 0, 0, &frames::udp(4000, dport, b"probe")),
    )
}

/// Parses policy text, panicking with the diagnostics if it is invalid.
pub fn policy(text: &str) -> policy::Policy {
    let path = policy_file(text);
    match policy::parse_file(&path) {
        Ok(p) => p,
        Err(e) => panic!("test policy does not parse:\n{e}"),
    }
}

/// Loads the XDP program and publishes `text` into it.
pub fn datapath_with(text: &str) -> (Datapath, compile::Compiled) {
    let p = policy(text);
    let compiled = compile::compile(&p).expect("compile test policy");
    let mut dp =
        Datapath::load().unwrap_or_else(|e| panic!("loading the XDP program failed: {e:?}"));
    dp.publish(&compiled, 1).expect("publish test policy");
    (dp, compiled)
}

/// The shared real data beside the checkout (`../shared/data`).
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
}

/// The country database in the shared data.
pub fn countries_dir() -> PathBuf {
    data_dir().join("country-ip-blocks")
}

/// Policy text with every country of the database in one of `groups`
/// regions `r0..`, round robin in code order (neighbouring allocations of
/// different countries stay distinct, so the kernel holds the full ~175k +
/// 68k prefixes); returns the text and the number of countries.
pub fn world_regions(groups: usize) -> (String, usize) {
    use std::fmt::Write as _;
    let dir = countries_dir();
    let mut codes: Vec<String> = std::fs::read_dir(&dir)
        .expect("country database")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_ascii_uppercase())
        .collect();
    codes.sort();
    let mut text = format!("regions_dir = \"{}\"\n", dir.display());
    for g in 0..groups {
        let members: Vec<String> = codes
            .iter()
            .skip(g)
            .step_by(groups)
            .map(|c| format!("\"{c}\""))
            .collect();
        writeln!(text, "[regions.r{g}]\ncountries = [{}]", members.join(", "))
            .expect("write to a String");
    }
    (text, codes.len())
}

/// Seconds each of `n` GETs of `url` took, sent from the sandbox gateway
/// by one curl on one keep-alive connection.
pub fn curl_times(t: &regionwall_testkit::sandbox::Topology, url: &str, n: usize) -> Vec<f64> {
    let mut args: Vec<String> = Vec::new();
    for i in 0..n {
        if i > 0 {
            args.push("--next".into());
        }
        args.extend(["-sS", "-o", "/dev/null", "-w", "%{time_total}\\n"].map(String::from));
        args.push(url.to_string());
    }
    let out = t
        .gateway
        .command("curl")
        .args(&args)
        .output()
        .expect("curl");
    assert!(out.status.success(), "{}", text(&out));
    let times: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(times.len(), n, "one time per request");
    times
}

/// Waits until the controller's history has written, or counted as not
/// written, every event it delivered; asserts it within 20 s.
pub fn wait_history_accounted(root: &pins::PinRoot, socket: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let s = stats(root, socket);
        let h = s.history.clone().expect("history on");
        if h.events_written + h.not_written == s.events_logged
            || std::time::Instant::now() > deadline
        {
            println!(
                "history: {} written + {} not written (queue full {}, lagged {}, failed {}) of {} events; database {} KiB",
                h.events_written,
                h.not_written,
                h.queue_full,
                h.lagged,
                h.write_failed,
                s.events_logged,
                h.db_bytes / 1024
            );
            assert_eq!(h.events_written + h.not_written, s.events_logged);
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
