//! Input files: only regular files within --max-file-size are read (a FIFO
//! or /dev/zero named by a policy is an error at the line that names it,
//! not a hang), and `Policy::inputs` lists every file and directory read.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use regionwall::{
    PolicyError,
    input::Limits,
    policy::{self, Diagnostic},
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: mkfifo reads a NUL-terminated path and nothing else.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

fn one_error(path: &Path, limits: Limits) -> Diagnostic {
    match policy::parse_file_limited(path, &policy::Options::default(), limits) {
        Err(PolicyError::Invalid(mut d)) if d.0.len() == 1 => d.0.remove(0),
        Err(e) => panic!("expected one diagnostic, got {e}"),
        Ok(_) => panic!("policy unexpectedly valid"),
    }
}

#[test]
fn a_fifo_or_device_named_by_a_policy_is_an_error_at_its_line() {
    let path = common::policy_file("[regions.r]\nfile = \"list.fifo\"\n");
    let fifo = path.with_file_name("list.fifo");
    mkfifo(&fifo);
    let d = one_error(&path, Limits::default());
    assert_eq!((d.file.as_path(), d.line, d.column), (path.as_path(), 2, 8));
    assert_eq!(
        d.message,
        format!(
            "region file {} is a FIFO, not a regular file",
            fifo.display()
        )
    );

    let path = common::policy_file("[regions.r]\nfile = \"/dev/zero\"\n");
    let d = one_error(&path, Limits::default());
    assert_eq!(d.line, 2);
    assert_eq!(
        d.message,
        "region file /dev/zero is a character device, not a regular file"
    );

    // Sources too: an RIR file that is a directory.
    let path = common::policy_file(
        "[sources.apnic]\nformat = \"rir\"\npath = \"/tmp\"\n[regions.r]\ncountries = [\"CN\"]\nfrom = [\"apnic\"]\n",
    );
    let d = one_error(&path, Limits::default());
    assert_eq!(d.line, 3);
    assert_eq!(
        d.message,
        "RIR statistics /tmp is a directory, not a regular file"
    );
}

#[test]
fn the_policy_itself_must_be_a_regular_file() {
    let dir = common::policy_file("").with_file_name("policy.fifo");
    mkfifo(&dir);
    let e = policy::parse_file(&dir).expect_err("a FIFO");
    assert_eq!(
        e.to_string(),
        format!("policy {} is a FIFO, not a regular file", dir.display())
    );
}

#[test]
fn files_over_the_limit_are_refused_before_reading() {
    let path = common::policy_file("[regions.r]\nfile = \"list.txt\"\n");
    let list = path.with_file_name("list.txt");
    std::fs::write(&list, "198.51.100.0/24\n".repeat(128)).expect("write list");
    let limits = Limits {
        max_file_size: 1024,
    };
    let d = one_error(&path, limits);
    assert_eq!((d.line, d.column), (2, 8));
    assert_eq!(
        d.message,
        format!(
            "region file {} is 2 KiB, over the 1 KiB limit (--max-file-size)",
            list.display()
        )
    );
    // Sources (read as CSV) are held to the same limit.
    let csv = path.with_file_name("ranges.csv");
    std::fs::write(&csv, "1.0.0.0,1.0.0.255,CN\n".repeat(64)).expect("write csv");
    let path = common::policy_file(&format!(
        "[sources.dbip]\nformat = \"range-csv\"\npath = \"{}\"\n[regions.r]\ncountries = [\"CN\"]\nfrom = [\"dbip\"]\n",
        csv.display()
    ));
    let d = one_error(&path, Limits { max_file_size: 512 });
    assert_eq!(d.line, 3);
    assert!(
        d.message
            .ends_with("over the 512 bytes limit (--max-file-size)"),
        "{d}"
    );
    // The policy itself.
    let e = policy::parse_file_limited(
        &path,
        &policy::Options::default(),
        Limits { max_file_size: 8 },
    )
    .expect_err("policy over the limit");
    assert!(matches!(e, PolicyError::Input(_)), "{e}");
}

