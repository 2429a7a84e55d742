//! Exact address-set algebra: prefixes from any number of sources are merged
//! into sorted, disjoint ranges, exceptions are subtracted, and the result is
//! turned back into the minimal list of CIDRs covering exactly the same
//! addresses. Nothing is gained or lost on the way.

use crate::net::Bits;

/// A set of addresses of one family as sorted, disjoint, non-adjacent
/// inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(u128, u128)>,
}

impl RangeSet {
    /// The union of `prefixes`.
    pub fn from_prefixes<'a, B: Bits + 'a>(prefixes: impl IntoIterator<Item = &'a B>) -> Self {
        Self::from_ranges(prefixes.into_iter().map(|p| (p.addr(), p.last())))
    }

    /// The union of inclusive ranges (`start <= end`; others are ignored).
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u128, u128)>) -> Self {
        let mut ranges: Vec<(u128, u128)> = ranges.into_iter().filter(|(s, e)| s <= e).collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for (s, e) in ranges {
            match merged.last_mut() {
                // Overlapping or adjacent: extend.
                Some(last) if s <= last.1.saturating_add(1) || last.1 == u128::MAX => {
                    last.1 = last.1.max(e);
                }
                _ => merged.push((s, e)),
            }
        }
        Self { ranges: merged }
    }

    #[must_use]
    pub fn ranges(&self) -> &[(u128, u128)] {
        &self.ranges
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    #[must_use]
    pub fn contains(&self, addr: u128) -> bool {
        let i = self.ranges.partition_point(|(s, _)| *s <= addr);
        i > 0 && self.ranges[i - 1].1 >= addr
    }

    /// Addresses in `self` and not in `other`.
    #[must_use]
    pub fn subtract(&self, other: &Self) -> Self {
        let mut out = Vec::with_capacity(self.ranges.len());
        let mut j = 0;
        for &(s, e) in &self.ranges {
            let mut start = s;
            let mut open = true;
            // Skip exceptions that end before this range.
            while j < other.ranges.len() && other.ranges[j].1 < start {
                j += 1;
            }
            let mut k = j;
            while open && k < other.ranges.len() && other.ranges[k].0 <= e {
                let (xs, xe) = other.ranges[k];
                if xs > start {
                    out.push((start, xs - 1));
                }
                if xe >= e {
                    open = false;
                } else {
                    start = xe + 1;
                    k += 1;
                }
            }
            if open {
                out.push((start, e));
            }
        }
        Self { ranges: out }
    }

    /// The minimal list of prefixes covering exactly this set, sorted by address.
    #[must_use]
    pub fn to_prefixes<B: Bits>(&self) -> Vec<B> {
        let mut out = Vec::new();
        for &(s, e) in &self.ranges {
            range_to_prefixes(s, e, &mut out);
        }
        out
    }
}

/// Appends the minimal prefixes covering exactly `start..=end` (which must be
/// within the family's width).
pub fn range_to_prefixes<B: Bits>(mut start: u128, end: u128, out: &mut Vec<B>) {
    let width = u32::from(B::WIDTH);
    while start <= end {
        let align = start.trailing_zeros().min(width);
        let span = end - start;
        // Largest k with 2^k addresses fitting in the remaining span.
        let fit = if span == u128::MAX {
            128
        } else {
            (span + 1).ilog2()
        };
        let k = align.min(fit);
        #[expect(clippy::cast_possible_truncation, reason = "k <= width <= 128")]
        out.push(B::make(start, (width - k) as u8));
        if k == 128 {
            return;
        }
        let last = start + ((1u128 << k) - 1);
        if last >= end {
            return;
        }
        start = last + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{V4, V6};

    fn v4s(list: &[V4]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn ranges_split_into_minimal_cidrs() {
        let mut out: Vec<V4> = Vec::new();
        // 1.0.1.0 + 768 addresses (an RIR record whose count is not a power of two).
        range_to_prefixes(0x0100_0100, 0x0100_0100 + 767, &mut out);
        assert_eq!(v4s(&out), ["1.0.1.0/24", "1.0.2.0/23"]);
        out.clear();
        range_to_prefixes(0, u128::from(u32::MAX), &mut out);
        assert_eq!(v4s(&out), ["0.0.0.0/0"]);
        out.clear();
        range_to_prefixes(5, 5, &mut out);
        assert_eq!(v4s(&out), ["0.0.0.5/32"]);
        let mut all: Vec<V6> = Vec::new();
        range_to_prefixes(0, u128::MAX, &mut all);
        assert_eq!(all, [V6 { addr: 0, len: 0 }]);
        all.clear();
        range_to_prefixes(1, u128::MAX, &mut all);
        assert_eq!(all.len(), 128);
        assert_eq!(all[0], V6 { addr: 1, len: 128 });
        assert_eq!(
            all[127],
            V6 {
                addr: 1 << 127,
                len: 1
            }
        );
    }

    #[test]
    fn union_merges_overlaps_and_neighbours_and_subtract_carves() {
        let set = RangeSet::from_ranges([(10, 20), (15, 30), (31, 40), (50, 60), (0, 0)]);
        assert_eq!(set.ranges(), &[(0, 0), (10, 40), (50, 60)]);
        let minus = set.subtract(&RangeSet::from_ranges([(0, 12), (20, 20), (55, 100)]));
        assert_eq!(minus.ranges(), &[(13, 19), (21, 40), (50, 54)]);
        assert!(minus.contains(13) && !minus.contains(20) && minus.contains(54));
        assert!(!minus.contains(55) && !minus.contains(0));
        let max = RangeSet::from_ranges([(u128::MAX - 1, u128::MAX), (0, u128::MAX - 5)]);
        assert_eq!(
            max.ranges(),
            &[(0, u128::MAX - 5), (u128::MAX - 1, u128::MAX)]
        );
        let everything = RangeSet::from_ranges([(0, u128::MAX), (7, 9)]);
        assert_eq!(everything.ranges(), &[(0, u128::MAX)]);
        assert!(
            everything
                .subtract(&RangeSet::from_ranges([(0, u128::MAX)]))
                .is_empty()
        );
    }
}
