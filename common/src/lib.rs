//! The ABI between the regionwall XDP program and its controller.
//!
//! Every type here is `#[repr(C)]` with explicit padding so that the kernel
//! and userspace agree byte for byte; sizes are pinned by `const` asserts.
//! Numbers of verdicts, reasons and counters are fixed and never reused.
#![no_std]
#![expect(
    clippy::pub_underscore_fields,
    reason = "explicit ABI padding must be public to build the structs"
)]

use core::mem::size_of;

mod counters;
pub mod dns;
pub mod fib;

pub use counters::{COUNTERS, Counter};

/// Version of the map layout below. Bumped whenever any shared type or map
/// changes meaning, so a controller can tell pinned state of another layout.
pub const LAYOUT_VERSION: u32 = 11;

/// Number of policy table sets. A reload writes the inactive set, then flips
/// [`Control::active`] with one map update.
pub const GENERATIONS: u32 = 2;

/// Device index used for traffic from a device no rule names.
pub const DEFAULT_DEVICE: u32 = 0;
/// Maximum number of devices (including the default, index 0).
pub const MAX_DEVICES: u32 = 256;
/// Region id 0 means "in no region"; named regions are 1..=MAX_REGIONS.
pub const NO_REGION: u16 = 0;
/// Largest number of counted regions (named regions and "any") one policy
/// may have. Their counters are sized when the program is loaded (see
/// [`Control::region_stride`]): room for [`REGION_ROOM_DEFAULT`] or 1.5
/// times what the first policy needs, whichever is more.
pub const MAX_REGIONS: u32 = 4095;
/// Counted regions the counters have room for when nothing asks for more.
pub const REGION_ROOM_DEFAULT: u32 = 64;
/// Country id 0 means "in no country" (or no country database).
pub const NO_COUNTRY: u16 = 0;
/// Countries the country counters have room for (ids 1..COUNTRY_STRIDE):
/// ISO 3166 has 249 codes; registries add a few (EU, AP, ZZ).
pub const MAX_COUNTRIES: u32 = 255;
/// Row length of the country counters: "no country" and every country id.
pub const COUNTRY_STRIDE: u32 = MAX_COUNTRIES + 1;
/// Region class 0 is "in no table"; class ids are dense from 1.
pub const NO_CLASS: u32 = 0;
/// Maximum entries of one decision table (devices x classes x port classes).
pub const MAX_DECISIONS: u32 = 1 << 18;
/// Maximum number of region classes (class ids fit the 15-bit tag of a
/// compiled range entry).
pub const MAX_CLASSES: u32 = 0x8000;
/// Rule id 0 means "no rule decided" (default pass).
pub const NO_RULE: u16 = 0;

/// IPv6 extension headers the parser walks before giving up (the packet then
/// follows the `--unparsed` rule).
pub const MAX_IPV6_EXT_HEADERS: u32 = 6;
/// VLAN tags (802.1Q / 802.1ad) the parser walks before giving up.
pub const MAX_VLAN_TAGS: u32 = 2;

/// Disagreement counters `CANDIDATE_TRAFFIC` keeps (per CPU); a key that
/// does not fit is counted in [`Counter::CandidateLost`].
pub const CANDIDATE_KEYS: u32 = 4096;

/// Default capacity of the two LPM tries per address family.
pub const LPM_V4_MAX_ENTRIES: u32 = 2 << 20;
pub const LPM_V6_MAX_ENTRIES: u32 = 1 << 20;
/// Capacity of the device tables.
pub const DEVICE_MAC_MAX_ENTRIES: u32 = 4096;
pub const DEVICE_LPM_MAX_ENTRIES: u32 = 4096;
/// Size of the event ring buffer in bytes (power of two multiple of the page size).
pub const EVENT_RING_BYTES: u32 = 1 << 22;
/// Size of the candidate events' own ring (`CANDIDATE_EVENTS`): a staged
/// candidate's "would drop"/"would pass" events never take room from the
/// live events.
pub const CANDIDATE_EVENT_RING_BYTES: u32 = 1 << 20;

