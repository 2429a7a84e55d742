//! Region data: every loader on real files or fixtures in the exact format,
//! `countries` / `from` / `except` in policies, errors with the data file's
//! own positions, and the exactness of merging (property tests against a
//! naive reference).

mod common;

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    sync::Arc,
};

use proptest::prelude::*;
use regionwall::{
    PolicyError, compile,
    input::Inputs,
    policy::{self, Device, Origin, Policy, Prefix, Region, V4, V6, net::Bits},
    sources::{self, LoadError, geolite2::CountryField},
};

use common::{countries_dir, data_dir};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn strings(list: &[(Prefix, Origin)]) -> Vec<String> {
    list.iter().map(|(p, _)| p.to_string()).collect()
}

/// Number of addresses in a list of prefixes (of one family).
fn addresses(list: &[(Prefix, Origin)]) -> (u128, u128) {
    let mut v4 = 0u128;
    let mut v6 = 0u128;
    for (p, _) in list {
        match p {
            Prefix::V4(p) => v4 += 1u128 << (32 - p.len),
            Prefix::V6(p) => v6 += 1u128 << (128 - p.len.max(1)),
        }
    }
    (v4, v6)
}

fn errors_of(path: &Path) -> Vec<policy::Diagnostic> {
    match policy::parse_file(path) {
        Ok(_) => panic!("policy unexpectedly valid"),
        Err(PolicyError::Invalid(d)) => d.0,
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

#[test]
fn rir_apnic_real_file_loads_with_exact_cidrs_and_checked_counts() {
    let path = data_dir().join("rir/delegated-apnic-20141224");
    let (data, stats) =
        sources::rir::load(&path, &mut Inputs::default()).expect("APNIC file loads");
    let text = std::fs::read_to_string(&path).expect("read");
    // Independent count of the records to take, and of their addresses.
    let mut want_records = 0;
    let mut want_v4_addresses: std::collections::HashMap<&str, u128> =
        std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split('|').collect();
        if f.len() >= 7 && matches!(f[6], "allocated" | "assigned") && f[2] != "asn" {
            want_records += 1;
            if f[2] == "ipv4" {
                *want_v4_addresses.entry(f[1]).or_default() += f[4].parse::<u128>().expect("count");
            }
        }
    }
    assert_eq!(stats.taken, want_records);
    assert_eq!(stats.records["ipv4"], 26_565);
    assert_eq!(stats.records["ipv6"], 3_726);
    assert_eq!(stats.records["asn"], 5_986);
    println!(
        "APNIC 2014-12-24: {} records taken, {} countries, {} prefixes",
        stats.taken,
        data.countries.len(),
        data.prefix_count()
    );
    // Every country's IPv4 prefixes hold exactly the addresses its records count.
    for (cc, want) in &want_v4_addresses {
        let got = addresses(&data.countries[*cc]).0;
        assert_eq!(got, *want, "{cc}");
    }
    // (Counts that are not a power of two, which this snapshot happens not
    // to contain, are covered by the extended-format fixture and unit tests.)
    let cn = strings(&data.countries["CN"]);
    assert!(cn.contains(&"1.0.1.0/24".to_string()) && cn.contains(&"1.0.2.0/23".to_string()));
    // The origin names the record's own line.
    let (_, origin) = data.countries["CN"]
        .iter()
        .find(|(p, _)| p.to_string() == "1.0.2.0/23")
        .expect("1.0.2.0/23");
    let line = text.lines().nth(origin.line - 1).expect("line");
    assert!(line.starts_with("apnic|CN|ipv4|1.0.2.0|512|"), "{line}");
}

#[test]
fn rir_extended_format_skips_available_and_reserved() {
    let (data, stats) = sources::rir::load(
        &fixtures().join("delegated-ripencc-extended-sample"),
        &mut Inputs::default(),
    )
    .expect("extended sample loads");
    assert_eq!(stats.taken, 3);
    assert_eq!(stats.skipped, 3);
    assert_eq!(strings(&data.countries["FR"]), ["2.0.0.0/12"]);
    assert_eq!(
        strings(&data.countries["DE"]),
        ["2.16.0.0/22", "2.16.4.0/23", "2001:db8:e000::/35"]
    );
    assert!(!data.countries.contains_key("ZZ"));
    assert!(
        !data.countries.contains_key("EU"),
        "ASNs are not address space"
    );
}

#[test]
fn rir_file_errors_in_a_policy_name_the_data_line() {
    let path = common::policy_file(
        "[sources.ripe]\nformat = \"rir\"\npath = \"ripe.txt\"\n\n[regions.de]\ncountries = [\"DE\"]\nfrom = [\"ripe\"]\n",
    );
    let sample = std::fs::read_to_string(fixtures().join("delegated-ripencc-extended-sample"))
        .expect("sample");
    // Drop the last record: the ipv6 summary and the total no longer match.
    let cut: Vec<&str> = sample.lines().collect();
    std::fs::write(
        path.with_file_name("ripe.txt"),
        cut[..cut.len() - 1].join("\n"),
    )
    .expect("write");
    let e = errors_of(&path);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].file.ends_with("ripe.txt"));
    assert_eq!((e[0].line, e[0].column), (3, 24), "{}", e[0]);
    assert!(
        e[0].message
            .contains("declares 7 records but the file has 6"),
        "{}",
        e[0]
    );
    assert_eq!(e[1].line, 6, "{}", e[1]);
    assert!(
        e[1].message.contains("summary declares 2 ipv6 records"),
        "{}",
        e[1]
    );

    std::fs::remove_file(path.with_file_name("ripe.txt")).expect("rm");
    let e = errors_of(&path);
    assert_eq!(
        (e[0].line, e[0].column),
        (3, 8),
        "points at `path`: {}",
        e[0]
    );
    assert!(
        e[0].message.contains("cannot read RIR statistics"),
        "{}",
        e[0]
    );
}

