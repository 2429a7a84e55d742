//! Builds the compiled lookup ("FIB") from the LPM table: destination ->
//! region class in a direct /16 table plus short sorted runs (a DXR-style
//! range table), the layout documented in `regionwall_common` next to
//! [`FibSlot`].
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
//!
//! [`Fib::class_v4`] and [`Fib::class_v6`] run the kernel's search
//! (`regionwall_common::fib`) over the built tables, so the structure can be
//! checked without a kernel.

use regionwall_common::{
    FIB_DIRECT, FIB_LINE, FIB_LONG_SLOT_BASE, FIB_MAX_LONG, FIB_MAX_SPLITS, FIB_SLOTS, FIB_SPLIT,
    FIB_TAG_LONG, FIB_V6_SLOT_BASE, FibLong, FibSlot, MAX_CLASSES,
    fib::{self, FibTables},
};

use crate::policy::{V4, V6, net::Bits};

/// Longest run left unsplit (a summary scan, then a scan of one group of
/// entries); longer runs become split slots while key bits remain. Measured
/// with `cargo xtask bench`: 32 costs twice the memory at 1M prefixes for
/// no gain, 128 is slower on the world table.
pub const RUN_MAX: usize = LINE * LINE;

const LINE: usize = FIB_LINE as usize;

/// One compiled-lookup table that needs more room than the program was
/// loaded with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// The kernel map, e.g. `FIB_RANGES`.
    pub what: &'static str,
    /// The `run` option that sets this room, e.g. `--fib-ranges`.
    pub flag: &'static str,
    pub needed: usize,
    pub capacity: usize,
}

impl Shortfall {
    /// The value to give [`Shortfall::flag`]: 1.5 times the need, as `run`
    /// sizes its tables at start, so later reloads can grow.
    #[must_use]
    pub const fn suggested(&self) -> usize {
        self.needed.saturating_add(self.needed.div_ceil(2))
    }
}

/// `needs A FIB_SLOTS entries (room for X) and B FIB_RANGES entries (room for Y)`.
fn needs(tables: &[Shortfall]) -> String {
    tables
        .iter()
        .map(|t| {
            format!(
                "needs {} {} entries (room for {})",
                t.needed, t.what, t.capacity
            )
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

/// `--fib-slots N --fib-ranges M`.
fn raise(tables: &[Shortfall]) -> String {
    tables
        .iter()
        .map(|t| format!("{} {}", t.flag, t.suggested()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The compiled lookup cannot represent a table.
#[derive(Debug, thiserror::Error)]
pub enum FibError {
    /// Every table that does not fit (at least one).
    #[error(
        "the compiled lookup {} but the program was loaded with less; restart `run` with {} (1.5 times the need, so reloads can grow), or use --lookup lpm",
        needs(.0),
        raise(.0)
    )]
    Capacity(Vec<Shortfall>),
    #[error("region class {class} does not fit the compiled lookup's 15-bit class field")]
    ClassTooLarge { class: u32 },
    #[error(
        "more than {max} IPv6 /64s contain prefixes longer than /64; the compiled lookup cannot hold them (use --lookup lpm)"
    )]
    TooManyLong { max: usize },
    #[error("the compiled lookup exceeds 2^32 entries")]
    TooLarge,
}

/// The compiled lookup of one policy, ready to copy into the `FIB_*` maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fib {
    /// [`FIB_SLOTS`] fixed slots, then split blocks of 256.
    pub slots: Vec<FibSlot>,
    /// Split blocks in use.
    pub splits: usize,
    pub ranges: Vec<u64>,
    pub long: Vec<FibLong>,
    /// Long slots in use (IPv6 /64s refined below /64).
    pub long_slots: usize,
    /// IPv4 runs while building (32-bit entries), packed into `ranges` at
    /// the end.
    narrow: Vec<u32>,
    /// Class boundaries of each family, after merging equal neighbours.
    pub v4_intervals: usize,
    pub v6_intervals: usize,
}

/// Room the kernel maps were created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub slots: usize,
    pub ranges: usize,
    pub long: usize,
}

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

    /// Errors if the structure does not fit maps created with `capacity`.
    pub fn fits(&self, capacity: Capacity) -> Result<(), FibError> {
        let tables = [
            ("FIB_SLOTS", "--fib-slots", self.slots.len(), capacity.slots),
            (
                "FIB_RANGES",
                "--fib-ranges",
                self.ranges.len(),
                capacity.ranges,
            ),
            ("FIB_LONG", "--fib-long", self.long.len(), capacity.long),
        ];
        let short: Vec<Shortfall> = tables
            .into_iter()
            .filter(|t| t.2 > t.3)
            .map(|(what, flag, needed, capacity)| Shortfall {
                what,
                flag,
                needed,
                capacity,
            })
            .collect();
        if short.is_empty() {
            Ok(())
        } else {
            Err(FibError::Capacity(short))
        }
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

    /// Region class of an IPv4 destination: the kernel's search over these
    /// tables. `None` if they are malformed.
    #[must_use]
    pub fn class_v4(&self, addr: u32) -> Option<u32> {
        fib::class_v4(self, addr)
    }

    /// Region class of an IPv6 destination: the kernel's search over these
    /// tables. `None` if they are malformed.
    #[must_use]
    pub fn class_v6(&self, addr: u128) -> Option<u32> {
        fib::class_v6(self, high_u64(addr), low_u64(addr))
    }

    /// Bytes the kernel reads from (slots + used ranges + used long ranges).
    #[must_use]
    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(self.slots.as_slice())
            + std::mem::size_of_val(self.ranges.as_slice())
            + std::mem::size_of_val(self.long.as_slice())
    }
}

