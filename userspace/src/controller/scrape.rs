//! The Prometheus collector behind `run --metrics`: reads the pinned maps
//! and the controller's shared counts at scrape time, never the event loop.
//!
//! Every value is read when Prometheus asks, from a handle of its own on
//! the pinned maps (the same maps the kernel counts into), so a scrape
//! needs nothing from the controller's event loop and cannot delay a
//! reload, an event or a re-attach. Kernel counters live in pinned maps
//! and on stable slots: they survive reloads and controller restarts.
//!
//! Labels are names an operator wrote in the policy (devices, regions),
//! ISO country codes, verdicts, hooks and reasons: never an address or a
//! hostname. Devices beyond `max_devices`, and indices no name owns, are
//! summed under `device="other"`.

use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::SystemTime,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Unit,
};
use regionwall_common::Counter;

use super::{
    Tally,
    hostnames::HostNames,
    reading::{Count, OTHER, Reading, traffic},
};
use crate::{
    pin::{PinDir, PinError, PinnedMaps},
    readings::{ReadError, Readings},
    verdict::Verdict,
};

/// Why a scrape could not read the maps.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("opening the pinned maps: {0}")]
    Pins(#[from] PinError),
    #[error("reading the maps: {0}")]
    Read(#[from] ReadError),
}

/// What the collector reads from: the pins of one interface, and the
/// controller's own counts (shared, updated by the controller).
#[derive(Clone)]
pub struct Source {
    pub pins: PinDir,
    pub iface: String,
    pub tally: Arc<Tally>,
    pub hosts: Option<HostNames>,
    /// Devices that get a label of their own (by counter index order).
    pub max_devices: usize,
    /// The live policy (for its `[update]` status file); none in the
    /// benchmark.
    pub policy: Option<tokio::sync::watch::Receiver<Arc<crate::policy::Policy>>>,
    /// Read the counters one key per syscall, as before batch lookups
    /// ([`crate::readings::PerKey`]): only the benchmark's baseline sets it.
    pub per_key: bool,
    /// Lifts series that would fall ([`super::carry`]).
    pub carry: Arc<std::sync::Mutex<super::carry::Carry>>,
    /// The counters kept in the state directory: saved before a scrape
    /// is answered.
    pub kept: Option<Arc<super::kept::Kept>>,
    /// The history recorder's counts, when it records.
    pub history: Option<Arc<crate::history::writer::Counts>>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("pins", &self.pins.path())
            .field("max_devices", &self.max_devices)
            .finish_non_exhaustive()
    }
}

/// A label value as the text format wants it (prometheus-client writes
/// values as given): backslash, double quote and newline escaped.
#[must_use]
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

impl Source {
    /// Reads every kernel-side value once.
    pub fn read(&self) -> Result<Reading, ScrapeError> {
        let maps = PinnedMaps::open(&self.pins)?;
        let mut r = if self.per_key {
            self.read_from(&crate::readings::PerKey(&maps))?
        } else {
            self.read_from(&maps)?
        };
        r.dns_copied = maps.dns_counts().ok().map(|d| (d.copied, d.lost));
        r.destinations = self.destinations().ok();
        let ifindex = crate::iface::ifindex(&self.iface).ok();
        let on_iface = |facts: Result<Option<crate::pin::LinkFacts>, PinError>| matches!((facts, ifindex), (Ok(Some(f)), Some(i)) if f.ifindex == i);
        r.xdp_attached = on_iface(self.pins.link_facts());
        r.tc_attached = on_iface(self.pins.dns_link_facts());
        let labels = std::mem::take(&mut r.device_labels);
        let device = |d: u32| {
            labels
                .get(usize::try_from(d).unwrap_or(usize::MAX))
                .map_or(OTHER, String::as_str)
                .to_string()
        };
        r.candidate = super::scrape_candidate::read(&self.pins, &device);
        r.device_labels = labels;
        Ok(r)
    }

