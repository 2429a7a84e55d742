//! Every map of the program. Policy tables exist twice (suffix `_0`, `_1`):
//! the controller fills the inactive set, then flips `CONTROL.active`.
//! A packet reads `active` once, so it sees one whole policy; code reaches
//! the set through [`Generation`], never by naming a suffix.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use regionwall_common::dns::{DNS_COUNTERS as DNS_COUNTERS_SLOTS, DNS_RING_BYTES};
use regionwall_common::{
    Bucket, CANDIDATE_EVENT_RING_BYTES, CANDIDATE_KEYS, COUNTERS, COUNTRY_SLOTS, CandidateKey,
    CandidateMeta, Control, DESTINATIONS_DEFAULT, DEVICE_LPM_MAX_ENTRIES, DEVICE_MAC_MAX_ENTRIES,
    Decision, DestCounter, DestKey, EVENT_RING_BYTES, FIB_LONG_DEFAULT, FIB_RANGES_DEFAULT,
    FIB_SLOTS_DEFAULT, FibLong, FibSlot, GENERATIONS, LAYOUT_SLOTS, LPM_V4_MAX_ENTRIES,
    LPM_V6_MAX_ENTRIES, MAX_DECISIONS, MAX_DEVICES, MacKey, NAMES_SLOTS, PORT_SLOTS, PolicyMeta,
    RATE_SLOTS, SlotName, TRAFFIC_SLOTS, TrafficCounter,
};

/// Which layout and lookup these maps were made for; written by the
/// controller, never read here (see `LAYOUT_SLOT_*`).
#[map]
pub static LAYOUT: Array<u32> = Array::with_max_entries(LAYOUT_SLOTS, 0);
/// Which device and region name owns each counter index; written by the
/// controller, never read here (see `NAMES_REGION_BASE`).
#[map]
pub static NAMES: Array<SlotName> = Array::with_max_entries(NAMES_SLOTS, 0);
#[map]
pub static CONTROL: Array<Control> = Array::with_max_entries(1, 0);
#[map]
pub static POLICY_META: Array<PolicyMeta> = Array::with_max_entries(GENERATIONS, 0);

// Destination -> region class. LPM tries are always BPF_F_NO_PREALLOC (added
// by aya-ebpf), so an idle generation costs no memory once it is cleared.
#[map]
pub static REGION_V4_0: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(LPM_V4_MAX_ENTRIES, 0);
#[map]
pub static REGION_V4_1: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(LPM_V4_MAX_ENTRIES, 0);
#[map]
pub static REGION_V6_0: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(LPM_V6_MAX_ENTRIES, 0);
#[map]
pub static REGION_V6_1: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(LPM_V6_MAX_ENTRIES, 0);

// Destination -> region class, compiled (see fib.rs). Mmapable so the
// controller writes a whole table with one copy instead of per-entry
// syscalls; sizes are set at load time.
#[map]
pub static FIB_SLOTS_0: Array<FibSlot> = Array::with_max_entries(FIB_SLOTS_DEFAULT, BPF_F_MMAPABLE);
#[map]
pub static FIB_SLOTS_1: Array<FibSlot> = Array::with_max_entries(FIB_SLOTS_DEFAULT, BPF_F_MMAPABLE);
#[map]
pub static FIB_RANGES_0: Array<u64> = Array::with_max_entries(FIB_RANGES_DEFAULT, BPF_F_MMAPABLE);
#[map]
pub static FIB_RANGES_1: Array<u64> = Array::with_max_entries(FIB_RANGES_DEFAULT, BPF_F_MMAPABLE);
#[map]
pub static FIB_LONG_0: Array<FibLong> = Array::with_max_entries(FIB_LONG_DEFAULT, BPF_F_MMAPABLE);
#[map]
pub static FIB_LONG_1: Array<FibLong> = Array::with_max_entries(FIB_LONG_DEFAULT, BPF_F_MMAPABLE);

