//! Keeps every `/metrics` traffic series monotonic: a series whose reading
//! falls is lifted by a carry, so it never goes backwards.
//!
//! A series' reading can fall without any traffic going backwards: a
//! reload hands a freed counter slot to another name and zeroes it (the
//! slot's counts leave `device="other"` and the per-verdict totals), or a
//! device moves from `other` to a label of its own when one before it in
//! the cap leaves. The carry keeps what such a series already showed:
//! exposed = reading + carry, and when that would fall below what was last
//! exposed, the carry grows by the difference. Counts that arrived between
//! the last scrape and the fall are not shown (a series may undercount by
//! them); a series never goes backwards.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::reading::{Count, OTHER, Reading};
use crate::verdict::Verdict;

/// Which family a series is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Family {
    Verdict,
    Region,
    Country,
}

/// A series: family, device, region or country, verdict (labels as
/// exposed; `-` where the family has none).
pub type Key = (Family, String, String, String);

/// What one series last showed and what it is lifted by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lift {
    pub last: Count,
    pub carry: Count,
}

/// A series by interned labels: family, device, region or country,
/// verdict (12 bytes instead of three strings: at 256 devices × 250
/// countries a scrape exposes 128k series).
type Id = (Family, u32, u32, u32);

/// The carry of every series seen (bounded by the counter maps: one entry
/// per series a scrape exposed; labels interned once).
#[derive(Debug, Default)]
pub struct Carry {
    series: HashMap<Id, Lift>,
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

fn lift(reading: &mut Count, l: &mut Lift) {
    for (now, carry, last) in [
        (
            &mut reading.packets,
            &mut l.carry.packets,
            &mut l.last.packets,
        ),
        (&mut reading.bytes, &mut l.carry.bytes, &mut l.last.bytes),
    ] {
        // Saturating: the carry comes from a file a hand may have edited.
        let mut shown = now.saturating_add(*carry);
        if shown < *last {
            *carry = carry.saturating_add(*last - shown);
            shown = *last;
        }
        *now = shown;
        *last = shown;
    }
}

impl Carry {
    fn intern(&mut self, label: &str) -> u32 {
        if let Some(&id) = self.ids.get(label) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(label.to_string());
        self.ids.insert(label.to_string(), id);
        id
    }

    fn id(&mut self, family: Family, device: &str, key: &str, verdict: &str) -> Id {
        (
            family,
            self.intern(device),
            self.intern(key),
            self.intern(verdict),
        )
    }

    /// Lifts every series of `r` (in place) so none falls below what it
    /// last showed. A series the reading no longer has (every slot under
    /// it zeroed) is put back at what it showed when it is one a reuse
    /// lowers (per verdict, `other`) or was lifted before; a named series
    /// that is gone stays gone (its name left the policy).
    pub fn apply(&mut self, r: &mut Reading) {
        let mut seen = std::collections::HashSet::with_capacity(self.series.len());
        for (v, c) in &mut r.by_verdict {
            let id = self.id(Family::Verdict, "-", "-", v);
            seen.insert(id);
            lift(c, self.series.entry(id).or_default());
        }
        for (family, rows) in [
            (Family::Region, &mut r.by_region),
            (Family::Country, &mut r.by_country),
        ] {
            for ((d, k, v), c) in rows.iter_mut() {
                let id = self.id(family, d, k, v);
                seen.insert(id);
                lift(c, self.series.entry(id).or_default());
            }
        }
        let other = self.ids.get(OTHER).copied();
        for (&(f, d, k, v), l) in &self.series {
            let keep = f == Family::Verdict || Some(d) == other || l.carry != Count::default();
            if seen.contains(&(f, d, k, v)) || !keep {
                continue;
            }
            let name = |i: u32| {
                self.names
                    .get(usize::try_from(i).unwrap_or(usize::MAX))
                    .map_or("", String::as_str)
            };
            let Some(verdict) = Verdict::ALL
                .iter()
                .map(|v| v.as_str())
                .find(|s| *s == name(v))
            else {
                continue;
            };
            let key = (name(d).to_string(), name(k).to_string(), verdict);
            match f {
                Family::Verdict => {
                    r.by_verdict.insert(verdict, l.last);
                }
                Family::Region => {
                    r.by_region.insert(key, l.last);
                }
                Family::Country => {
                    r.by_country.insert(key, l.last);
                }
            }
        }
    }

