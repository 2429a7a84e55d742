//! What one `/metrics` scrape read, named: packets and bytes per labelled row (the candidate's too), and how a family of rows is encoded. Shared by the scrape, its candidate part and the carry.

use std::collections::BTreeMap;

use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter},
};

/// The device label everything unnamed or over the cap is summed under.
pub const OTHER: &str = "other";

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

impl std::ops::AddAssign for Count {
    fn add_assign(&mut self, o: Self) {
        self.packets += o.packets;
        self.bytes += o.bytes;
    }
}

/// One scrape's readings, labels already chosen and escaped.
#[derive(Clone, Debug, Default)]
pub struct Reading {
    pub by_verdict: BTreeMap<&'static str, Count>,
    /// (device, region, verdict)
    pub by_region: BTreeMap<(String, String, &'static str), Count>,
    /// (device, country, verdict)
    pub by_country: BTreeMap<(String, String, &'static str), Count>,
    pub counters: [u64; regionwall_common::COUNTERS as usize],
    pub dns_copied: Option<(u64, u64)>,
    pub epoch: u32,
    pub destinations: Option<(u64, u64)>,
    pub xdp_attached: bool,
    pub tc_attached: bool,
    /// The label of each live device index (capped, as in `by_region`).
    pub device_labels: Vec<String>,
    /// The staged candidate (`None`: its maps could not be read).
    pub candidate: Option<CandidateReading>,
}

/// The candidate as a scrape sees it.
#[derive(Clone, Debug, Default)]
pub struct CandidateReading {
    pub staged: bool,
    /// (device, live verdict, candidate verdict): packets and bytes.
    pub disagreements: BTreeMap<(String, &'static str, &'static str), Count>,
}

/// One counter family of packets and one of bytes over `rows`.
pub fn traffic<K>(
    e: &mut DescriptorEncoder,
    name: &str,
    what: &str,
    rows: &BTreeMap<K, Count>,
    labels: impl Fn(&K) -> Vec<(&'static str, String)>,
) -> Result<(), std::fmt::Error> {
    for (unit, pick) in [
        ("packets", (|c: &Count| c.packets) as fn(&Count) -> u64),
        ("bytes", |c: &Count| c.bytes),
    ] {
        let full = if name.is_empty() {
            unit.to_string()
        } else {
            format!("{name}_{unit}")
        };
        let mut m = e.encode_descriptor(
            &full,
            &format!(
                "{} {what}",
                if unit == "packets" {
                    "Packets"
                } else {
                    "Bytes (whole frames as XDP sees them)"
                }
            ),
            None,
            MetricType::Counter,
        )?;
        for (k, c) in rows {
            let l = labels(k);
            ConstCounter::new(pick(c)).encode(m.encode_family(&l)?)?;
        }
    }
    Ok(())
}