// Source -> device index.
#[map]
pub static DEVICE_MAC_0: HashMap<MacKey, u32> =
    HashMap::with_max_entries(DEVICE_MAC_MAX_ENTRIES, 0);
#[map]
pub static DEVICE_MAC_1: HashMap<MacKey, u32> =
    HashMap::with_max_entries(DEVICE_MAC_MAX_ENTRIES, 0);
#[map]
pub static DEVICE_V4_0: LpmTrie<[u8; 4], u32> =
    LpmTrie::with_max_entries(DEVICE_LPM_MAX_ENTRIES, 0);
#[map]
pub static DEVICE_V4_1: LpmTrie<[u8; 4], u32> =
    LpmTrie::with_max_entries(DEVICE_LPM_MAX_ENTRIES, 0);
#[map]
pub static DEVICE_V6_0: LpmTrie<[u8; 16], u32> =
    LpmTrie::with_max_entries(DEVICE_LPM_MAX_ENTRIES, 0);
#[map]
pub static DEVICE_V6_1: LpmTrie<[u8; 16], u32> =
    LpmTrie::with_max_entries(DEVICE_LPM_MAX_ENTRIES, 0);

// (protocol, destination port) slot -> port class; read only when the
// policy has protocol/port qualifiers (PolicyMeta.port_classes > 1).
#[map]
pub static PORT_CLASS_0: Array<u32> = Array::with_max_entries(PORT_SLOTS, 0);
#[map]
pub static PORT_CLASS_1: Array<u32> = Array::with_max_entries(PORT_SLOTS, 0);

// (device, region class, port class) -> decision, row-major:
// index = (device * classes + class) * port_classes + port_class.
#[map]
pub static DECISIONS_0: Array<Decision> = Array::with_max_entries(MAX_DECISIONS, 0);
#[map]
pub static DECISIONS_1: Array<Decision> = Array::with_max_entries(MAX_DECISIONS, 0);

#[map]
pub static COUNTERS_MAP: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS, 0);
/// Packets and bytes per (device, region, verdict); sized at load time
/// (see `Control::region_stride`).
#[map]
pub static TRAFFIC: PerCpuArray<TrafficCounter> = PerCpuArray::with_max_entries(TRAFFIC_SLOTS, 0);
/// Packets and bytes per (device, country, verdict), all traffic.
#[map]
pub static COUNTRY_TRAFFIC: PerCpuArray<TrafficCounter> =
    PerCpuArray::with_max_entries(COUNTRY_SLOTS, 0);

/// Packets and bytes per (device, destination address), per CPU, when
/// `CONTROL_HOSTS` is set; least recently used destinations give way.
#[map]
pub static DESTINATIONS: LruPerCpuHashMap<DestKey, DestCounter> =
    LruPerCpuHashMap::with_max_entries(DESTINATIONS_DEFAULT, 0);

/// Event rate limit per (device, region), per CPU (see `Bucket`).
#[map]
pub static RATE_LIMIT: PerCpuArray<Bucket> = PerCpuArray::with_max_entries(RATE_SLOTS, 0);

/// Reject answer rate limit per device, per CPU (see `Bucket`).
#[map]
pub static REJECT_LIMIT: PerCpuArray<Bucket> = PerCpuArray::with_max_entries(MAX_DEVICES, 0);

// The staged candidate's decisions, indexed like the same generation's
// `DECISIONS_*` (see `CONTROL_CANDIDATE`); read only while one is staged.
#[map]
pub static CANDIDATE_DECISIONS_0: Array<Decision> = Array::with_max_entries(MAX_DECISIONS, 0);
#[map]
pub static CANDIDATE_DECISIONS_1: Array<Decision> = Array::with_max_entries(MAX_DECISIONS, 0);
/// Packets and bytes per disagreement with the candidate, per CPU
/// (bounded: a key that does not fit is counted as `CandidateLost`).
#[map]
pub static CANDIDATE_TRAFFIC: PerCpuHashMap<CandidateKey, TrafficCounter> =
    PerCpuHashMap::with_max_entries(CANDIDATE_KEYS, 0);