/// Which structure maps destinations to region classes. Chosen when the
/// program is loaded (the `LOOKUP` global), so the verifier removes the other.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Direct-indexed range tables in arrays (`FIB_*`): the default.
    Compiled = 0,
    /// The kernel's LPM tries (`REGION_V4_*`, `REGION_V6_*`): the reference.
    Lpm = 1,
}

// The compiled lookup ("FIB", DXR-style). Destination -> region class in at
// most three steps, each a binary search over a short sorted run:
//
// * `FIB_SLOTS`: direct table of [`FibSlot`]s. Indices `0..65536` are the
//   IPv4 /16s, `FIB_V6_SLOT_BASE..+65536` the IPv6 /16s (top 16 bits), and
//   `FIB_LONG_SLOT_BASE..+FIB_MAX_LONG` the IPv6 /64s that hold boundaries
//   finer than /64; blocks of 256 split slots follow from `FIB_SLOTS`. A
//   slot with `len == 0` is a leaf: `base` is the class. A slot with
//   `FIB_SPLIT` in `len` splits its space by the next 8 key bits into the
//   256 slots at `base` (so no run grows long; at most `FIB_MAX_SPLITS`).
//   Any other slot is a run.
// * `FIB_RANGES`: runs of `u64` range entries, `start << 16 | tag`, sorted by
//   start, the first of every run starting at 0 (runs longer than
//   `FIB_LINE` preceded by a summary, see there). IPv4: start = low 16 bits
//   of the address. IPv6: start = bits 16..64. Below a split, starts keep
//   only the bits the splits have not consumed. The entry that applies is the
//   last whose start is <= the key. `tag` is the class, or `FIB_TAG_LONG |
//   long index` for an IPv6 /64 refined in `FIB_LONG`.
// * `FIB_LONG`: runs of [`FibLong`] keyed by the low 64 bits of IPv6.

/// Direct-table slots per family (one per /16).
pub const FIB_DIRECT: u32 = 65_536;
/// First IPv6 slot in `FIB_SLOTS`.
pub const FIB_V6_SLOT_BASE: u32 = FIB_DIRECT;
/// First long (/64 refinement) slot in `FIB_SLOTS`.
pub const FIB_LONG_SLOT_BASE: u32 = 2 * FIB_DIRECT;
/// IPv6 /64s with boundaries inside them that one policy may hold.
pub const FIB_MAX_LONG: u32 = 0x8000;
/// Fixed slots of `FIB_SLOTS`; split blocks start here.
pub const FIB_SLOTS: u32 = FIB_LONG_SLOT_BASE + FIB_MAX_LONG;
/// `FibSlot::len` flag of a split slot.
pub const FIB_SPLIT: u32 = 1 << 31;
/// Splits one lookup may descend (IPv6 keys have 48 bits below the /16).
pub const FIB_MAX_SPLITS: u32 = 5;
/// Default capacity of `FIB_SLOTS` per generation (6 MiB; the world table
/// needs about 400k), raised like [`FIB_RANGES_DEFAULT`].
pub const FIB_SLOTS_DEFAULT: u32 = 3 << 18;
/// Tag bit of a range entry that points into `FIB_LONG`.
pub const FIB_TAG_LONG: u64 = 0x8000;
/// Default capacity of `FIB_RANGES` per generation (4 MiB); the world table
/// needs about 200k. `regionwall run` raises it to 1.5 times what its first
/// policy needs.
pub const FIB_RANGES_DEFAULT: u32 = 1 << 19;
/// Default capacity of `FIB_LONG` per generation (256 KiB).
pub const FIB_LONG_DEFAULT: u32 = 1 << 14;
/// Entries one scan reads (IPv6 entries are 64-bit; IPv4 entries are
/// 32-bit `start << 16 | class`, two to a `FIB_RANGES` element with the
/// first in the low half, indexed in entries). A run
/// of `len > FIB_LINE` entries is stored after a summary of every
/// `FIB_LINE`-th entry (`len.div_ceil(FIB_LINE)` entries), so a lookup in a
/// run of up to `FIB_LINE^2` entries reads the summary line, then one line
/// of entries; longer runs are binary-searched past their summary.
pub const FIB_LINE: u32 = 8;
/// Halving steps of one binary search: runs of up to 2^FIB_SEARCH_STEPS
/// entries (the largest `FIB_RANGES` the controller accepts).
pub const FIB_SEARCH_STEPS: u32 = 24;
/// Largest `FIB_RANGES`/`FIB_LONG` capacity (one run must be searchable in
/// [`FIB_SEARCH_STEPS`]).
pub const FIB_MAX_CAPACITY: u32 = 1 << FIB_SEARCH_STEPS;

