//! The compiled lookup's search, written once: the XDP program runs it over
//! its `FIB_*` maps and the controller over the slices it built.
//!
//! A direct read of the /16 slot, split slots if any, then a scan of a short
//! sorted run (through its summary when longer than [`FIB_LINE`]); IPv6 /64s
//! refined below /64 add a binary search in `FIB_LONG`. The layout is
//! documented in the crate root next to [`FibSlot`].
//!
//! Written for the verifier: every loop has a constant bound, every read
//! goes through [`FibTables`] (which bounds-checks it and may fail), and
//! every function is `#[inline(always)]` so the kernel gets one straight
//! program per call site.
#![expect(
    clippy::inline_always,
    reason = "the XDP program is built from these bodies inlined at each call"
)]

use crate::{
    FIB_LINE, FIB_LONG_SLOT_BASE, FIB_MAX_SPLITS, FIB_SEARCH_STEPS, FIB_SPLIT, FIB_TAG_LONG,
    FIB_V6_SLOT_BASE, FibLong, FibSlot,
};

/// Bounds-checked reads of one generation's `FIB_*` tables: `None` outside
/// the table (the lookup then fails rather than read past it).
pub trait FibTables {
    /// The `index`-th entry of `FIB_SLOTS`.
    fn slot(&self, index: u32) -> Option<FibSlot>;
    /// The `index`-th 64-bit element of `FIB_RANGES`.
    fn range(&self, index: u32) -> Option<u64>;
    /// The `index`-th entry of `FIB_LONG`.
    fn long(&self, index: u32) -> Option<FibLong>;
}

/// Region class of an IPv4 destination (the address as a number), `None`
/// if the tables are malformed.
#[inline(always)]
pub fn class_v4(t: &impl FibTables, addr: u32) -> Option<u32> {
    let key = u64::from(addr);
    let slot = t.slot(addr >> 16)?;
    let (slot, rem) = descend(t, slot, key, 16)?;
    if slot.len == 0 {
        return Some(slot.base);
    }
    let entry = run_entry(|i| narrow(t, i), slot, key & ((1u64 << rem) - 1))?;
    // IPv4 runs never point into FIB_LONG.
    Some(low32(entry & 0x7fff))
}

/// Region class of an IPv6 destination given as its high and low 64 bits,
/// `None` if the tables are malformed.
#[inline(always)]
pub fn class_v6(t: &impl FibTables, hi: u64, lo: u64) -> Option<u32> {
    let slot = t.slot(FIB_V6_SLOT_BASE + low32(hi >> 48))?;
    let (slot, rem) = descend(t, slot, hi, 48)?;
    if slot.len == 0 {
        return Some(slot.base);
    }
    let entry = run_entry(|i| t.range(i), slot, hi & ((1u64 << rem) - 1))?;
    let tag = entry & 0xffff;
    if tag & FIB_TAG_LONG == 0 {
        return Some(low32(tag));
    }
    let lslot = t.slot(FIB_LONG_SLOT_BASE + low32(tag & !FIB_TAG_LONG))?;
    let start = |i: u32| t.long(i).map(|r| r.start);
    let index = bsearch(start, lslot.base, lslot.len, lo)?;
    Some(low32(t.long(index)?.class))
}

/// The low 32 bits (of a value masked or shifted to fit them).
#[inline(always)]
#[expect(clippy::cast_possible_truncation, reason = "the low half, on purpose")]
const fn low32(x: u64) -> u32 {
    x as u32
}

/// The `index`-th 32-bit IPv4 entry of `FIB_RANGES` (two to an element,
/// the first in the low half).
#[inline(always)]
fn narrow(t: &impl FibTables, index: u32) -> Option<u64> {
    let pair = t.range(index >> 1)?;
    Some((pair >> ((index & 1) * 32)) & 0xffff_ffff)
}

/// Follows split slots down by 8 key bits each. `rem` is the number of key
/// bits below the slot; returns the final slot and the bits left.
#[inline(always)]
fn descend(
    t: &impl FibTables,
    mut slot: FibSlot,
    key: u64,
    mut rem: u32,
) -> Option<(FibSlot, u32)> {
    let mut depth = 0;
    while depth < FIB_MAX_SPLITS {
        if slot.len & FIB_SPLIT == 0 || rem < 8 {
            break;
        }
        rem -= 8;
        slot = t.slot(slot.base + low32((key >> rem) & 0xff))?;
        depth += 1;
    }
    if slot.len & FIB_SPLIT != 0 {
        return None;
    }
    Some((slot, rem))
}

/// Index of the last entry of the run `base..base + len` whose start is <=
/// `key` (the run's first entry starts at 0, so there is one), by halving.
/// `None` if a read fails or the run is longer than the step bound.
#[inline(always)]
fn bsearch(start: impl Fn(u32) -> Option<u64>, base: u32, len: u32, key: u64) -> Option<u32> {
    let mut lo = base;
    let mut n = len;
    let mut step = 0;
    while step < FIB_SEARCH_STEPS {
        if n <= 1 {
            break;
        }
        let half = n / 2;
        if start(lo + half)? <= key {
            lo += half;
        }
        n -= half;
        step += 1;
    }
    (n == 1).then_some(lo)
}

/// Index (from `at`) of the last of `count` (1..=FIB_LINE) sorted entries
/// whose start is <= `key` (the first one's is): a short scan, one
/// mispredicted exit instead of one per halving step.
#[inline(always)]
fn scan(entry: &impl Fn(u32) -> Option<u64>, at: u32, count: u32, key: u64) -> Option<u32> {
    let mut i = 0;
    while i + 1 < FIB_LINE {
        if i + 1 >= count || entry(at + i + 1)? >> 16 > key {
            break;
        }
        i += 1;
    }
    Some(i)
}

/// The last entry of a `FIB_RANGES` run whose start is <= `key`, `entry`
/// reading the run's entries (IPv4 or IPv6 width): runs of up to FIB_LINE
/// entries are scanned, up to FIB_LINE^2 through their summary then one
/// group of entries, longer ones binary-searched past their summary.
#[inline(always)]
fn run_entry(entry: impl Fn(u32) -> Option<u64>, slot: FibSlot, key: u64) -> Option<u64> {
    let n = slot.len;
    if n <= FIB_LINE {
        return entry(slot.base + scan(&entry, slot.base, n, key)?);
    }
    let summary = n.div_ceil(FIB_LINE);
    let entries = slot.base + summary;
    if n > FIB_LINE * FIB_LINE {
        return entry(bsearch(|i| entry(i).map(|e| e >> 16), entries, n, key)?);
    }
    let block = scan(&entry, slot.base, summary, key)?;
    let at = entries + block * FIB_LINE;
    let rest = n - block * FIB_LINE;
    let count = if rest < FIB_LINE { rest } else { FIB_LINE };
    entry(at + scan(&entry, at, count, key)?)
}
