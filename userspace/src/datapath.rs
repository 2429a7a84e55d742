//! The loaded XDP program and its maps: publishing compiled policies into
//! the inactive table set and flipping it live, reading counters, handing
//! out the event ring buffer.

use std::{
    os::fd::AsFd,
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{Xdp, XdpMode, links::LinkError, xdp::XdpLinkId},
};
use regionwall_common::{
    COUNTERS, Control, GENERATIONS, MAX_DEVICES, MAX_REGIONS, MacKey, PolicyMeta, TrafficCounter,
    UnparsedAction, VERDICTS, traffic_slot,
};

use crate::{compile::Compiled, error::DatapathError, sys};

/// The XDP object, built from `ebpf/` by build.rs.
pub static PROGRAM_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/regionwall"));
/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "regionwall";

/// How long in-flight packets may still use the previous table set after
/// the flip before it is cleared. XDP runs to completion in microseconds.
const GRACE: Duration = Duration::from_millis(20);

/// Timings and sizes of one publish.
#[derive(Clone, Debug, Default)]
pub struct PublishReport {
    pub generation: u32,
    pub epoch: u32,
    pub v4_prefixes: usize,
    pub v6_prefixes: usize,
    /// Prefixes that went in one by one after a batch update failed.
    pub single_fallbacks: usize,
    pub write_time: Duration,
    pub clear_time: Duration,
}

/// One traffic counter slot with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrafficRow {
    pub device: u32,
    pub region: u32,
    pub verdict: u32,
    pub counter: TrafficCounter,
}