/// What the GeoLite2 fixture (CSV, and the same blocks as MMDB) holds
/// by located country, falling back to registered.
fn assert_located_fixture(located: &sources::ByCountry) {
    assert_eq!(
        strings(&located.countries["CN"]),
        ["1.0.1.0/24", "1.0.2.0/23", "2001:db8:cc::/48"]
    );
    assert_eq!(strings(&located.countries["RU"]), ["198.51.100.0/24"]);
    // Located is empty: the registered country (HK, KR) is used.
    assert_eq!(strings(&located.countries["HK"]), ["203.0.113.0/25"]);
    assert_eq!(strings(&located.countries["KR"]), ["2001:db8:4b::/48"]);
    // Continent-level and country-less blocks are in no country.
    assert_eq!(located.prefix_count(), 6);
}

fn assert_registered_fixture(registered: &sources::ByCountry) {
    assert_eq!(
        strings(&registered.countries["CN"]),
        [
            "1.0.1.0/24",
            "1.0.2.0/23",
            "198.51.100.0/24",
            "2001:db8:cc::/48"
        ]
    );
    assert!(!registered.countries.contains_key("RU"));
}

#[test]
fn geolite2_located_falls_back_to_registered() {
    let dir = fixtures().join("geolite2");
    let located = sources::geolite2::load(&dir, CountryField::Located, &mut Inputs::default())
        .expect("located");
    assert_located_fixture(&located);
    let line = located.countries["HK"][0].1.line;
    assert_eq!(line, 6, "origin is the CSV record's line");

    let registered =
        sources::geolite2::load(&dir, CountryField::Registered, &mut Inputs::default())
            .expect("registered");
    assert_registered_fixture(&registered);
}

#[test]
fn geolite2_in_a_policy_and_its_errors() {
    let dir = fixtures().join("geolite2");
    let text = format!(
        r#"
[sources.geo]
format = "geolite2-csv"
path = "{}"
country = "registered"

[regions.cn]
countries = ["CN"]
from = ["geo"]

[regions.ru]
countries = ["RU"]
from = ["geo"]
"#,
        dir.display()
    );
    let e = errors_of(&common::policy_file(&text));
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!((e[0].line, e[0].column), (12, 14));
    assert!(
        e[0].message
            .contains("unknown country code \"RU\": not listed by source(s) geo"),
        "{}",
        e[0]
    );
    let ok = common::policy(&text.replace("country = \"registered\"", "country = \"located\""));
    let (v4, v6) = ok.regions[0].merged();
    assert_eq!(
        (v4.len(), v6.len()),
        (2, 1),
        "1.0.1.0/24 + 1.0.2.0/23 stay two"
    );

    // A geoname id missing from the locations file names the block's line.
    let broken = common::policy_file("").with_file_name("geo");
    std::fs::create_dir_all(&broken).expect("mkdir");
    for f in [
        "GeoLite2-Country-Locations-en.csv",
        "GeoLite2-Country-Blocks-IPv6.csv",
    ] {
        std::fs::copy(dir.join(f), broken.join(f)).expect("copy");
    }
    std::fs::write(
        broken.join("GeoLite2-Country-Blocks-IPv4.csv"),
        "network,geoname_id,registered_country_geoname_id\n1.0.1.0/24,1814991,1814991\n1.0.2.0/23,999,999\n1.0.4.0/33,1814991,1814991\n",
    )
    .expect("write");
    let e = errors_of(&common::policy_file(
        &text.replace(&dir.display().to_string(), &broken.display().to_string()),
    ));
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].file.ends_with("GeoLite2-Country-Blocks-IPv4.csv"));
    assert_eq!((e[0].line, e[0].column), (3, 12), "{}", e[0]);
    assert!(e[0].message.contains("geoname_id 999"), "{}", e[0]);
    assert_eq!(e[1].line, 4, "{}", e[1]);
    assert!(e[1].message.contains("prefix length"), "{}", e[1]);
}

