//! Builds the compiled lookup from the LPM table.
//!
//! 1. The LPM entries become the sorted list of boundaries where the class
//!    changes (`intervals`), covering the whole address space.
//! 2. IPv4: each /16 is a leaf, a run of (low 16 bits, class) entries, or
//!    split into 256 slots by the next 8 bits (recursively) where its run
//!    would be longer than [`RUN_MAX`].
//! 3. IPv6: boundaries are first cut at /64 granularity; a /64 with a finer
//!    boundary becomes a long entry with its own run over the low 64 bits.
//!    Each /16 (top 16 bits) is then a leaf, a run of (bits 16..64, tag),
//!    or split, as for IPv4.

use regionwall_common::{
    FIB_DIRECT, FIB_LINE, FIB_LONG_SLOT_BASE, FIB_MAX_LONG, FIB_MAX_SPLITS, FIB_SLOTS, FIB_SPLIT,
    FIB_TAG_LONG, FIB_V6_SLOT_BASE, FibLong, FibSlot, MAX_CLASSES,
};

use super::{Capacity, Fib, FibError, high_u64, low_u64};
use crate::policy::{V4, V6, net::Bits};

/// Longest run left unsplit (a summary scan, then a scan of one group of
/// entries); longer runs become split slots while key bits remain. Measured
/// with `cargo xtask bench`: 32 costs twice the memory at 1M prefixes for
/// no gain, 128 is slower on the world table.
pub const RUN_MAX: usize = LINE * LINE;

const LINE: usize = FIB_LINE as usize;

impl Fib {
    /// Builds the structure from (prefix, class) LPM entries. Nested prefixes
    /// are allowed; the longest one containing an address decides, as in the
    /// kernel's LPM trie.
    pub fn build(v4: &[(V4, u32)], v6: &[(V6, u32)], capacity: Capacity) -> Result<Self, FibError> {
        let classes = v4.iter().map(|e| e.1).chain(v6.iter().map(|e| e.1));
        if let Some(class) = classes.max().filter(|c| *c >= MAX_CLASSES) {
            return Err(FibError::ClassTooLarge { class });
        }
        // The families are independent: IPv6 on a second thread, then its
        // slots, splits and runs are appended after IPv4's.
        let (mut fib, v6_part) = std::thread::scope(|scope| {
            let v6_part = scope.spawn(|| {
                let mut part = Self::empty();
                let i6 = intervals(v6);
                part.v6_intervals = i6.len();
                part.build_v6(&i6).map(|()| part)
            });
            let mut part = Self::empty();
            let i4 = intervals(v4);
            part.v4_intervals = i4.len();
            part.build_v4(&i4);
            (
                part,
                v6_part
                    .join()
                    .unwrap_or_else(|e| std::panic::resume_unwind(e)),
            )
        });
        fib.append_v6(v6_part?)?;
        fib.fits(capacity)?;
        Ok(fib)
    }

    fn empty() -> Self {
        Self {
            slots: vec![FibSlot::default(); FIB_SLOTS as usize],
            ..Self::default()
        }
    }

    /// Takes the IPv6 slots, splits, runs and long runs of `part` (built
    /// alone), moving its split and run indices past this one's.
    fn append_v6(&mut self, part: Self) -> Result<(), FibError> {
        let slot_offset =
            u32::try_from(self.slots.len() - FIB_SLOTS as usize).map_err(|_| FibError::TooLarge)?;
        let range_offset = u32::try_from(self.ranges.len()).map_err(|_| FibError::TooLarge)?;
        let moved = |slot: FibSlot| -> FibSlot {
            if slot.len & FIB_SPLIT != 0 {
                FibSlot {
                    base: slot.base + slot_offset,
                    ..slot
                }
            } else if slot.len > 0 {
                FibSlot {
                    base: slot.base + range_offset,
                    ..slot
                }
            } else {
                slot
            }
        };
        let v6 = FIB_V6_SLOT_BASE as usize..FIB_LONG_SLOT_BASE as usize;
        for i in v6 {
            self.slots[i] = moved(part.slots[i]);
        }
        // Long slots point into `long`, which only IPv6 has.
        let long = FIB_LONG_SLOT_BASE as usize..FIB_SLOTS as usize;
        self.slots[long.clone()].copy_from_slice(&part.slots[long]);
        self.slots
            .extend(part.slots[FIB_SLOTS as usize..].iter().map(|s| moved(*s)));
        self.ranges.extend_from_slice(&part.ranges);
        self.long = part.long;
        self.long_slots = part.long_slots;
        self.splits += part.splits;
        self.v6_intervals = part.v6_intervals;
        Ok(())
    }

