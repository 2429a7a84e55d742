//! Policy parsing: valid policies, and errors that name file, line, column,
//! the offending text and what was expected.

mod common;

use std::net::IpAddr;

use regionwall::{
    PolicyError, compile,
    policy::{self, Diagnostic},
};
use regionwall_common::Verdict;

fn errors(text: &str) -> Vec<Diagnostic> {
    let path = common::policy_file(text);
    match policy::parse_file(&path) {
        Ok(_) => panic!("policy unexpectedly valid:\n{text}"),
        Err(PolicyError::Invalid(d)) => d.0,
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

fn one_error(text: &str) -> Diagnostic {
    let mut e = errors(text);
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    e.remove(0)
}

#[test]
fn toml_syntax_error_has_position() {
    let e = one_error("[regions.x]\ncidrs = [\"198.51.100.0/24\"\n");
    assert_eq!((e.line, e.column), (2, 27), "{e}");
    assert!(e.message.contains("expected `]`"), "{e}");
    assert!(e.file.ends_with("policy.toml"));
}

#[test]
fn unknown_key_is_rejected_with_position() {
    let e = one_error("[regions.x]\ncidrs = [\"198.51.100.0/24\"]\ncidr = []\n");
    assert_eq!((e.line, e.column), (3, 1), "{e}");
    assert!(e.message.contains("unknown field `cidr`"), "{e}");
    assert!(e.message.contains("cidrs"), "names the expected keys: {e}");
}

#[test]
fn bad_cidr_and_mac_point_at_the_value() {
    let text = r#"
[regions.x]
cidrs = ["198.51.100.0/24", "198.51.100.1/24", "300.1.1.1/8"]

[devices.phone]
mac = ["02:00:5e:00:53"]
"#;
    let e = errors(text);
    assert_eq!(e.len(), 3, "{e:#?}");
    assert_eq!((e[0].line, e[0].column), (3, 29), "{}", e[0]);
    assert_eq!(e[0].snippet, "\"198.51.100.1/24\"");
    assert!(
        e[0].message.contains("host bits") && e[0].message.contains("198.51.100.0/24"),
        "{}",
        e[0]
    );
    assert_eq!((e[1].line, e[1].column), (3, 48), "{}", e[1]);
    assert!(
        e[1].message.contains("expected an IPv4 or IPv6 address"),
        "{}",
        e[1]
    );
    assert_eq!((e[2].line, e[2].column), (6, 8), "{}", e[2]);
    assert!(e[2].message.contains("expected a MAC address"), "{}", e[2]);
    let shown = e[0].to_string();
    assert!(
        shown.contains(":3:29:") && shown.contains('^'),
        "display shows position and caret:\n{shown}"
    );
}

#[test]
fn unknown_names_in_rules_list_what_exists() {
    let text = r#"
[regions.cn]
cidrs = ["198.51.100.0/24"]

[devices.tv]
ip = ["192.0.2.30"]

[[rules]]
devices = ["tv", "fridge"]
block = ["cn", "ru"]
allow = ["not-a-cidr"]
"#;
    let e = errors(text);
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(
        e[0].message.contains("unknown device or group \"fridge\"") && e[0].message.contains("tv"),
        "{}",
        e[0]
    );
    assert_eq!(e[0].line, 9);
    assert!(
        e[1].message.contains("unknown region \"ru\"") && e[1].message.contains("cn"),
        "{}",
        e[1]
    );
    assert_eq!((e[1].line, e[1].column), (10, 16));
    assert!(
        e[2].message.contains("region name") && e[2].message.contains("CIDR"),
        "{}",
        e[2]
    );
}

#[test]
fn empty_rules_regions_and_devices_are_errors_not_allow_all() {
    let text = r#"
[regions.empty]

[devices.ghost]

[[rules]]
devices = ["ghost"]
"#;
    let e = errors(text);
    let msgs: Vec<&str> = e.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(e.len(), 3, "{msgs:#?}");
    assert!(msgs[0].contains("region \"empty\" has no `cidrs`, `file` or `countries`"));
    assert!(msgs[1].contains("device \"ghost\" has no `mac` and no `ip`"));
    assert!(msgs[2].contains("neither `block` nor `allow`"));
}

#[test]
fn duplicate_addresses_rule_names_and_bad_modes() {
    let text = r#"
mode = "block"

[regions.r]
cidrs = ["198.51.100.0/24"]

[devices.a]
mac = ["02:00:5e:00:53:01"]

[devices.b]
mac = ["02:00:5E:00:53:01"]

[[rules]]
name = "same"
devices = ["a"]
block = ["r"]

[[rules]]
name = "same"
devices = ["b"]
block = ["r"]
"#;
    let e = errors(text);
    let msgs: Vec<&str> = e.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(e.len(), 3, "{msgs:#?}");
    assert!(msgs[0].contains("expected mode \"enforce\" or \"audit\""));
    assert!(msgs[1].contains("already belongs to device \"a\""));
    assert!(msgs[2].contains("duplicate rule name \"same\""));
}

#[test]
fn region_file_errors_carry_the_data_files_line_and_column() {
    let path = common::policy_file("[regions.r]\nfile = \"list.txt\"\n");
    let list = path.with_file_name("list.txt");
    std::fs::write(
        &list,
        "# comment\n198.51.100.0/24\n\n  203.0.113.0/33  # bad length\n2001:db8::/32\n",
    )
    .expect("write list");
    let Err(PolicyError::Invalid(d)) = policy::parse_file(&path) else {
        panic!("expected invalid")
    };
    assert_eq!(d.0.len(), 1, "{d}");
    assert_eq!(d.0[0].file, list);
    assert_eq!((d.0[0].line, d.0[0].column), (4, 3));
    assert!(
        d.0[0].message.contains("prefix length from 0 to 32"),
        "{}",
        d.0[0]
    );

    std::fs::write(&list, "198.51.100.0/24\n2001:db8::/32 # v6\n").expect("write list");
    let p = policy::parse_file(&path).expect("valid now");
    assert_eq!(p.regions[0].prefixes.len(), 2);
    assert_eq!(
        p.regions[0].prefixes[1].1.line, 2,
        "origin line kept for explain"
    );

    std::fs::remove_file(&list).expect("remove list");
    let Err(PolicyError::Invalid(d)) = policy::parse_file(&path) else {
        panic!("expected invalid")
    };
    assert!(d.0[0].message.contains("cannot read region file"), "{d}");
    assert_eq!(d.0[0].line, 2);
}

#[test]
fn missing_policy_file_is_an_io_error() {
    let err = policy::parse_file(std::path::Path::new("/nonexistent/regionwall.toml")).unwrap_err();
    assert!(matches!(err, PolicyError::Io { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/regionwall.toml"));
}

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
fn check_command_reports_all_errors_and_exits_non_zero() {
    let path = common::policy_file("[regions.x]\ncidrs = [\"1.2.3.4/33\", \"bad\"]\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_regionwall"))
        .args(["check", path.to_str().expect("utf-8 path")])
        .output()
        .expect("run regionwall check");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":2:10:") && err.contains(":2:24:") && err.contains("2 errors found"),
        "{err}"
    );

    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_regionwall"))
        .args([
            "check",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/demo.toml"),
        ])
        .output()
        .expect("run regionwall check");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        text.contains("blocked-zone") && text.contains("compiled:"),
        "{text}"
    );
}

#[test]
fn group_port_and_except_errors_have_positions() {
    let text = r#"
[regions.r]
cidrs = ["198.51.100.0/24"]
except = ["r", "nope", "198.51.100.0/25"]

[devices.tv]
ip = ["192.0.2.30"]

[groups]
tv = ["tv"]
screens = ["tv", "fridge", "default"]
empty = []

[[rules]]
devices = ["screens"]
block = ["r"]
ports = ["tcp/443", "gre", "udp/9-1"]

[[rules]]
devices = ["tv"]
block = ["r"]
ports = []
"#;
    let e = errors(text);
    let at: Vec<(usize, usize)> = e.iter().map(|d| (d.line, d.column)).collect();
    let msgs: Vec<&str> = e.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        at,
        [
            (4, 11),
            (4, 16),
            (10, 1),
            (11, 18),
            (11, 28),
            (12, 9),
            (17, 21),
            (17, 28),
            (22, 9)
        ],
        "{msgs:#?}"
    );
    assert!(msgs[0].contains("cannot except itself"));
    assert!(msgs[1].contains("expected a CIDR or a region name (r) in `except`"));
    assert!(msgs[2].contains("\"tv\" is already a device name"));
    assert!(msgs[3].contains("unknown device \"fridge\" in group \"screens\": expected one of tv"));
    assert!(msgs[4].contains("\"default\" cannot be a group member"));
    assert!(msgs[5].contains("group \"empty\" is empty"));
    assert!(msgs[6].contains("expected a protocol qualifier"));
    assert!(msgs[7].contains("port range 9-1 is empty"));
    assert!(msgs[8].contains("`ports` is empty"));
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

#[test]
fn duplicate_region_device_and_group_names_are_rejected_at_the_second() {
    let e = one_error("[regions.cn]\ncidrs = [\"198.51.100.0/24\"]\n\n[regions.cn]\ncidrs = []\n");
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("duplicate key"), "{e}");
    let e = one_error("[devices.tv]\nip = [\"192.0.2.1\"]\n[devices.tv]\nip = [\"192.0.2.2\"]\n");
    assert_eq!(e.line, 3, "{e}");
    let e = one_error("[groups]\ng = []\ng = [\"x\"]\n");
    assert_eq!((e.line, e.column), (3, 1), "{e}");
    assert!(e.message.contains("duplicate key"), "{e}");
}

