//! Whether new region data may replace the current: per-country and total
//! counts may not shrink below a share, churn stays under a limit, canary
//! addresses still map to their country; and what changed, per country.

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
};

use crate::{net::Prefix, sources::ByCountry};

/// Countries with fewer prefixes than this before are not held to the
/// per-country share (a country of three prefixes losing one is normal);
/// they still count in the totals.
pub const PER_COUNTRY_FLOOR: usize = 10;

/// Limits a new data set is held to.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Counts may not fall below this share (%) of before.
    pub min_share: u32,
    /// Prefixes added plus removed may not exceed this share (%) of before.
    pub max_churn: u32,
}

/// Prefix and address counts of one country (or all).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub prefixes: u64,
    /// IPv4 addresses plus IPv6 /64s.
    pub addresses: u128,
}

/// What changed in one country.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    pub added: Counts,
    pub removed: Counts,
    pub before: Counts,
    pub after: Counts,
}

/// Why new data was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error(
        "{what} would fall to {after} {unit} from {before} (below {share} %): refusing a shrunk or truncated download"
    )]
    Shrunk {
        what: String,
        unit: &'static str,
        before: u128,
        after: u128,
        share: u32,
    },
    #[error(
        "{what}: {changed} prefixes added or removed of {before} ({percent} %, over the limit of {limit} %)"
    )]
    Churn {
        what: String,
        changed: u64,
        before: u64,
        percent: u64,
        limit: u32,
    },
    #[error("canary {addr} maps to {found}, expected {expected}")]
    Canary {
        addr: IpAddr,
        expected: String,
        found: String,
    },
}

/// Size of a prefix: addresses for IPv4, /64s for IPv6.
fn size(p: &Prefix) -> u128 {
    match p {
        Prefix::V4(_) => 1u128 << (32 - u32::from(p.len())),
        Prefix::V6(_) => 1u128 << 64u32.saturating_sub(u32::from(p.len())),
    }
}

fn counts<'a>(prefixes: impl Iterator<Item = &'a Prefix>) -> Counts {
    prefixes.fold(Counts::default(), |c, p| Counts {
        prefixes: c.prefixes + 1,
        addresses: c.addresses.saturating_add(size(p)),
    })
}

/// Every country's change from `old` to `new`, by code.
#[must_use]
pub fn changes(old: &ByCountry, new: &ByCountry) -> BTreeMap<String, Change> {
    let set = |d: &ByCountry, cc: &str| -> HashSet<Prefix> {
        d.countries
            .get(cc)
            .map(|l| l.iter().map(|(p, _)| *p).collect())
            .unwrap_or_default()
    };
    let codes: std::collections::BTreeSet<&String> =
        old.countries.keys().chain(new.countries.keys()).collect();
    codes
        .into_iter()
        .map(|cc| {
            let (o, n) = (set(old, cc), set(new, cc));
            let change = Change {
                added: counts(n.difference(&o)),
                removed: counts(o.difference(&n)),
                before: counts(o.iter()),
                after: counts(n.iter()),
            };
            (cc.clone(), change)
        })
        .collect()
}

/// Every named region's change from the policy as loaded with the live
/// data (`old`) to the policy with the new (`new`), after merging and
/// `except`, by region name.
#[must_use]
pub fn region_changes(
    old: &crate::policy::Policy,
    new: &crate::policy::Policy,
) -> BTreeMap<String, Change> {
    let set = |p: &crate::policy::Policy, name: &str| -> HashSet<Prefix> {
        p.regions[..p.named_regions]
            .iter()
            .find(|r| r.name == name)
            .map(|r| {
                let (v4, v6) = r.merged();
                v4.into_iter()
                    .map(Prefix::V4)
                    .chain(v6.into_iter().map(Prefix::V6))
                    .collect()
            })
            .unwrap_or_default()
    };
    new.regions[..new.named_regions]
        .iter()
        .map(|r| {
            let (o, n) = (set(old, &r.name), set(new, &r.name));
            let change = Change {
                added: counts(n.difference(&o)),
                removed: counts(o.difference(&n)),
                before: counts(o.iter()),
                after: counts(n.iter()),
            };
            (r.name.clone(), change)
        })
        .collect()
}