/// One direct-table slot: a leaf class (`len == 0`, class in `base`) or the
/// run `base..base + len` of the next level.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FibSlot {
    pub base: u32,
    pub len: u32,
}
const _: () = assert!(size_of::<FibSlot>() == 8);

impl FibSlot {
    #[must_use]
    pub const fn leaf(class: u32) -> Self {
        Self {
            base: class,
            len: 0,
        }
    }
}

/// One range of an IPv6 /64 refined below /64.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FibLong {
    /// Low 64 bits of the first address of the range.
    pub start: u64,
    pub class: u64,
}
const _: () = assert!(size_of::<FibLong>() == 16);

/// Port slots: TCP by destination port, UDP by destination port, then one
/// port-less slot per IP protocol (other protocols, later fragments,
/// truncated L4 headers).
pub const PORTLESS_BASE: u32 = 2 * 65_536;
pub const PORT_SLOTS: u32 = PORTLESS_BASE + 256;

/// Port slot of a packet (index into the `PORT_CLASS_*` maps).
#[expect(
    clippy::inline_always,
    reason = "called on the per-packet path of the XDP program"
)]
#[inline(always)]
#[must_use]
pub const fn port_slot(proto: u8, has_port: bool, port: u16) -> u32 {
    if has_port && proto == 6 {
        port as u32
    } else if has_port && proto == 17 {
        65_536 + port as u32
    } else {
        PORTLESS_BASE + proto as u32
    }
}

/// Traffic counter slots for `region_stride` (region room + 1, "no
/// region"): device x region x verdict.
#[must_use]
pub const fn traffic_slots(region_stride: u32) -> u32 {
    MAX_DEVICES * region_stride * VERDICTS
}
/// Traffic counter slots of the default region room.
pub const TRAFFIC_SLOTS: u32 = traffic_slots(REGION_ROOM_DEFAULT + 1);

/// Index of a traffic counter slot (`region_stride` from [`Control`]).
#[expect(
    clippy::inline_always,
    reason = "called on the per-packet path of the XDP program"
)]
#[inline(always)]
#[must_use]
pub const fn traffic_slot(device: u32, region: u32, verdict: u32, region_stride: u32) -> u32 {
    (device * region_stride + region) * VERDICTS + verdict
}

/// Country counter slots: device x (country + "none") x verdict, 4 MiB of
/// [`TrafficCounter`]s per CPU.
pub const COUNTRY_SLOTS: u32 = MAX_DEVICES * COUNTRY_STRIDE * VERDICTS;

/// Index of a country counter slot.
#[expect(
    clippy::inline_always,
    reason = "called on the per-packet path of the XDP program"
)]
#[inline(always)]
#[must_use]
pub const fn country_slot(device: u32, country: u32, verdict: u32) -> u32 {
    (device * COUNTRY_STRIDE + country) * VERDICTS + verdict
}

/// What happens to a packet.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass = 0,
    Drop = 1,
    /// Passed, but reported like a drop.
    Audit = 2,
    /// Dropped, and answered with a TCP RST or an ICMP "administratively
    /// prohibited" (rate limited per device; over the limit a plain drop).
    Reject = 3,
}
/// Number of [`Verdict`] values.
pub const VERDICTS: u32 = 4;

