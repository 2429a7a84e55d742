//! The country database: every destination's country, from the policy's sources in precedence order.
//!
//! When a policy has a country database (`regions_dir` or `[sources.*]`),
//! every packet is counted under its destination's country, whatever the
//! policy's regions. Sources may disagree; the precedence is:
//!
//! 1. sources in `countries_from` order (default: `regions_dir` first, then
//!    the `[sources.*]` tables by name): the first source that lists an
//!    address decides its country, later sources only fill the gaps;
//! 2. within one source, where two countries list the same address (a
//!    data error), the country whose code sorts first.
//!
//! [`CountryDb::attribution`] applies it to whole prefix lists (for the
//! compiler); `explain` applies it address by address from the raw lists
//! and shows every source's answer.

use crate::{
    net::{Bits, Prefix, V4, V6},
    set::range_to_prefixes,
    sources::Sourced,
};

/// One source of country data, as the policy loaded it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountrySource {
    /// `regions_dir` or the `[sources.<name>]` name.
    pub name: String,
    /// Upper-case ISO codes with their prefixes, sorted by code.
    pub countries: Vec<(String, Sourced)>,
}

/// The sources that attribute destinations to countries, in precedence
/// order; empty when the policy has no country database (or sets
/// `countries_from = []`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountryDb {
    pub sources: Vec<CountrySource>,
}

/// Every country's share of the address space after precedence: disjoint
/// prefixes sorted by address, each with its index into `codes`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attribution {
    pub codes: Vec<String>,
    pub v4: Vec<(V4, u16)>,
    pub v6: Vec<(V6, u16)>,
}

impl Attribution {
    /// The country of `addr` (IPv4-mapped IPv6 as IPv4), by binary search.
    #[must_use]
    pub fn country(&self, addr: std::net::IpAddr) -> Option<&str> {
        fn find<B: Bits>(list: &[(B, u16)], a: u128) -> Option<u16> {
            let i = list.partition_point(|(p, _)| p.addr() <= a);
            let (p, c) = list.get(i.checked_sub(1)?)?;
            p.contains_addr(a).then_some(*c)
        }
        let c = match super::canonical(addr) {
            std::net::IpAddr::V4(a) => find(&self.v4, u128::from(u32::from(a))),
            std::net::IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }?;
        self.codes.get(usize::from(c)).map(String::as_str)
    }
}

impl CountryDb {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sources.iter().all(|s| s.countries.is_empty())
    }

    /// Every country code any source lists, sorted.
    #[must_use]
    pub fn codes(&self) -> Vec<String> {
        let mut codes: Vec<String> = self
            .sources
            .iter()
            .flat_map(|s| s.countries.iter().map(|(c, _)| c.clone()))
            .collect();
        codes.sort_unstable();
        codes.dedup();
        codes
    }

    /// Prefixes listed by all sources.
    #[must_use]
    pub fn prefix_count(&self) -> usize {
        self.sources
            .iter()
            .flat_map(|s| &s.countries)
            .map(|(_, l)| l.len())
            .sum()
    }

    /// The precedence applied to every prefix (see the module docs).
    #[must_use]
    pub fn attribution(&self) -> Attribution {
        let codes = self.codes();
        let index = |code: &str| {
            let i = codes
                .binary_search_by(|c| c.as_str().cmp(code))
                .unwrap_or(0);
            u16::try_from(i).unwrap_or(u16::MAX)
        };
        // Rank = source position, then code order: the lowest rank covering
        // an address decides it.
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut rank = 0u32;
        let mut country_of_rank = Vec::new();
        for source in &self.sources {
            let mut countries: Vec<&(String, Sourced)> = source.countries.iter().collect();
            countries.sort_by(|a, b| a.0.cmp(&b.0));
            for (code, list) in countries {
                for (p, _) in list {
                    match p {
                        Prefix::V4(p) => v4.push((p.addr(), p.last(), rank)),
                        Prefix::V6(p) => v6.push((p.addr(), p.last(), rank)),
                    }
                }
                country_of_rank.push(index(code));
                rank += 1;
            }
        }
        let label = |ranks: Vec<(u128, u128, u32)>| -> Vec<(u128, u128, u16)> {
            sweep(ranks)
                .into_iter()
                .map(|(s, e, r)| (s, e, country_of_rank[r as usize]))
                .collect()
        };
        Attribution {
            v4: to_prefixes::<V4>(label(v4)),
            v6: to_prefixes::<V6>(label(v6)),
            codes,
        }
    }
}

