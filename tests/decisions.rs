//! Valid policies: the example policies decide as documented, `explain`
//! and `check` report them, and 100k inline CIDRs parse and compile exactly.

mod common;

use std::net::IpAddr;

use regionwall::{compile, policy};
use regionwall_common::Verdict;

fn verdict(p: &policy::Policy, mac: Option<[u8; 6]>, src: &str, dst: &str) -> Verdict {
    let device = compile::device_for(p, mac, Some(src.parse::<IpAddr>().expect("src")));
    let regions = compile::regions_containing(p, dst.parse().expect("dst"));
    Verdict::from_u8(compile::decide(p, device, &regions, "tcp/443".parse().expect("key")).verdict)
        .expect("verdict")
}

fn policies_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// Runs `regionwall explain --json` and returns the parsed object.
fn explain(policy: &str, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_regionwall"))
        .arg("explain")
        .args(args)
        .arg("--policy")
        .arg(policies_dir().join(policy))
        .arg("--json")
        .output()
        .expect("run regionwall explain");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn verdict_rule(policy: &str, args: &[&str]) -> (String, String) {
    let v = explain(policy, args);
    (
        v["verdict"].as_str().expect("verdict").to_string(),
        v["rule"].as_str().unwrap_or("-").to_string(),
    )
}

#[test]
fn example_policies_check_and_decide_as_documented() {
    for name in ["demo.toml", "home.toml", "office.toml"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_regionwall"))
            .arg("check")
            .arg(policies_dir().join(name))
            .output()
            .expect("run regionwall check");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let demo = policy::parse_file(&policies_dir().join("demo.toml")).expect("demo");
    assert_eq!(
        verdict(&demo, None, "192.0.2.10", "198.51.100.10"),
        Verdict::Drop
    );
    assert_eq!(
        verdict(&demo, None, "192.0.2.10", "198.51.100.77"),
        Verdict::Pass
    );
    assert_eq!(
        verdict(&demo, None, "192.0.2.10", "203.0.113.10"),
        Verdict::Pass
    );
    assert_eq!(
        verdict(&demo, None, "2001:db8:1::10", "2001:db8:bad::10"),
        Verdict::Drop
    );
    assert_eq!(
        verdict(&demo, None, "192.0.2.99", "198.51.100.10"),
        Verdict::Pass
    );
}

fn pair(v: &str, r: &str) -> (String, String) {
    (v.to_string(), r.to_string())
}

#[test]
fn home_policy_decides_as_documented() {
    // home.toml: 1.0.1.0/24 is CN (real data), 1.64.0.0/11 HK, 240e::/20 CN.
    let kid = ["--mac", "02:00:5e:10:00:01"];
    let tv = ["--mac", "02:00:5e:10:00:03"];
    let h = |args: &[&str]| verdict_rule("home.toml", args);
    assert_eq!(
        h(&[&["1.0.1.9"][..], &kid].concat()),
        pair("drop", "family-no-cn-hk")
    );
    assert_eq!(
        h(&[&["1.64.0.1"][..], &kid].concat()),
        pair("drop", "family-no-cn-hk")
    );
    assert_eq!(
        h(&["240e::1", "--src", "2001:db8:1::12"]),
        pair("drop", "family-no-cn-hk"),
        "parent phone by IPv6 address"
    );
    assert_eq!(
        h(&[&["1.0.1.9"][..], &tv].concat()),
        pair("drop", "family-no-cn-hk")
    );
    assert_eq!(
        h(&[&["1.0.1.1", "--packet", "tcp/443"][..], &tv].concat()),
        pair("pass", "tv-firmware"),
        "vendor exception, HTTPS only"
    );
    assert_eq!(
        h(&[&["1.0.1.1", "--packet", "tcp/80"][..], &tv].concat()),
        pair("drop", "family-no-cn-hk")
    );
    assert_eq!(
        h(&["1.0.1.9", "--device", "speaker"]),
        pair("audit", "speaker-trial")
    );
    assert_eq!(
        h(&["1.0.1.9", "--device", "laptop"]),
        pair("pass", "laptop-unrestricted")
    );
    assert_eq!(
        h(&["1.0.1.9", "--mac", "02:00:5e:10:00:99"]),
        pair("audit", "unknown-devices-audit")
    );
    assert_eq!(h(&[&["203.0.113.9"][..], &kid].concat()), pair("pass", "-"));
}

#[test]
fn office_policy_decides_as_documented() {
    // office.toml
    let o = |args: &[&str]| verdict_rule("office.toml", args);
    let ws = ["--src", "192.0.2.77"];
    assert_eq!(
        o(&[&["1.0.9.1"][..], &ws].concat()),
        pair("drop", "no-embargoed")
    );
    assert_eq!(
        o(&[&["1.0.8.1"][..], &ws].concat()),
        pair("pass", "-"),
        "except: own branch"
    );
    assert_eq!(
        o(&[&["1.0.9.1", "--packet", "udp/53"][..], &ws].concat()),
        pair("pass", "dns-ntp-anywhere")
    );
    assert_eq!(
        o(&[&["1.0.9.1", "--packet", "udp/123"][..], &ws].concat()),
        pair("pass", "dns-ntp-anywhere")
    );
    assert_eq!(
        o(&[&["2.56.24.1", "--packet", "tcp/443"][..], &ws].concat()),
        pair("pass", "partner-https")
    );
    assert_eq!(
        o(&[&["2.56.24.1", "--packet", "tcp/22"][..], &ws].concat()),
        pair("drop", "no-embargoed")
    );
    assert_eq!(
        o(&["1.0.9.1", "--src", "192.0.2.20"]),
        pair("pass", "servers-exempt")
    );
    assert_eq!(
        o(&["1.0.9.1", "--src", "2001:db8:10::20"]),
        pair("pass", "servers-exempt")
    );
    assert_eq!(
        o(&["1.0.9.1", "--src", "198.51.100.1"]),
        pair("drop", "no-embargoed"),
        "unnamed host: default"
    );
}

#[test]
fn explain_json_names_regions_sources_rule_and_verdict() {
    let v = explain(
        "home.toml",
        &["1.0.1.9", "--device", "tv", "--packet", "tcp/443"],
    );
    assert_eq!(v["addr"], "1.0.1.9");
    assert_eq!(v["device"], "tv");
    assert_eq!(v["device_by"], "name");
    assert_eq!(v["verdict"], "drop");
    assert_eq!(v["rule"], "family-no-cn-hk");
    assert_eq!(v["decided_by"]["level"], "group");
    assert_eq!(v["decided_by"]["line"], 44);
    assert_eq!(v["attributed_region"], "cn-hk");
    let regions = v["regions"].as_array().expect("regions");
    let cn = regions
        .iter()
        .find(|r| r["name"] == "cn-hk")
        .expect("cn-hk listed");
    let src = &cn["sources"][0];
    assert_eq!(src["prefix"], "1.0.1.0/24");
    assert!(
        src["file"]
            .as_str()
            .expect("file")
            .ends_with("cn/ipv4-aggregated.txt"),
        "{src}"
    );
    // The line named really holds the prefix.
    let text = std::fs::read_to_string(
        policies_dir().join(
            src["file"]
                .as_str()
                .expect("file")
                .trim_start_matches("policies/"),
        ),
    )
    .or_else(|_| std::fs::read_to_string(src["file"].as_str().expect("file")))
    .expect("source file readable");
    let line = usize::try_from(src["line"].as_u64().expect("line")).expect("line");
    assert_eq!(text.lines().nth(line - 1), Some("1.0.1.0/24"));

    // Without --packet, port-qualified rules are left out, and it says so.
    let v = explain("home.toml", &["1.0.1.1", "--device", "tv"]);
    assert_eq!(v["verdict"], "drop");
    let note = v["notes"][0].as_str().expect("a note");
    assert!(
        note.contains("tv-firmware") && note.contains("--packet"),
        "{note}"
    );

    // Only qualified rules naming the device are noted.
    let v = explain("home.toml", &["1.0.1.1", "--device", "laptop"]);
    assert!(v["notes"].as_array().is_none_or(Vec::is_empty), "{v}");
    // An audit rule is said to audit, not to block.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_regionwall"))
        .args(["explain", "1.0.1.1", "--device", "speaker", "--policy"])
        .arg(policies_dir().join("home.toml"))
        .output()
        .expect("run explain");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("would block it: in audit mode it is reported and passes"),
        "{text}"
    );
    assert!(!text.contains("audit) blocks it"), "{text}");

    // Text output says the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_regionwall"))
        .args(["explain", "1.0.8.1", "--src", "192.0.2.77", "--policy"])
        .arg(policies_dir().join("office.toml"))
        .output()
        .expect("run explain");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("not in region embargoed (carved out by except)"),
        "{text}"
    );
    assert!(text.contains("except 1.0.8.0/24 from"), "{text}");
    assert!(text.ends_with("verdict: pass\n"), "{text}");

    // Errors: unknown device, bad packet kind.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_regionwall"))
        .args(["explain", "1.0.1.1", "--device", "fridge", "--policy"])
        .arg(policies_dir().join("home.toml"))
        .output()
        .expect("run explain");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("unknown device \"fridge\": expected one of default, kid-phone")
    );
}