#[test]
fn check_takes_max_file_size() {
    let path = common::policy_file(
        "[regions.r]\nfile = \"list.txt\"\n[[rules]]\ndevices = [\"default\"]\nblock = [\"r\"]\n",
    );
    std::fs::write(
        path.with_file_name("list.txt"),
        "198.51.100.0/24\n".repeat(128),
    )
    .expect("write list");
    let check = |limit: &str| {
        Command::new(common::exe())
            .args(["check", "--max-file-size", limit])
            .arg(&path)
            .output()
            .expect("run check")
    };
    let out = check("1K");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("policy.toml:2:8: region file")
            && stderr.contains("is 2 KiB, over the 1 KiB limit (--max-file-size)"),
        "{stderr}"
    );
    assert!(check("1M").status.success());
    let bad = check("lots");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("expected a size such as 256M"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn inputs_list_every_file_and_directory_read() {
    let path = common::policy_file("");
    let dir = path.parent().expect("dir").to_path_buf();
    let countries = dir.join("countries");
    for (cc, v4, v6) in [("cn", true, true), ("ru", true, false), ("de", true, true)] {
        let d = countries.join(cc);
        std::fs::create_dir_all(&d).expect("country dir");
        if v4 {
            std::fs::write(d.join("ipv4-aggregated.txt"), "198.51.100.0/24\n").expect("v4");
        }
        if v6 {
            std::fs::write(d.join("ipv6-aggregated.txt"), "2001:db8::/32\n").expect("v6");
        }
    }
    std::fs::write(dir.join("extra.txt"), "203.0.113.0/24\n").expect("list");
    // Relative paths, and a path through `..`: listed absolute, unresolved.
    std::fs::write(
        &path,
        "regions_dir = \"countries\"\n\
         [regions.a]\ncountries = [\"RU\", \"CN\"]\nfile = \"extra.txt\"\n\
         [regions.b]\ncountries = [\"CN\"]\nfile = \"countries/../extra.txt\"\n\
         [[rules]]\ndevices = [\"default\"]\nblock = [\"a\", \"b\"]\n",
    )
    .expect("policy");
    let p = policy::parse_file(&path).expect("valid");
    let expected: Vec<PathBuf> = [
        path.clone(),
        countries.clone(),
        dir.join("extra.txt"),
        countries.join("ru"),
        countries.join("ru/ipv4-aggregated.txt"),
        countries.join("cn"),
        countries.join("cn/ipv4-aggregated.txt"),
        countries.join("cn/ipv6-aggregated.txt"),
        dir.join("countries/../extra.txt"),
        // The country database: every country, for counting by country.
        countries.join("de"),
        countries.join("de/ipv4-aggregated.txt"),
        countries.join("de/ipv6-aggregated.txt"),
    ]
    .into_iter()
    .map(|p| std::path::absolute(p).expect("absolute"))
    .collect();
    assert_eq!(p.inputs, expected);
    assert!(p.inputs.iter().all(|p| p.is_absolute()));

    // GeoLite2: the directory and its three files.
    let geo = fixtures().join("geolite2");
    std::fs::write(
        &path,
        format!(
            "[sources.geo]\nformat = \"geolite2-csv\"\npath = \"{}\"\n[regions.a]\ncountries = [\"CN\"]\nfrom = [\"geo\"]\n",
            geo.display()
        ),
    )
    .expect("policy");
    let p = policy::parse_file(&path).expect("valid");
    let names: Vec<String> = p.inputs[1..]
        .iter()
        .map(|p| {
            p.strip_prefix(&geo)
                .map_or_else(|_| p.display().to_string(), |r| r.display().to_string())
        })
        .collect();
    assert_eq!(
        names,
        [
            "",
            "GeoLite2-Country-Locations-en.csv",
            "GeoLite2-Country-Blocks-IPv4.csv",
            "GeoLite2-Country-Blocks-IPv6.csv"
        ]
    );
}
