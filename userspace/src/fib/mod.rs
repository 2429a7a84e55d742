//! The compiled lookup ("FIB") of one policy: destination -> region class
//! in a direct /16 table plus short sorted runs (a DXR-style range table),
//! the layout documented in `regionwall_common` next to [`FibSlot`].
//!
//! [`Fib::build`] (in `build`) makes it from the LPM table;
//! [`Fib::class_v4`] and [`Fib::class_v6`] run the kernel's search
//! (`regionwall_common::fib`) over the built tables, so the structure can be
//! checked without a kernel.

mod build;

use regionwall_common::{
    FibLong, FibSlot,
    fib::{self, FibTables},
};

pub use self::build::RUN_MAX;

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

/// What to do about a shortfall: start with more room, or (beyond the
/// largest room a map may have) another lookup or a smaller policy.
fn remedy(tables: &[Shortfall]) -> String {
    let max = regionwall_common::FIB_MAX_CAPACITY as usize;
    if tables.iter().any(|t| t.needed > max) {
        format!(
            ", more than the {max} entries a compiled table may have: this policy cannot be loaded with it; use --lookup lpm (it holds up to {} IPv4 and {} IPv6 prefixes after merging) or fewer prefixes",
            regionwall_common::LPM_V4_MAX_ENTRIES,
            regionwall_common::LPM_V6_MAX_ENTRIES
        )
    } else {
        format!(
            " but the program was loaded with less; restart `run` with {} (1.5 times the need, so reloads can grow), or use --lookup lpm",
            raise(tables)
        )
    }
}

/// The compiled lookup cannot represent a table.
#[derive(Debug, thiserror::Error)]
pub enum FibError {
    /// Every table that does not fit (at least one).
    #[error("the compiled lookup {}{}", needs(.0), remedy(.0))]
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

#[cfg(test)]
mod tests {
    use regionwall_common::MAX_CLASSES;

    use super::*;
    use crate::policy::{
        Prefix, V4, V6,
        net::{Bits, host_mask},
    };

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

    /// A shortfall within the largest room says how to start with more;
    /// one beyond it says the policy cannot be loaded this way.
    #[test]
    fn a_shortfall_says_what_can_be_done() {
        let short = |needed| {
            FibError::Capacity(vec![Shortfall {
                what: "FIB_SLOTS",
                flag: "--fib-slots",
                needed,
                capacity: 1000,
            }])
            .to_string()
        };
        let within = short(2000);
        assert!(
            within.contains("needs 2000 FIB_SLOTS entries (room for 1000)")
                && within.contains("restart `run` with --fib-slots 3000"),
            "{within}"
        );
        let beyond = short(regionwall_common::FIB_MAX_CAPACITY as usize + 1);
        assert!(
            beyond.contains("cannot be loaded with it") && !beyond.contains("--fib-slots"),
            "{beyond}"
        );
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
