//! Extra prefix sets that split a policy's region classes along another
//! policy's regions and countries (a common refinement of both).

use super::{Compiled, merge_all, region_u16};
use crate::policy::{Policy, V4, V6};

/// Extra tagged prefix sets whose boundaries split the region classes and
/// nothing else (no decision reads them): compiling a policy with another
/// policy's regions and countries gives a common refinement of both
/// policies' classes, every class inside one class of each.
#[derive(Clone, Debug, Default)]
pub struct Refine {
    pub v4: Vec<(V4, u16)>,
    pub v6: Vec<(V6, u16)>,
}

impl Refine {
    /// `policy`'s regions (tags `0..regions`, policy order) then the
    /// countries of `compiled`, its compilation (tag `regions + id - 1`).
    #[must_use]
    pub fn of(policy: &Policy, compiled: &Compiled) -> Self {
        let mut out = Self::default();
        for (i, (v4, v6)) in merge_all(&policy.regions).into_iter().enumerate() {
            out.v4.extend(v4.into_iter().map(|p| (p, region_u16(i))));
            out.v6.extend(v6.into_iter().map(|p| (p, region_u16(i))));
        }
        let base = region_u16(policy.regions.len());
        let a = &compiled.attribution;
        out.v4.extend(a.v4.iter().map(|&(p, c)| (p, base + c)));
        out.v6.extend(a.v6.iter().map(|&(p, c)| (p, base + c)));
        out
    }
}