impl Verdict {
    #[must_use]
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Pass),
            1 => Some(Self::Drop),
            2 => Some(Self::Audit),
            3 => Some(Self::Reject),
            _ => None,
        }
    }
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Drop => "drop",
            Self::Audit => "audit",
            Self::Reject => "reject",
        }
    }
}

/// Why an event was emitted.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A policy rule decided.
    Policy = 0,
    /// The packet was beyond the parser's limits and `--unparsed drop` is set.
    Unparsed = 1,
}

impl Reason {
    #[must_use]
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Policy),
            1 => Some(Self::Unparsed),
            _ => None,
        }
    }
}

/// What to do with a frame the parser cannot read (see `--unparsed`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnparsedAction {
    Pass = 0,
    Drop = 1,
}

/// Packets and bytes of one traffic counter slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficCounter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(size_of::<TrafficCounter>() == 16);

/// The one control record (map `CONTROL`, index 0). `active` is written last
/// on every reload; the program reads it once per packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Control {
    /// Which table set (0 or 1) is live.
    pub active: u32,
    /// [`UnparsedAction`] as u32.
    pub unparsed: u32,
    /// Event rate limit: nanoseconds of credit one event costs
    /// (1e9 / events per second); 0 sends every event.
    pub event_cost_ns: u32,
    /// Events a (device, region) may send at once after a quiet spell.
    pub event_burst: u32,
    /// Reject rate limit: nanoseconds of credit one answer costs
    /// (1e9 / answers per second); 0 answers every rejected packet.
    pub reject_cost_ns: u32,
    /// Answers a device may send at once after a quiet spell.
    pub reject_burst: u32,
    /// Row length of the per-(device, region) maps `TRAFFIC` and
    /// `RATE_LIMIT`: the region room they were sized for, plus one ("no
    /// region"). Fixed for the life of the maps.
    pub region_stride: u32,
    /// [`CONTROL_HOSTS`] and other switches.
    pub flags: u32,
}

/// [`Control::flags`]: count packets and bytes per (device, destination
/// address) in `DESTINATIONS`, for the views by host.
pub const CONTROL_HOSTS: u32 = 1;
/// [`Control::flags`]: count packets and bytes per (device, country, verdict)
/// in `COUNTRY_TRAFFIC`. Set with the policy that has a country database
/// (in the same control update that makes it live); without one every
/// destination would be country "-", so nothing is counted.
pub const CONTROL_COUNTRIES: u32 = 2;

/// Destinations `DESTINATIONS` keeps (least recently used ones give way).
pub const DESTINATIONS_DEFAULT: u32 = 1 << 16;

/// Key of `DESTINATIONS`: a device (and the source MAC, which names the
/// hostnames it looked up) and a destination address (IPv4 in the first
/// four bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DestKey {
    pub addr: [u8; 16],
    pub mac: [u8; 6],
    pub device: u16,
    /// 4 or 6.
    pub family: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<DestKey>() == 28);

/// Value of `DESTINATIONS` (per CPU): traffic passed (pass and audit) and
/// blocked (drop and reject).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestCounter {
    pub passed_packets: u64,
    pub passed_bytes: u64,
    pub blocked_packets: u64,
    pub blocked_bytes: u64,
}
const _: () = assert!(size_of::<DestCounter>() == 32);
const _: () = assert!(size_of::<Control>() == 32);

/// [`Control::flags`]: a candidate policy is staged. The program then also
/// reads the live generation's `CANDIDATE_DECISIONS_*` at the live
/// decision's index (the candidate
/// shares the live policy's destination, device and port lookups), counts
/// disagreements in `CANDIDATE_TRAFFIC` and reports them as candidate
/// events. Never enforced.
pub const CONTROL_CANDIDATE: u32 = 4;
/// [`Control::flags`]: the generation the candidate's table is indexed for
/// is 1 (clear: 0). The candidate is evaluated only while that generation
/// is live, so a packet of another policy never reads it. Each generation
/// has its own candidate table, so a publish writes the next one's and
/// arms it with the same flip: no packet goes uncounted across a reload.
pub const CONTROL_CANDIDATE_GEN1: u32 = 8;

