//! Compiles a [`Policy`] into the kernel's tables.
//!
//! Destinations map to *region classes*: the set of regions an address is
//! in, and its country when the policy has a country database. Every
//! distinct prefix gets the class of all prefixes that contain it, so a
//! longest-prefix match returns exactly the regions (and the country) of the
//! address; nested prefixes that add nothing are dropped. Each (device,
//! class) pair then gets one precomputed [`Decision`], country included, so
//! the kernel does O(1) work per packet whatever the number of rules and
//! counts every packet by country with no second lookup.

use std::{collections::HashMap, net::IpAddr};

use regionwall_common::{Decision, MAX_DECISIONS, NO_REGION, NO_RULE, PORT_SLOTS, Verdict};

use crate::policy::{Mode, PacketKey, Policy, PortMatch, Prefix, Rule, V4, V6};

/// A compiled policy does not fit the kernel tables.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(
        "{devices} devices x {classes} region classes x {port_classes} port classes = {cells} decision cells; at most {max} fit"
    )]
    TooManyDecisions {
        devices: usize,
        classes: usize,
        port_classes: usize,
        cells: usize,
        max: u32,
    },
    #[error("{classes} region classes; at most {max} are supported")]
    TooManyClasses { classes: usize, max: u32 },
    #[error(
        "{count} {family} prefixes after merging; the kernel's LPM trie (--lookup lpm) holds at most {max} (the compiled lookup, the default, has no such limit)"
    )]
    TooManyPrefixes {
        family: &'static str,
        count: usize,
        max: u32,
    },
}

/// The policy as the kernel sees it.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// Region id - 1 -> name.
    pub region_names: Vec<String>,
    /// Device index -> name (0 is "default").
    pub device_names: Vec<String>,
    /// Rule id - 1 -> name.
    pub rule_names: Vec<String>,
    /// Class id -> sorted region indices (0-based). Class 0 is "no region".
    pub classes: Vec<Vec<u16>>,
    /// Country id - 1 -> ISO code (empty without a country database).
    pub country_names: Vec<String>,
    /// Class id -> country id ([`NO_COUNTRY`] when the class has none).
    pub class_countries: Vec<u16>,
    /// The country of any address, for names the kernel does not count
    /// (hosts); shared, as it is as large as the country database.
    pub attribution: std::sync::Arc<crate::policy::Attribution>,
    pub v4: Vec<(V4, u32)>,
    pub v6: Vec<(V6, u32)>,
    pub device_macs: Vec<([u8; 6], u32)>,
    pub device_v4: Vec<(V4, u32)>,
    pub device_v6: Vec<(V6, u32)>,
    /// Port slot -> port class ([`regionwall_common::port_slot`]); empty
    /// when no rule has protocol/port qualifiers.
    pub port_classes: Vec<u32>,
    /// Number of port classes (1 without qualifiers).
    pub port_class_count: usize,
    /// Per region (same order as the policy's): IPv4 and IPv6 prefixes
    /// after merging overlaps and carving out exceptions.
    pub region_sizes: Vec<(usize, usize)>,
    /// Row-major `devices x classes x port classes`.
    pub decisions: Vec<Decision>,
    /// Class id -> the [`Refine`] tags (0-based) the class lies in; empty
    /// unless compiled by [`compile_refined`].
    pub refined: Vec<Vec<u16>>,
}

impl Compiled {
    /// FNV-1a digest of the device, region and rule names in order: equal
    /// digests name events the same way.
    #[must_use]
    pub fn names_digest(&self) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        let lists = [
            &self.device_names,
            &self.region_names,
            &self.rule_names,
            &self.country_names,
        ];
        for list in lists {
            for name in list {
                for b in name.bytes().chain([0]) {
                    h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
                }
            }
            h = (h ^ 0xff).wrapping_mul(0x0100_0193);
        }
        h
    }

    /// Name of a region id as found in events (0 = none).
    #[must_use]
    pub fn region_name(&self, id: u16) -> &str {
        name_by_id(&self.region_names, id)
    }
    /// ISO code of a country id as found in events (0 = none).
    #[must_use]
    pub fn country_name(&self, id: u16) -> &str {
        name_by_id(&self.country_names, id)
    }
    /// Name of a rule id as found in events (0 = none).
    #[must_use]
    pub fn rule_name(&self, id: u16) -> &str {
        name_by_id(&self.rule_names, id)
    }
    #[must_use]
    pub fn device_name(&self, index: u16) -> &str {
        self.device_names
            .get(usize::from(index))
            .map_or("?", String::as_str)
    }
    /// Bytes of kernel memory the tables take (keys + values, not counting
    /// the kernel's per-node overhead).
    #[must_use]
    pub fn table_bytes(&self) -> usize {
        self.v4.len() * (8 + 4)
            + self.v6.len() * (20 + 4)
            + self.decisions.len() * 8
            + self.port_classes.len() * 4
    }
}

