//! Reading the counters, the live policy's facts and the slot names from
//! the program's maps: the same code for a loaded
//! [`crate::datapath::Datapath`] and for pinned maps
//! ([`crate::pin::PinnedMaps`]) when no controller runs. Per-CPU counter
//! arrays are read in bulk ([`bulk`]), one place for the snapshot,
//! `/metrics`, the dashboard and the history's rollups.

pub mod bulk;

use std::net::IpAddr;

use aya::{
    Pod,
    maps::{Array, Map, MapData, PerCpuArray, PerCpuHashMap},
};
use regionwall_common::{
    Bucket, COUNTERS, COUNTRY_STRIDE, Control, DestCounter, DestKey, GENERATIONS, MAX_DEVICES,
    PolicyMeta, SlotName, TrafficCounter, VERDICTS, country_slot, names_slots, rate_slot,
    traffic_slot,
};

use crate::{slots::SlotTable, verdict::Verdict};

/// A map could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("map {0} is not there (not in the object, or not pinned)")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

pub(crate) fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> ReadError {
    move |source| ReadError::Map { name, source }
}

/// One traffic counter slot with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrafficRow {
    pub device: u32,
    pub region: u32,
    pub verdict: Verdict,
    pub counter: TrafficCounter,
}

/// Traffic of one device to one destination address, summed over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestRow {
    pub device: u32,
    pub mac: [u8; 6],
    pub addr: IpAddr,
    pub counter: DestCounter,
}

/// The TC egress DNS copier's counters, summed over CPUs (see
/// [`regionwall_common::dns::DnsCounter`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsCounts {
    /// Answers copied into `DNS_RING`.
    pub copied: u64,
    /// Answers not copied: the ring was full.
    pub lost: u64,
    /// Answers copied only in part (longer than `DNS_COPY_BYTES`); also
    /// counted in `copied`.
    pub clipped: u64,
}

