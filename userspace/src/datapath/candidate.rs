//! The staged candidate policy in the kernel: its decision tables (one per
//! generation, indexed like that generation's), the switch in
//! `CONTROL.flags`, its disagreement counters and its record in
//! `CANDIDATE_META`.

use std::time::Duration;

use aya::maps::{Array, MapData, PerCpuHashMap};
use regionwall_common::{
    Bucket, CONTROL_CANDIDATE, CONTROL_CANDIDATE_GEN1, CandidateKey, CandidateMeta, Decision,
    TrafficCounter, rate_slots,
};

use super::{Datapath, DatapathError};
use crate::{layout::TableSet, readings::map_err};

/// How long in-flight packets may still read the candidate's table after
/// its switch was turned off, before the table or its counters change.
pub const STAGE_GRACE: Duration = Duration::from_millis(20);

/// Packets and bytes of one disagreement, summed over the CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CandidateRow {
    pub key: CandidateKey,
    pub packets: u64,
    pub bytes: u64,
}

const FLAGS: u32 = CONTROL_CANDIDATE | CONTROL_CANDIDATE_GEN1;

/// Turns the candidate on for `control`'s live generation (not written).
pub(super) const fn arm(control: &mut regionwall_common::Control) {
    control.flags |= CONTROL_CANDIDATE;
    if control.active & 1 == 1 {
        control.flags |= CONTROL_CANDIDATE_GEN1;
    } else {
        control.flags &= !CONTROL_CANDIDATE_GEN1;
    }
}

/// Turns the candidate off in `control` (not written).
pub(super) const fn disarm(control: &mut regionwall_common::Control) {
    control.flags &= !FLAGS;
}

impl Datapath {
    /// Stages `decisions` (indexed like the live generation's table) as the
    /// candidate: the switch off, the table written, `meta` recorded, the
    /// switch on for the live generation. With `fresh`, its counters and
    /// event buckets start from zero; without (a re-stage after a reload
    /// or a restart), they go on.
    pub fn stage_candidate(
        &mut self,
        decisions: &[Decision],
        meta: &CandidateMeta,
        fresh: bool,
    ) -> Result<(), DatapathError> {
        if fresh {
            // Unpinned first: a controller killed in the middle leaves no
            // candidate to adopt with half-cleared counts.
            self.write_candidate_meta(&CandidateMeta::default())?;
        }
        self.pause_candidate()?;
        if fresh {
            self.clear_candidate_counts()?;
        }
        self.fill_array(
            TableSet::of(self.control.active).candidate_decisions,
            decisions,
        )?;
        self.write_candidate_meta(meta)?;
        let previous = self.control;
        arm(&mut self.control);
        if let Err(e) = self.write_control() {
            self.control = previous;
            return Err(e);
        }
        Ok(())
    }

    /// Stops evaluating the candidate (its table, counts and record stay)
    /// and waits until no packet can still read it.
    pub fn pause_candidate(&mut self) -> Result<(), DatapathError> {
        if self.control.flags & FLAGS == 0 {
            return Ok(());
        }
        disarm(&mut self.control);
        self.write_control()?;
        std::thread::sleep(STAGE_GRACE);
        Ok(())
    }

    /// Drops the candidate: record cleared (first: a controller killed in
    /// the middle leaves none to adopt), evaluation off, counts zeroed.
    pub fn discard_candidate(&mut self) -> Result<(), DatapathError> {
        self.write_candidate_meta(&CandidateMeta::default())?;
        self.pause_candidate()?;
        self.clear_candidate_counts()
    }

    /// Whether the kernel evaluates a candidate now.
    #[must_use]
    pub const fn candidate_evaluated(&self) -> bool {
        regionwall_common::candidate_live(&self.control)
    }

    /// The record of the staged candidate (`staged == 0`: none).
    pub fn candidate_meta(&self) -> Result<CandidateMeta, DatapathError> {
        let meta: Array<&MapData, CandidateMeta> =
            Array::try_from(self.map("CANDIDATE_META")?).map_err(map_err("CANDIDATE_META"))?;
        Ok(meta.get(&0, 0).map_err(map_err("CANDIDATE_META"))?)
    }

    fn write_candidate_meta(&mut self, meta: &CandidateMeta) -> Result<(), DatapathError> {
        let mut array: Array<&mut MapData, CandidateMeta> =
            Array::try_from(self.map_mut("CANDIDATE_META")?).map_err(map_err("CANDIDATE_META"))?;
        Ok(array.set(0, meta, 0).map_err(map_err("CANDIDATE_META"))?)
    }

    /// Every disagreement counted since staging, summed over the CPUs.
    pub fn candidate_rows(&self) -> Result<Vec<CandidateRow>, DatapathError> {
        let map: PerCpuHashMap<&MapData, CandidateKey, TrafficCounter> =
            PerCpuHashMap::try_from(self.map("CANDIDATE_TRAFFIC")?)
                .map_err(map_err("CANDIDATE_TRAFFIC"))?;
        let mut rows = Vec::new();
        for entry in &map {
            let (key, values) = entry.map_err(map_err("CANDIDATE_TRAFFIC"))?;
            let (packets, bytes) = values
                .iter()
                .fold((0, 0), |(p, b), v| (p + v.packets, b + v.bytes));
            if packets > 0 {
                rows.push(CandidateRow {
                    key,
                    packets,
                    bytes,
                });
            }
        }
        rows.sort_unstable_by_key(|r| {
            let k = r.key;
            (k.device, k.region, k.country, k.rule, k.live, k.candidate)
        });
        Ok(rows)
    }

    /// Empties the disagreement counters and zeroes the candidate's event
    /// buckets (evaluation must be off).
    fn clear_candidate_counts(&mut self) -> Result<(), DatapathError> {
        {
            let name = "CANDIDATE_TRAFFIC";
            let mut map: PerCpuHashMap<&mut MapData, CandidateKey, TrafficCounter> =
                PerCpuHashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
            let keys: Vec<CandidateKey> = map
                .keys()
                .collect::<Result<_, _>>()
                .map_err(map_err(name))?;
            for k in keys {
                map.remove(&k).map_err(map_err(name))?;
            }
        }
        let slots: Vec<u32> = (0..rate_slots(self.control.region_stride)).collect();
        self.zero_per_cpu::<Bucket>("CANDIDATE_RATE_LIMIT", &slots)
    }
}
