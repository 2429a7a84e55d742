//! The per-CPU counters (no atomics on the hot path): every module counts
//! through here, and this module imports none of them.

use regionwall_common::Counter;

use crate::maps::COUNTERS_MAP;

/// Adds one to `counter` on this CPU.
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(p) = COUNTERS_MAP.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *p += 1 };
    }
}