    fn build_v4(&mut self, intervals: &[(u128, u32)]) {
        let entries: Vec<(u64, u64)> = intervals
            .iter()
            .map(|&(start, class)| (low_u64(start), u64::from(class)))
            .collect();
        self.top_level(&entries, 0, 16, true);
        // Two entries to an element, the first in the low half.
        let narrow = std::mem::take(&mut self.narrow);
        self.ranges.extend(
            narrow
                .chunks(2)
                .map(|p| u64::from(p[0]) | (u64::from(p.get(1).copied().unwrap_or(0)) << 32)),
        );
    }

    /// One slot per top-16-bit value of keys with `16 + rem` significant
    /// bits, the slots at `first_slot..`.
    fn top_level(&mut self, entries: &[(u64, u64)], first_slot: usize, rem: u32, narrow: bool) {
        let mut inherited = 0;
        let mut i = 0;
        for top in 0..FIB_DIRECT as usize {
            let first = (top as u64) << rem;
            let mut j = i;
            while j < entries.len() && entries[j].0 >> rem <= top as u64 {
                j += 1;
            }
            let slot = self.block(&entries[i..j], inherited, first, rem, 0, narrow);
            self.slots[first_slot + top] = slot;
            if let Some(last) = entries[i..j].last() {
                inherited = last.1;
            }
            i = j;
        }
    }

    /// The slot for the key block `first..first + 2^rem` holding `entries`
    /// (sorted boundaries inside the block), where `inherited` is in force
    /// at `first` unless an entry starts there; `depth` splits are above it.
    fn block(
        &mut self,
        entries: &[(u64, u64)],
        inherited: u64,
        first: u64,
        rem: u32,
        depth: u32,
        narrow: bool,
    ) -> FibSlot {
        let (head, inside) = match entries.first() {
            Some(e) if e.0 == first => (e.1, &entries[1..]),
            _ => (inherited, entries),
        };
        if inside.is_empty() && head & FIB_TAG_LONG == 0 {
            #[expect(clippy::cast_possible_truncation, reason = "classes are < MAX_CLASSES")]
            return FibSlot::leaf(head as u32);
        }
        if inside.len() < RUN_MAX || rem < 8 || depth >= FIB_MAX_SPLITS {
            let mask = (1u64 << rem) - 1;
            let run: Vec<u64> = std::iter::once(head)
                .chain(inside.iter().map(|&(key, tag)| ((key & mask) << 16) | tag))
                .collect();
            return self.push_run(&run, narrow);
        }
        let sub = rem - 8;
        let block_base = self.slots.len();
        self.slots.resize(block_base + 256, FibSlot::default());
        self.splits += 1;
        let mut current = head;
        let mut i = 0;
        for b in 0..256usize {
            let sub_first = first + ((b as u64) << sub);
            let mut j = i;
            while j < inside.len() && inside[j].0 >> sub <= sub_first >> sub {
                j += 1;
            }
            let slot = self.block(&inside[i..j], current, sub_first, sub, depth + 1, narrow);
            self.slots[block_base + b] = slot;
            if let Some(last) = inside[i..j].last() {
                current = last.1;
            }
            i = j;
        }
        #[expect(
            clippy::cast_possible_truncation,
            reason = "bounded by the capacity check"
        )]
        FibSlot {
            base: block_base as u32,
            len: FIB_SPLIT,
        }
    }

    /// Stores a run (after its summary when longer than a scan) as 32-bit
    /// IPv4 or 64-bit IPv6 entries; returns its slot.
    fn push_run(&mut self, run: &[u64], narrow: bool) -> FibSlot {
        let summary = if run.len() > LINE {
            run.iter().step_by(LINE).copied().collect()
        } else {
            Vec::new()
        };
        let stored = summary.iter().chain(run);
        let base = if narrow {
            let base = self.narrow.len();
            #[expect(
                clippy::cast_possible_truncation,
                reason = "IPv4 starts below a /16 fit 16 bits, classes 15"
            )]
            self.narrow.extend(stored.map(|e| *e as u32));
            base
        } else {
            let base = self.ranges.len();
            self.ranges.extend(stored);
            base
        };
        #[expect(
            clippy::cast_possible_truncation,
            reason = "bounded by the capacity check"
        )]
        FibSlot {
            base: base as u32,
            len: run.len() as u32,
        }
    }

    fn build_v6(&mut self, intervals: &[(u128, u32)]) -> Result<(), FibError> {
        // /64 granularity: (top 64 bits, tag).
        let mut mid: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
        let mut i = 0;
        while i < intervals.len() {
            let (start, class) = intervals[i];
            let hi = high_u64(start);
            if low_u64(start) == 0 {
                push_merged(&mut mid, hi, u64::from(class));
                i += 1;
                continue;
            }
            // A boundary inside /64 `hi`: every boundary of that /64 goes to
            // a long run, which starts with the class in force at the /64's
            // first address (intervals[0] starts at 0, so i >= 1).
            let index = self.long_slots;
            if index >= FIB_MAX_LONG as usize {
                return Err(FibError::TooManyLong {
                    max: FIB_MAX_LONG as usize,
                });
            }
            let base = self.long.len();
            self.long.push(FibLong {
                start: 0,
                class: u64::from(intervals[i - 1].1),
            });
            while i < intervals.len() && high_u64(intervals[i].0) == hi {
                let (s, c) = intervals[i];
                self.long.push(FibLong {
                    start: low_u64(s),
                    class: u64::from(c),
                });
                i += 1;
            }
            let last = self.long.last().map_or(0, |r| r.class);
            self.slots[FIB_LONG_SLOT_BASE as usize + index] = FibSlot {
                base: u32::try_from(base).map_err(|_| FibError::TooLarge)?,
                len: u32::try_from(self.long.len() - base).map_err(|_| FibError::TooLarge)?,
            };
            self.long_slots += 1;
            set_last(&mut mid, hi, FIB_TAG_LONG | index as u64);
            // The next /64 inherits the last class unless a boundary starts it.
            if let Some(next) = hi.checked_add(1)
                && !(i < intervals.len() && intervals[i].0 == u128::from(next) << 64)
            {
                push_merged(&mut mid, next, last);
            }
        }
        self.top_level(&mid, FIB_V6_SLOT_BASE as usize, 48, false);
        Ok(())
    }
}