/// Whether `control` has a candidate staged for its live generation.
#[expect(
    clippy::inline_always,
    reason = "called on the per-packet path of the XDP program"
)]
#[inline(always)]
#[must_use]
pub const fn candidate_live(control: &Control) -> bool {
    control.flags & CONTROL_CANDIDATE != 0
        && (control.flags & CONTROL_CANDIDATE_GEN1 != 0) == (control.active & 1 == 1)
}

/// Key of `CANDIDATE_TRAFFIC`: one disagreement between the live policy
/// and the candidate. Device and country are the live policy's stable
/// indices; region and rule are the candidate's own ids (policy order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CandidateKey {
    pub device: u16,
    pub region: u16,
    pub country: u16,
    pub rule: u16,
    /// The live [`Verdict`] as u8.
    pub live: u8,
    /// The candidate's [`Verdict`] as u8.
    pub candidate: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<CandidateKey>() == 12);

/// Bytes of the candidate's policy path kept in `CANDIDATE_META`.
pub const CANDIDATE_PATH_BYTES: usize = 1024;

/// Map `CANDIDATE_META` (user space only, like `NAMES`): the staged
/// candidate, so a restarted controller adopts it with its counts.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CandidateMeta {
    /// 1 when a candidate is staged.
    pub staged: u32,
    /// Digest of the live policy it was staged against (promote refuses
    /// when the live policy changed since).
    pub live_digest: u32,
    /// Unix seconds of staging.
    pub staged_at: u64,
    /// Bytes of `path` in use.
    pub path_len: u32,
    /// Digest of the candidate as staged (its decisions and names): a
    /// restarted controller adopts the file only if it still compiles to
    /// this. 0: not recorded.
    pub candidate_digest: u32,
    /// Digest of the live policy before it was republished over a
    /// refinement for this candidate (0: not refined): a restarted or
    /// reloaded controller publishing that policy refines it again.
    pub plain_digest: u32,
    pub _pad: u32,
    /// The candidate's policy file, UTF-8.
    pub path: [u8; CANDIDATE_PATH_BYTES],
}
const _: () = assert!(size_of::<CandidateMeta>() == 32 + CANDIDATE_PATH_BYTES);

impl Default for CandidateMeta {
    fn default() -> Self {
        Self {
            staged: 0,
            live_digest: 0,
            staged_at: 0,
            path_len: 0,
            candidate_digest: 0,
            plain_digest: 0,
            _pad: 0,
            path: [0; CANDIDATE_PATH_BYTES],
        }
    }
}

/// Default event rate limit per (device, region) and CPU, events per second.
pub const EVENT_RATE_DEFAULT: u32 = 100;
/// Default burst per (device, region) and CPU.
pub const EVENT_BURST_DEFAULT: u32 = 200;

/// Default reject answers (RST, ICMP) per second per device and CPU.
pub const REJECT_RATE_DEFAULT: u32 = 100;
/// Default reject burst per device and CPU.
pub const REJECT_BURST_DEFAULT: u32 = 50;

/// Token bucket of one (device, region), per CPU (map `RATE_LIMIT`; the
/// reject limiter `REJECT_LIMIT` keeps one per device in the same shape). Credit
/// is kept in nanoseconds: it grows with time up to `burst * cost` and an
/// event spends `cost`, so the kernel needs no division.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub credit_ns: u64,
    pub last_ns: u64,
    /// Events this (device, region) did not send for lack of credit.
    pub suppressed: u64,
}
const _: () = assert!(size_of::<Bucket>() == 24);

/// Slots of `RATE_LIMIT` for `region_stride`: one per (device, region or
/// no region).
#[must_use]
pub const fn rate_slots(region_stride: u32) -> u32 {
    MAX_DEVICES * region_stride
}
/// Slots of `RATE_LIMIT` for the default region room.
pub const RATE_SLOTS: u32 = rate_slots(REGION_ROOM_DEFAULT + 1);