/// Reads over the built tables, as the kernel's over its maps.
impl FibTables for Fib {
    fn slot(&self, index: u32) -> Option<FibSlot> {
        self.slots.get(index as usize).copied()
    }

    fn range(&self, index: u32) -> Option<u64> {
        self.ranges.get(index as usize).copied()
    }

    fn long(&self, index: u32) -> Option<FibLong> {
        self.long.get(index as usize).copied()
    }
}

#[expect(clippy::cast_possible_truncation, reason = "the low half, on purpose")]
const fn low_u64(x: u128) -> u64 {
    x as u64
}

const fn high_u64(x: u128) -> u64 {
    low_u64(x >> 64)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Prefix, net::host_mask};

    const ROOMY: Capacity = Capacity {
        slots: 1 << 22,
        ranges: 1 << 20,
        long: 1 << 16,
    };

    fn v4(s: &str) -> V4 {
        match Prefix::parse(s).unwrap() {
            Prefix::V4(p) => p,
            Prefix::V6(_) => panic!("{s}"),
        }
    }

    fn v6(s: &str) -> V6 {
        match Prefix::parse(s).unwrap() {
            Prefix::V6(p) => p,
            Prefix::V4(_) => panic!("{s}"),
        }
    }

    fn lpm<B: Bits>(table: &[(B, u32)], addr: u128) -> u32 {
        table
            .iter()
            .filter(|(p, _)| p.contains_addr(addr))
            .max_by_key(|(p, _)| p.len())
            .map_or(0, |(_, c)| *c)
    }

    #[test]
    fn nested_v4_prefixes_and_edges() {
        let table = vec![
            (v4("0.0.0.0/0"), 1),
            (v4("10.0.0.0/8"), 2),
            (v4("10.1.0.0/16"), 3),
            (v4("10.1.2.128/25"), 4),
            (v4("10.1.2.255/32"), 5),
            (v4("255.255.255.255/32"), 6),
        ];
        let fib = Fib::build(&table, &[], ROOMY).unwrap();
        for a in [
            0u32,
            0x09ff_ffff,
            0x0a00_0000,
            0x0a00_ffff,
            0x0a01_0000,
            0x0a01_027f,
            0x0a01_0280,
            0x0a01_02fe,
            0x0a01_02ff,
            0x0a01_0300,
            0x0a01_ffff,
            0x0a02_0000,
            0x0aff_ffff,
            0x0b00_0000,
            0xffff_fffe,
            0xffff_ffff,
        ] {
            assert_eq!(fib.class_v4(a), Some(lpm(&table, u128::from(a))), "{a:#x}");
        }
        // 10.1.0.0/16 is a run; 11.0.0.0/16 a leaf of class 1.
        assert!(fib.slots[0x0a01].len > 0);
        assert_eq!(fib.slots[0x0b00], FibSlot::leaf(1));
    }

    #[test]
    fn v6_long_runs_and_the_top_of_the_space() {
        let table = vec![
            (v6("2001:db8::/32"), 1),
            (v6("2001:db8:0:1::/64"), 2),
            (v6("2001:db8:0:1::8/125"), 3),
            (v6("2001:db8:0:1::/128"), 4),
            (v6("2001:db8:0:2::/63"), 5),
            (v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"), 6),
            (v6("::/1"), 7),
        ];
        let fib = Fib::build(&[], &table, ROOMY).unwrap();
        assert_eq!(fib.long_slots, 2);
        let base: u128 = 0x2001_0db8_0000_0001 << 64;
        for a in [
            0u128,
            base - 1,
            base,
            base + 1,
            base + 7,
            base + 8,
            base + 15,
            base + 16,
            base + (1 << 64) - 1,
            base + (1 << 64),
            base + (3 << 64) - 1,
            base + (3 << 64),
            u128::MAX - 1,
            u128::MAX,
            1 << 127,
            (1 << 127) - 1,
        ] {
            assert_eq!(fib.class_v6(a), Some(lpm(&table, a)), "{a:#x}");
        }
    }

    #[test]
    fn capacity_and_class_limits_are_errors() {
        let table = vec![(v4("10.0.0.0/24"), 1), (v4("10.0.1.0/24"), 2)];
        let small = Capacity {
            slots: 1 << 20,
            ranges: 1,
            long: 0,
        };
        assert!(matches!(
            Fib::build(&table, &[], small),
            Err(FibError::Capacity(ref short)) if short == &[Shortfall {
                what: "FIB_RANGES",
                flag: "--fib-ranges",
                needed: 2,
                capacity: 1
            }]
        ));
        let message = Fib::build(&table, &[], small)
            .expect_err("too small")
            .to_string();
        assert!(
            message.contains("needs 2 FIB_RANGES entries (room for 1)")
                && message.contains("restart `run` with --fib-ranges 3 "),
            "{message}"
        );
        let big = vec![(v4("10.0.0.0/24"), MAX_CLASSES)];
        assert!(matches!(
            Fib::build(&big, &[], ROOMY),
            Err(FibError::ClassTooLarge { .. })
        ));
    }

    #[test]
    fn capacity_error_names_every_flag_with_room_to_grow() {
        let short = |what, flag, needed, capacity| Shortfall {
            what,
            flag,
            needed,
            capacity,
        };
        let e = FibError::Capacity(vec![
            short("FIB_SLOTS", "--fib-slots", 1_200_000, 1 << 20),
            short("FIB_RANGES", "--fib-ranges", 1_176_703, 524_288),
        ]);
        assert_eq!(
            e.to_string(),
            "the compiled lookup needs 1200000 FIB_SLOTS entries (room for 1048576) and \
             needs 1176703 FIB_RANGES entries (room for 524288) but the program was \
             loaded with less; restart `run` with --fib-slots 1800000 --fib-ranges 1765055 \
             (1.5 times the need, so reloads can grow), or use --lookup lpm"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Random nested tables in a small area (so prefixes overlap and
        /// IPv6 /64s get refined): the structure agrees with a naive
        /// longest-prefix match on every boundary and on random addresses.
        #[test]
        fn agrees_with_naive_lpm(
            raw4 in proptest::collection::vec((0u32..1 << 20, 8u8..=32, 1u32..6), 0..60),
            raw6 in proptest::collection::vec((0u128..1 << 72, 40u8..=128, 1u32..6), 0..60),
            probes in proptest::collection::vec(proptest::prelude::any::<u128>(), 32),
        ) {
            let mut t4: Vec<(V4, u32)> = raw4
                .iter()
                .map(|&(a, len, c)| {
                    let a = 0x0a00_0000 | a << 4;
                    (V4::make(u128::from(a) & !host_mask(32, len), len), c)
                })
                .collect();
            t4.sort_by_key(|(p, _)| (p.addr, p.len));
            t4.dedup_by_key(|(p, _)| *p);
            let mut t6: Vec<(V6, u32)> = raw6
                .iter()
                .map(|&(a, len, c)| {
                    let a = (0x2001_0db8_u128 << 96) | a << 8;
                    (V6::make(a & !host_mask(128, len), len), c)
                })
                .collect();
            t6.sort_by_key(|(p, _)| (p.addr, p.len));
            t6.dedup_by_key(|(p, _)| *p);
            let fib = Fib::build(&t4, &t6, ROOMY).unwrap();
            let mut a4: Vec<u128> = probes.iter().map(|p| (p & 0x00ff_ffff) | 0x0a00_0000).collect();
            let mut a6: Vec<u128> = probes.iter().map(|p| (p >> 48) | (0x2001_0db8_u128 << 96)).collect();
            for (p, _) in &t4 {
                a4.extend([p.addr(), p.last(), p.addr().wrapping_sub(1) & 0xffff_ffff, (p.last() + 1) & 0xffff_ffff]);
            }
            for (p, _) in &t6 {
                a6.extend([p.addr(), p.last(), p.addr().wrapping_sub(1), p.last().wrapping_add(1)]);
            }
            for a in a4 {
                let a32 = u32::try_from(a).unwrap();
                proptest::prop_assert_eq!(fib.class_v4(a32), Some(lpm(&t4, a)), "{:#x}", a);
            }
            for a in a6 {
                proptest::prop_assert_eq!(fib.class_v6(a), Some(lpm(&t6, a)), "{:#x}", a);
            }
        }
    }
}
