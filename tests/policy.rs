//! Policy errors: each names file, line, column, the offending text and
//! what was expected, and every one is reported, not just the first.

mod common;

use regionwall::{
    PolicyError,
    policy::{self, Diagnostic},
};

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
    assert!(msgs[0].contains("expected mode \"enforce\", \"reject\" or \"audit\""));
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

#[test]
fn shown_text_is_escaped_cut_and_positioned() {
    // Bytes that are not UTF-8: at their line and column.
    let path = common::policy_file("");
    std::fs::write(&path, b"mode = \"enforce\"\n# caf\xe9\n").expect("write");
    let Err(PolicyError::Invalid(d)) = policy::parse_file(&path) else {
        panic!("non-UTF-8 accepted");
    };
    assert_eq!((d.0[0].line, d.0[0].column), (2, 6), "{}", d.0[0]);
    assert!(
        d.0[0].message.contains("byte 0xe9 is not UTF-8"),
        "{}",
        d.0[0]
    );

    // Control characters and NULs are escaped, never echoed raw.
    let e = one_error("[regions.x]\ncidrs = [\"198.51.100.0/24\u{1b}[2J\u{0}\"]\n");
    let shown = e.to_string();
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\u{0}'),
        "{shown:?}"
    );
    assert!(shown.contains("\\u{1b}[2J"), "{shown}");

    // A huge value is cut, not printed whole (twice or three times).
    let huge = "1".repeat(1 << 20);
    let e = one_error(&format!("[regions.x]\ncidrs = [\"{huge}\"]\n"));
    let shown = e.to_string();
    assert!(shown.len() < 2_000, "{} bytes shown", shown.len());
    assert!(shown.contains("more characters"), "says what was left out");

    // A 50,000-deep dotted header: at its line, with a readable message.
    let deep = format!(
        "[regions.x]\ncidrs = [\"198.51.100.0/24\"]\n[{}b]\n",
        "a.".repeat(50_000)
    );
    let e = one_error(&deep);
    assert_eq!(e.line, 3, "{e}");
    assert!(e.message.contains("nested too deeply"), "{e}");
}