/// Index into `RATE_LIMIT`.
#[expect(
    clippy::inline_always,
    reason = "called on the per-packet path of the XDP program"
)]
#[inline(always)]
#[must_use]
pub const fn rate_slot(device: u32, region: u32, region_stride: u32) -> u32 {
    device * region_stride + region
}

/// Map `LAYOUT` (an array of u32 whose own shape never changes): which
/// layout and lookup the pinned maps were made for.
pub const LAYOUT_SLOTS: u32 = 4;
/// `LAYOUT` index of [`LAYOUT_VERSION`].
pub const LAYOUT_SLOT_VERSION: u32 = 0;
/// `LAYOUT` index of the [`Lookup`] the tables are filled for.
pub const LAYOUT_SLOT_LOOKUP: u32 = 1;

/// Bytes of a name in [`SlotName`]: device and region names are at most 64
/// bytes, and an inline allow set adds "/allow" to a rule name of up to 64.
pub const SLOT_NAME_BYTES: usize = 76;
/// Map `NAMES` (user space only, like `LAYOUT`): which device, country or
/// region name owns each counter index, so counts keep their names across
/// reloads and restarts. Index `d` is device `d`; `NAMES_COUNTRY_BASE + c`
/// is country id `c`; `NAMES_REGION_BASE + r` is region id `r` (ids 0, "no
/// country" and "no region", are never named).
pub const NAMES_COUNTRY_BASE: u32 = MAX_DEVICES;
/// First region entry of `NAMES` (see [`NAMES_COUNTRY_BASE`]).
pub const NAMES_REGION_BASE: u32 = MAX_DEVICES + COUNTRY_STRIDE;
/// Entries of `NAMES` for `region_stride` (see [`Control::region_stride`]).
#[must_use]
pub const fn names_slots(region_stride: u32) -> u32 {
    NAMES_REGION_BASE + region_stride
}
/// Entries of `NAMES` for the default region room.
pub const NAMES_SLOTS: u32 = names_slots(REGION_ROOM_DEFAULT + 1);
/// [`SlotName::state`]: no name owns the index (never used).
pub const SLOT_EMPTY: u8 = 0;
/// [`SlotName::state`]: the name is in a policy that may still count into
/// the index.
pub const SLOT_LIVE: u8 = 1;
/// [`SlotName::state`]: the name left the policy; the index keeps its counts
/// until another name takes it.
pub const SLOT_RETIRED: u8 = 2;

/// One entry of map `NAMES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotName {
    /// [`SLOT_EMPTY`], [`SLOT_LIVE`] or [`SLOT_RETIRED`].
    pub state: u8,
    /// Bytes of `name` in use.
    pub len: u8,
    pub _pad: [u8; 2],
    /// UTF-8, zero padded.
    pub name: [u8; SLOT_NAME_BYTES],
}
const _: () = assert!(size_of::<SlotName>() == 80);

impl SlotName {
    pub const EMPTY: Self = Self {
        state: SLOT_EMPTY,
        len: 0,
        _pad: [0; 2],
        name: [0; SLOT_NAME_BYTES],
    };
}

impl Default for SlotName {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// Per-generation facts about the published tables (map `POLICY_META`,
/// index = generation).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyMeta {
    /// Number of region classes, including class 0; row stride of `DECISIONS_*`.
    pub classes: u32,
    /// Number of devices, including the default.
    pub devices: u32,
    /// Serial number of the policy, copied into events so userspace can name
    /// devices, regions and rules even across reloads.
    pub epoch: u32,
    /// Number of port classes (innermost stride of `DECISIONS_*`). 1 means
    /// no rule has protocol/port qualifiers and `PORT_CLASS_*` is not read.
    pub port_classes: u32,
    /// Which device tables have entries ([`DEVICE_BY_MAC`] | ...); empty
    /// ones are not looked up.
    pub device_tables: u32,
    /// Digest of the policy's device, region and rule names: a restarted
    /// controller names events of the policy it found pinned when its own
    /// compile of the policy file has the same digest.
    pub names_digest: u32,
}
const _: () = assert!(size_of::<PolicyMeta>() == 24);

