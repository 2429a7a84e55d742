//! Publishing a compiled policy: the inactive table set is written whole,
//! then flipped live with one update of `CONTROL`; the previous set is
//! cleared after a grace period. Stable counter slots are claimed and
//! named around the flip.

use std::{
    os::fd::AsFd as _,
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, lpm_trie::Key};
use regionwall_common::{
    Bucket, COUNTRY_STRIDE, DEVICE_BY_MAC, DEVICE_BY_V4, DEVICE_BY_V6, GENERATIONS, MAX_DEVICES,
    MacKey, PolicyMeta, TrafficCounter, VERDICTS, country_slot, names_slots, rate_slot,
    traffic_slot,
};

use super::{Datapath, DatapathError, PublishReport};
use crate::{
    compile::Compiled,
    fib::Fib,
    layout::TableSet,
    readings::{ReadError, Readings as _, map_err},
    slots::{Slot, SlotTable, Stable, stabilize},
    sys,
};

/// How long in-flight packets may still use the previous table set after
/// the flip before it is cleared. XDP runs to completion in microseconds.
const GRACE: Duration = Duration::from_millis(20);

impl Datapath {
    /// Writes `compiled` into the inactive table set, flips it live with one
    /// map update, then clears the previous set. Until the flip, packets see
    /// the previous policy in full; after it, the new one in full. On error
    /// before the flip the previous policy stays live untouched.
    pub fn publish(
        &mut self,
        compiled: &Compiled,
        epoch: u32,
    ) -> Result<PublishReport, DatapathError> {
        self.publish_with(compiled, None, epoch, None)
    }

    /// Publishes `compiled` with every device and region name on the
    /// counter index it had before (see [`crate::slots`]): the one call for
    /// a controller on start (fresh, adopted or replaced maps) and on every
    /// reload. Returns the renumbered policy, which names the indices in
    /// this epoch's events. `fib` may be built from `compiled` before
    /// renumbering (class ids do not change). On error the previous policy
    /// stays live and every count keeps its name.
    ///
    /// Order, and why:
    /// 1. Read the slot table from `NAMES` and renumber against it. A new
    ///    name only takes an index that no generation counts into: never
    ///    used, or retired before the previous publish (its `live` mark
    ///    was cleared only after that publish's grace period). A name the
    ///    live generation still counts under is never renamed here.
    /// 2. Zero the counters of the claimed indices. Nothing counts into
    ///    them now, so no count is lost or moved.
    /// 3. Write `NAMES` with the new names, names retired by this reload
    ///    still marked live: a reader sees the new names with zero counts,
    ///    and the old names with their counts, both true.
    /// 4. Publish and flip; the previous generation may count under the
    ///    retired names during the grace period, and they still own their
    ///    indices.
    /// 5. After the grace period, mark the retired names not live, so a
    ///    later reload may hand their indices on. A crash between the
    ///    steps leaves names marked live that are not: conservative.
    pub fn publish_stable(
        &mut self,
        compiled: Compiled,
        fib: Option<&Fib>,
        epoch: u32,
    ) -> Result<(Compiled, PublishReport), DatapathError> {
        self.publish_stable_with(compiled, fib, epoch, |_| None)
    }

    /// [`Self::publish_stable`] with a staged candidate. `candidate`:
    /// given the renumbered policy, the candidate's decisions in its index
    /// space (`None`: no candidate, or one that does not apply to this
    /// policy), written beside the new table set and armed by the same
    /// flip, so the candidate counts every packet across the publish.
    pub fn publish_stable_with(
        &mut self,
        compiled: Compiled,
        fib: Option<&Fib>,
        epoch: u32,
        candidate: impl FnOnce(&Compiled) -> Option<Vec<regionwall_common::Decision>>,
    ) -> Result<(Compiled, PublishReport), DatapathError> {
        let previous = self.read_slots()?;
        let Stable {
            compiled,
            slots,
            before_flip,
            claimed,
            retired: _,
        } = stabilize(compiled, &previous, self.region_room())?;
        self.clear_counters(&claimed)?;
        if before_flip != previous {
            self.write_slots(&before_flip)?;
        }
        let candidate = candidate(&compiled);
        // publish_with sleeps the grace period after the flip.
        let report = self.publish_with(&compiled, fib, epoch, candidate.as_deref())?;
        if slots != before_flip {
            self.write_slots(&slots)?;
        }
        Ok((compiled, report))
    }