    /// What must outlive a restart for the series to stay monotonic: every
    /// carry, and what the per-verdict and `other` series last showed
    /// (the series a slot's reuse makes fall). Small: named series only
    /// appear when lifted.
    #[must_use]
    pub fn kept(&self) -> Vec<(Key, Lift)> {
        let other = self.ids.get(OTHER).copied();
        let name = |i: u32| {
            self.names
                .get(usize::try_from(i).unwrap_or(usize::MAX))
                .cloned()
                .unwrap_or_default()
        };
        let mut out: Vec<(Key, Lift)> = self
            .series
            .iter()
            .filter(|(k, l)| {
                l.carry != Count::default() || k.0 == Family::Verdict || Some(k.1) == other
            })
            .map(|(&(f, d, k, v), l)| ((f, name(d), name(k), name(v)), *l))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Restores what [`Self::kept`] returned.
    pub fn restore(&mut self, kept: Vec<(Key, Lift)>) {
        for ((f, d, k, v), l) in kept {
            let id = self.id(f, &d, &k, &v);
            self.series.insert(id, l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(other: u64, named: u64) -> Reading {
        let mut r = Reading::default();
        let c = |p: u64| Count {
            packets: p,
            bytes: p * 100,
        };
        r.by_verdict.insert("drop", c(other + named));
        r.by_country
            .insert(("tv".into(), "DE".into(), "pass"), c(named));
        r.by_country
            .insert((OTHER.into(), "CN".into(), "drop"), c(other));
        r.by_country
            .insert(("tv".into(), "CN".into(), "drop"), c(named));
        r
    }

    fn other(r: &Reading) -> u64 {
        r.by_country[&(OTHER.to_string(), "CN".to_string(), "drop")].packets
    }

    #[test]
    fn an_edited_carry_saturates_instead_of_overflowing() {
        let mut l = Lift::default();
        l.carry.packets = u64::MAX;
        l.last.packets = u64::MAX;
        let mut now = Count {
            packets: 5,
            bytes: 0,
        };
        lift(&mut now, &mut l);
        assert_eq!(now.packets, u64::MAX);
    }

    #[test]
    fn a_reused_slot_never_takes_other_backwards() {
        let mut carry = Carry::default();
        let mut r = reading(10, 5);
        carry.apply(&mut r);
        assert_eq!((other(&r), r.by_verdict["drop"].packets), (10, 15));
        // A slot with 7 of other's 10 packets was handed to a new name and
        // zeroed; one new packet since.
        let mut r = reading(4, 5);
        carry.apply(&mut r);
        assert_eq!((other(&r), r.by_verdict["drop"].packets), (10, 15));
        assert_eq!(
            r.by_country[&(OTHER.into(), "CN".into(), "drop")].bytes,
            1000
        );
        // Growth after the fall shows on top of the carry.
        let mut r = reading(6, 9);
        carry.apply(&mut r);
        assert_eq!((other(&r), r.by_verdict["drop"].packets), (12, 21));
    }

    #[test]
    fn a_series_whose_slots_all_went_to_zero_is_put_back() {
        let mut carry = Carry::default();
        carry.apply(&mut reading(10, 5));
        let mut r = Reading::default();
        carry.apply(&mut r);
        assert_eq!(r.by_verdict["drop"].packets, 15);
        assert_eq!(other(&r), 10);
        assert!(
            !r.by_country
                .contains_key(&("tv".to_string(), "CN".to_string(), "drop")),
            "a named series that left stays gone"
        );
    }

    #[test]
    fn what_is_kept_restores_the_lift() {
        let mut carry = Carry::default();
        carry.apply(&mut reading(10, 5));
        carry.apply(&mut reading(4, 5));
        let kept = carry.kept();
        assert!(kept.iter().all(|(k, _)| k.1 != "tv"), "tv was never lifted");
        let mut restarted = Carry::default();
        restarted.restore(kept);
        let mut r = reading(4, 5);
        restarted.apply(&mut r);
        assert_eq!(other(&r), 10);
    }
}
