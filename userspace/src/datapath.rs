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
    programs::{
        Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use regionwall_common::{
    Bucket, COUNTERS, Control, DEVICE_BY_MAC, DEVICE_BY_V4, DEVICE_BY_V6, FIB_LONG_DEFAULT,
    FIB_MAX_CAPACITY, FIB_RANGES_DEFAULT, FIB_SLOTS, FIB_SLOTS_DEFAULT, GENERATIONS,
    LAYOUT_SLOT_LOOKUP, LAYOUT_SLOT_VERSION, LAYOUT_VERSION, Lookup, MAX_DEVICES, MAX_REGIONS,
    MacKey, NAMES_SLOTS, PolicyMeta, SlotName, TrafficCounter, UnparsedAction, VERDICTS, rate_slot,
    traffic_slot,
};

use crate::{
    compile::Compiled,
    error::DatapathError,
    fib::{Capacity, Fib},
    pin::{LinkFacts, PinDir},
    slots::{Slot, SlotTable, Stable, stabilize},
    sys,
};

/// The XDP object, built from `ebpf/` by build.rs.
pub static PROGRAM_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/regionwall"));
/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "regionwall";

/// The benchmark/test object (`ebpf/src/bench.rs`): the same maps, with
/// programs that time the path stage by stage or report both lookups.
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/regionwall-bench"));
/// Programs of [`BENCH_OBJECT`].
pub const BENCH_PROGRAMS: [&str; 8] = [
    "bench_floor",
    "bench_keys",
    "bench_parse",
    "bench_class_lpm",
    "bench_class_compiled",
    "bench_lpm",
    "bench_compiled",
    "bench_classify",
];

/// How the program is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// The destination lookup the program uses.
    pub lookup: Lookup,
    /// Entries of `FIB_RANGES_*` / `FIB_LONG_*` per generation (preallocated).
    pub fib: Capacity,
    /// Fill the tables of both lookups on publish (tests and benchmarks
    /// compare them); otherwise only the chosen lookup's tables are filled.
    pub both_tables: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            lookup: Lookup::Compiled,
            fib: Capacity {
                slots: FIB_SLOTS_DEFAULT as usize,
                ranges: FIB_RANGES_DEFAULT as usize,
                long: FIB_LONG_DEFAULT as usize,
            },
            both_tables: false,
        }
    }
}

impl LoadOptions {
    const fn fills_lpm(&self) -> bool {
        self.both_tables || matches!(self.lookup, Lookup::Lpm)
    }
    const fn fills_fib(&self) -> bool {
        self.both_tables || matches!(self.lookup, Lookup::Compiled)
    }
}

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
    /// Compiled lookup: range entries, long entries and bytes (0 when the
    /// LPM tries are the only lookup).
    pub fib_ranges: usize,
    pub fib_long: usize,
    pub fib_bytes: usize,
    /// Time to build the compiled lookup (part of `write_time`).
    pub fib_build_time: Duration,
    /// From the start of publishing to the flip.
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
    options: LoadOptions,
    program_name: &'static str,
    /// The XDP link when attached through [`Self::attach_pinned`] or
    /// [`Self::take_over`]; dropping it closes the fd (the pin, if any,
    /// keeps the program attached).
    link: Option<FdLink>,
}

/// Every map of the production object, pinned by name under the
/// interface's pin directory (see [`crate::pin`]).
/// Keep in step with ebpf/src/maps.rs: pinning fails on a missing name.
/// `LAYOUT` comes last: a replacement interrupted while re-pinning leaves
/// the old layout version (or a program that does not use the pinned
/// maps), which the next controller replaces again.
pub const PINNED_MAPS: [&str; 28] = [
    "CONTROL",
    "POLICY_META",
    "REGION_V4_0",
    "REGION_V4_1",
    "REGION_V6_0",
    "REGION_V6_1",
    "FIB_SLOTS_0",
    "FIB_SLOTS_1",
    "FIB_RANGES_0",
    "FIB_RANGES_1",
    "FIB_LONG_0",
    "FIB_LONG_1",
    "DEVICE_MAC_0",
    "DEVICE_MAC_1",
    "DEVICE_V4_0",
    "DEVICE_V4_1",
    "DEVICE_V6_0",
    "DEVICE_V6_1",
    "PORT_CLASS_0",
    "PORT_CLASS_1",
    "DECISIONS_0",
    "DECISIONS_1",
    "COUNTERS_MAP",
    "TRAFFIC",
    "RATE_LIMIT",
    "EVENTS",
    "NAMES",
    "LAYOUT",
];