/// Region and rule ids are index + 1; 0 ([`NO_REGION`], [`NO_RULE`]) means none.
fn name_by_id(names: &[String], id: u16) -> &str {
    match usize::from(id).checked_sub(1) {
        None => "-",
        Some(i) => names.get(i).map_or("?", String::as_str),
    }
}

/// Which rules decided: precedence levels, most specific first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// A rule naming the device itself.
    Device,
    /// A rule naming a group the device is in.
    Group,
    /// A rule naming "default" (every device).
    Default,
}

impl Level {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Group => "group",
            Self::Default => "default",
        }
    }

    /// Whether `rule` is at this level for `device`.
    fn holds(self, policy: &Policy, rule: &Rule, device: usize) -> bool {
        match self {
            Self::Device => device != 0 && rule.devices.contains(&device),
            Self::Group => {
                device != 0
                    && rule
                        .groups
                        .iter()
                        .any(|g| policy.groups[*g].members.contains(&device))
            }
            Self::Default => rule.devices.contains(&0),
        }
    }
}

/// Whether `rule` applies to packets like `key` (its protocol/port qualifiers).
fn applies(rule: &Rule, key: PacketKey) -> bool {
    rule.ports
        .as_ref()
        .is_none_or(|list| list.iter().any(|m| m.matches(key)))
}

/// What the policy decides for one device, one set of regions (0-based
/// indices, sorted) and one kind of packet.
#[must_use]
pub fn decide(policy: &Policy, device: usize, regions: &[u16], key: PacketKey) -> Decision {
    decide_explained(policy, device, regions, key).0
}

/// [`decide`], also telling which precedence level decided (`None`: no rule
/// matched and the packet passes by default).
///
/// Precedence: rules naming the device, then rules naming a group it is in,
/// then rules naming "default"; the first level with a matching rule
/// decides. Within a level an allow match wins, then an enforcing or
/// rejecting block, then an auditing block; among equals the first rule in
/// the file.
#[must_use]
pub fn decide_explained(
    policy: &Policy,
    device: usize,
    regions: &[u16],
    key: PacketKey,
) -> (Decision, Option<Level>) {
    for level in [Level::Device, Level::Group, Level::Default] {
        let rules = policy
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| level.holds(policy, r, device) && applies(r, key));
        if let Some(d) = decide_level(policy, rules, regions) {
            return (d, Some(level));
        }
    }
    (
        Decision {
            verdict: Verdict::Pass as u8,
            region: attribution(policy, regions),
            rule: NO_RULE,
            ..Decision::default()
        },
        None,
    )
}

/// Within one level: an allow match wins; else a block match, enforce or
/// reject before audit, first rule in file order.
fn decide_level<'a>(
    policy: &Policy,
    rules: impl Iterator<Item = (usize, &'a Rule)> + Clone,
    regions: &[u16],
) -> Option<Decision> {
    let hit = |set: &[usize]| {
        set.iter()
            .copied()
            .find(|r| regions.contains(&region_u16(*r)))
    };
    for (i, r) in rules.clone() {
        if hit(&r.allow).is_some() {
            return Some(Decision {
                verdict: Verdict::Pass as u8,
                region: attribution(policy, regions),
                rule: rule_id(i),
                ..Decision::default()
            });
        }
    }
    let mut audit = None;
    for (i, r) in rules {
        if let Some(region) = hit(&r.block) {
            let d = Decision {
                verdict: match r.mode {
                    Mode::Enforce => Verdict::Drop,
                    Mode::Reject => Verdict::Reject,
                    Mode::Audit => Verdict::Audit,
                } as u8,
                region: region_u16(region) + 1,
                rule: rule_id(i),
                ..Decision::default()
            };
            if r.mode != Mode::Audit {
                return Some(d);
            }
            audit.get_or_insert(d);
        }
    }
    audit
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "region and rule counts are bounded far below u16::MAX by the parser"
)]
pub(crate) fn region_u16(i: usize) -> u16 {
    i as u16
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "rule counts are bounded far below u16::MAX"
)]
fn rule_id(i: usize) -> u16 {
    (i + 1) as u16
}

