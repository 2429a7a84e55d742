//! Countries for all traffic: the kernel counts every packet under its
//! destination's country (from the same lookup as its regions), events
//! carry it, and at world scale — one region per country, ~250 of them —
//! the kernel's verdicts, regions and countries equal `explain` on 10,000
//! random destinations.

mod common;

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    path::Path,
};

use common::{
    Rng,
    frames::{ETH_P_IP, ETH_P_IPV6, ethernet, ipv4, ipv6, udp},
};
use regionwall::{
    compile::{self, Compiled},
    control::{Stats, Userspace},
    datapath::{Datapath, LoadOptions},
    events,
    explain::{self, DeviceBy},
};
use regionwall_testkit::xdp::{XDP_DROP, XDP_PASS};

const MAC: [u8; 6] = [0x02, 0, 0x5e, 0, 0x53, 0x01];

fn frame(dst: IpAddr) -> Vec<u8> {
    let src4 = Ipv4Addr::new(192, 0, 2, 10);
    match dst {
        IpAddr::V4(d) => ethernet(
            MAC,
            &[],
            ETH_P_IP,
            &ipv4(src4, d, 17, 0, 0, &udp(5, 7, b"x")),
        ),
        IpAddr::V6(d) => {
            let src6 = "2001:db8:ffff::10".parse().expect("address");
            ethernet(
                MAC,
                &[],
                ETH_P_IPV6,
                &ipv6(src6, d, &[], 17, &udp(5, 7, b"x")),
            )
        }
    }
}

/// A country database over documentation ranges: "aa" and "bb" split
/// 198.51.100.0/24, "cc" has 203.0.113.0/24 and 2001:db8:cc::/48.
fn test_countries(dir: &Path) {
    for (cc, v4, v6) in [
        ("aa", "198.51.100.0/25\n", ""),
        ("bb", "198.51.100.128/25\n", ""),
        ("cc", "203.0.113.0/24\n", "2001:db8:cc::/48\n"),
    ] {
        let d = dir.join(cc);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("ipv4-aggregated.txt"), v4).expect("write");
        std::fs::write(d.join("ipv6-aggregated.txt"), v6).expect("write");
    }
}

/// Publishes `text` on the stable slots, every event reported.
fn load(text: &str, region_room: u32) -> (Datapath, Compiled) {
    let policy = common::policy(text);
    let compiled = compile::compile(&policy).expect("compile");
    let mut dp = Datapath::load_with(LoadOptions {
        region_room,
        ..LoadOptions::default()
    })
    .expect("load");
    dp.set_event_limit(0, 1).expect("no event limit");
    let (stable, _) = dp.publish_stable(compiled, None, 1).expect("publish");
    (dp, stable)
}