/// Maps of [`PINNED_MAPS`] the program never uses: the controller's own
/// records, kept with the pins.
pub const CONTROLLER_MAPS: [&str; 2] = ["NAMES", "LAYOUT"];

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

const fn gen_name(generation: u32, names: [&'static str; 2]) -> &'static str {
    if generation == 0 { names[0] } else { names[1] }
}

impl Datapath {
    /// Loads the XDP program with the default options (compiled lookup).
    pub fn load() -> Result<Self, DatapathError> {
        Self::load_with(LoadOptions::default())
    }

    /// Loads the XDP program into the kernel (not attached yet), with maps
    /// of its own.
    pub fn load_with(options: LoadOptions) -> Result<Self, DatapathError> {
        let lookup = options.lookup as u32;
        Self::load_object(
            PROGRAM_OBJECT,
            &[PROGRAM_NAME],
            Some(&lookup),
            options,
            None,
        )
    }

    /// Loads the XDP program on the maps pinned in `pins` (which the
    /// caller checked with [`crate::pin::Found::refusal`]): the policy they
    /// hold stays live, the control record and epoch are read from them.
    /// The compiled lookup's room is what the pinned arrays have.
    pub fn adopt(options: LoadOptions, pins: &PinDir) -> Result<Self, DatapathError> {
        let lookup = options.lookup as u32;
        let entries = |name| pins.max_entries(name).map(|n| n as usize);
        let options = LoadOptions {
            fib: Capacity {
                slots: entries("FIB_SLOTS_0")?,
                ranges: entries("FIB_RANGES_0")?,
                long: entries("FIB_LONG_0")?,
            },
            ..options
        };
        Self::load_object(
            PROGRAM_OBJECT,
            &[PROGRAM_NAME],
            Some(&lookup),
            options,
            Some(pins),
        )
    }

    /// Loads [`BENCH_OBJECT`] with all of [`BENCH_PROGRAMS`]; `program()`
    /// returns `bench_compiled`, [`Self::program_named`] the others.
    pub fn load_bench(options: LoadOptions) -> Result<Self, DatapathError> {
        let mut dp = Self::load_object(BENCH_OBJECT, &BENCH_PROGRAMS, None, options, None)?;
        dp.program_name = "bench_compiled";
        Ok(dp)
    }

    fn load_object(
        object: &[u8],
        programs: &[&'static str],
        lookup: Option<&u32>,
        options: LoadOptions,
        adopt: Option<&PinDir>,
    ) -> Result<Self, DatapathError> {
        let cap = |n: usize| {
            u32::try_from(n)
                .unwrap_or(u32::MAX)
                .clamp(1, FIB_MAX_CAPACITY)
        };
        // Arrays are preallocated: without the compiled lookup they shrink
        // to one entry.
        let (slots, ranges, long) = if options.fills_fib() {
            (
                cap(options.fib.slots).max(FIB_SLOTS),
                cap(options.fib.ranges),
                cap(options.fib.long),
            )
        } else {
            (FIB_SLOTS, 1, 1)
        };
        let mut loader = EbpfLoader::new();
        if let Some(lookup) = lookup {
            loader.override_global("LOOKUP", lookup, true);
        }
        for name in ["FIB_SLOTS_0", "FIB_SLOTS_1"] {
            loader.map_max_entries(name, slots);
        }
        for name in ["FIB_RANGES_0", "FIB_RANGES_1"] {
            loader.map_max_entries(name, ranges);
        }
        for name in ["FIB_LONG_0", "FIB_LONG_1"] {
            loader.map_max_entries(name, long);
        }
        if let Some(pins) = adopt {
            for name in PINNED_MAPS {
                loader.map_pin_path(name, pins.map(name));
            }
        }
        let mut ebpf = loader.load(object)?;
        for name in programs {
            let program: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or(DatapathError::MissingMap(name))?
                .try_into()?;
            program.load()?;
        }
        let mut dp = Self {
            ebpf,
            control: Control::default(),
            epoch: 0,
            options: LoadOptions {
                fib: Capacity {
                    slots: slots as usize,
                    ranges: ranges as usize,
                    long: long as usize,
                },
                ..options
            },
            program_name: programs.first().copied().unwrap_or(PROGRAM_NAME),
            link: None,
        };
        if adopt.is_some() {
            dp.control = dp.control()?;
            dp.epoch = dp.live_meta()?.epoch;
        } else {
            dp.write_control()?;
            let mut layout: Array<&mut MapData, u32> =
                Array::try_from(dp.map_mut("LAYOUT")?).map_err(map_err("LAYOUT"))?;
            layout
                .set(LAYOUT_SLOT_VERSION, &LAYOUT_VERSION, 0)
                .map_err(map_err("LAYOUT"))?;
            layout
                .set(LAYOUT_SLOT_LOOKUP, &(options.lookup as u32), 0)
                .map_err(map_err("LAYOUT"))?;
        }
        Ok(dp)
    }

    /// Pins every map and the program into `pins` (replacing what is
    /// there), so they outlive this process. Call before [`Self::take_events`].
    pub fn pin(&mut self, pins: &PinDir) -> Result<(), DatapathError> {
        for name in PINNED_MAPS {
            let path = pins.map(name);
            pins.unpin(&path)?;
            self.map(name)?
                .pin(&path)
                .map_err(|source| DatapathError::Pin { what: name, source })?;
        }
        let path = pins.prog();
        pins.unpin(&path)?;
        self.program_mut()?
            .pin(&path)
            .map_err(|source| DatapathError::Pin {
                what: "program",
                source,
            })
    }

    /// Attaches with a new link pinned at `pins.link()` (replacing a stale
    /// link pin), so the program stays attached after this process.
    pub fn attach_pinned(
        &mut self,
        ifindex: u32,
        mode: XdpMode,
        pins: &PinDir,
    ) -> Result<LinkFacts, DatapathError> {
        let id = self.program_mut()?.attach(ifindex, mode)?;
        let fd = self.take_link(id)?;
        let path = pins.link();
        pins.unpin(&path)?;
        let pinned = fd.pin(&path).map_err(|source| DatapathError::Pin {
            what: "link",
            source,
        })?;
        self.link = Some(pinned.into());
        Self::pinned_facts(pins)
    }

    /// Swaps this program onto the link pinned at `pins.link()` with one
    /// `BPF_LINK_UPDATE`: the interface never runs without a program.
    pub fn take_over(&mut self, pins: &PinDir) -> Result<LinkFacts, DatapathError> {
        let pinned = PinnedLink::from_pin(pins.link())?;
        let link = XdpLink::try_from(FdLink::from(pinned))?;
        let id = self.program_mut()?.attach_to_link(link)?;
        self.link = Some(self.take_link(id)?);
        Self::pinned_facts(pins)
    }

    /// Takes a link out of the program's keeping as a bpf_link fd.
    fn take_link(&mut self, id: XdpLinkId) -> Result<FdLink, DatapathError> {
        let link = self.program_mut()?.take_link(id)?;
        FdLink::try_from(link).map_err(|_| DatapathError::NoBpfLink)
    }

    /// What the kernel says of the link just pinned.
    fn pinned_facts(pins: &PinDir) -> Result<LinkFacts, DatapathError> {
        Ok(pins
            .link_facts()?
            .ok_or_else(|| crate::pin::PinError::Missing { path: pins.link() })?)
    }

    /// Closes this process's link fd: with the pin removed first the
    /// program detaches, otherwise it stays attached through the pin.
    pub fn release_link(&mut self) {
        self.link = None;
    }

    /// How the program was loaded.
    #[must_use]
    pub const fn options(&self) -> LoadOptions {
        self.options
    }

    /// The loaded program, e.g. for `test_run`.
    pub fn program(&self) -> Result<&Xdp, DatapathError> {
        self.program_named(self.program_name)
    }

    /// A program of the loaded object by name.
    pub fn program_named(&self, name: &'static str) -> Result<&Xdp, DatapathError> {
        Ok(self
            .ebpf
            .program(name)
            .ok_or(DatapathError::MissingMap(name))?
            .try_into()?)
    }

    fn program_mut(&mut self) -> Result<&mut Xdp, DatapathError> {
        let name = self.program_name;
        Ok(self
            .ebpf
            .program_mut(name)
            .ok_or(DatapathError::MissingMap(name))?
            .try_into()?)
    }

    /// Fills the benchmark object's destination pool (IPv4 keys in the
    /// first four bytes); `keys` is repeated to fill all of it.
    pub fn set_bench_keys(&mut self, keys: &[[u8; 16]]) -> Result<(), DatapathError> {
        const NAME: &str = "BENCH_KEY_POOL";
        if keys.is_empty() {
            return Ok(());
        }
        let pool: Vec<[u8; 16]> = keys
            .iter()
            .cycle()
            .take(regionwall_common::BENCH_KEYS as usize)
            .copied()
            .collect();
        self.fill_array(NAME, &pool)
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

    /// Sets the event rate limit per (device, region) and CPU: `rate`
    /// events per second with bursts of `burst`; rate 0 sends every event.
    pub fn set_event_limit(&mut self, rate: u32, burst: u32) -> Result<(), DatapathError> {
        self.control.event_cost_ns = 1_000_000_000u32.checked_div(rate).map_or(0, |c| c.max(1));
        self.control.event_burst = burst.max(1);
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
        self.publish_with(compiled, None, epoch)
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
        let previous = self.read_slots()?;
        let Stable {
            compiled,
            slots,
            before_flip,
            claimed,
            retired: _,
        } = stabilize(compiled, &previous)?;
        self.clear_counters(&claimed)?;
        if before_flip != previous {
            self.write_slots(&before_flip)?;
        }
        // publish_with sleeps the grace period after the flip.
        let report = self.publish_with(&compiled, fib, epoch)?;
        if slots != before_flip {
            self.write_slots(&slots)?;
        }
        Ok((compiled, report))
    }

    /// Writes the slot table into `NAMES` (every entry).
    pub fn write_slots(&mut self, slots: &SlotTable) -> Result<(), DatapathError> {
        self.fill_array("NAMES", &slots.records())
    }

    /// Zeroes, on every CPU, the traffic counters (all verdicts) and the
    /// event rate-limit buckets (with their suppressed counts) of the given
    /// device indices and region ids, whatever the region or device.
    pub fn clear_counters(&mut self, slots: &[Slot]) -> Result<(), DatapathError> {
        let mut pairs = Vec::new();
        for slot in slots {
            match *slot {
                Slot::Device(d) if d < MAX_DEVICES => {
                    pairs.extend((0..=MAX_REGIONS).map(|r| (d, r)));
                }
                Slot::Region(r) if (1..=MAX_REGIONS).contains(&r) => {
                    pairs.extend((0..MAX_DEVICES).map(|d| (d, r)));
                }
                _ => {}
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        let traffic: Vec<u32> = pairs
            .iter()
            .flat_map(|&(d, r)| (0..VERDICTS).map(move |v| traffic_slot(d, r, v)))
            .collect();
        let rate: Vec<u32> = pairs.iter().map(|&(d, r)| rate_slot(d, r)).collect();
        self.zero_per_cpu::<TrafficCounter>("TRAFFIC", &traffic)?;
        self.zero_per_cpu::<Bucket>("RATE_LIMIT", &rate)
    }

    /// Zeroes entries of a per-CPU array on every CPU: batch updates,
    /// then one by one from wherever a batch stops.
    fn zero_per_cpu<V: aya::Pod + Default>(
        &mut self,
        name: &'static str,
        keys: &[u32],
    ) -> Result<(), DatapathError> {
        const CHUNK: usize = 4096;
        if keys.is_empty() {
            return Ok(());
        }
        let io_err = |call: &'static str| {
            move |io_error| DatapathError::Map {
                name,
                source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call,
                    io_error,
                }),
            }
        };
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| io_err("nr_cpus")(e))?;
        let cpus = usize::try_from(cpus.get()).unwrap_or(1);
        // The kernel's per-CPU value: each CPU's value padded to 8 bytes.
        let per_value = std::mem::size_of::<V>().next_multiple_of(8) * cpus;
        let map = self.map_mut(name)?;
        let Map::PerCpuArray(data) = &*map else {
            return Err(DatapathError::MissingMap(name));
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
    /// `compiled` (the controller sizes the maps from it before loading).
    pub fn publish_with(
        &mut self,
        compiled: &Compiled,
        fib: Option<&Fib>,
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

        self.write_regions(next, compiled, fib, &mut report)?;
        self.fill_prefixes(
            gen_name(next, ["DEVICE_V4_0", "DEVICE_V4_1"]),
            &compiled.device_v4,
            |p| Key::new(u32::from(p.len), p.octets()),
        )?;
        self.fill_prefixes(
            gen_name(next, ["DEVICE_V6_0", "DEVICE_V6_1"]),
            &compiled.device_v6,
            |p| Key::new(u32::from(p.len), p.octets()),
        )?;
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
        let meta = policy_meta(compiled, epoch);
        let mut metas: Array<&mut MapData, PolicyMeta> =
            Array::try_from(self.map_mut("POLICY_META")?).map_err(map_err("POLICY_META"))?;
        metas.set(next, &meta, 0).map_err(map_err("POLICY_META"))?;
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

    /// Destination tables of generation `next`: the compiled lookup, the
    /// LPM tries, or both, as loaded.
    fn write_regions(
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
            self.write_array(gen_name(next, ["FIB_SLOTS_0", "FIB_SLOTS_1"]), &fib.slots)?;
            self.write_array(
                gen_name(next, ["FIB_RANGES_0", "FIB_RANGES_1"]),
                &fib.ranges,
            )?;
            self.write_array(gen_name(next, ["FIB_LONG_0", "FIB_LONG_1"]), &fib.long)?;
        }
        if self.options.fills_lpm() {
            report.single_fallbacks += self.fill_prefixes(
                gen_name(next, ["REGION_V4_0", "REGION_V4_1"]),
                &compiled.v4,
                |p| Key::new(u32::from(p.len), p.octets()),
            )?;
            report.single_fallbacks += self.fill_prefixes(
                gen_name(next, ["REGION_V6_0", "REGION_V6_1"]),
                &compiled.v6,
                |p| Key::new(u32::from(p.len), p.octets()),
            )?;
        }

        Ok(())
    }

    /// Writes `values` to the start of an mmapable array with one copy;
    /// falls back to batch updates where mapping is refused.
    fn write_array<V: aya::Pod>(
        &mut self,
        name: &'static str,
        values: &[V],
    ) -> Result<(), DatapathError> {
        let map = self.map_mut(name)?;
        let Map::Array(data) = &*map else {
            return Err(DatapathError::MissingMap(name));
        };
        // SAFETY: V is aya::Pod: plain data without padding.
        let bytes = unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
        };
        match sys::write_mapped(data.fd().as_fd(), bytes) {
            Ok(()) => Ok(()),
            Err(e) => {
                log::debug!("{name}: mmap write refused ({e}); using batch updates");
                self.fill_array(name, values)
            }
        }
    }

    /// [`Self::fill_trie`] from (prefix, value) pairs.
    fn fill_prefixes<P, K: aya::Pod>(
        &mut self,
        name: &'static str,
        entries: &[(P, u32)],
        key: impl Fn(&P) -> Key<K>,
    ) -> Result<usize, DatapathError> {
        let keys: Vec<Key<K>> = entries.iter().map(|(p, _)| key(p)).collect();
        let values: Vec<u32> = entries.iter().map(|(_, v)| *v).collect();
        self.fill_trie(name, &keys, &values)
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
        // The compiled lookup's arrays are overwritten in place; the region
        // tries hold entries only when this program fills them.
        if self.options.fills_lpm() {
            self.clear_trie::<[u8; 4]>(gen_name(generation, ["REGION_V4_0", "REGION_V4_1"]))?;
            self.clear_trie::<[u8; 16]>(gen_name(generation, ["REGION_V6_0", "REGION_V6_1"]))?;
        }
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

    /// Takes the event ring buffer (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(DatapathError::MissingMap("EVENTS"))?;
        RingBuf::try_from(map).map_err(map_err("EVENTS"))
    }
}

/// Reading the counters and the live policy's facts, from a loaded
/// [`Datapath`] or from pinned maps ([`crate::pin::PinnedMaps`]).
pub trait Readings {
    /// A map by name.
    fn map_named(&self, name: &'static str) -> Result<&Map, DatapathError>;

    /// The control record.
    fn control(&self) -> Result<Control, DatapathError> {
        let control: Array<&MapData, Control> =
            Array::try_from(self.map_named("CONTROL")?).map_err(map_err("CONTROL"))?;
        control.get(&0, 0).map_err(map_err("CONTROL"))
    }

    /// The live generation's metadata.
    fn live_meta(&self) -> Result<PolicyMeta, DatapathError> {
        let active = self.control()?.active;
        let metas: Array<&MapData, PolicyMeta> =
            Array::try_from(self.map_named("POLICY_META")?).map_err(map_err("POLICY_META"))?;
        metas
            .get(&(active % GENERATIONS), 0)
            .map_err(map_err("POLICY_META"))
    }

    /// The slot table in `NAMES`: which name owns each device index and
    /// region id (empty when only [`Datapath::publish`] was used).
    fn read_slots(&self) -> Result<SlotTable, DatapathError> {
        let names: Array<&MapData, SlotName> =
            Array::try_from(self.map_named("NAMES")?).map_err(map_err("NAMES"))?;
        let records = (0..NAMES_SLOTS)
            .map(|i| names.get(&i, 0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err("NAMES"))?;
        Ok(SlotTable::from_records(&records))
    }

    /// Global counters summed over CPUs, indexed by `Counter as usize`.
    fn counters(&self) -> Result<[u64; COUNTERS as usize], DatapathError> {
        let arr: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.map_named("COUNTERS_MAP")?)
                .map_err(map_err("COUNTERS_MAP"))?;
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
    fn traffic(&self, devices: u32) -> Result<Vec<TrafficRow>, DatapathError> {
        let arr: PerCpuArray<&MapData, TrafficCounter> =
            PerCpuArray::try_from(self.map_named("TRAFFIC")?).map_err(map_err("TRAFFIC"))?;
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

    /// Events each (device, region) did not send for its rate limit,
    /// summed over CPUs; only slots with suppressed events.
    fn suppressed(&self, devices: u32) -> Result<Vec<(u32, u32, u64)>, DatapathError> {
        let arr: PerCpuArray<&MapData, Bucket> =
            PerCpuArray::try_from(self.map_named("RATE_LIMIT")?).map_err(map_err("RATE_LIMIT"))?;
        let mut out = Vec::new();
        for device in 0..devices.min(MAX_DEVICES) {
            for region in 0..=MAX_REGIONS {
                let n: u64 = arr
                    .get(&rate_slot(device, region), 0)
                    .map_err(map_err("RATE_LIMIT"))?
                    .iter()
                    .map(|b| b.suppressed)
                    .sum();
                if n > 0 {
                    out.push((device, region, n));
                }
            }
        }
        Ok(out)
    }
}

impl Readings for Datapath {
    fn map_named(&self, name: &'static str) -> Result<&Map, DatapathError> {
        self.map(name)
    }
}

/// Detaching by dropping keeps `LinkError` out of callers' signatures.
#[doc(hidden)]
pub type DetachError = LinkError;

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

#[cfg(test)]
mod tests {
    use super::*;

    /// PINNED_MAPS names every map of the production object, NAMES and
    /// LAYOUT included (aya creates them though the program never uses
    /// them), and nothing else; global data sections are not pinned.
    #[test]
    fn pinned_maps_are_the_objects_maps() {
        let dp = Datapath::load().expect("loading the XDP program (root?)");
        let mut object: Vec<&str> = dp
            .ebpf
            .maps()
            .map(|(name, _)| name)
            .filter(|name| !name.starts_with('.'))
            .collect();
        object.sort_unstable();
        let mut pinned = PINNED_MAPS.to_vec();
        pinned.sort_unstable();
        assert_eq!(object, pinned);
        assert!(CONTROLLER_MAPS.iter().all(|m| PINNED_MAPS.contains(m)));
        assert_eq!(PINNED_MAPS.last(), Some(&"LAYOUT"));
    }
}