#[test]
fn range_csv_splits_ranges_into_exact_cidrs() {
    let data = sources::range_csv::load(
        &fixtures().join("dbip-country-lite.csv"),
        &mut Inputs::default(),
    )
    .expect("load");
    let cn = &data.countries["CN"];
    assert_eq!(
        strings(cn),
        [
            "1.0.1.0/24",
            "1.0.2.0/23",
            "198.51.100.3/32",
            "198.51.100.4/30",
            "198.51.100.8/29",
            "198.51.100.16/28",
            "198.51.100.32/27",
            "198.51.100.64/26",
            "198.51.100.128/26",
            "198.51.100.192/29",
            "198.51.100.200/32",
            "2001:db8::/112"
        ]
    );
    // Exactly .3 ..= .200, nothing around it.
    for last in 0..=255u8 {
        let a = IpAddr::V4(Ipv4Addr::new(198, 51, 100, last));
        let inside = cn.iter().any(|(p, _)| p.contains(a));
        assert_eq!(inside, (3..=200).contains(&last), "198.51.100.{last}");
    }
    assert_eq!(cn[2].1.line, 3);
    let bad = common::policy_file("").with_file_name("ranges.csv");
    std::fs::write(
        &bad,
        "1.0.0.0,1.0.0.255,AU\n1.0.1.9,1.0.1.0,CN\n2001:db8::,1.2.3.4,CN\n1.0.2.0,1.0.2.255,CHN\n",
    )
    .expect("write");
    let Err(LoadError::Invalid(e)) = sources::range_csv::load(&bad, &mut Inputs::default()) else {
        panic!("bad ranges accepted")
    };
    assert_eq!(e.len(), 3, "{e:#?}");
    assert_eq!((e[0].line, e[0].column), (2, 9));
    assert!(e[0].message.contains("not below the start"));
    assert_eq!(e[1].line, 3);
    assert_eq!((e[2].line, e[2].column), (4, 19));
    assert!(e[2].message.contains("two-letter country code"));
}

#[test]
fn countries_from_the_country_database_match_its_files() {
    let text = r#"
regions_dir = "REGIONS"
[regions.cn-hk]
countries = ["CN", "hk"]
[[rules]]
devices = ["default"]
block = ["cn-hk"]
"#
    .replace("REGIONS", &countries_dir().display().to_string());
    let p = common::policy(&text);
    let count = |cc: &str, f: &str| {
        std::fs::read_to_string(countries_dir().join(cc).join(f))
            .expect("read")
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .count()
    };
    let want = count("cn", "ipv4-aggregated.txt")
        + count("cn", "ipv6-aggregated.txt")
        + count("hk", "ipv4-aggregated.txt")
        + count("hk", "ipv6-aggregated.txt");
    assert_eq!(p.regions[0].prefixes.len(), want);
    assert!(want > 11_000, "CN + HK are large: {want}");

    // --regions-dir overrides the policy's path.
    let path =
        common::policy_file(&text.replace(&countries_dir().display().to_string(), "/nonexistent"));
    let e = errors_of(&path);
    assert_eq!((e[0].line, e[0].column), (2, 15), "{}", e[0]);
    assert!(
        e[0].message.contains("no country database at /nonexistent"),
        "{}",
        e[0]
    );
    // A directory that is no country database (say /tmp) is named as such,
    // not reported as an unknown country code.
    let path = common::policy_file(&text.replace(&countries_dir().display().to_string(), "/tmp"));
    let e = errors_of(&path);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].message.contains("no country database at /tmp"),
        "{}",
        e[0]
    );
    let p = policy::parse_file_with(
        &path,
        &policy::Options {
            regions_dir: Some(countries_dir()),
            ..policy::Options::default()
        },
    )
    .expect("valid with --regions-dir");
    assert_eq!(p.regions[0].prefixes.len(), want);
}