/// [`PolicyMeta::device_tables`] bits.
pub const DEVICE_BY_MAC: u32 = 1;
pub const DEVICE_BY_V4: u32 = 2;
pub const DEVICE_BY_V6: u32 = 4;

/// One cell of the decision table: what a device does with one region class.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// [`Verdict`] as u8.
    pub verdict: u8,
    pub _pad: u8,
    /// Region the destination is attributed to (for counters and events).
    pub region: u16,
    /// Rule that decided, or [`NO_RULE`].
    pub rule: u16,
    /// Country of the destination's class, or [`NO_COUNTRY`] (counted for
    /// all traffic, whatever the policy's regions).
    pub country: u16,
}
const _: () = assert!(size_of::<Decision>() == 8);

/// Key of the MAC device table: the 6 address bytes, zero padded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacKey {
    pub addr: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<MacKey>() == 8);

impl MacKey {
    #[must_use]
    pub const fn new(addr: [u8; 6]) -> Self {
        Self { addr, _pad: [0; 2] }
    }
}

/// A drop or audit event, written to the `EVENTS` ring buffer.
///
/// Addresses are in network byte order; IPv4 addresses occupy the first four
/// bytes of the 16-byte fields. Ports are in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_boot_ns` at the decision.
    pub ts_ns: u64,
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_mac: [u8; 6],
    /// 4 or 6; 0 when the frame was not parsed far enough.
    pub family: u8,
    /// L4 protocol number (IPPROTO_*), 0 if unknown.
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
    /// Device index in the policy of `epoch`.
    pub device: u16,
    /// Region id in the policy of `epoch`.
    pub region: u16,
    /// Rule id in the policy of `epoch`.
    pub rule: u16,
    /// [`Verdict`] as u8.
    pub verdict: u8,
    /// [`Reason`] as u8.
    pub reason: u8,
    /// Interface the frame arrived on.
    pub ifindex: u32,
    /// Frame length in bytes.
    pub len: u32,
    /// Policy serial number (see [`PolicyMeta::epoch`]).
    pub epoch: u32,
    /// Country id of the destination in the policy of `epoch`.
    pub country: u16,
    /// 1: a candidate event ("would drop"/"would pass"): `verdict`,
    /// `rule` and `region` are the staged candidate's (its own ids), the
    /// live policy decided `live_verdict` and enforced it. 0: a live event.
    pub candidate: u8,
    /// The live [`Verdict`] as u8 (candidate events only).
    pub live_verdict: u8,
    pub _pad: [u8; 4],
}
const _: () = assert!(size_of::<Event>() == 80);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), contain only integers and arrays of
    // integers, and have no implicit padding (checked by the size asserts).
    unsafe impl aya::Pod for super::TrafficCounter {}
    unsafe impl aya::Pod for super::Control {}
    unsafe impl aya::Pod for super::PolicyMeta {}
    unsafe impl aya::Pod for super::Decision {}
    unsafe impl aya::Pod for super::MacKey {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::FibSlot {}
    unsafe impl aya::Pod for super::FibLong {}
    unsafe impl aya::Pod for super::Bucket {}
    unsafe impl aya::Pod for super::SlotName {}
    unsafe impl aya::Pod for super::DestKey {}
    unsafe impl aya::Pod for super::DestCounter {}
    unsafe impl aya::Pod for super::dns::DnsCopy {}
    unsafe impl aya::Pod for super::CandidateKey {}
    unsafe impl aya::Pod for super::CandidateMeta {}
}

/// Size of the benchmark object's destination key pool (a power of two).
pub const BENCH_KEYS: u32 = 1 << 16;

/// Length of the frame `bench_redirect` restores before every run: a UDP
/// datagram over IPv4 with no payload (Ethernet 14 + IPv4 20 + UDP 8).
pub const BENCH_GEN_FRAME: usize = 42;