    /// Writes the slot table into `NAMES` (every entry).
    pub fn write_slots(&mut self, slots: &SlotTable) -> Result<(), DatapathError> {
        let entries = names_slots(self.control.region_stride) as usize;
        self.fill_array("NAMES", &slots.records(entries))
    }

    /// Zeroes, on every CPU, the traffic counters (all verdicts) and the
    /// event rate-limit buckets (with their suppressed counts) of the given
    /// device indices, region ids and country ids, whatever the region,
    /// country or device.
    pub fn clear_counters(&mut self, slots: &[Slot]) -> Result<(), DatapathError> {
        let stride = self.control.region_stride;
        let mut pairs = Vec::new();
        let mut country_pairs = Vec::new();
        for slot in slots {
            match *slot {
                Slot::Device(d) if d < MAX_DEVICES => {
                    pairs.extend((0..stride).map(|r| (d, r)));
                    country_pairs.extend((0..COUNTRY_STRIDE).map(|c| (d, c)));
                }
                Slot::Region(r) if (1..stride).contains(&r) => {
                    pairs.extend((0..MAX_DEVICES).map(|d| (d, r)));
                }
                Slot::Country(c) if (1..COUNTRY_STRIDE).contains(&c) => {
                    country_pairs.extend((0..MAX_DEVICES).map(|d| (d, c)));
                }
                _ => {}
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        country_pairs.sort_unstable();
        country_pairs.dedup();
        let traffic: Vec<u32> = pairs
            .iter()
            .flat_map(|&(d, r)| (0..VERDICTS).map(move |v| traffic_slot(d, r, v, stride)))
            .collect();
        let countries: Vec<u32> = country_pairs
            .iter()
            .flat_map(|&(d, c)| (0..VERDICTS).map(move |v| country_slot(d, c, v)))
            .collect();
        let rate: Vec<u32> = pairs
            .iter()
            .map(|&(d, r)| rate_slot(d, r, stride))
            .collect();
        self.zero_per_cpu::<TrafficCounter>("TRAFFIC", &traffic)?;
        self.zero_per_cpu::<TrafficCounter>("COUNTRY_TRAFFIC", &countries)?;
        self.zero_per_cpu::<Bucket>("RATE_LIMIT", &rate)
    }

    /// Zeroes entries of a per-CPU array on every CPU: batch updates,
    /// then one by one from wherever a batch stops.
    pub(super) fn zero_per_cpu<V: aya::Pod + Default>(
        &mut self,
        name: &'static str,
        keys: &[u32],
    ) -> Result<(), DatapathError> {
        const CHUNK: usize = 4096;
        if keys.is_empty() {
            return Ok(());
        }
        let io_err = |call: &'static str| {
            move |io_error| {
                DatapathError::from(ReadError::Map {
                    name,
                    source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                        call,
                        io_error,
                    }),
                })
            }
        };
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| io_err("nr_cpus")(e))?;
        let cpus = usize::try_from(cpus.get()).unwrap_or(1);
        // The kernel's per-CPU value: each CPU's value padded to 8 bytes.
        let per_value = std::mem::size_of::<V>().next_multiple_of(8) * cpus;
        let map = self.map_mut(name)?;
        let Map::PerCpuArray(data) = &*map else {
            return Err(DatapathError::WrongMapType {
                name,
                expected: "PerCpuArray",
            });
        };
        let zeros = vec![0u8; CHUNK * per_value];
        let mut done = 0;
        let mut failed = false;
        while done < keys.len() {
            let n = CHUNK.min(keys.len() - done);
            // SAFETY: u32 is plain data.
            let key_bytes =
                unsafe { std::slice::from_raw_parts(keys[done..].as_ptr().cast::<u8>(), n * 4) };
            match sys::update_batch(data.fd().as_fd(), key_bytes, &zeros[..n * per_value], n) {
                Ok(()) => done += n,
                Err((processed, err)) => {
                    log::debug!("{name}: zeroing batch stopped after {processed} of {n}: {err}");
                    done += processed;
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            let mut array: PerCpuArray<&mut MapData, V> =
                PerCpuArray::try_from(&mut *map).map_err(map_err(name))?;
            for &k in &keys[done..] {
                let values = aya::maps::PerCpuValues::try_from(vec![V::default(); cpus])
                    .map_err(io_err("per-CPU values"))?;
                array.set(k, values, 0).map_err(map_err(name))?;
            }
        }
        Ok(())
    }

    /// [`Self::publish`] with the compiled lookup already built from
    /// `compiled` (the controller sizes the maps from it before loading),
    /// and with `candidate`, a staged candidate's decisions indexed like
    /// `compiled`'s, armed by the flip (else the flip turns it off).
    pub fn publish_with(
        &mut self,
        compiled: &Compiled,
        fib: Option<&Fib>,
        epoch: u32,
        candidate: Option<&[regionwall_common::Decision]>,
    ) -> Result<PublishReport, DatapathError> {
        let next = (self.control.active + 1) % GENERATIONS;
        let start = Instant::now();
        self.clear_generation(next)?;
        let mut report = PublishReport {
            generation: next,
            epoch,
            ..PublishReport::default()
        };

        self.write_regions(next, compiled, fib, &mut report)?;
        self.fill_prefixes(TableSet::of(next).device_v4, &compiled.device_v4, |p| {
            Key::new(u32::from(p.len), p.octets())
        })?;
        self.fill_prefixes(TableSet::of(next).device_v6, &compiled.device_v6, |p| {
            Key::new(u32::from(p.len), p.octets())
        })?;
        {
            let name = TableSet::of(next).device_mac;
            let mut macs: HashMap<&mut MapData, MacKey, u32> =
                HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
            for (mac, dev) in &compiled.device_macs {
                macs.insert(&MacKey::new(*mac), dev, 0)
                    .map_err(map_err(name))?;
            }
        }
        self.fill_array(TableSet::of(next).decisions, &compiled.decisions)?;
        if !compiled.port_classes.is_empty() {
            self.fill_array(TableSet::of(next).port_class, &compiled.port_classes)?;
        }
        if let Some(decisions) = candidate {
            self.fill_array(TableSet::of(next).candidate_decisions, decisions)?;
        }
        let meta = policy_meta(compiled, epoch);
        let mut metas: Array<&mut MapData, PolicyMeta> =
            Array::try_from(self.map_mut("POLICY_META")?).map_err(map_err("POLICY_META"))?;
        metas.set(next, &meta, 0).map_err(map_err("POLICY_META"))?;
        // The flip: one array update of the control record, which also
        // turns country counting on or off with the policy.
        let previous = self.control;
        self.control.active = next;
        // The candidate's table for the new set was written above, and is
        // armed with the same write; without one (none staged, or the live
        // policy changed since staging) it stops being evaluated here.
        if candidate.is_some() {
            super::candidate::arm(&mut self.control);
        } else {
            super::candidate::disarm(&mut self.control);
        }
        if compiled.country_names.is_empty() {
            self.control.flags &= !regionwall_common::CONTROL_COUNTRIES;
        } else {
            self.control.flags |= regionwall_common::CONTROL_COUNTRIES;
        }
        if let Err(e) = self.write_control() {
            self.control = previous;
            return Err(e);
        }
        self.epoch = epoch;
        report.write_time = start.elapsed();

        let clear_start = Instant::now();
        std::thread::sleep(GRACE);
        self.clear_generation(previous.active)?;
        report.clear_time = clear_start.elapsed();
        Ok(report)
    }

    /// Destination tables of generation `next`: the compiled lookup, the
    /// LPM tries, or both, as loaded.
    pub(super) fn write_regions(
        &mut self,
        next: u32,
        compiled: &Compiled,
        prebuilt: Option<&Fib>,
        report: &mut PublishReport,
    ) -> Result<(), DatapathError> {
        report.v4_prefixes = compiled.v4.len();
        report.v6_prefixes = compiled.v6.len();
        if self.options.fills_fib() {
            let build = Instant::now();
            let owned;
            let fib = if let Some(fib) = prebuilt {
                fib.fits(self.options.fib)?;
                fib
            } else {
                owned = Fib::build(&compiled.v4, &compiled.v6, self.options.fib)?;
                &owned
            };
            report.fib_build_time = build.elapsed();
            report.fib_ranges = fib.ranges.len();
            report.fib_long = fib.long.len();
            report.fib_bytes = fib.bytes();
            self.write_array(TableSet::of(next).fib_slots, &fib.slots)?;
            self.write_array(TableSet::of(next).fib_ranges, &fib.ranges)?;
            self.write_array(TableSet::of(next).fib_long, &fib.long)?;
        }
        if self.options.fills_lpm() {
            crate::compile::lpm_fits(compiled)?;
            report.single_fallbacks +=
                self.fill_prefixes(TableSet::of(next).region_v4, &compiled.v4, |p| {
                    Key::new(u32::from(p.len), p.octets())
                })?;
            report.single_fallbacks +=
                self.fill_prefixes(TableSet::of(next).region_v6, &compiled.v6, |p| {
                    Key::new(u32::from(p.len), p.octets())
                })?;
        }

        Ok(())
    }

    /// Empties the tries and the MAC table of one generation, so an idle
    /// table set costs no memory.
    pub(super) fn clear_generation(&mut self, generation: u32) -> Result<(), DatapathError> {
        // The compiled lookup's arrays are overwritten in place; the region
        // tries hold entries only when this program fills them.
        if self.options.fills_lpm() {
            self.clear_trie::<[u8; 4]>(TableSet::of(generation).region_v4)?;
            self.clear_trie::<[u8; 16]>(TableSet::of(generation).region_v6)?;
        }
        self.clear_trie::<[u8; 4]>(TableSet::of(generation).device_v4)?;
        self.clear_trie::<[u8; 16]>(TableSet::of(generation).device_v6)?;
        let name = TableSet::of(generation).device_mac;
        let mut macs: HashMap<&mut MapData, MacKey, u32> =
            HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        let keys: Vec<MacKey> = macs
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err(name))?;
        for k in keys {
            macs.remove(&k).map_err(map_err(name))?;
        }
        Ok(())
    }

    pub(super) fn verify_count<K: aya::Pod>(
        &self,
        name: &'static str,
        expected: usize,
    ) -> Result<(), DatapathError> {
        let trie: LpmTrie<&MapData, K, u32> =
            LpmTrie::try_from(self.map(name)?).map_err(map_err(name))?;
        let found = trie.keys().count();
        if found == expected {
            Ok(())
        } else {
            Err(DatapathError::CountMismatch {
                name,
                found,
                expected,
            })
        }
    }
}

/// The per-generation facts the program reads first.
fn policy_meta(compiled: &Compiled, epoch: u32) -> PolicyMeta {
    let flag = |present: bool, bit: u32| if present { bit } else { 0 };
    PolicyMeta {
        classes: u32::try_from(compiled.classes.len()).unwrap_or(u32::MAX),
        devices: u32::try_from(compiled.device_names.len()).unwrap_or(u32::MAX),
        epoch,
        port_classes: u32::try_from(compiled.port_class_count).unwrap_or(u32::MAX),
        device_tables: flag(!compiled.device_macs.is_empty(), DEVICE_BY_MAC)
            | flag(!compiled.device_v4.is_empty(), DEVICE_BY_V4)
            | flag(!compiled.device_v6.is_empty(), DEVICE_BY_V6),
        names_digest: compiled.names_digest(),
    }
}