#[test]
fn country_errors_point_at_the_code() {
    let text = r#"
regions_dir = "REGIONS"
[regions.r]
countries = ["CN", "XQ", "CHN"]
[regions.s]
countries = ["DE"]
from = ["nowhere"]
[regions.t]
countries = ["FR"]
"#
    .replace("REGIONS", &countries_dir().display().to_string());
    let e = errors_of(&common::policy_file(&text));
    assert_eq!(e.len(), 3, "{e:#?}");
    assert_eq!((e[0].line, e[0].column), (4, 20));
    assert!(
        e[0].message
            .contains("unknown country code \"XQ\": no directory `xq`"),
        "{}",
        e[0]
    );
    assert_eq!((e[1].line, e[1].column), (4, 26));
    assert!(
        e[1].message.contains("two-letter ISO 3166 country code"),
        "{}",
        e[1]
    );
    assert_eq!((e[2].line, e[2].column), (7, 9));
    assert!(
        e[2].message.contains("unknown source \"nowhere\""),
        "{}",
        e[2]
    );

    let e = errors_of(&common::policy_file("[regions.t]\ncountries = [\"FR\"]\n"));
    assert!(
        e[0].message.contains("no country database is set"),
        "{}",
        e[0]
    );
    assert_eq!((e[0].line, e[0].column), (2, 14));
}

#[test]
fn sources_merge_and_except_carves_exactly() {
    let text = format!(
        r#"
regions_dir = "{}"

[sources.dbip]
format = "range-csv"
path = "{}"

[regions.cn]
countries = ["CN"]
from = ["dbip"]
cidrs = ["1.0.1.0/24", "198.51.100.0/25"]
except = ["198.51.100.64/26", "hole"]

[regions.hole]
cidrs = ["1.0.2.128/25"]

[regions.au-both]
countries = ["AU"]
from = ["dbip", "REGIONS_DIR"]
"#,
        countries_dir().display(),
        fixtures().join("dbip-country-lite.csv").display()
    );
    // A source named in `from` must be declared: the country database is
    // only the default.
    let e = errors_of(&common::policy_file(&text));
    assert!(
        e[0].message.contains("unknown source \"REGIONS_DIR\""),
        "{}",
        e[0]
    );
    let text = text.replace(
        "from = [\"dbip\", \"REGIONS_DIR\"]",
        "from = [\"dbip\", \"world\"]",
    ) + &format!(
        "\n[sources.world]\nformat = \"country-dir\"\npath = \"{}\"\n",
        countries_dir().display()
    );
    let p = common::policy(&text);
    let cn = &p.regions.iter().find(|r| r.name == "cn").expect("cn");
    let (v4, _) = cn.merged();
    let shown: Vec<String> = v4.iter().map(ToString::to_string).collect();
    // dbip 1.0.1.0-1.0.3.255 and 198.51.100.3-200, plus the inline CIDRs,
    // minus 198.51.100.64/26 and 1.0.2.128/25.
    assert_eq!(
        shown,
        [
            "1.0.1.0/24",
            "1.0.2.0/25",
            "1.0.3.0/24",
            "198.51.100.0/26",
            "198.51.100.128/26",
            "198.51.100.192/29",
            "198.51.100.200/32"
        ]
    );
    let au = p.regions.iter().find(|r| r.name == "au-both").expect("au");
    let real_au =
        std::fs::read_to_string(countries_dir().join("au/ipv4-aggregated.txt")).expect("au");
    assert!(
        au.prefixes.len() > real_au.lines().count(),
        "both sources contribute"
    );
    // Duplicates across sources merge: 1.0.0.0/24 is in both.
    let (au4, _) = au.merged();
    assert_eq!(
        au4.iter().filter(|p| p.to_string() == "1.0.0.0/24").count(),
        1
    );
}

// ---- Exactness: compiled table vs. naive reference, property-tested ----