/// The region a destination is counted under: its first named region.
fn attribution(policy: &Policy, regions: &[u16]) -> u16 {
    regions
        .iter()
        .copied()
        .find(|r| usize::from(*r) < policy.named_regions)
        .map_or(NO_REGION, |r| r + 1)
}

/// Port slot -> port class for the policy's qualifiers, with one
/// representative packet per class. Without qualifiers: no table, one class.
fn port_classes(policy: &Policy) -> (Vec<u32>, Vec<PacketKey>) {
    let mut qualifiers: Vec<&Vec<PortMatch>> = policy
        .rules
        .iter()
        .filter_map(|r| r.ports.as_ref())
        .collect();
    qualifiers.sort_unstable();
    qualifiers.dedup();
    if qualifiers.is_empty() {
        return (
            Vec::new(),
            vec![PacketKey {
                proto: 0,
                port: None,
            }],
        );
    }
    let mut ids: HashMap<Vec<u16>, u32> = HashMap::new();
    let mut reps = Vec::new();
    let mut table = Vec::with_capacity(PORT_SLOTS as usize);
    let mut signature = Vec::with_capacity(qualifiers.len());
    for slot in 0..PORT_SLOTS {
        let key = PacketKey::of_slot(slot);
        signature.clear();
        for (q, list) in qualifiers.iter().enumerate() {
            if list.iter().any(|m| m.matches(key)) {
                signature.push(u16::try_from(q).unwrap_or(u16::MAX));
            }
        }
        let class = if let Some(&c) = ids.get(&signature) {
            c
        } else {
            let c = u32::try_from(reps.len()).unwrap_or(u32::MAX);
            ids.insert(signature.clone(), c);
            reps.push(key);
            c
        };
        table.push(class);
    }
    (table, reps)
}

/// Every region's merged prefixes, regions spread over the machine's cores.
pub(crate) fn merge_all(regions: &[crate::policy::Region]) -> Vec<(Vec<V4>, Vec<V6>)> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(8);
    if threads < 2 || regions.len() < 2 {
        return regions.iter().map(crate::policy::Region::merged).collect();
    }
    let chunk = regions.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = regions
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(crate::policy::Region::merged)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Compiles `policy` into kernel tables.
pub fn compile(policy: &Policy) -> Result<Compiled, CompileError> {
    compile_refined(policy, &Refine::default())
}

/// [`compile`] with the classes split along `refine`'s prefixes as well:
/// the same decision for every address, in more classes.
pub fn compile_refined(policy: &Policy, refine: &Refine) -> Result<Compiled, CompileError> {
    let mut v4_in = Vec::new();
    let mut v6_in = Vec::new();
    let mut region_sizes = Vec::with_capacity(policy.regions.len());
    for (i, (v4, v6)) in merge_all(&policy.regions).into_iter().enumerate() {
        region_sizes.push((v4.len(), v6.len()));
        v4_in.extend(v4.into_iter().map(|p| (p, region_u16(i))));
        v6_in.extend(v6.into_iter().map(|p| (p, region_u16(i))));
    }
    // Countries are tags after the regions; their prefixes are disjoint, so
    // an address gets at most one.
    let country_names = policy.countries.codes();
    let country_base = region_u16(policy.regions.len());
    let attribution = std::sync::Arc::new(policy.countries.attribution());
    v4_in.extend(attribution.v4.iter().map(|&(p, c)| (p, country_base + c)));
    v6_in.extend(attribution.v6.iter().map(|&(p, c)| (p, country_base + c)));
    // Refining tags come last; countries' ids start at 1, so their tags
    // stop below `country_base + codes + 1`.
    let refine_base = country_base.saturating_add(region_u16(country_names.len() + 1));
    v4_in.extend(
        refine
            .v4
            .iter()
            .map(|&(p, t)| (p, refine_base.saturating_add(t))),
    );
    v6_in.extend(
        refine
            .v6
            .iter()
            .map(|&(p, t)| (p, refine_base.saturating_add(t))),
    );
    // The two families are independent until interning: one thread each.
    let (v4_sets, v6_sets) = std::thread::scope(|scope| {
        let v6 = scope.spawn(move || region_sets(v6_in));
        let v4 = region_sets(v4_in);
        (
            v4,
            v6.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
        )
    });
    let mut interner = Interner::default();
    let v4 = interner.merge(v4_sets);
    let v6 = interner.merge(v6_sets);
    let (classes, class_countries, mut refined) = interner.split(country_base, refine_base);
    if refine.v4.is_empty() && refine.v6.is_empty() {
        refined.clear();
    }
    if classes.len() > regionwall_common::MAX_CLASSES as usize {
        return Err(CompileError::TooManyClasses {
            classes: classes.len(),
            max: regionwall_common::MAX_CLASSES,
        });
    }
    let (port_table, port_reps) = port_classes(policy);
    let cells = policy.devices.len() * classes.len() * port_reps.len();
    if cells > MAX_DECISIONS as usize {
        return Err(CompileError::TooManyDecisions {
            devices: policy.devices.len(),
            classes: classes.len(),
            port_classes: port_reps.len(),
            cells,
            max: MAX_DECISIONS,
        });
    }
    let mut decisions = Vec::with_capacity(cells);
    for device in 0..policy.devices.len() {
        for (class, &country) in classes.iter().zip(&class_countries) {
            for key in &port_reps {
                decisions.push(Decision {
                    country,
                    ..decide(policy, device, class, *key)
                });
            }
        }
    }
    let (device_macs, device_v4, device_v6) = device_tables(policy);
    Ok(Compiled {
        region_names: policy.regions.iter().map(|r| r.name.clone()).collect(),
        device_names: policy.devices.iter().map(|d| d.name.clone()).collect(),
        rule_names: policy.rules.iter().map(|r| r.name.clone()).collect(),
        classes,
        country_names,
        class_countries,
        attribution,
        v4,
        v6,
        device_macs,
        device_v4,
        device_v6,
        port_classes: port_table,
        port_class_count: port_reps.len(),
        region_sizes,
        decisions,
        refined,
    })
}