/// Inclusive ranges with ranks -> disjoint ranges, each with the lowest
/// rank covering it (adjacent ranges of one rank merged). O(n log n).
fn sweep(mut ranges: Vec<(u128, u128, u32)>) -> Vec<(u128, u128, u32)> {
    use std::collections::BTreeMap;
    // Events: (address, is_end, rank). An end event at `e` takes effect
    // after `e`, so it is processed at e + 1 (or never for u128::MAX).
    let mut events: Vec<(u128, bool, u32)> = Vec::with_capacity(ranges.len() * 2);
    ranges.sort_unstable();
    for &(s, e, r) in &ranges {
        events.push((s, false, r));
        if let Some(after) = e.checked_add(1) {
            events.push((after, true, r));
        }
    }
    // Ends before starts at the same address.
    events.sort_unstable_by_key(|&(at, is_end, r)| (at, !is_end, r));
    let mut active: BTreeMap<u32, u32> = BTreeMap::new();
    let mut out: Vec<(u128, u128, u32)> = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let at = events[i].0;
        while i < events.len() && events[i].0 == at {
            let (_, is_end, r) = events[i];
            if is_end {
                if let Some(n) = active.get_mut(&r) {
                    *n -= 1;
                    if *n == 0 {
                        active.remove(&r);
                    }
                }
            } else {
                *active.entry(r).or_insert(0) += 1;
            }
            i += 1;
        }
        let next = events.get(i).map(|e| e.0);
        let Some((&rank, _)) = active.first_key_value() else {
            continue;
        };
        // The segment [at, next - 1], or to the end of the space.
        let end = next.map_or(u128::MAX, |n| n - 1);
        match out.last_mut() {
            Some(last) if last.2 == rank && last.1.checked_add(1) == Some(at) => last.1 = end,
            _ => out.push((at, end, rank)),
        }
    }
    out
}

fn to_prefixes<B: Bits>(ranges: Vec<(u128, u128, u16)>) -> Vec<(B, u16)> {
    let mut out = Vec::new();
    let mut scratch: Vec<B> = Vec::new();
    for (s, e, c) in ranges {
        scratch.clear();
        range_to_prefixes(s, e, &mut scratch);
        out.extend(scratch.drain(..).map(|p| (p, c)));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::{path::Path, sync::Arc};

    use super::*;
    use crate::sources::Origin;

    fn list(cidrs: &[&str]) -> Sourced {
        let file: Arc<Path> = Arc::from(Path::new("t"));
        cidrs
            .iter()
            .map(|c| {
                (
                    Prefix::parse(c).expect("cidr"),
                    Origin {
                        file: file.clone(),
                        line: 1,
                    },
                )
            })
            .collect()
    }

    fn source(name: &str, countries: &[(&str, &[&str])]) -> CountrySource {
        CountrySource {
            name: name.into(),
            countries: countries
                .iter()
                .map(|(c, l)| ((*c).to_string(), list(l)))
                .collect(),
        }
    }

    fn shown(a: &Attribution, codes: &[String]) -> Vec<String> {
        a.v4.iter()
            .map(|(p, c)| format!("{p}={}", codes[usize::from(*c)]))
            .chain(
                a.v6.iter()
                    .map(|(p, c)| format!("{p}={}", codes[usize::from(*c)])),
            )
            .collect()
    }

    #[test]
    fn first_source_wins_later_ones_fill_gaps() {
        let db = CountryDb {
            sources: vec![
                source("a", &[("JP", &["198.51.100.0/25"])]),
                source("b", &[("CN", &["198.51.100.0/24", "2001:db8::/32"])]),
            ],
        };
        let codes = db.codes();
        assert_eq!(codes, ["CN", "JP"]);
        let a = db.attribution();
        assert_eq!(a.country("198.51.100.1".parse().unwrap()), Some("JP"));
        assert_eq!(a.country("198.51.100.200".parse().unwrap()), Some("CN"));
        assert_eq!(
            a.country("::ffff:198.51.100.200".parse().unwrap()),
            Some("CN")
        );
        assert_eq!(a.country("2001:db8::1".parse().unwrap()), Some("CN"));
        assert_eq!(a.country("203.0.113.1".parse().unwrap()), None);
        assert_eq!(
            shown(&a, &codes),
            [
                "198.51.100.0/25=JP",
                "198.51.100.128/25=CN",
                "2001:db8::/32=CN"
            ]
        );
    }

    #[test]
    fn within_a_source_the_first_code_wins_and_ranges_merge() {
        let db = CountryDb {
            sources: vec![source(
                "a",
                &[
                    ("DE", &["203.0.113.0/26", "203.0.113.64/26"]),
                    ("AT", &["203.0.113.32/27"]),
                ],
            )],
        };
        let codes = db.codes();
        assert_eq!(
            shown(&db.attribution(), &codes),
            [
                "203.0.113.0/27=DE",
                "203.0.113.32/27=AT",
                "203.0.113.64/26=DE"
            ]
        );
    }

    #[test]
    fn the_whole_space_and_empty_databases() {
        let db = CountryDb {
            sources: vec![source("a", &[("ZZ", &["0.0.0.0/0", "::/0"])])],
        };
        assert_eq!(
            shown(&db.attribution(), &db.codes()),
            ["0.0.0.0/0=ZZ", "::/0=ZZ"]
        );
        assert_eq!(CountryDb::default().attribution(), Attribution::default());
        assert!(CountryDb::default().is_empty());
    }
}