/// Longest-prefix match over a compiled table, the way the kernel does it.
fn lpm<B: Bits>(table: &[(B, u32)], addr: u128) -> u32 {
    table
        .iter()
        .filter(|(p, _)| p.contains_addr(addr))
        .max_by_key(|(p, _)| p.len())
        .map_or(0, |(_, c)| *c)
}

fn origin() -> Origin {
    Origin {
        file: Arc::from(Path::new("prop")),
        line: 1,
    }
}

fn policy_of(regions: Vec<(Vec<Prefix>, Vec<Prefix>)>) -> Policy {
    Policy {
        countries: regionwall::policy::CountryDb::default(),
        update_dir: None,
        source: PathBuf::from("prop.toml"),
        named_regions: regions.len(),
        regions: regions
            .into_iter()
            .enumerate()
            .map(|(i, (p, x))| Region {
                name: format!("r{i}"),
                prefixes: p.into_iter().map(|p| (p, origin())).collect(),
                except: x.into_iter().map(|p| (p, origin())).collect(),
            })
            .collect(),
        devices: vec![Device {
            name: "default".into(),
            macs: vec![],
            prefixes: vec![],
        }],
        groups: vec![],
        rules: vec![],
        allow_empty: false,
        inputs: vec![],
        warnings: vec![],
    }
}

/// IPv4 prefixes crowded into 10.0.0.0/20 (plus a few short ones) so that
/// overlaps, nesting, adjacency and duplicates are common.
fn v4_prefix() -> impl Strategy<Value = Prefix> + Clone {
    prop_oneof![
        4 => (0u32..4096, 20u8..=32).prop_map(|(a, len)| {
            let addr = 0x0A00_0000 | a;
            let mask = u32::MAX << (32 - u32::from(len));
            Prefix::V4(V4 { addr: addr & mask, len })
        }),
        1 => (0u8..=12).prop_map(|len| Prefix::V4(V4 { addr: 0x0A00_0000 & (u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)), len })),
    ]
}

fn v6_prefix() -> impl Strategy<Value = Prefix> + Clone {
    (0u128..65_536, 112u8..=128).prop_map(|(a, len)| {
        let addr = (0x2001_0db8u128 << 96) | a;
        let mask = u128::MAX << (128 - u32::from(len));
        Prefix::V6(V6 {
            addr: addr & mask,
            len,
        })
    })
}

fn region(
    p: impl Strategy<Value = Prefix> + Clone,
) -> impl Strategy<Value = (Vec<Prefix>, Vec<Prefix>)> {
    (
        prop::collection::vec(p.clone(), 0..10),
        prop::collection::vec(p, 0..4),
    )
}

