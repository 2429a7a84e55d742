//! The compiled lookup in the kernel: the search of `regionwall_common::fib`
//! over one generation's `FIB_*` arrays, each read a bounds-checked map
//! lookup.
//!
//! Generic over the generation, as everything reading policy tables (see
//! `maps::Generation`).

use regionwall_common::{
    Counter, FibLong, FibSlot, NO_CLASS,
    fib::{self, FibTables},
};

use crate::{counters, maps::Generation};

/// The `FIB_*` arrays of generation `G`, read as the search expects.
struct Fib<const G: u32>;

impl<const G: u32> FibTables for Fib<G> {
    #[inline(always)]
    fn slot(&self, index: u32) -> Option<FibSlot> {
        Generation::<G>::fib_slots().get(index).copied()
    }

    #[inline(always)]
    fn range(&self, index: u32) -> Option<u64> {
        Generation::<G>::fib_ranges().get(index).copied()
    }

    #[inline(always)]
    fn long(&self, index: u32) -> Option<FibLong> {
        Generation::<G>::fib_long().get(index).copied()
    }
}

#[inline(always)]
fn found(class: Option<u32>) -> u32 {
    match class {
        Some(c) => c,
        None => {
            counters::count(Counter::BadLookup);
            NO_CLASS
        }
    }
}

/// Region class of an IPv4 destination (the address as a number) in
/// generation `G`.
#[inline(always)]
pub fn class_v4<const G: u32>(addr: u32) -> u32 {
    found(fib::class_v4(&Fib::<G>, addr))
}

/// Region class of an IPv6 destination (wire-order words, see `Packet`) in
/// generation `G`.
#[inline(always)]
pub fn class_v6<const G: u32>(dst: [u32; 4]) -> u32 {
    let word = |i: usize| u64::from(u32::from_be(dst[i]));
    let hi = (word(0) << 32) | word(1);
    let lo = (word(2) << 32) | word(3);
    found(fib::class_v6(&Fib::<G>, hi, lo))
}