#[test]
fn every_structural_error_is_reported_not_just_the_first() {
    let text = r#"[regions.cn]
cidrs = ["198.51.100.0/24"]
file = 3
[regions.x]
cidr = ["198.51.100.0/24"]
foo = "x"
[[rules]]
name = 3
block = "cn"
[devices]
tv = 1
"#;
    let e = errors(text);
    let got: Vec<(usize, usize, &str)> = e
        .iter()
        .map(|d| (d.line, d.column, d.message.as_str()))
        .collect();
    assert_eq!(got.len(), 7, "{got:#?}");
    assert_eq!((got[0].0, got[0].1), (3, 8));
    assert!(
        got[0]
            .2
            .contains("`file` must be a string, found an integer")
    );
    assert_eq!((got[1].0, got[1].1), (5, 1));
    assert!(
        got[1]
            .2
            .contains("unknown field `cidr` in [regions.x], expected one of `cidrs`")
    );
    assert_eq!((got[2].0, got[2].1), (6, 1));
    assert!(got[2].2.contains("unknown field `foo`"));
    assert_eq!((got[3].0, got[3].1), (7, 1));
    assert!(got[3].2.contains("missing field `devices` in [[rules]]"));
    assert_eq!((got[4].0, got[4].1), (8, 8));
    assert_eq!((got[5].0, got[5].1), (9, 9));
    assert!(got[5].2.contains("`block` must be an array of strings"));
    assert_eq!((got[6].0, got[6].1), (11, 6));
    assert!(got[6].2.contains("must be a table"));

    // Several duplicated tables: each reported once, not their keys again.
    let e = errors(
        "[regions.a]\ncidrs = []\n[regions.a]\ncidrs = []\n[devices.d]\nip = []\n[devices.d]\nip = []\n",
    );
    let at: Vec<(usize, usize)> = e.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(at, [(3, 10), (7, 10)], "{e:#?}");
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