    /// The counters and policy facts of `maps`, labelled.
    pub fn read_from(&self, maps: &impl Readings) -> Result<Reading, ReadError> {
        let meta = maps.live_meta()?;
        let slots = maps.read_slots()?;
        let devices = meta
            .devices
            .max(u32::try_from(slots.devices.len()).unwrap_or(u32::MAX))
            .max(1);
        // Named devices by index order; the first `max_devices` keep
        // their name.
        let mut named = 0usize;
        let labels: Vec<String> = (0..devices)
            .map(|d| match slots.device(d) {
                Some(name) if !name.is_empty() && named < self.max_devices => {
                    named += 1;
                    escape(name)
                }
                _ => OTHER.to_string(),
            })
            .collect();
        let device = |d: u32| {
            labels
                .get(usize::try_from(d).unwrap_or(usize::MAX))
                .map_or(OTHER, String::as_str)
                .to_string()
        };
        let mut r = Reading {
            counters: maps.counters()?,
            epoch: meta.epoch,
            ..Reading::default()
        };
        for t in maps.traffic(devices)? {
            let c = Count {
                packets: t.counter.packets,
                bytes: t.counter.bytes,
            };
            let v = t.verdict.as_str();
            *r.by_verdict.entry(v).or_default() += c;
            let region = slots
                .region(t.region)
                .map_or_else(|| "-".to_string(), escape);
            *r.by_region
                .entry((device(t.device), region, v))
                .or_default() += c;
        }
        for t in maps.country_traffic(devices)? {
            let country = slots
                .country(t.region)
                .map_or_else(|| "-".to_string(), escape);
            *r.by_country
                .entry((device(t.device), country, t.verdict.as_str()))
                .or_default() += Count {
                packets: t.counter.packets,
                bytes: t.counter.bytes,
            };
        }
        r.device_labels = labels;
        Ok(r)
    }

    /// Entries and capacity of the per-destination LRU map (keys only are
    /// walked, not the per-CPU values).
    fn destinations(&self) -> Result<(u64, u64), PinError> {
        use aya::maps::{Map, PerCpuHashMap};
        let capacity = self.pins.max_entries("DESTINATIONS")?;
        let map = Map::PerCpuLruHashMap(self.pins.open_map("DESTINATIONS")?);
        let Ok(map) = PerCpuHashMap::<_, regionwall_common::DestKey, regionwall_common::DestCounter>::try_from(&map) else {
            return Ok((0, u64::from(capacity)));
        };
        let entries = map.keys().flatten().count();
        Ok((entries as u64, u64::from(capacity)))
    }
}

/// The newest modification time of `paths`, in seconds since the epoch.
fn newest_mtime(paths: &[PathBuf]) -> Option<f64> {
    paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .max()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
}

/// The collector registered once; it reads [`Source`] on every scrape.
#[derive(Debug)]
pub struct Scrape(pub Source);

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(e.encode_descriptor(name, help, unit, MetricType::Gauge)?)
}

/// `regionwall update`'s status file, for a policy with `[update]`.
#[expect(clippy::cast_precision_loss, reason = "unix seconds fit an f64")]
fn update_series(
    e: &mut DescriptorEncoder,
    s: &crate::update::status::Status,
) -> Result<(), std::fmt::Error> {
    for (name, help, t) in [
        (
            "data_update_last_attempt_timestamp",
            "When `regionwall update` last ran (unix time)",
            s.last_attempt,
        ),
        (
            "data_update_last_success_timestamp",
            "When `regionwall update` last ran without error (unix time)",
            s.last_success,
        ),
    ] {
        if let Some(t) = t {
            gauge(e, name, help, Some(&Unit::Seconds), t as f64)?;
        }
    }
    gauge(
        e,
        "data_update_ok",
        "Whether the last `regionwall update` succeeded (0: see `regionwall stats`)",
        None,
        if s.error.is_none() { 1.0 } else { 0.0 },
    )
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let started = std::time::Instant::now();
        let src = &self.0;
        let mut reading = src.read();
        if let (Ok(r), Ok(mut carry)) = (&mut reading, src.carry.lock()) {
            carry.apply(r);
        }
        // What this scrape shows is on disk before it is answered, so a
        // restart cannot show less.
        if let Some(Err(e)) = src.kept.as_ref().map(|k| k.save()) {
            log::warn!("metrics: {e}");
        }
        gauge(
            &mut e,
            "scrape_ok",
            "Whether this scrape read the kernel's maps (0: see the controller's log)",
            None,
            if reading.is_ok() { 1.0 } else { 0.0 },
        )?;
        controller_series(&mut e, src)?;
        if let Ok(r) = reading.map_err(|err| log::warn!("metrics: {err}")) {
            kernel_series(&mut e, &r)?;
        }
        gauge(
            &mut e,
            "scrape_duration",
            "Time this scrape took to read the maps",
            Some(&Unit::Seconds),
            started.elapsed().as_secs_f64(),
        )
    }
}