#[test]
fn every_packet_is_counted_under_its_country_blocked_or_not() {
    let dir = std::env::temp_dir().join(format!("rw-countries-{}", std::process::id()));
    test_countries(&dir);
    let text = format!(
        "regions_dir = \"{}\"\n[regions.zone]\ncidrs = [\"203.0.113.0/25\"]\n[[rules]]\nname = \"no-zone\"\ndevices = [\"default\"]\nblock = [\"zone\"]\n",
        dir.display()
    );
    let (mut dp, stable) = load(&text, 64);
    let mut ring = dp.take_events().expect("event ring");
    let prog = dp.program().expect("program");
    for (dst, times, verdict) in [
        ("198.51.100.1", 3, XDP_PASS),   // aa, in no region
        ("198.51.100.200", 2, XDP_PASS), // bb
        ("203.0.113.5", 4, XDP_DROP),    // cc, in zone
        ("203.0.113.200", 1, XDP_PASS),  // cc, outside zone
        ("2001:db8:cc::1", 1, XDP_PASS), // cc over IPv6
        ("192.0.2.99", 2, XDP_PASS),     // no country
    ] {
        let f = frame(dst.parse().expect("address"));
        for _ in 0..times {
            assert_eq!(common::prog::verdict(prog, &f), verdict, "{dst}");
        }
    }
    let stats = Stats::read(&dp, "t0", Some(&stable), Userspace::default()).expect("stats");
    let mut rows: Vec<(String, String, u64)> = stats
        .countries
        .iter()
        .map(|r| (r.country.clone(), r.verdict.to_string(), r.packets))
        .collect();
    rows.sort();
    let want = [
        ("-", "pass", 2),
        ("AA", "pass", 3),
        ("BB", "pass", 2),
        ("CC", "drop", 4),
        ("CC", "pass", 2),
    ];
    let want: Vec<(String, String, u64)> = want
        .iter()
        .map(|(c, v, n)| ((*c).into(), (*v).into(), *n))
        .collect();
    assert_eq!(rows, want);
    // Bytes are frame bytes, per country.
    let cc_drop = stats
        .countries
        .iter()
        .find(|r| r.country == "CC" && r.packets == 4);
    assert_eq!(
        cc_drop.map(|r| r.bytes),
        Some(4 * frame("203.0.113.5".parse().unwrap()).len() as u64)
    );
    // Drop events name the country.
    let mut names = events::Names::default();
    names.insert(1, std::sync::Arc::new(stable.clone()));
    let clock = events::BootClock::now();
    let mut got = Vec::new();
    while let Some(item) = ring.next() {
        let ev = events::decode(&item).expect("event");
        got.push(events::Record::new(&ev, &names, &clock, "t0").expect("record"));
    }
    assert_eq!(got.len(), 4);
    assert!(
        got.iter().all(|r| r.country == "CC" && r.region == "zone"),
        "{got:?}"
    );
    assert!(
        got[0].line().contains("country=CC region=zone"),
        "{}",
        got[0].line()
    );
    // explain says the same, with its source.
    let policy = common::policy(&text);
    let index = explain::Index::new(&policy);
    let e = explain::explain(
        &policy,
        &index,
        "198.51.100.200".parse().unwrap(),
        0,
        DeviceBy::Default,
        None,
    );
    assert_eq!(e.country.as_deref(), Some("BB"));
    assert_eq!(e.country_sources.len(), 1);
    assert!(e.to_string().contains("country BB"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sources_that_disagree_are_decided_by_precedence_and_both_shown() {
    let dir = std::env::temp_dir().join(format!("rw-disagree-{}", std::process::id()));
    test_countries(&dir);
    let csv = dir.join("ranges.csv");
    std::fs::write(&csv, "198.51.100.0,198.51.100.63,ZZ\n").expect("write");
    let text = format!(
        "regions_dir = \"{}\"\ncountries_from = [\"mine\", \"regions_dir\"]\n[sources.mine]\nformat = \"range-csv\"\npath = \"{}\"\n",
        dir.display(),
        csv.display()
    );
    let policy = common::policy(&text);
    let compiled = compile::compile(&policy).expect("compile");
    let country_of = |a: &str| {
        compiled
            .attribution
            .country(a.parse().unwrap())
            .map(str::to_string)
    };
    assert_eq!(country_of("198.51.100.1").as_deref(), Some("ZZ"));
    assert_eq!(country_of("198.51.100.64").as_deref(), Some("AA"));
    let index = explain::Index::new(&policy);
    let e = explain::explain(
        &policy,
        &index,
        "198.51.100.1".parse().unwrap(),
        0,
        DeviceBy::Default,
        None,
    );
    let said: Vec<(String, String, bool)> = e
        .country_sources
        .iter()
        .map(|h| (h.source.clone(), h.country.clone(), h.decides))
        .collect();
    assert_eq!(
        said,
        [
            ("mine".into(), "ZZ".into(), true),
            ("regions_dir".into(), "AA".into(), false)
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One region per country of the real database (~250), a quarter of them
/// blocked, a quarter audited, the rest only counted, plus an inline allow
/// list inside a blocked country: for 10,000 random destinations the
/// production program's verdict, region and country (from its events,
/// every one reported) equal `explain`'s.
#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, set up and checked")]
fn world_as_per_country_regions_equals_explain() {
    let dir = common::countries_dir();
    let mut codes: Vec<String> = std::fs::read_dir(&dir)
        .expect("country database")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    codes.sort();
    assert!(codes.len() >= 230, "{} countries", codes.len());
    let mut text = format!("regions_dir = \"{}\"\n", dir.display());
    for c in &codes {
        writeln!(
            text,
            "[regions.{c}]\ncountries = [\"{}\"]",
            c.to_uppercase()
        )
        .expect("write");
    }
    // Regions of CIDRs overlapping the countries, to pass 250 regions.
    let extra = 260 - codes.len();
    for i in 0..extra {
        writeln!(
            text,
            "[regions.x{i:02}]\ncidrs = [\"{}.{}.0.0/16\"]",
            1 + i * 7,
            i * 3
        )
        .expect("write");
    }
    codes.extend((0..extra).map(|i| format!("x{i:02}")));
    let list = |m: usize| -> String {
        codes
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 4 == m)
            .map(|(_, c)| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        text,
        "[[rules]]\nname = \"blocked\"\ndevices = [\"default\"]\nblock = [{}]\nallow = [\"1.0.1.0/24\", \"2001:250::/32\"]\n[[rules]]\nname = \"audited\"\ndevices = [\"default\"]\nblock = [{}]\nmode = \"audit\"",
        list(0),
        list(1)
    )
    .expect("write");
    let room = u32::try_from(codes.len() * 3 / 2).expect("room");
    let (mut dp, stable) = load(&text, room);
    let mut ring = dp.take_events().expect("event ring");
    let policy = common::policy(&text);
    let index = explain::Index::new(&policy);
    let mut names = events::Names::default();
    names.insert(1, std::sync::Arc::new(stable.clone()));
    let clock = events::BootClock::now();
    let prog = dp.program().expect("program");
    let mut random = Rng(0x00c0_ffee);
    let mut seen = [0usize; 3];
    for i in 0..10_000 {
        let dst = random.destination(i % 4 != 0);
        let e = explain::explain(&policy, &index, dst, 0, DeviceBy::Default, None);
        let verdict = common::prog::verdict(prog, &frame(dst));
        let want = if e.verdict == "drop" {
            XDP_DROP
        } else {
            XDP_PASS
        };
        assert_eq!(
            verdict, want,
            "{dst}: kernel {verdict}, explain {}",
            e.verdict
        );
        let event = ring
            .next()
            .map(|item| events::decode(&item).expect("event"));
        match (e.verdict, event) {
            ("pass", None) => seen[0] += 1,
            ("drop" | "audit", Some(ev)) => {
                let r = events::Record::new(&ev, &names, &clock, "t0").expect("record");
                assert_eq!(r.verdict.as_str(), e.verdict, "{dst}");
                assert_eq!(Some(r.region.clone()), e.attributed_region, "{dst}");
                assert_eq!(
                    r.country,
                    e.country.clone().unwrap_or_else(|| "-".into()),
                    "{dst}"
                );
                seen[if e.verdict == "drop" { 1 } else { 2 }] += 1;
            }
            (v, ev) => panic!("{dst}: explain says {v}, kernel event {ev:?}"),
        }
    }
    println!(
        "world as {} regions (one per country, plus CIDR regions): {} passed, {} dropped, {} audited",
        codes.len(),
        seen[0],
        seen[1],
        seen[2]
    );
    assert!(
        seen.iter().all(|n| *n > 100),
        "every verdict exercised: {seen:?}"
    );
    // The per-country counters hold every packet, countries named.
    let stats = Stats::read(&dp, "t0", Some(&stable), Userspace::default()).expect("stats");
    let total: u64 = stats.countries.iter().map(|r| r.packets).sum();
    assert_eq!(total, 10_000);
    assert!(stats.countries.iter().filter(|r| r.country != "-").count() > 100);
    // ...and the per-region counters too, over more than 64 regions.
    assert_eq!(stats.traffic.iter().map(|r| r.packets).sum::<u64>(), 10_000);
    let mut regions: Vec<&str> = stats.traffic.iter().map(|r| r.region.as_str()).collect();
    regions.sort_unstable();
    regions.dedup();
    assert!(regions.len() > 100, "{} regions counted", regions.len());
}