#[test]
fn check_summary_reports_merged_counts_tables_and_memory() {
    let path = common::policy_file(
        r#"
[regions.r]
cidrs = ["198.51.100.0/25", "198.51.100.128/25", "198.51.100.7", "2001:db8::/48"]
except = ["198.51.100.0/30"]
[groups]
all = ["tv"]
[devices.tv]
ip = ["192.0.2.30"]
[[rules]]
devices = ["all"]
block = ["r"]
ports = ["tcp/443"]
"#,
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_regionwall"))
        .arg("check")
        .arg(&path)
        .output()
        .expect("run check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // 198.51.100.0/24 minus /30 = /30 + /29 + /28 + /27 + /26 + /25 (6 prefixes).
    let region = text
        .lines()
        .find(|l| l.trim_start().starts_with("r "))
        .expect("region line");
    let fields: Vec<&str> = region.split_whitespace().collect();
    assert_eq!(&fields[..5], ["r", "6", "IPv4", "1", "IPv6"], "{region}");
    assert!(region.contains("4 source prefixes, 1 excepted"), "{region}");
    assert!(text.contains("all                          tv"), "{text}");
    assert!(text.contains("ports [tcp/443]"), "{text}");
    assert!(text.contains("2 port classes"), "{text}");
    assert!(text.contains("kernel memory:"), "{text}");
}

/// 100k CIDRs listed inline (one per line) parse with each one's own line,
/// and compile to the same set as a `file =` list would: every listed /25
/// allowed, the /25 next to it still blocked. (Inline values were once
/// located by scanning the text from its start: quadratic.)
#[test]
fn a_hundred_thousand_inline_cidrs_parse_and_compile_exactly() {
    const N: usize = 100_000;
    let cidr = |i: usize| format!("{}.{}.{}.0/25", 16 + (i >> 16), (i >> 8) & 0xff, i & 0xff);
    let mut text = String::from(
        "[[rules]]\nname = \"inline\"\ndevices = [\"default\"]\nblock = [\"any\"]\nallow = [\n",
    );
    for i in 0..N {
        text.push_str("  \"");
        text.push_str(&cidr(i));
        text.push_str("\",\n");
    }
    text.push_str("]\n");
    let started = std::time::Instant::now();
    let p = common::policy(&text);
    println!("{N} inline CIDRs parsed in {:.2?}", started.elapsed());
    let allow = p.rules[0].allow[0];
    let region = &p.regions[allow];
    assert_eq!(region.name, "inline/allow");
    assert_eq!(region.prefixes.len(), N);
    for i in [0, 1, N / 2, N - 1] {
        let (prefix, origin) = &region.prefixes[i];
        assert_eq!(prefix.to_string(), cidr(i));
        assert_eq!(origin.line, 6 + i, "line of entry {i}");
    }
    let compiled = compile::compile(&p).expect("compiles");
    assert_eq!(compiled.region_sizes[allow], (N, 0), "nothing merges");
    for i in [0, 12_345, N - 1] {
        let inside = cidr(i).replace(".0/25", ".7");
        let next = cidr(i).replace(".0/25", ".200");
        assert_eq!(
            verdict(&p, None, "192.0.2.1", &inside),
            Verdict::Pass,
            "{inside}"
        );
        assert_eq!(
            verdict(&p, None, "192.0.2.1", &next),
            Verdict::Drop,
            "{next}"
        );
    }
}

/// `check` output (stdout, stderr) and exit status for policy text.
fn check_text(text: &str) -> (String, String, bool) {
    let path = common::policy_file(text);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_regionwall"))
        .arg("check")
        .arg(&path)
        .output()
        .expect("run check");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

#[test]
fn check_warns_about_what_can_never_match_and_reads_well() {
    let (out, warnings, ok) = check_text(
        r#"
[regions.zone]
cidrs = ["198.51.100.0/24"]
[devices.tv]
mac = ["02:00:5e:00:53:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"]
[groups]
screens = ["tv", "tv"]
[[rules]]
name = "contradicts"
devices = ["tv"]
block = ["zone"]
allow = ["zone", "203.0.113.7"]
[[rules]]
name = "open"
devices = ["screens"]
allow = ["any"]
[[rules]]
name = "shadowed"
devices = ["screens"]
block = ["zone"]
"#,
    );
    assert!(ok, "warnings do not fail the check:\n{warnings}");
    for expected in [
        "region \"zone\" is both blocked and allowed by this rule",
        "broadcast or multicast MAC",
        "all-zero MAC",
        "device \"tv\" is listed twice in group \"screens\"",
        "rule \"shadowed\" can never fire: rule \"open\"",
    ] {
        assert!(warnings.contains(expected), "{expected:?} in:\n{warnings}");
    }
    assert!(
        warnings.contains(":5:29:"),
        "warnings have positions:\n{warnings}"
    );
    // The summary: singular where one, modes in lower case, inline allow
    // lists with their rule, not as regions.
    assert!(out.contains("(1 source prefix)"), "{out}");
    assert!(out.contains("enforce: [tv]"), "{out}");
    assert!(!out.contains("contradicts/allow"), "{out}");
    assert!(out.contains("allow [zone, 1 inline prefix]"), "{out}");

    let (_, warnings, ok) = check_text("");
    assert!(ok);
    assert!(warnings.contains("the policy file is empty"), "{warnings}");
}
