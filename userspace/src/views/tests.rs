//! Unit tests of the views: sums, sort order, combinations refused.

use super::*;
use crate::control::{CountryRow, HostRow, StatRow};

fn stats() -> Stats {
    let traffic = |device: &str, region: &str, verdict, packets, bytes| StatRow {
        device: device.into(),
        region: region.into(),
        verdict,
        packets,
        bytes,
    };
    let country = |device: &str, c: &str, verdict, packets, bytes| CountryRow {
        device: device.into(),
        country: c.into(),
        verdict,
        packets,
        bytes,
    };
    let host = |device: &str, h: &str, c: &str, passed: u64, blocked: u64| HostRow {
        device: device.into(),
        host: h.into(),
        resolved: !h.starts_with("203."),
        canonical: None,
        country: c.into(),
        addresses: 1,
        passed_packets: passed,
        passed_bytes: passed * 100,
        blocked_packets: blocked,
        blocked_bytes: blocked * 100,
    };
    Stats {
        traffic: vec![
            traffic("tv", "cn", Verdict::Drop, 5, 500),
            traffic("tv", "-", Verdict::Pass, 1, 60),
            traffic("phone", "cn", Verdict::Audit, 2, 2000),
            traffic("phone", "cn", Verdict::Reject, 1, 40),
        ],
        countries: vec![
            country("tv", "CN", Verdict::Drop, 5, 500),
            country("tv", "US", Verdict::Pass, 1, 60),
            country("phone", "CN", Verdict::Audit, 2, 2000),
            country("phone", "CN", Verdict::Reject, 1, 40),
        ],
        hosts: vec![
            host("tv", "ads.example", "CN", 0, 5),
            host("tv", "203.0.113.9", "US", 1, 0),
            host("phone", "ads.example", "CN", 3, 0),
        ],
        ..Stats::default()
    }
}

fn keys(v: &View) -> Vec<String> {
    v.lines
        .iter()
        .map(|l| {
            let k: Vec<&str> = l.key.values().map(String::as_str).collect();
            format!("{}={}", k.join("/"), l.totals.upload_bytes)
        })
        .collect()
}

#[test]
fn by_country_sums_devices_and_sorts_by_upload() {
    let v = view(&stats(), &[Dim::Country]).unwrap();
    assert_eq!(keys(&v), ["CN=2540", "US=60"]);
    let cn = &v.lines[0].totals;
    assert_eq!(
        (cn.audited_packets, cn.blocked_packets, cn.blocked_bytes),
        (2, 6, 540)
    );
    assert_eq!(v.total.upload_bytes, 2600);
}

#[test]
fn combinations_the_counters_hold() {
    let v = view(&stats(), &[Dim::Region, Dim::Device]).unwrap();
    assert_eq!(keys(&v), ["phone/cn=2040", "tv/cn=500", "tv/-=60"]);
    let v = view(&stats(), &[Dim::Host]).unwrap();
    assert_eq!(keys(&v), ["ads.example=800", "203.0.113.9=100"]);
    let v = view(&stats(), &[Dim::Host, Dim::Country, Dim::Device]).unwrap();
    assert_eq!(
        keys(&v),
        [
            "tv/CN/ads.example=500",
            "phone/CN/ads.example=300",
            "tv/US/203.0.113.9=100"
        ]
    );
    let v = view(&stats(), &[Dim::Device, Dim::Device]).unwrap();
    assert_eq!(v.by, [Dim::Device]);
}

#[test]
fn combinations_counted_apart_are_refused() {
    assert_eq!(
        view(&stats(), &[Dim::Country, Dim::Region]),
        Err(ViewError::CountryWithRegion)
    );
    assert_eq!(
        view(&stats(), &[Dim::Host, Dim::Region]),
        Err(ViewError::HostWithRegion)
    );
    assert_eq!(view(&stats(), &[]), Err(ViewError::Empty));
    assert!("planet".parse::<Dim>().is_err());
}

#[test]
fn the_table_has_every_column_and_a_total() {
    let t = view(&stats(), &[Dim::Device]).unwrap().table();
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].starts_with("DEVICE"), "{t}");
    assert!(lines[0].contains("UPLOAD BYTES") && lines[0].contains("BLOCKED BYTES"));
    assert!(
        lines[1].starts_with("phone") && lines[1].contains("2040"),
        "{t}"
    );
    assert!(
        lines[3].starts_with("TOTAL") && lines[3].contains("2600"),
        "{t}"
    );
}