/// The loaded program and its maps.
pub struct Datapath {
    ebpf: Ebpf,
    control: Control,
    epoch: u32,
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

const fn gen_name(generation: u32, names: [&'static str; 2]) -> &'static str {
    if generation == 0 { names[0] } else { names[1] }
}

impl Datapath {
    /// Loads the XDP program into the kernel (not attached yet).
    pub fn load() -> Result<Self, DatapathError> {
        let mut ebpf = EbpfLoader::new().load(PROGRAM_OBJECT)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DatapathError::MissingMap(PROGRAM_NAME))?
            .try_into()?;
        program.load()?;
        let mut dp = Self {
            ebpf,
            control: Control::default(),
            epoch: 0,
        };
        dp.write_control()?;
        Ok(dp)
    }

    /// The loaded program, e.g. for `test_run`.
    pub fn program(&self) -> Result<&Xdp, DatapathError> {
        Ok(self
            .ebpf
            .program(PROGRAM_NAME)
            .ok_or(DatapathError::MissingMap(PROGRAM_NAME))?
            .try_into()?)
    }

    fn program_mut(&mut self) -> Result<&mut Xdp, DatapathError> {
        Ok(self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DatapathError::MissingMap(PROGRAM_NAME))?
            .try_into()?)
    }

    /// Attaches to an interface by index (in the calling thread's network
    /// namespace). Dropping the datapath detaches.
    pub fn attach(&mut self, ifindex: u32, mode: XdpMode) -> Result<XdpLinkId, DatapathError> {
        Ok(self.program_mut()?.attach(ifindex, mode)?)
    }

    /// Detaches one attachment.
    pub fn detach(&mut self, link: XdpLinkId) -> Result<(), DatapathError> {
        self.program_mut()?.detach(link)?;
        Ok(())
    }

    /// Which table set is live.
    #[must_use]
    pub const fn active_generation(&self) -> u32 {
        self.control.active
    }

    /// Epoch of the live policy (0 before the first publish).
    #[must_use]
    pub const fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Sets what happens to frames beyond the parser's limits.
    pub fn set_unparsed(&mut self, action: UnparsedAction) -> Result<(), DatapathError> {
        self.control.unparsed = action as u32;
        self.write_control()
    }

    fn write_control(&mut self) -> Result<(), DatapathError> {
        let value = self.control;
        let mut control: Array<&mut MapData, Control> =
            Array::try_from(self.map_mut("CONTROL")?).map_err(map_err("CONTROL"))?;
        control.set(0, &value, 0).map_err(map_err("CONTROL"))
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, DatapathError> {
        self.ebpf
            .map_mut(name)
            .ok_or(DatapathError::MissingMap(name))
    }

    fn map(&self, name: &'static str) -> Result<&Map, DatapathError> {
        self.ebpf.map(name).ok_or(DatapathError::MissingMap(name))
    }

    /// Writes `compiled` into the inactive table set, flips it live with one
    /// map update, then clears the previous set. Until the flip, packets see
    /// the previous policy in full; after it, the new one in full. On error
    /// before the flip the previous policy stays live untouched.
    pub fn publish(
        &mut self,
        compiled: &Compiled,
        epoch: u32,
    ) -> Result<PublishReport, DatapathError> {
        let next = (self.control.active + 1) % GENERATIONS;
        let start = Instant::now();
        self.clear_generation(next)?;
        let mut report = PublishReport {
            generation: next,
            epoch,
            ..PublishReport::default()
        };

        let v4_keys: Vec<Key<[u8; 4]>> = compiled
            .v4
            .iter()
            .map(|(p, _)| Key::new(u32::from(p.len), p.octets()))
            .collect();
        let v4_vals: Vec<u32> = compiled.v4.iter().map(|(_, c)| *c).collect();
        report.single_fallbacks += self.fill_trie(
            gen_name(next, ["REGION_V4_0", "REGION_V4_1"]),
            &v4_keys,
            &v4_vals,
        )?;
        let v6_keys: Vec<Key<[u8; 16]>> = compiled
            .v6
            .iter()
            .map(|(p, _)| Key::new(u32::from(p.len), p.octets()))
            .collect();
        let v6_vals: Vec<u32> = compiled.v6.iter().map(|(_, c)| *c).collect();
        report.single_fallbacks += self.fill_trie(
            gen_name(next, ["REGION_V6_0", "REGION_V6_1"]),
            &v6_keys,
            &v6_vals,
        )?;
        report.v4_prefixes = v4_keys.len();
        report.v6_prefixes = v6_keys.len();

        let dk4: Vec<Key<[u8; 4]>> = compiled
            .device_v4
            .iter()
            .map(|(p, _)| Key::new(u32::from(p.len), p.octets()))
            .collect();
        let dv4: Vec<u32> = compiled.device_v4.iter().map(|(_, d)| *d).collect();
        self.fill_trie(gen_name(next, ["DEVICE_V4_0", "DEVICE_V4_1"]), &dk4, &dv4)?;
        let dk6: Vec<Key<[u8; 16]>> = compiled
            .device_v6
            .iter()
            .map(|(p, _)| Key::new(u32::from(p.len), p.octets()))
            .collect();
        let dv6: Vec<u32> = compiled.device_v6.iter().map(|(_, d)| *d).collect();
        self.fill_trie(gen_name(next, ["DEVICE_V6_0", "DEVICE_V6_1"]), &dk6, &dv6)?;
        {
            let name = gen_name(next, ["DEVICE_MAC_0", "DEVICE_MAC_1"]);
            let mut macs: HashMap<&mut MapData, MacKey, u32> =
                HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
            for (mac, dev) in &compiled.device_macs {
                macs.insert(&MacKey::new(*mac), dev, 0)
                    .map_err(map_err(name))?;
            }
        }
        self.fill_array(
            gen_name(next, ["DECISIONS_0", "DECISIONS_1"]),
            &compiled.decisions,
        )?;
        if !compiled.port_classes.is_empty() {
            self.fill_array(
                gen_name(next, ["PORT_CLASS_0", "PORT_CLASS_1"]),
                &compiled.port_classes,
            )?;
        }
        {
            let meta = PolicyMeta {
                classes: u32::try_from(compiled.classes.len()).unwrap_or(u32::MAX),
                devices: u32::try_from(compiled.device_names.len()).unwrap_or(u32::MAX),
                epoch,
                port_classes: u32::try_from(compiled.port_class_count).unwrap_or(u32::MAX),
            };
            let mut metas: Array<&mut MapData, PolicyMeta> =
                Array::try_from(self.map_mut("POLICY_META")?).map_err(map_err("POLICY_META"))?;
            metas.set(next, &meta, 0).map_err(map_err("POLICY_META"))?;
        }
        // The flip: one array update of the control record.
        let previous = self.control.active;
        self.control.active = next;
        if let Err(e) = self.write_control() {
            self.control.active = previous;
            return Err(e);
        }
        self.epoch = epoch;
        report.write_time = start.elapsed();

        let clear_start = Instant::now();
        std::thread::sleep(GRACE);
        self.clear_generation(previous)?;
        report.clear_time = clear_start.elapsed();
        Ok(report)
    }

    /// Writes `values` to indices `0..values.len()` of an array map in
    /// batches, with single updates from wherever a batch stops early.
    fn fill_array<V: aya::Pod>(
        &mut self,
        name: &'static str,
        values: &[V],
    ) -> Result<(), DatapathError> {
        let keys: Vec<u32> = (0..u32::try_from(values.len()).unwrap_or(u32::MAX)).collect();
        let map = self.map_mut(name)?;
        let Map::Array(data) = &*map else {
            return Err(DatapathError::MissingMap(name));
        };
        let batched = update_batches(name, data.fd().as_fd(), &keys, values);
        if let Err(done) = batched {
            let mut array: Array<&mut MapData, V> =
                Array::try_from(&mut *map).map_err(map_err(name))?;
            for i in done..values.len() {
                array.set(keys[i], &values[i], 0).map_err(map_err(name))?;
            }
        }
        Ok(())
    }

    /// Inserts into an LPM trie in batches; where a batch stops early
    /// (ENOMEM has been seen on 6.18 kernels), continues one by one, then
    /// verifies the trie holds exactly `keys.len()` entries. Returns the
    /// number of entries inserted one by one.
    fn fill_trie<K: aya::Pod>(
        &mut self,
        name: &'static str,
        keys: &[Key<K>],
        values: &[u32],
    ) -> Result<usize, DatapathError> {
        let map = self.map_mut(name)?;
        let Map::LpmTrie(data) = &*map else {
            return Err(DatapathError::MissingMap(name));
        };
        let batched = update_batches(name, data.fd().as_fd(), keys, values);
        let mut singles = 0;
        if let Err(done) = batched {
            let mut trie: LpmTrie<&mut MapData, K, u32> =
                LpmTrie::try_from(&mut *map).map_err(map_err(name))?;
            for i in done..keys.len() {
                trie.insert(&keys[i], &values[i], 0)
                    .map_err(map_err(name))?;
                singles += 1;
            }
        }
        self.verify_count::<K>(name, keys.len())?;
        Ok(singles)
    }

    fn verify_count<K: aya::Pod>(
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

    /// Empties the tries and the MAC table of one generation, so an idle
    /// table set costs no memory.
    fn clear_generation(&mut self, generation: u32) -> Result<(), DatapathError> {
        self.clear_trie::<[u8; 4]>(gen_name(generation, ["REGION_V4_0", "REGION_V4_1"]))?;
        self.clear_trie::<[u8; 16]>(gen_name(generation, ["REGION_V6_0", "REGION_V6_1"]))?;
        self.clear_trie::<[u8; 4]>(gen_name(generation, ["DEVICE_V4_0", "DEVICE_V4_1"]))?;
        self.clear_trie::<[u8; 16]>(gen_name(generation, ["DEVICE_V6_0", "DEVICE_V6_1"]))?;
        let name = gen_name(generation, ["DEVICE_MAC_0", "DEVICE_MAC_1"]);
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

    fn clear_trie<K: aya::Pod>(&mut self, name: &'static str) -> Result<(), DatapathError> {
        let mut trie: LpmTrie<&mut MapData, K, u32> =
            LpmTrie::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        // Deleting while iterating restarts the walk; collect first.
        let keys: Vec<Key<K>> = trie
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err(name))?;
        for k in keys {
            trie.remove(&k).map_err(map_err(name))?;
        }
        Ok(())
    }

    /// Global counters summed over CPUs, indexed by `Counter as usize`.
    pub fn counters(&self) -> Result<[u64; COUNTERS as usize], DatapathError> {
        let arr: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.map("COUNTERS_MAP")?).map_err(map_err("COUNTERS_MAP"))?;
        let mut out = [0u64; COUNTERS as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            *slot = arr
                .get(&i, 0)
                .map_err(map_err("COUNTERS_MAP"))?
                .iter()
                .sum();
        }
        Ok(out)
    }

    /// Every (device, region, verdict) slot with traffic, summed over CPUs.
    pub fn traffic(&self, devices: u32) -> Result<Vec<TrafficRow>, DatapathError> {
        let arr: PerCpuArray<&MapData, TrafficCounter> =
            PerCpuArray::try_from(self.map("TRAFFIC")?).map_err(map_err("TRAFFIC"))?;
        let mut out = Vec::new();
        for device in 0..devices.min(MAX_DEVICES) {
            for region in 0..=MAX_REGIONS {
                for verdict in 0..VERDICTS {
                    let values = arr
                        .get(&traffic_slot(device, region, verdict), 0)
                        .map_err(map_err("TRAFFIC"))?;
                    let counter =
                        values
                            .iter()
                            .fold(TrafficCounter::default(), |a, c| TrafficCounter {
                                packets: a.packets + c.packets,
                                bytes: a.bytes + c.bytes,
                            });
                    if counter.packets > 0 {
                        out.push(TrafficRow {
                            device,
                            region,
                            verdict,
                            counter,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Takes the event ring buffer (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(DatapathError::MissingMap("EVENTS"))?;
        RingBuf::try_from(map).map_err(map_err("EVENTS"))
    }
}

/// Detaching by dropping keeps `LinkError` out of callers' signatures.
#[doc(hidden)]
pub type DetachError = LinkError;

/// Writes `keys[i] -> values[i]` with BPF_MAP_UPDATE_BATCH in chunks (which
/// bound the time the kernel spends in one syscall). When a batch stops
/// early, returns how many elements were written, so the caller can go on
/// one by one from there.
fn update_batches<K: aya::Pod, V: aya::Pod>(
    name: &str,
    fd: std::os::fd::BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> Result<(), usize> {
    const CHUNK: usize = 65_536;
    let (ksize, vsize) = (std::mem::size_of::<K>(), std::mem::size_of::<V>());
    // SAFETY: K and V are aya::Pod: plain data without padding.
    let key_bytes = unsafe {
        std::slice::from_raw_parts(keys.as_ptr().cast::<u8>(), std::mem::size_of_val(keys))
    };
    // SAFETY: as above.
    let val_bytes = unsafe {
        std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
    };
    let mut done = 0;
    while done < keys.len() {
        let n = CHUNK.min(keys.len() - done);
        match sys::update_batch(
            fd,
            &key_bytes[done * ksize..(done + n) * ksize],
            &val_bytes[done * vsize..(done + n) * vsize],
            n,
        ) {
            Ok(()) => done += n,
            Err((processed, err)) => {
                log::debug!(
                    "{name}: batch update stopped after {processed} of {n}: {err}; continuing one by one"
                );
                return Err(done + processed);
            }
        }
    }
    Ok(())
}