/// Checks `changes` against `limits`: shares of the total and of each
/// country of at least [`PER_COUNTRY_FLOOR`] prefixes, then churn of the
/// same (one `max_churn` for both).
pub fn check(changes: &BTreeMap<String, Change>, limits: Limits) -> Result<(), VerifyError> {
    let total = changes.values().fold(Change::default(), |t, c| Change {
        added: add(t.added, c.added),
        removed: add(t.removed, c.removed),
        before: add(t.before, c.before),
        after: add(t.after, c.after),
    });
    let share = |what: &str, c: &Change| {
        for (unit, before, after) in [
            (
                "prefixes",
                u128::from(c.before.prefixes),
                u128::from(c.after.prefixes),
            ),
            ("addresses", c.before.addresses, c.after.addresses),
        ] {
            if after.saturating_mul(100) < before.saturating_mul(u128::from(limits.min_share)) {
                return Err(VerifyError::Shrunk {
                    what: what.to_string(),
                    unit,
                    before,
                    after,
                    share: limits.min_share,
                });
            }
        }
        Ok(())
    };
    share("the data in total", &total)?;
    for (cc, c) in changes {
        if c.before.prefixes >= PER_COUNTRY_FLOOR as u64 {
            share(cc, c)?;
        }
    }
    // Churn in total, then per country: most of one country's prefixes
    // replaced by others of the same size would hide in a large total.
    let churn = |what: &str, c: &Change| {
        let moved = c.added.prefixes + c.removed.prefixes;
        if c.before.prefixes > 0
            && moved.saturating_mul(100)
                > c.before
                    .prefixes
                    .saturating_mul(u64::from(limits.max_churn))
        {
            return Err(VerifyError::Churn {
                what: what.to_string(),
                changed: moved,
                before: c.before.prefixes,
                percent: moved.saturating_mul(100) / c.before.prefixes,
                limit: limits.max_churn,
            });
        }
        Ok(())
    };
    churn("the data in total", &total)?;
    for (cc, c) in changes {
        if c.before.prefixes >= PER_COUNTRY_FLOOR as u64 {
            churn(cc, c)?;
        }
    }
    Ok(())
}

fn add(a: Counts, b: Counts) -> Counts {
    Counts {
        prefixes: a.prefixes + b.prefixes,
        addresses: a.addresses.saturating_add(b.addresses),
    }
}

/// The country of `addr` in `data`: the longest listed prefix holding it
/// over all the data sets given, in order (first wins a tie).
#[must_use]
pub fn country_of(addr: IpAddr, data: &[&ByCountry]) -> Option<String> {
    let addr = crate::policy::canonical(addr);
    let mut best: Option<(u8, &String)> = None;
    for d in data {
        for (cc, list) in &d.countries {
            for (p, _) in list {
                if p.contains(addr) && best.is_none_or(|(len, _)| p.len() > len) {
                    best = Some((p.len(), cc));
                }
            }
        }
    }
    best.map(|(_, cc)| cc.clone())
}