/// What the controller counts itself (kept across restarts in the state
/// directory, when there is one).
fn controller_series(e: &mut DescriptorEncoder, src: &Source) -> Result<(), std::fmt::Error> {
    let tally = &src.tally;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    // What earlier controllers counted (kept in the state directory).
    let base = src.kept.as_ref().map(|k| &k.base);
    let base = |pick: fn(&super::kept::Saved) -> u64| base.map_or(0, pick);
    let mut m = e.encode_descriptor(
        "reloads",
        "Policy reloads by result",
        None,
        MetricType::Counter,
    )?;
    for (result, n) in [
        ("ok", base(|b| b.reloads_ok) + load(&tally.reloads_ok)),
        (
            "rejected",
            base(|b| b.reloads_rejected) + load(&tally.reloads_rejected),
        ),
        (
            "failed",
            base(|b| b.reloads_failed) + load(&tally.reloads_failed),
        ),
    ] {
        ConstCounter::new(n).encode(m.encode_family(&[("result", result)])?)?;
    }
    #[expect(clippy::cast_precision_loss, reason = "unix seconds fit an f64")]
    gauge(
        e,
        "policy_loaded_timestamp",
        "When this controller last put a policy in force (unix time)",
        Some(&Unit::Seconds),
        load(&tally.loaded_at) as f64,
    )?;
    let update_dir = src
        .policy
        .as_ref()
        .and_then(|p| p.borrow().update_dir.clone());
    if let Some(status) = update_dir.as_deref().and_then(crate::update::status::read) {
        update_series(e, &status)?;
    }
    let inputs = tally.inputs.read().map(|i| i.clone()).unwrap_or_default();
    if let Some(t) = newest_mtime(&inputs) {
        gauge(
            e,
            "policy_inputs_modified_timestamp",
            "Newest modification time of the live policy's files (unix time)",
            Some(&Unit::Seconds),
            t,
        )?;
    }
    counter(
        e,
        "events_queue_dropped",
        "Events dropped from the controller's full queue (--queue)",
        base(|b| b.queue_dropped) + load(&tally.queue_dropped),
    )?;
    counter(
        e,
        "events_not_written",
        "Events the controller's output could not take",
        base(|b| b.not_written) + load(&tally.not_written),
    )?;
    // Always served (0 without history), so a restart with --no-history
    // does not make the series vanish.
    counter(
        e,
        "history_events_not_written",
        "Events the history could not record (full queue, missed, failed commits: a full disk)",
        base(|b| b.history_not_written) + src.history.as_ref().map_or(0, |h| h.stats().not_written),
    )?;
    if let Some(hosts) = &src.hosts {
        let d = hosts.stats();
        counter(
            e,
            "dns_answers_decoded",
            "DNS answers decoded into names",
            base(|b| b.dns_answers) + d.answers,
        )?;
        #[expect(clippy::cast_precision_loss, reason = "cache sizes fit an f64")]
        gauge(
            e,
            "dns_names_cached",
            "(device, address) pairs in the name cache",
            None,
            d.cached as f64,
        )?;
    }
    Ok(())
}

