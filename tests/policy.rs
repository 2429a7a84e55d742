//! Policy parsing: valid policies, and errors that name file, line, column,
//! the offending text and what was expected.

mod common;

use std::net::IpAddr;

use regionwall::{
    PolicyError,
    compile::{self, compile},
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

#[test]
fn example_policies_check_and_decide_as_documented() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    for name in ["demo.toml", "home.toml"] {
        let p = policy::parse_file(&root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        compile(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let demo = policy::parse_file(&root.join("demo.toml")).expect("demo");
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

    let home = policy::parse_file(&root.join("home.toml")).expect("home");
    let kid = Some([0x02, 0, 0x5e, 0x10, 0, 0x01]);
    let tv = Some([0x02, 0, 0x5e, 0x10, 0, 0x03]);
    let speaker = Some([0x02, 0, 0x5e, 0x10, 0, 0x04]);
    let laptop = Some([0x02, 0, 0x5e, 0x10, 0, 0x05]);
    // 1.0.1.0/24 is in CN's list, 1.64.0.0/11 region is HK's (real data).
    let cn = first_v4(&home, "cn");
    let hk = first_v4(&home, "hk");
    assert_eq!(verdict(&home, kid, "192.0.2.11", &cn), Verdict::Drop);
    assert_eq!(verdict(&home, kid, "192.0.2.11", &hk), Verdict::Drop);
    assert_eq!(
        verdict(&home, None, "192.0.2.12", &cn),
        Verdict::Drop,
        "parent phone by IP"
    );
    assert_eq!(verdict(&home, tv, "192.0.2.30", &cn), Verdict::Drop);
    assert_eq!(
        verdict(&home, tv, "192.0.2.30", "203.0.113.50"),
        Verdict::Pass,
        "vendor exception"
    );
    assert_eq!(verdict(&home, speaker, "192.0.2.40", &cn), Verdict::Audit);
    assert_eq!(verdict(&home, laptop, "192.0.2.50", &cn), Verdict::Pass);
    assert_eq!(
        verdict(&home, kid, "192.0.2.11", "203.0.113.9"),
        Verdict::Pass
    );
}

fn first_v4(p: &policy::Policy, region: &str) -> String {
    let r = p.regions.iter().find(|r| r.name == region).expect("region");
    r.prefixes
        .iter()
        .find_map(|(pre, _)| match pre {
            policy::Prefix::V4(v) => Some(std::net::Ipv4Addr::from(v.addr).to_string()),
            policy::Prefix::V6(_) => None,
        })
        .expect("an IPv4 prefix")
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
