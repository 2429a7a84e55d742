//! The loaded XDP program and its maps: loading (fresh, on pinned maps,
//! or the benchmark object), the control record, and the event ring; the
//! TC egress DNS copier loaded beside it, and its ring.
//!
//! - [`publish`]: writing a policy into the inactive table set and the flip.
//! - [`write`]: batch, mmap and single map writes.
//! - [`link`]: attaching, swapping onto a pinned link, pinning.
//! - [`dns`]: the DNS copier's TCX egress link.
//!
//! Map names come from [`crate::layout`]; readings from [`crate::readings`].

mod candidate;
mod dns;
mod link;
mod publish;
mod write;

use std::time::Duration;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map, MapData, RingBuf},
    programs::{Program, SchedClassifier, Xdp, links::FdLink},
};
use regionwall_common::{
    Control, FIB_LONG_DEFAULT, FIB_MAX_CAPACITY, FIB_RANGES_DEFAULT, FIB_SLOTS, FIB_SLOTS_DEFAULT,
    LAYOUT_SLOT_LOOKUP, LAYOUT_SLOT_VERSION, LAYOUT_VERSION, Lookup, MAX_DEVICES, MAX_REGIONS,
    REGION_ROOM_DEFAULT, UnparsedAction, VERDICTS, names_slots, rate_slots, traffic_slots,
};

pub use crate::readings::{DnsCounts, Readings, TrafficRow};
use crate::{
    fib::Capacity,
    layout::{PINNED_MAPS, TABLE_SETS},
    pin::PinDir,
    readings::{ReadError, map_err},
};
pub use candidate::{CandidateRow, STAGE_GRACE};
pub use link::DetachError;