/// The kernel's global counters served as metrics: name, help, slot.
const KERNEL_COUNTERS: &[(&str, &str, Counter)] = &[
    (
        "events_reported",
        "Events the kernel put in its ring",
        Counter::EventsSent,
    ),
    (
        "events_suppressed",
        "Events not reported for the per-(device, region) rate limit",
        Counter::EventsSuppressed,
    ),
    (
        "events_lost",
        "Events lost because the kernel's ring was full",
        Counter::EventsLost,
    ),
    ("frames", "Frames the XDP program saw", Counter::Frames),
    (
        "candidate_lost",
        "Disagreements with the staged candidate not counted: its counter map was full",
        Counter::CandidateLost,
    ),
    (
        "candidate_events_reported",
        "Events of the staged candidate put in their own ring",
        Counter::CandidateEventsSent,
    ),
    (
        "candidate_events_suppressed",
        "Events of the staged candidate not reported for its own rate limit",
        Counter::CandidateEventsSuppressed,
    ),
    (
        "candidate_events_lost",
        "Events of the staged candidate lost because their ring was full",
        Counter::CandidateEventsLost,
    ),
    (
        "rejects_sent",
        "TCP resets and ICMP errors sent for reject rules",
        Counter::RejectsSent,
    ),
];

/// What the kernel counts, read from the pinned maps.
fn kernel_series(e: &mut DescriptorEncoder, r: &Reading) -> Result<(), std::fmt::Error> {
    let mut by_verdict = r.by_verdict.clone();
    for v in Verdict::ALL {
        by_verdict.entry(v.as_str()).or_default();
    }
    traffic(e, "", "by verdict, all devices", &by_verdict, |v| {
        vec![("verdict", (*v).to_string())]
    })?;
    traffic(
        e,
        "region",
        "by device, region and verdict",
        &r.by_region,
        |(d, g, v)| {
            vec![
                ("device", d.clone()),
                ("region", g.clone()),
                ("verdict", (*v).to_string()),
            ]
        },
    )?;
    traffic(
        e,
        "country",
        "by device, destination country and verdict",
        &r.by_country,
        |(d, c, v)| {
            vec![
                ("device", d.clone()),
                ("country", c.clone()),
                ("verdict", (*v).to_string()),
            ]
        },
    )?;
    for &(name, help, k) in KERNEL_COUNTERS {
        counter(e, name, help, r.counters[k as usize])?;
    }
    if let Some((copied, lost)) = r.dns_copied {
        counter(
            e,
            "dns_answers_copied",
            "DNS answers the TC egress program copied to the controller",
            copied,
        )?;
        counter(
            e,
            "dns_answers_lost",
            "DNS answers not copied: the DNS ring was full",
            lost,
        )?;
    }
    if let Some(candidate) = &r.candidate {
        super::scrape_candidate::encode(e, candidate)?;
    }
    gauge(
        e,
        "policy_epoch",
        "Epoch of the live policy",
        None,
        f64::from(r.epoch),
    )?;
    state_series(e, r)
}

/// Attachment per hook and map fill.
fn state_series(e: &mut DescriptorEncoder, r: &Reading) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(
        "attached",
        "Whether the program is attached to the interface, per hook",
        None,
        MetricType::Gauge,
    )?;
    for (hook, on) in [("xdp", r.xdp_attached), ("tc_egress", r.tc_attached)] {
        ConstGauge::new(i64::from(on)).encode(m.encode_family(&[("hook", hook)])?)?;
    }
    if let Some((entries, capacity)) = r.destinations {
        #[expect(clippy::cast_precision_loss, reason = "map sizes fit an f64")]
        let (entries, capacity) = (entries as f64, capacity as f64);
        let mut m = e.encode_descriptor(
            "map_entries",
            "Entries in a kernel map",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(entries).encode(m.encode_family(&[("map", "destinations")])?)?;
        let mut m = e.encode_descriptor(
            "map_capacity",
            "Entries a kernel map has room for",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(capacity).encode(m.encode_family(&[("map", "destinations")])?)?;
    }
    Ok(())
}