/// Every canary must map to its expected country in `data`.
pub fn canaries(canaries: &[(IpAddr, String)], data: &[&ByCountry]) -> Result<(), VerifyError> {
    for (addr, expected) in canaries {
        let found = country_of(*addr, data);
        if found.as_deref() != Some(expected.as_str()) {
            return Err(VerifyError::Canary {
                addr: *addr,
                expected: expected.clone(),
                found: found.unwrap_or_else(|| "no country".into()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{path::Path, sync::Arc};

    use super::*;
    use crate::sources::Origin;

    fn data(list: &[(&str, &[&str])]) -> ByCountry {
        let origin = Origin {
            file: Arc::from(Path::new("t")),
            line: 1,
        };
        ByCountry {
            countries: list
                .iter()
                .map(|(cc, ps)| {
                    (
                        (*cc).to_string(),
                        ps.iter()
                            .map(|p| (Prefix::parse(p).expect("prefix"), origin.clone()))
                            .collect(),
                    )
                })
                .collect(),
        }
    }

    fn many(base: u8, n: u8) -> Vec<String> {
        (0..n).map(|i| format!("{base}.{i}.0.0/16")).collect()
    }

    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    const LIMITS: Limits = Limits {
        min_share: 90,
        max_churn: 50,
    };

    #[test]
    fn counts_added_and_removed_per_country() {
        let old = data(&[
            ("CN", &["1.0.1.0/24", "1.0.2.0/23"]),
            ("DE", &["2001:db8::/32"]),
        ]);
        let new = data(&[
            ("CN", &["1.0.1.0/24", "1.0.8.0/21"]),
            ("FR", &["2.0.0.0/16"]),
        ]);
        let c = changes(&old, &new);
        assert_eq!(
            c["CN"].added,
            Counts {
                prefixes: 1,
                addresses: 2048
            }
        );
        assert_eq!(
            c["CN"].removed,
            Counts {
                prefixes: 1,
                addresses: 512
            }
        );
        assert_eq!(
            c["CN"].after,
            Counts {
                prefixes: 2,
                addresses: 2304
            }
        );
        assert_eq!(
            c["DE"].removed,
            Counts {
                prefixes: 1,
                addresses: 1 << 32
            }
        );
        assert_eq!(c["FR"].added.addresses, 65536);
    }

    #[test]
    fn a_halved_country_is_refused_a_small_one_is_not() {
        let big = many(10, 20);
        let half = many(10, 10);
        let filler = many(20, 200);
        let (b, h, f) = (strs(&big), strs(&half), strs(&filler));
        let old = data(&[
            ("CN", &b),
            ("US", &f),
            ("TV", &["3.0.0.0/24", "3.0.1.0/24"]),
        ]);
        // CN halved, the total barely moves: the per-country share catches it.
        let new = data(&[
            ("CN", &h),
            ("US", &f),
            ("TV", &["3.0.0.0/24", "3.0.1.0/24"]),
        ]);
        let err = check(&changes(&old, &new), LIMITS).expect_err("CN shrank");
        assert!(
            matches!(&err, VerifyError::Shrunk { what, unit: "prefixes", before: 20, after: 10, .. } if what == "CN"),
            "{err}"
        );
        // TV (two prefixes) losing one is under the per-country floor.
        let new = data(&[("CN", &b), ("US", &f), ("TV", &["3.0.0.0/24"])]);
        assert_eq!(check(&changes(&old, &new), LIMITS), Ok(()));
    }

    #[test]
    fn total_share_and_churn() {
        let old_list = many(10, 100);
        let o: Vec<&str> = old_list.iter().map(String::as_str).collect();
        let old = data(&[("US", &o)]);
        let empty = data(&[]);
        assert!(matches!(
            check(&changes(&old, &empty), LIMITS),
            Err(VerifyError::Shrunk {
                unit: "prefixes",
                before: 100,
                after: 0,
                ..
            })
        ));
        // Same size, 60 of 100 replaced: 120 % churn.
        let mut new_list = many(10, 40);
        new_list.extend(many(30, 60));
        let n: Vec<&str> = new_list.iter().map(String::as_str).collect();
        let new = data(&[("US", &n)]);
        assert!(matches!(
            check(&changes(&old, &new), LIMITS),
            Err(VerifyError::Churn {
                what,
                changed: 120,
                before: 100,
                percent: 120,
                limit: 50
            }) if what == "the data in total"
        ));
        let lax = Limits {
            min_share: 90,
            max_churn: 200,
        };
        assert_eq!(check(&changes(&old, &new), lax), Ok(()));
        // From nothing anything goes (a first download).
        assert_eq!(check(&changes(&empty, &old), LIMITS), Ok(()));
        // 15 of CN's 20 prefixes replaced by others of the same size,
        // beside 100 unchanged US prefixes: 34 % in total, 150 % for CN.
        let cn_old = many(50, 20);
        let mut cn_new = many(50, 5);
        cn_new.extend(many(60, 15));
        let (co, cn) = (strs(&cn_old), strs(&cn_new));
        let before = data(&[("US", &o), ("CN", &co)]);
        let after = data(&[("US", &o), ("CN", &cn)]);
        assert!(matches!(
            check(&changes(&before, &after), LIMITS),
            Err(VerifyError::Churn { what, changed: 30, before: 20, .. }) if what == "CN"
        ));
    }

    #[test]
    fn canaries_use_the_longest_match() {
        let d = data(&[("CN", &["1.0.0.0/8"]), ("AU", &["1.0.1.0/24"])]);
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(canaries(&[(ip("1.0.1.1"), "AU".into())], &[&d]), Ok(()));
        assert_eq!(canaries(&[(ip("1.2.3.4"), "CN".into())], &[&d]), Ok(()));
        assert_eq!(
            canaries(&[(ip("1.0.1.1"), "CN".into())], &[&d]),
            Err(VerifyError::Canary {
                addr: ip("1.0.1.1"),
                expected: "CN".into(),
                found: "AU".into()
            })
        );
        assert!(matches!(
            canaries(&[(ip("9.9.9.9"), "CN".into())], &[&d]),
            Err(VerifyError::Canary { found, .. }) if found == "no country"
        ));
    }
}