/// Loading the program, publishing to its maps or attaching it failed.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {0} is missing from the XDP object")]
    MissingProgram(&'static str),
    #[error("program {0} is neither an XDP program nor a TC classifier")]
    WrongProgramType(&'static str),
    #[error("the DNS copier is not loaded: {0}")]
    DnsNotLoaded(String),
    #[error("XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("map {name} is not a {expected} map")]
    WrongMapType {
        name: &'static str,
        expected: &'static str,
    },
    #[error("{op} on map {name}: {source}")]
    Syscall {
        op: &'static str,
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("map {name} holds {found} entries after publishing, expected {expected}")]
    CountMismatch {
        name: &'static str,
        found: usize,
        expected: usize,
    },
    #[error(transparent)]
    Compile(#[from] crate::CompileError),
    #[error(transparent)]
    Fib(#[from] crate::FibError),
    #[error("pinning the {what}: {source}")]
    Pin {
        what: &'static str,
        #[source]
        source: aya::pin::PinError,
    },
    #[error(transparent)]
    Pinned(#[from] crate::pin::PinError),
    #[error(transparent)]
    Slots(#[from] crate::slots::SlotError),
    #[error("XDP link: {0}")]
    Link(#[from] aya::programs::links::LinkError),
    #[error(
        "the kernel attached XDP through netlink, not a bpf_link; pinning needs Linux 5.9 or later"
    )]
    NoBpfLink,
}

/// The XDP object, built from `ebpf/` by build.rs.
pub static PROGRAM_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/regionwall"));
/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "regionwall";
/// Name of the TC egress DNS copier in [`PROGRAM_OBJECT`].
pub const DNS_PROGRAM_NAME: &str = "regionwall_dns";

/// The benchmark/test object (`ebpf/src/bench.rs`): the same maps, with
/// programs that time the path stage by stage or report both lookups.
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/regionwall-bench"));
/// Programs of [`BENCH_OBJECT`].
pub const BENCH_PROGRAMS: [&str; 12] = [
    "bench_floor",
    "bench_keys",
    "bench_parse",
    "bench_class_lpm",
    "bench_class_compiled",
    "bench_lpm",
    "bench_compiled",
    "bench_classify",
    "bench_syn",
    "bench_syn_drop",
    "bench_syn_reject",
    "bench_redirect",
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
    /// Counted regions the per-(device, region) maps have room for
    /// (1..=[`MAX_REGIONS`]); a policy with more is refused until the maps
    /// are made again. Each region costs `MAX_DEVICES x 4 x 16` bytes of
    /// traffic counters and `MAX_DEVICES x 24` of rate limiter per CPU.
    pub region_room: u32,
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
            region_room: REGION_ROOM_DEFAULT,
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
    /// Why the DNS copier could not be loaded (`None`: loaded, or an
    /// object without it). Its failure never fails the XDP program.
    dns_error: Option<String>,
    /// The DNS copier's TCX link, like `link`.
    dns_link: Option<FdLink>,
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
        let mut dp = Self::load_object(
            PROGRAM_OBJECT,
            &[PROGRAM_NAME],
            Some(&lookup),
            options,
            None,
        )?;
        dp.load_dns();
        Ok(dp)
    }

    /// Loads the XDP program on the maps pinned in `pins` (which the
    /// caller checked with [`crate::pin::Found::refusal`]): the policy they
    /// hold stays live, the control record and epoch are read from them.
    /// The compiled lookup's room is what the pinned arrays have.
    pub fn adopt(options: LoadOptions, pins: &PinDir) -> Result<Self, DatapathError> {
        let lookup = options.lookup as u32;
        let entries = |name| pins.max_entries(name).map(|n| n as usize);
        let traffic = pins.max_entries("TRAFFIC")?;
        let options = LoadOptions {
            fib: Capacity {
                slots: entries(TABLE_SETS[0].fib_slots)?,
                ranges: entries(TABLE_SETS[0].fib_ranges)?,
                long: entries(TABLE_SETS[0].fib_long)?,
            },
            region_room: (traffic / (MAX_DEVICES * VERDICTS)).saturating_sub(1),
            ..options
        };
        let mut dp = Self::load_object(
            PROGRAM_OBJECT,
            &[PROGRAM_NAME],
            Some(&lookup),
            options,
            Some(pins),
        )?;
        dp.load_dns();
        Ok(dp)
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
        let stride = options.region_room.clamp(1, MAX_REGIONS) + 1;
        let mut loader = EbpfLoader::new();
        loader.map_max_entries("TRAFFIC", traffic_slots(stride));
        loader.map_max_entries("RATE_LIMIT", rate_slots(stride));
        loader.map_max_entries("CANDIDATE_RATE_LIMIT", rate_slots(stride));
        loader.map_max_entries("NAMES", names_slots(stride));
        if let Some(lookup) = lookup {
            loader.override_global("LOOKUP", lookup, true);
        }
        for set in &TABLE_SETS {
            loader.map_max_entries(set.fib_slots, slots);
            loader.map_max_entries(set.fib_ranges, ranges);
            loader.map_max_entries(set.fib_long, long);
        }
        if let Some(pins) = adopt {
            for name in PINNED_MAPS {
                loader.map_pin_path(name, pins.map(name));
            }
        }
        let mut ebpf = loader.load(object)?;
        for name in programs {
            load_program(&mut ebpf, name)?;
        }
        let mut dp = Self {
            ebpf,
            control: Control {
                region_stride: stride,
                ..Control::default()
            },
            epoch: 0,
            options: LoadOptions {
                fib: Capacity {
                    slots: slots as usize,
                    ranges: ranges as usize,
                    long: long as usize,
                },
                region_room: stride - 1,
                ..options
            },
            program_name: programs.first().copied().unwrap_or(PROGRAM_NAME),
            link: None,
            dns_error: None,
            dns_link: None,
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
            .ok_or(DatapathError::MissingProgram(name))?
            .try_into()?)
    }

    fn program_mut(&mut self) -> Result<&mut Xdp, DatapathError> {
        let name = self.program_name;
        Ok(self
            .ebpf
            .program_mut(name)
            .ok_or(DatapathError::MissingProgram(name))?
            .try_into()?)
    }

    /// Sets what the benchmark object's traffic generator
    /// (`bench_redirect`) sends: `frame`, out of interface `ifindex` (of
    /// the network namespace the test run is made in).
    pub fn set_bench_generator(
        &mut self,
        frame: &[u8; regionwall_common::BENCH_GEN_FRAME],
        ifindex: u32,
    ) -> Result<(), DatapathError> {
        self.fill_array("BENCH_GEN_TEMPLATE", &[*frame])?;
        self.fill_array("BENCH_GEN_IFINDEX", &[ifindex])
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

    /// Counted regions the counter maps have room for.
    #[must_use]
    pub const fn region_room(&self) -> u32 {
        self.control.region_stride.saturating_sub(1)
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

    /// Turns the per-(device, destination) counters on or off.
    pub fn set_host_counters(&mut self, on: bool) -> Result<(), DatapathError> {
        if on {
            self.control.flags |= regionwall_common::CONTROL_HOSTS;
        } else {
            self.control.flags &= !regionwall_common::CONTROL_HOSTS;
        }
        self.write_control()
    }

    /// Sets the reject answer rate limit per device and CPU: `rate` RSTs
    /// and ICMP errors per second with bursts of `burst`; rate 0 answers
    /// every rejected packet. Over the limit a rejected packet is dropped.
    pub fn set_reject_limit(&mut self, rate: u32, burst: u32) -> Result<(), DatapathError> {
        self.control.reject_cost_ns = 1_000_000_000u32.checked_div(rate).map_or(0, |c| c.max(1));
        self.control.reject_burst = burst.max(1);
        self.write_control()
    }

    fn write_control(&mut self) -> Result<(), DatapathError> {
        let value = self.control;
        let mut control: Array<&mut MapData, Control> =
            Array::try_from(self.map_mut("CONTROL")?).map_err(map_err("CONTROL"))?;
        Ok(control.set(0, &value, 0).map_err(map_err("CONTROL"))?)
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, DatapathError> {
        self.ebpf
            .map_mut(name)
            .ok_or(ReadError::MissingMap(name).into())
    }

    fn map(&self, name: &'static str) -> Result<&Map, DatapathError> {
        Ok(self.map_read(name)?)
    }

    fn map_read(&self, name: &'static str) -> Result<&Map, ReadError> {
        self.ebpf.map(name).ok_or(ReadError::MissingMap(name))
    }

    /// Loads the DNS copier; a failure (a kernel whose verifier refuses
    /// it) is logged and remembered, never fatal: XDP enforcement does not
    /// depend on it.
    fn load_dns(&mut self) {
        if let Err(e) = load_program(&mut self.ebpf, DNS_PROGRAM_NAME) {
            log::warn!(
                "loading the DNS copier {DNS_PROGRAM_NAME}: {e}; names of destinations will be missing"
            );
            self.dns_error = Some(e.to_string());
        }
    }

    /// The loaded DNS copier (a TC classifier), e.g. for `test_run`.
    pub fn dns_program(&self) -> Result<&SchedClassifier, DatapathError> {
        if let Some(e) = &self.dns_error {
            return Err(DatapathError::DnsNotLoaded(e.clone()));
        }
        Ok(self
            .ebpf
            .program(DNS_PROGRAM_NAME)
            .ok_or(DatapathError::MissingProgram(DNS_PROGRAM_NAME))?
            .try_into()?)
    }

    fn dns_program_mut(&mut self) -> Result<&mut SchedClassifier, DatapathError> {
        if let Some(e) = &self.dns_error {
            return Err(DatapathError::DnsNotLoaded(e.clone()));
        }
        Ok(self
            .ebpf
            .program_mut(DNS_PROGRAM_NAME)
            .ok_or(DatapathError::MissingProgram(DNS_PROGRAM_NAME))?
            .try_into()?)
    }

    /// Takes the DNS copy ring (once); its records are
    /// [`regionwall_common::dns::DnsCopy`].
    pub fn take_dns(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        self.take_ring("DNS_RING")
    }

    fn take_ring(&mut self, name: &'static str) -> Result<RingBuf<MapData>, DatapathError> {
        let map = self
            .ebpf
            .take_map(name)
            .ok_or(ReadError::MissingMap(name))?;
        Ok(RingBuf::try_from(map).map_err(map_err(name))?)
    }

    /// Takes the event ring buffer (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        self.take_ring("EVENTS")
    }

    /// Takes the staged candidate's event ring (once).
    pub fn take_candidate_events(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        self.take_ring("CANDIDATE_EVENTS")
    }
}

/// Loads one program of the object into the kernel, whatever its kind.
fn load_program(ebpf: &mut Ebpf, name: &'static str) -> Result<(), DatapathError> {
    match ebpf
        .program_mut(name)
        .ok_or(DatapathError::MissingProgram(name))?
    {
        Program::Xdp(p) => p.load()?,
        Program::SchedClassifier(p) => p.load()?,
        _ => return Err(DatapathError::WrongProgramType(name)),
    }
    Ok(())
}

impl Readings for Datapath {
    fn map_named(&self, name: &'static str) -> Result<&Map, ReadError> {
        self.map_read(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{CONTROLLER_MAPS, PINNED_MAPS};

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
