//! The staged candidate's series for `/metrics`: whether one is staged and its disagreements per (device, live verdict, candidate verdict), read from the pinned maps.

use aya::maps::{Array, Map, PerCpuHashMap};
use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, gauge::ConstGauge},
};
use regionwall_common::{CandidateKey, CandidateMeta, TrafficCounter};

use super::reading::{CandidateReading, Count};
use crate::{pin::PinDir, verdict::Verdict};

/// Reads the staged candidate from the pins; `device` labels a live
/// device index (named or `other`, capped like the other series).
/// `None` when the maps cannot be read (pins of an older build).
pub fn read(pins: &PinDir, device: &dyn Fn(u32) -> String) -> Option<CandidateReading> {
    let meta = Map::Array(pins.open_map("CANDIDATE_META").ok()?);
    let meta: Array<_, CandidateMeta> = Array::try_from(&meta).ok()?;
    let mut r = CandidateReading {
        staged: meta.get(&0, 0).ok()?.staged != 0,
        ..CandidateReading::default()
    };
    let traffic = Map::PerCpuHashMap(pins.open_map("CANDIDATE_TRAFFIC").ok()?);
    let traffic: PerCpuHashMap<_, CandidateKey, TrafficCounter> =
        PerCpuHashMap::try_from(&traffic).ok()?;
    for (key, values) in traffic.iter().flatten() {
        let (Some(live), Some(candidate)) = (
            Verdict::from_kernel(u32::from(key.live)),
            Verdict::from_kernel(u32::from(key.candidate)),
        ) else {
            continue;
        };
        let c = values.iter().fold(Count::default(), |mut c, v| {
            c += Count {
                packets: v.packets,
                bytes: v.bytes,
            };
            c
        });
        if c.packets > 0 {
            *r.disagreements
                .entry((
                    device(u32::from(key.device)),
                    live.as_str(),
                    candidate.as_str(),
                ))
                .or_default() += c;
        }
    }
    Some(r)
}

/// `candidate_staged` and the disagreement counters.
pub fn encode(e: &mut DescriptorEncoder, r: &CandidateReading) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(i64::from(r.staged));
    g.encode(e.encode_descriptor(
        "candidate_staged",
        "Whether a candidate policy is staged (`regionwall stage`)",
        None,
        MetricType::Gauge,
    )?)?;
    super::reading::traffic(
        e,
        "candidate",
        "where the staged candidate would decide otherwise than the live policy, by device, live verdict and candidate verdict (since staging)",
        &r.disagreements,
        |(d, live, candidate)| {
            vec![
                ("device", d.clone()),
                ("live", (*live).to_string()),
                ("candidate", (*candidate).to_string()),
            ]
        },
    )
}
