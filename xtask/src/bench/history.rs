//! The history database: events written per second in the writer's
//! batches, and a grouped query over them (`history --by device,host`).

use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use regionwall::{
    events::Record,
    history::{
        Store,
        query::{self, Dim, Query},
    },
    verdict::Verdict,
};
use serde::Serialize;

#[derive(Serialize, Default)]
pub struct HistoryResult {
    pub events: usize,
    /// Events committed per second, in transactions of [`BATCH`].
    pub written_per_s: f64,
    /// ms for `--by device,host` over all of them.
    pub query_ms: f64,
    pub db_kib: u64,
}

/// Events per transaction, as the controller's writer commits them.
const BATCH: usize = 4096;
const EVENTS: usize = 200_000;

fn record(i: usize, at: SystemTime) -> Arc<Record> {
    let [_, _, c, d] = u32::try_from(i % 65_536).unwrap_or(0).to_be_bytes();
    Arc::new(Record {
        timestamp: humantime::format_rfc3339_micros(at + Duration::from_micros(i as u64))
            .to_string(),
        interface: "lan0".into(),
        device: format!("device{}", i % 32),
        src_mac: "02:00:5e:00:53:01".into(),
        src_ip: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))),
        dst_ip: Some(IpAddr::V4(Ipv4Addr::new(198, 51, c, d))),
        protocol: "udp".into(),
        src_port: Some(40_000),
        dst_port: Some(443),
        region: "blocked".into(),
        country: ["AA", "BB", "CC", "DD"][i % 4].into(),
        host: Some(format!("host{}.tracker.example", i % 500)),
        canonical: None,
        resolved: Some(true),
        rule: "no-trackers".into(),
        verdict: Verdict::Drop,
        reason: "policy".into(),
        bytes: 120,
        policy_epoch: 1,
    })
}

pub fn run(dir: &Path) -> anyhow::Result<HistoryResult> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(regionwall::history::FILE);
    let mut store = Store::open(&path)?;
    let at = SystemTime::now() - Duration::from_secs(3600);
    let records: Vec<Arc<Record>> = (0..EVENTS).map(|i| record(i, at)).collect();
    let started = Instant::now();
    for batch in records.chunks(BATCH) {
        store.insert_events(batch)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let q = Query {
        by: vec![Dim::Device, Dim::Host],
        ..Query::default()
    };
    let started = Instant::now();
    let totals = query::totals(&store, &q)?;
    let query_ms = started.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(totals.len() == 500 * 32 / 4, "{} groups", totals.len());
    let result = HistoryResult {
        events: EVENTS,
        written_per_s: EVENTS as f64 / secs,
        query_ms,
        db_kib: store.size()? / 1024,
    };
    eprintln!(
        "bench: history: {:.0} events/s written in transactions of {BATCH}; --by device,host over {EVENTS} events in {:.0} ms; {} KiB",
        result.written_per_s, result.query_ms, result.db_kib
    );
    Ok(result)
}
