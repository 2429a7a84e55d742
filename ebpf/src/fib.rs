//! The compiled lookup in the kernel: the search of `regionwall_common::fib`
//! over one generation's `FIB_*` arrays, each read a bounds-checked map
//! lookup.
//!
//! [`Fib`] is generic over the generation so each instance names its maps
//! statically (the verifier needs a constant map pointer per call site).

use aya_ebpf::maps::Array;
use regionwall_common::{
    Counter, FibLong, FibSlot, NO_CLASS,
    fib::{self, FibTables},
};

use crate::{counters, maps::*};

/// The `FIB_*` arrays of generation `G`.
struct Fib<const G: u32>;

impl<const G: u32> Fib<G> {
    #[inline(always)]
    fn slots() -> &'static Array<FibSlot> {
        if G == 0 { &FIB_SLOTS_0 } else { &FIB_SLOTS_1 }
    }

    #[inline(always)]
    fn ranges() -> &'static Array<u64> {
        if G == 0 { &FIB_RANGES_0 } else { &FIB_RANGES_1 }
    }

    #[inline(always)]
    fn long() -> &'static Array<FibLong> {
        if G == 0 { &FIB_LONG_0 } else { &FIB_LONG_1 }
    }
}

impl<const G: u32> FibTables for Fib<G> {
    #[inline(always)]
    fn slot(&self, index: u32) -> Option<FibSlot> {
        Self::slots().get(index).copied()
    }

    #[inline(always)]
    fn range(&self, index: u32) -> Option<u64> {
        Self::ranges().get(index).copied()
    }

    #[inline(always)]
    fn long(&self, index: u32) -> Option<FibLong> {
        Self::long().get(index).copied()
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

/// Region class of an IPv4 destination (the address as a number).
#[inline(always)]
pub fn class_v4(generation: u32, addr: u32) -> u32 {
    found(if generation == 0 {
        fib::class_v4(&Fib::<0>, addr)
    } else {
        fib::class_v4(&Fib::<1>, addr)
    })
}

/// Region class of an IPv6 destination (wire-order words, see `Packet`).
#[inline(always)]
pub fn class_v6(generation: u32, dst: [u32; 4]) -> u32 {
    let word = |i: usize| u64::from(u32::from_be(dst[i]));
    let hi = (word(0) << 32) | word(1);
    let lo = (word(2) << 32) | word(3);
    found(if generation == 0 {
        fib::class_v6(&Fib::<0>, hi, lo)
    } else {
        fib::class_v6(&Fib::<1>, hi, lo)
    })
}