/// Both families' tables fit the kernel's LPM maps (`--lookup lpm`; the
/// compiled lookup's maps are sized for the table at load time).
pub fn lpm_fits(compiled: &Compiled) -> Result<(), CompileError> {
    let (v4, v6) = (compiled.v4.len(), compiled.v6.len());
    if v4 > regionwall_common::LPM_V4_MAX_ENTRIES as usize {
        return Err(CompileError::TooManyPrefixes {
            family: "IPv4",
            count: v4,
            max: regionwall_common::LPM_V4_MAX_ENTRIES,
        });
    }
    if v6 > regionwall_common::LPM_V6_MAX_ENTRIES as usize {
        return Err(CompileError::TooManyPrefixes {
            family: "IPv6",
            count: v6,
            max: regionwall_common::LPM_V6_MAX_ENTRIES,
        });
    }
    Ok(())
}

/// Device index by MAC, by IPv4 prefix and by IPv6 prefix.
type DeviceTables = (Vec<([u8; 6], u32)>, Vec<(V4, u32)>, Vec<(V6, u32)>);

fn device_tables(policy: &Policy) -> DeviceTables {
    let mut out: DeviceTables = Default::default();
    for (i, d) in policy.devices.iter().enumerate() {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        out.0.extend(d.macs.iter().map(|m| (*m, i)));
        for p in &d.prefixes {
            match p {
                Prefix::V4(p) => out.1.push((*p, i)),
                Prefix::V6(p) => out.2.push((*p, i)),
            }
        }
    }
    out
}

/// Regions (0-based) containing `addr`, computed naively from the policy:
/// the reference the compiled tables are tested against.
#[must_use]
pub fn regions_containing(policy: &Policy, addr: IpAddr) -> Vec<u16> {
    policy
        .regions
        .iter()
        .enumerate()
        .filter(|(_, r)| r.contains(addr))
        .map(|(i, _)| region_u16(i))
        .collect()
}

/// The device a source maps to, the way the kernel decides: MAC first, then
/// the longest matching device prefix, else the default.
#[must_use]
pub fn device_for(policy: &Policy, mac: Option<[u8; 6]>, src: Option<IpAddr>) -> usize {
    if let Some(mac) = mac
        && let Some(i) = policy.devices.iter().position(|d| d.macs.contains(&mac))
    {
        return i;
    }
    let Some(src) = src else { return 0 };
    let mut best: Option<(u8, usize)> = None;
    for (i, d) in policy.devices.iter().enumerate() {
        for p in &d.prefixes {
            if p.contains(src) && best.is_none_or(|(l, _)| p.len() > l) {
                best = Some((p.len(), i));
            }
        }
    }
    best.map_or(0, |(_, i)| i)
}

mod classes;
mod refine;
#[cfg(test)]
mod tests;

#[cfg(test)]
use classes::build_table;
use classes::{Interner, region_sets};
pub use refine::Refine;