/// Candidate event rate limit per (device, region), per CPU: its own
/// buckets, so candidate events never take the live events' credit.
#[map]
pub static CANDIDATE_RATE_LIMIT: PerCpuArray<Bucket> = PerCpuArray::with_max_entries(RATE_SLOTS, 0);
/// The staged candidate's path and staging facts; written by the
/// controller, never read here.
#[map]
pub static CANDIDATE_META: Array<CandidateMeta> = Array::with_max_entries(1, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENT_RING_BYTES, 0);
/// The candidate's events: a ring of their own, so they never take the
/// live events' room.
#[map]
pub static CANDIDATE_EVENTS: RingBuf = RingBuf::with_byte_size(CANDIDATE_EVENT_RING_BYTES, 0);

/// The policy tables of generation `G` (0 or 1): the one place that maps a
/// generation to its `_0`/`_1` maps. Code generic over `G` names each map
/// statically (the verifier needs a constant map pointer per call site);
/// the packet's generation picks `G` once, at the top of the path.
pub struct Generation<const G: u32>;

impl<const G: u32> Generation<G> {
    #[inline(always)]
    pub fn region_v4() -> &'static LpmTrie<[u8; 4], u32> {
        if G == 0 { &REGION_V4_0 } else { &REGION_V4_1 }
    }

    #[inline(always)]
    pub fn region_v6() -> &'static LpmTrie<[u8; 16], u32> {
        if G == 0 { &REGION_V6_0 } else { &REGION_V6_1 }
    }

    #[inline(always)]
    pub fn fib_slots() -> &'static Array<FibSlot> {
        if G == 0 { &FIB_SLOTS_0 } else { &FIB_SLOTS_1 }
    }

    #[inline(always)]
    pub fn fib_ranges() -> &'static Array<u64> {
        if G == 0 { &FIB_RANGES_0 } else { &FIB_RANGES_1 }
    }

    #[inline(always)]
    pub fn fib_long() -> &'static Array<FibLong> {
        if G == 0 { &FIB_LONG_0 } else { &FIB_LONG_1 }
    }

    #[inline(always)]
    pub fn device_mac() -> &'static HashMap<MacKey, u32> {
        if G == 0 { &DEVICE_MAC_0 } else { &DEVICE_MAC_1 }
    }

    #[inline(always)]
    pub fn device_v4() -> &'static LpmTrie<[u8; 4], u32> {
        if G == 0 { &DEVICE_V4_0 } else { &DEVICE_V4_1 }
    }

    #[inline(always)]
    pub fn device_v6() -> &'static LpmTrie<[u8; 16], u32> {
        if G == 0 { &DEVICE_V6_0 } else { &DEVICE_V6_1 }
    }

    #[inline(always)]
    pub fn port_class() -> &'static Array<u32> {
        if G == 0 { &PORT_CLASS_0 } else { &PORT_CLASS_1 }
    }

    #[inline(always)]
    pub fn decisions() -> &'static Array<Decision> {
        if G == 0 { &DECISIONS_0 } else { &DECISIONS_1 }
    }

    #[inline(always)]
    pub fn candidate_decisions() -> &'static Array<Decision> {
        if G == 0 {
            &CANDIDATE_DECISIONS_0
        } else {
            &CANDIDATE_DECISIONS_1
        }
    }
}

/// DNS answers copied by the TC egress program (see `dns.rs`).
#[map]
pub static DNS_RING: RingBuf = RingBuf::with_byte_size(DNS_RING_BYTES, 0);
/// [`DnsCounter`](regionwall_common::dns::DnsCounter) slots, per CPU.
#[map]
pub static DNS_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DNS_COUNTERS_SLOTS, 0);