/// Reading the counters and the live policy's facts, from a loaded
/// [`Datapath`] or from pinned maps ([`crate::pin::PinnedMaps`]).
pub trait Readings {
    /// A map by name.
    fn map_named(&self, name: &'static str) -> Result<&Map, ReadError>;

    /// Calls `each(index, per-CPU values)` for the entries `0..n` of the
    /// per-CPU array `name`, in index order ([`bulk::per_cpu`]: batch
    /// lookups).
    fn per_cpu_entries<V: Pod>(
        &self,
        name: &'static str,
        n: u32,
        each: &mut dyn FnMut(u32, &[V]),
    ) -> Result<(), ReadError> {
        bulk::per_cpu(self.map_named(name)?, name, n, each)
    }

    /// The control record.
    fn control(&self) -> Result<Control, ReadError> {
        let control: Array<&MapData, Control> =
            Array::try_from(self.map_named("CONTROL")?).map_err(map_err("CONTROL"))?;
        control.get(&0, 0).map_err(map_err("CONTROL"))
    }

    /// The live generation's metadata.
    fn live_meta(&self) -> Result<PolicyMeta, ReadError> {
        let active = self.control()?.active;
        let metas: Array<&MapData, PolicyMeta> =
            Array::try_from(self.map_named("POLICY_META")?).map_err(map_err("POLICY_META"))?;
        metas
            .get(&(active % GENERATIONS), 0)
            .map_err(map_err("POLICY_META"))
    }

    /// The slot table in `NAMES`: which name owns each device index and
    /// region id (empty when only [`Datapath::publish`] was used).
    fn read_slots(&self) -> Result<SlotTable, ReadError> {
        let names: Array<&MapData, SlotName> =
            Array::try_from(self.map_named("NAMES")?).map_err(map_err("NAMES"))?;
        let entries = names_slots(self.control()?.region_stride).min(names.len());
        let records = (0..entries)
            .map(|i| names.get(&i, 0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err("NAMES"))?;
        Ok(SlotTable::from_records(&records))
    }

    /// Global counters summed over CPUs, indexed by `Counter as usize`.
    fn counters(&self) -> Result<[u64; COUNTERS as usize], ReadError> {
        let mut out = [0u64; COUNTERS as usize];
        self.per_cpu_entries("COUNTERS_MAP", COUNTERS, &mut |i, values: &[u64]| {
            if let Some(slot) = out.get_mut(usize::try_from(i).unwrap_or(usize::MAX)) {
                *slot = values.iter().sum();
            }
        })?;
        Ok(out)
    }

    /// The DNS copier's counters, summed over CPUs.
    fn dns_counts(&self) -> Result<DnsCounts, ReadError> {
        use regionwall_common::dns::DnsCounter;
        const NAME: &str = "DNS_COUNTERS";
        let arr: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.map_named(NAME)?).map_err(map_err(NAME))?;
        let read = |c: DnsCounter| -> Result<u64, ReadError> {
            Ok(arr.get(&(c as u32), 0).map_err(map_err(NAME))?.iter().sum())
        };
        Ok(DnsCounts {
            copied: read(DnsCounter::Copied)?,
            lost: read(DnsCounter::Lost)?,
            clipped: read(DnsCounter::Clipped)?,
        })
    }

    /// Every (device, region, verdict) slot with traffic, summed over CPUs.
    fn traffic(&self, devices: u32) -> Result<Vec<TrafficRow>, ReadError> {
        let stride = self.control()?.region_stride;
        self.traffic_rows("TRAFFIC", devices, stride, |d, r, v| {
            traffic_slot(d, r, v, stride)
        })
    }

    /// Every (device, country, verdict) slot with traffic, summed over
    /// CPUs (`region` holds the country id).
    fn country_traffic(&self, devices: u32) -> Result<Vec<TrafficRow>, ReadError> {
        self.traffic_rows("COUNTRY_TRAFFIC", devices, COUNTRY_STRIDE, country_slot)
    }

    /// The rows of a (device, key, verdict) counter map with traffic: the
    /// first `devices` devices' slots, a prefix of the map (`slot` is
    /// device-major), read in bulk.
    fn traffic_rows(
        &self,
        name: &'static str,
        devices: u32,
        keys: u32,
        slot: impl Fn(u32, u32, u32) -> u32,
    ) -> Result<Vec<TrafficRow>, ReadError> {
        let devices = devices.min(MAX_DEVICES);
        if devices == 0 || keys == 0 {
            return Ok(Vec::new());
        }
        // Both maps lay their slots out device-major, verdict fastest
        // (`traffic_slot`, `country_slot`): the index says whose it is.
        let owner = |i: u32| {
            let (device, region) = (i / VERDICTS / keys, i / VERDICTS % keys);
            let verdict = Verdict::from_kernel(i % VERDICTS)?;
            (slot(device, region, verdict.kernel()) == i).then_some((device, region, verdict))
        };
        let end = devices * keys * VERDICTS;
        let mut out = Vec::new();
        self.per_cpu_entries(name, end, &mut |i, values: &[TrafficCounter]| {
            let counter = values
                .iter()
                .fold(TrafficCounter::default(), |a, c| TrafficCounter {
                    packets: a.packets + c.packets,
                    bytes: a.bytes + c.bytes,
                });
            if counter.packets > 0
                && let Some((device, region, verdict)) = owner(i)
            {
                out.push(TrafficRow {
                    device,
                    region,
                    verdict,
                    counter,
                });
            }
        })?;
        Ok(out)
    }

    /// Every (device, destination) the kernel keeps (see `DESTINATIONS`).
    fn destinations(&self) -> Result<Vec<DestRow>, ReadError> {
        let map: PerCpuHashMap<&MapData, DestKey, DestCounter> =
            PerCpuHashMap::try_from(self.map_named("DESTINATIONS")?)
                .map_err(map_err("DESTINATIONS"))?;
        let mut out = Vec::new();
        // Entries may be evicted while we walk: a key gone by the time it
        // is read is skipped.
        for item in &map {
            let Ok((key, values)) = item else { continue };
            let addr = match key.family {
                4 => IpAddr::from([key.addr[0], key.addr[1], key.addr[2], key.addr[3]]),
                6 => IpAddr::from(key.addr),
                _ => continue,
            };
            let counter = values
                .iter()
                .fold(DestCounter::default(), |a, c| DestCounter {
                    passed_packets: a.passed_packets + c.passed_packets,
                    passed_bytes: a.passed_bytes + c.passed_bytes,
                    blocked_packets: a.blocked_packets + c.blocked_packets,
                    blocked_bytes: a.blocked_bytes + c.blocked_bytes,
                });
            out.push(DestRow {
                device: u32::from(key.device),
                mac: key.mac,
                addr,
                counter,
            });
        }
        Ok(out)
    }

    /// Events each (device, region) did not send for its rate limit,
    /// summed over CPUs; only slots with suppressed events.
    fn suppressed(&self, devices: u32) -> Result<Vec<(u32, u32, u64)>, ReadError> {
        let stride = self.control()?.region_stride;
        let devices = devices.min(MAX_DEVICES);
        let mut out = Vec::new();
        self.per_cpu_entries(
            "RATE_LIMIT",
            devices * stride,
            &mut |i, values: &[Bucket]| {
                let n: u64 = values.iter().map(|b| b.suppressed).sum();
                if n > 0 && stride > 0 {
                    debug_assert_eq!(rate_slot(i / stride, i % stride, stride), i);
                    out.push((i / stride, i % stride, n));
                }
            },
        )?;
        Ok(out)
    }
}

/// Readings through `R`, every per-CPU array read one key per syscall
/// ([`bulk::per_key`]): what every reading did before batch lookups, kept
/// as the baseline the benchmark and the tests compare with.
pub struct PerKey<'a, R>(pub &'a R);

impl<R: Readings> Readings for PerKey<'_, R> {
    fn map_named(&self, name: &'static str) -> Result<&Map, ReadError> {
        self.0.map_named(name)
    }

    fn per_cpu_entries<V: Pod>(
        &self,
        name: &'static str,
        n: u32,
        each: &mut dyn FnMut(u32, &[V]),
    ) -> Result<(), ReadError> {
        bulk::per_key(self.map_named(name)?, name, n, each)
    }
}
