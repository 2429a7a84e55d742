//! `/metrics` with 256 devices × 250 countries counted: one scrape (maps
//! read, series labelled and encoded) with the batch lookups, against the
//! per-key read every scrape made before, side by side.

use std::{sync::Arc, time::Instant};

use anyhow::Context as _;
use aya::maps::{Map, PerCpuArray, PerCpuValues};
use regionwall::{
    controller::{Tally, metrics, scrape::Source},
    datapath::Datapath,
    pin::{PinDir, PinnedMaps},
    readings::{PerKey, Readings as _},
    slots::{Owner, SlotTable},
};
use regionwall_common::{MAX_DEVICES, TrafficCounter, country_slot};
use serde::Serialize;

/// Countries counted for every device.
pub const COUNTRIES: u32 = 250;
/// Verdicts counted per (device, country): pass and drop.
const VERDICTS: [u32; 2] = [0, 1];
const SAMPLES: usize = 5;

#[derive(Serialize, Default)]
pub struct MetricsResult {
    pub devices: u32,
    pub countries: u32,
    /// (device, country, verdict) counter slots with traffic.
    pub rows: usize,
    /// ms per full scrape (median of [`SAMPLES`]), batch and per-key reads.
    pub scrape_bulk_ms: f64,
    pub scrape_per_key_ms: f64,
    /// ms to read the country counters alone, both ways.
    pub read_bulk_ms: f64,
    pub read_per_key_ms: f64,
    pub body_kib: usize,
}

const fn owner(name: String) -> Owner {
    Owner { name, live: true }
}

/// Two letters per country id, AA.. (labels only).
fn code(i: u32) -> String {
    let letter = |n: u32| char::from(b'A' + u8::try_from(n % 26).unwrap_or(0));
    [letter(i / 26), letter(i)].iter().collect()
}

pub fn run() -> anyhow::Result<MetricsResult> {
    let root = regionwall_testkit::pins::PinRoot::new();
    let pins = PinDir::new(root.path(), "rwbench0");
    pins.create()?;
    let mut dp = Datapath::load().context("loading the program")?;
    dp.write_slots(&SlotTable {
        devices: (0..MAX_DEVICES)
            .map(|d| Some(owner(format!("device{d}"))))
            .collect(),
        regions: Vec::new(),
        countries: (0..COUNTRIES).map(|c| Some(owner(code(c)))).collect(),
    })?;
    dp.pin(&pins)?;
    let cpus = aya::util::nr_cpus().map_or(1, |n| n.get() as usize);
    let mut arr: PerCpuArray<_, TrafficCounter> =
        PerCpuArray::try_from(Map::PerCpuArray(pins.open_map("COUNTRY_TRAFFIC")?))?;
    for d in 0..MAX_DEVICES {
        for c in 1..=COUNTRIES {
            for v in VERDICTS {
                let values = (0..cpus as u64)
                    .map(|cpu| TrafficCounter {
                        packets: u64::from(d + c + v) + cpu + 1,
                        bytes: 1500 * (u64::from(c) + cpu + 1),
                    })
                    .collect::<Vec<_>>();
                arr.set(country_slot(d, c, v), PerCpuValues::try_from(values)?, 0)?;
            }
        }
    }
    let source = |per_key| Source {
        pins: pins.clone(),
        iface: "lo".into(),
        tally: Arc::new(Tally::default()),
        hosts: None,
        max_devices: MAX_DEVICES as usize,
        per_key,
        carry: Arc::default(),
        kept: None,
        policy: None,
        history: None,
    };
    let bulk = metrics::registry(source(false));
    let per_key = metrics::registry(source(true));
    let maps = PinnedMaps::open(&pins)?;
    let mut r = MetricsResult {
        devices: MAX_DEVICES,
        countries: COUNTRIES,
        rows: maps.country_traffic(MAX_DEVICES)?.len(),
        ..MetricsResult::default()
    };
    let (mut sb, mut sp, mut rb, mut rp) = (vec![], vec![], vec![], vec![]);
    for _ in 0..SAMPLES {
        let t = Instant::now();
        let body = metrics::encode(&bulk)?;
        sb.push(super::ms(t.elapsed()));
        r.body_kib = body.len() / 1024;
        let t = Instant::now();
        let other = metrics::encode(&per_key)?;
        sp.push(super::ms(t.elapsed()));
        anyhow::ensure!(
            body.contains(r#"regionwall_country_packets_total{device="device255",country="JP",verdict="drop"}"#)
                && other.len().abs_diff(body.len()) < 64,
            "the scrapes differ or miss the last device"
        );
        let t = Instant::now();
        let a = maps.country_traffic(MAX_DEVICES)?;
        rb.push(super::ms(t.elapsed()));
        let t = Instant::now();
        let b = PerKey(&maps).country_traffic(MAX_DEVICES)?;
        rp.push(super::ms(t.elapsed()));
        anyhow::ensure!(a == b, "the batch and per-key reads differ");
    }
    r.scrape_bulk_ms = super::median(&mut sb);
    r.scrape_per_key_ms = super::median(&mut sp);
    r.read_bulk_ms = super::median(&mut rb);
    r.read_per_key_ms = super::median(&mut rp);
    eprintln!(
        "bench: metrics: {} rows; scrape {:.0} ms (per-key {:.0} ms, {:.1}x); counters read {:.1} ms (per-key {:.0} ms, {:.1}x); {} KiB",
        r.rows,
        r.scrape_bulk_ms,
        r.scrape_per_key_ms,
        r.scrape_per_key_ms / r.scrape_bulk_ms,
        r.read_bulk_ms,
        r.read_per_key_ms,
        r.read_per_key_ms / r.read_bulk_ms,
        r.body_kib
    );
    drop(maps);
    drop(dp);
    Ok(r)
}