/// Addresses worth probing: both ends of every prefix and their neighbours.
fn probes(policy: &Policy) -> Vec<u128> {
    let mut out = Vec::new();
    for r in &policy.regions {
        for (p, _) in r.prefixes.iter().chain(&r.except) {
            let (first, last) = match p {
                Prefix::V4(p) => (p.addr(), p.last()),
                Prefix::V6(p) => (p.addr(), p.last()),
            };
            out.extend([first, last, first.wrapping_sub(1), last.wrapping_add(1)]);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn compiled_v4_table_is_exact(regions in prop::collection::vec(region(v4_prefix()), 1..5), extra in prop::collection::vec(0u32..8192, 32)) {
        let policy = policy_of(regions);
        let compiled = compile::compile(&policy).expect("compile");
        let mut addrs: Vec<u128> = probes(&policy).into_iter().filter(|a| *a <= u128::from(u32::MAX)).collect();
        addrs.extend(extra.iter().map(|a| u128::from(0x0A00_0000 + a)));
        for a in addrs {
            let ip = IpAddr::V4(Ipv4Addr::from(u32::try_from(a).expect("v4")));
            let want = compile::regions_containing(&policy, ip);
            let got = &compiled.classes[lpm(&compiled.v4, a) as usize];
            prop_assert_eq!(got, &want, "{}", ip);
        }
        // Nothing redundant: no entry has the same class as its longest
        // enclosing entry.
        for (p, c) in &compiled.v4 {
            let parent = compiled.v4.iter().filter(|(q, _)| q.len < p.len && q.contains_prefix(p)).max_by_key(|(q, _)| q.len);
            prop_assert!(parent.is_none_or(|(_, pc)| pc != c), "{} repeats its parent", p);
        }
    }

    #[test]
    fn compiled_v6_table_is_exact(regions in prop::collection::vec(region(v6_prefix()), 1..4), extra in prop::collection::vec(0u128..131_072, 32)) {
        let policy = policy_of(regions);
        let compiled = compile::compile(&policy).expect("compile");
        let mut addrs = probes(&policy);
        addrs.extend(extra.iter().map(|a| (0x2001_0db8u128 << 96) + a));
        for a in addrs {
            let ip = IpAddr::V6(a.into());
            let want = compile::regions_containing(&policy, ip);
            let got = &compiled.classes[lpm(&compiled.v6, a) as usize];
            prop_assert_eq!(got, &want, "{}", ip);
        }
    }

    #[test]
    fn merged_region_is_the_same_address_set(r in region(v4_prefix()), extra in prop::collection::vec(0u32..8192, 64)) {
        let policy = policy_of(vec![r]);
        let region = &policy.regions[0];
        let (v4, _) = region.merged();
        // Minimal: sorted, disjoint, and no two neighbours could be one prefix.
        for w in v4.windows(2) {
            prop_assert!(w[0].last() < w[1].addr(), "{} overlaps {}", w[0], w[1]);
            let joinable = w[0].len == w[1].len && w[0].last() + 1 == w[1].addr() && w[0].len > 0
                && (w[0].addr >> (32 - u32::from(w[0].len) + 1)) == (w[1].addr >> (32 - u32::from(w[1].len) + 1));
            prop_assert!(!joinable, "{} and {} should be one prefix", w[0], w[1]);
        }
        let mut addrs = probes(&policy);
        addrs.extend(extra.iter().map(|a| u128::from(0x0A00_0000 + a)));
        for a in addrs.into_iter().filter(|a| *a <= u128::from(u32::MAX)) {
            let ip = IpAddr::V4(Ipv4Addr::from(u32::try_from(a).expect("v4")));
            let merged = v4.iter().any(|p| p.contains_addr(a));
            prop_assert_eq!(merged, region.contains(ip), "{}", ip);
        }
    }
}

#[test]
fn a_binary_data_file_is_reported_at_its_line() {
    let path = common::policy_file("[regions.r]\nfile = \"list.bin\"\n");
    std::fs::write(
        path.with_file_name("list.bin"),
        b"198.51.100.0/24\n203.0.\xff\xfe113.0/24\n",
    )
    .expect("write");
    let e = errors_of(&path);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(e[0].file.ends_with("list.bin"));
    assert_eq!((e[0].line, e[0].column), (2, 7), "{}", e[0]);
    assert!(e[0].message.contains("not UTF-8"), "{}", e[0]);
}

#[test]
fn mmdb_networks_by_located_or_registered_country() {
    let file = common::policy_file("").with_file_name("GeoLite2-Country.mmdb");
    std::fs::write(
        &file,
        common::mmdb::build(&[
            ("1.0.1.0/24", Some("CN"), Some("CN")),
            ("1.0.2.0/23", Some("CN"), Some("CN")),
            ("192.0.2.0/24", None, None),
            ("198.51.100.0/24", Some("RU"), Some("CN")),
            ("203.0.113.0/25", None, Some("HK")),
            ("203.0.113.128/25", None, None),
            ("2001:db8:cc::/48", Some("CN"), Some("CN")),
            ("2001:db8:4b::/48", None, Some("KR")),
        ]),
    )
    .expect("write mmdb");
    // The same blocks as the GeoLite2 CSV fixture, the same countries.
    let located =
        sources::mmdb::load(&file, CountryField::Located, &mut Inputs::default()).expect("located");
    assert_located_fixture(&located);
    let registered = sources::mmdb::load(&file, CountryField::Registered, &mut Inputs::default())
        .expect("registered");
    assert_registered_fixture(&registered);

    // In a policy.
    let text = format!(
        "[sources.mm]\nformat = \"mmdb\"\npath = \"{}\"\n[regions.cn]\ncountries = [\"CN\"]\nfrom = [\"mm\"]\n",
        file.display()
    );
    let p = common::policy(&text);
    let (v4, v6) = p.regions[0].merged();
    assert_eq!((v4.len(), v6.len()), (2, 1));

    // A file that is not an MMDB is rejected at the source's `path`.
    std::fs::write(&file, b"not a database").expect("write");
    let e = errors_of(&common::policy_file(&text));
    assert!(e[0].file.ends_with("GeoLite2-Country.mmdb"), "{}", e[0]);
    assert!(
        e[0].message.contains("expected a MaxMind DB file"),
        "{}",
        e[0]
    );
}