/// Appends a boundary, replacing one at the same start and dropping one that
/// does not change the tag. Long tags are never equal to each other.
fn push_merged(out: &mut Vec<(u64, u64)>, start: u64, tag: u64) {
    if let Some(last) = out.last()
        && last.0 == start
    {
        out.pop();
    }
    if out
        .last()
        .is_some_and(|l| l.1 == tag && tag & FIB_TAG_LONG == 0)
    {
        return;
    }
    out.push((start, tag));
}

/// Sets the tag at `start` (a long tag replaces the class that started there).
fn set_last(out: &mut Vec<(u64, u64)>, start: u64, tag: u64) {
    if let Some(last) = out.last()
        && last.0 == start
    {
        out.pop();
    }
    out.push((start, tag));
}

/// The class boundaries of an LPM table: sorted (first address, class)
/// pairs, the first at address 0, no two neighbours with the same class.
fn intervals<B: Bits>(entries: &[(B, u32)]) -> Vec<(u128, u32)> {
    // Parents before children: by address, then shorter first (the
    // compiler's order already; sorted here only if not).
    let key = |e: &(B, u32)| (e.0.addr(), e.0.len());
    let sorted: std::borrow::Cow<'_, [(B, u32)]> = if entries.is_sorted_by_key(key) {
        std::borrow::Cow::Borrowed(entries)
    } else {
        let mut v = entries.to_vec();
        v.sort_unstable_by_key(key);
        std::borrow::Cow::Owned(v)
    };
    let mut out: Vec<(u128, u32)> = vec![(0, 0)];
    // Open prefixes: (last address, class).
    let mut stack: Vec<(u128, u32)> = Vec::new();
    let close = |stack: &mut Vec<(u128, u32)>, out: &mut Vec<(u128, u32)>, until: Option<u128>| {
        while let Some(&(last, _)) = stack.last() {
            if until.is_some_and(|addr| last >= addr) {
                break;
            }
            stack.pop();
            let parent = stack.last().map_or(0, |s| s.1);
            if let Some(next) = last.checked_add(1)
                && (B::WIDTH == 128 || next <= u128::from(u32::MAX))
            {
                emit(out, next, parent);
            }
        }
    };
    for &(p, class) in sorted.iter() {
        close(&mut stack, &mut out, Some(p.addr()));
        emit(&mut out, p.addr(), class);
        stack.push((p.last(), class));
    }
    close(&mut stack, &mut out, None);
    out
}

fn emit(out: &mut Vec<(u128, u32)>, start: u128, class: u32) {
    if let Some(last) = out.last_mut()
        && last.0 == start
    {
        last.1 = class;
        let n = out.len();
        if n >= 2 && out[n - 2].1 == class {
            out.pop();
        }
        return;
    }
    if out.last().is_some_and(|l| l.1 == class) {
        return;
    }
    out.push((start, class));
}
