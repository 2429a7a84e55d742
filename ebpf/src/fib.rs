//! The compiled lookup: destination -> region class through the `FIB_*`
//! arrays (layout in `regionwall_common`, builder in the controller's
//! `fib.rs`). A direct read of the /16 slot, split slots if any, then a
//! scan of a short sorted run (through its summary when longer than
//! FIB_LINE); IPv6 /64s refined below /64 add a binary search in FIB_LONG.
//! Every read is a bounds-checked array lookup and every loop has a
//! constant bound.
//!
//! Functions are generic over the generation so each instance names its maps
//! statically (the verifier needs a constant map pointer per call site).

use aya_ebpf::maps::Array;
use regionwall_common::{
    Counter, FIB_LINE, FIB_LONG_SLOT_BASE, FIB_MAX_SPLITS, FIB_SEARCH_STEPS, FIB_SPLIT,
    FIB_TAG_LONG, FIB_V6_SLOT_BASE, FibLong, FibSlot, NO_CLASS,
};

use crate::{maps::*, report};

#[inline(always)]
fn slots<const G: u32>() -> &'static Array<FibSlot> {
    if G == 0 { &FIB_SLOTS_0 } else { &FIB_SLOTS_1 }
}

#[inline(always)]
fn ranges<const G: u32>() -> &'static Array<u64> {
    if G == 0 { &FIB_RANGES_0 } else { &FIB_RANGES_1 }
}

#[inline(always)]
fn long<const G: u32>() -> &'static Array<FibLong> {
    if G == 0 { &FIB_LONG_0 } else { &FIB_LONG_1 }
}

/// Index of the last entry of the run `base..base + len` whose start is <=
/// `key` (the run's first entry starts at 0, so there is one), by halving.
/// `None` if a read falls outside its array or the run is longer than the
/// step bound.
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

/// Follows split slots down by 8 key bits each. `rem` is the number of key
/// bits below the slot; returns the final slot and the bits left.
#[inline(always)]
fn descend<const G: u32>(mut slot: FibSlot, key: u64, mut rem: u32) -> Option<(FibSlot, u32)> {
    let mut depth = 0;
    while depth < FIB_MAX_SPLITS {
        if slot.len & FIB_SPLIT == 0 || rem < 8 {
            break;
        }
        rem -= 8;
        slot = *slots::<G>().get(slot.base + ((key >> rem) & 0xff) as u32)?;
        depth += 1;
    }
    if slot.len & FIB_SPLIT != 0 {
        return None;
    }
    Some((slot, rem))
}

/// The `index`-th 64-bit (IPv6) entry of `FIB_RANGES`.
#[inline(always)]
fn wide<const G: u32>(index: u32) -> Option<u64> {
    ranges::<G>().get(index).copied()
}

/// The `index`-th 32-bit IPv4 entry of `FIB_RANGES` (two to an element,
/// the first in the low half).
#[inline(always)]
fn narrow<const G: u32>(index: u32) -> Option<u64> {
    let pair = *ranges::<G>().get(index >> 1)?;
    Some((pair >> ((index & 1) * 32)) & 0xffff_ffff)
}

/// Index of the last of `count` (1..=FIB_LINE) sorted entries from `at`
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

#[inline(always)]
fn found(class: Option<u32>) -> u32 {
    match class {
        Some(c) => c,
        None => {
            report::count(Counter::BadLookup);
            NO_CLASS
        }
    }
}

#[inline(always)]
fn v4_inner<const G: u32>(addr: u32) -> Option<u32> {
    let key = u64::from(addr);
    let slot = *slots::<G>().get(addr >> 16)?;
    let (slot, rem) = descend::<G>(slot, key, 16)?;
    if slot.len == 0 {
        return Some(slot.base);
    }
    let entry = run_entry(narrow::<G>, slot, key & ((1u64 << rem) - 1))?;
    // IPv4 runs never point into FIB_LONG.
    Some((entry & 0x7fff) as u32)
}

#[inline(always)]
fn v6_inner<const G: u32>(addr: [u32; 4]) -> Option<u32> {
    let word = |i: usize| u64::from(u32::from_be(addr[i]));
    let hi = (word(0) << 32) | word(1);
    let slot = *slots::<G>().get(FIB_V6_SLOT_BASE + (hi >> 48) as u32)?;
    let (slot, rem) = descend::<G>(slot, hi, 48)?;
    if slot.len == 0 {
        return Some(slot.base);
    }
    let entry = run_entry(wide::<G>, slot, hi & ((1u64 << rem) - 1))?;
    let tag = entry & 0xffff;
    if tag & FIB_TAG_LONG == 0 {
        return Some(tag as u32);
    }
    let lo = (word(2) << 32) | word(3);
    let lslot = *slots::<G>().get(FIB_LONG_SLOT_BASE + (tag & !FIB_TAG_LONG) as u32)?;
    let start = |i: u32| long::<G>().get(i).map(|r| r.start);
    let index = bsearch(start, lslot.base, lslot.len, lo)?;
    Some(long::<G>().get(index)?.class as u32)
}

/// Region class of an IPv4 destination (the address as a number).
#[inline(always)]
pub fn class_v4(generation: u32, addr: u32) -> u32 {
    found(if generation == 0 {
        v4_inner::<0>(addr)
    } else {
        v4_inner::<1>(addr)
    })
}

/// Region class of an IPv6 destination (wire-order words, see `Packet`).
#[inline(always)]
pub fn class_v6(generation: u32, dst: [u32; 4]) -> u32 {
    found(if generation == 0 {
        v6_inner::<0>(dst)
    } else {
        v6_inner::<1>(dst)
    })
}
