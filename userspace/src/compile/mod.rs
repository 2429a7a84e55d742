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

use regionwall_common::{
    Decision, MAX_DECISIONS, NO_COUNTRY, NO_REGION, NO_RULE, PORT_SLOTS, Verdict,
};

use crate::policy::{Mode, PacketKey, Policy, PortMatch, Prefix, Rule, V4, V6, net::Bits};

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
    #[error("{count} {family} prefixes; the table holds at most {max}")]
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
fn region_u16(i: usize) -> u16 {
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
fn merge_all(regions: &[crate::policy::Region]) -> Vec<(Vec<V4>, Vec<V6>)> {
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
    if v4.len() > regionwall_common::LPM_V4_MAX_ENTRIES as usize {
        return Err(CompileError::TooManyPrefixes {
            family: "IPv4",
            count: v4.len(),
            max: regionwall_common::LPM_V4_MAX_ENTRIES,
        });
    }
    if v6.len() > regionwall_common::LPM_V6_MAX_ENTRIES as usize {
        return Err(CompileError::TooManyPrefixes {
            family: "IPv6",
            count: v6.len(),
            max: regionwall_common::LPM_V6_MAX_ENTRIES,
        });
    }
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
    let mut device_macs = Vec::new();
    let mut device_v4 = Vec::new();
    let mut device_v6 = Vec::new();
    for (i, d) in policy.devices.iter().enumerate() {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        device_macs.extend(d.macs.iter().map(|m| (*m, i)));
        for p in &d.prefixes {
            match p {
                Prefix::V4(p) => device_v4.push((*p, i)),
                Prefix::V6(p) => device_v6.push((*p, i)),
            }
        }
    }
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

/// Interned tag sets: id 0 is the empty set. A tag is a region index, or
/// a country (the country base plus its index).
#[derive(Debug)]
struct Sets {
    ids: HashMap<Box<[u16]>, u32>,
    list: Vec<Box<[u16]>>,
}

impl Default for Sets {
    fn default() -> Self {
        let empty: Box<[u16]> = Box::new([]);
        Self {
            ids: HashMap::from([(empty.clone(), 0)]),
            list: vec![empty],
        }
    }
}

impl Sets {
    fn intern(&mut self, tags: &[u16]) -> u32 {
        if let Some(&id) = self.ids.get(tags) {
            return id;
        }
        let id = u32::try_from(self.list.len()).unwrap_or(u32::MAX);
        let tags: Box<[u16]> = tags.into();
        self.ids.insert(tags.clone(), id);
        self.list.push(tags);
        id
    }

    fn get(&self, id: u32) -> &[u16] {
        self.list.get(id as usize).map_or(&[], |t| t)
    }
}

/// Region classes: every tag set the tables use, numbered densely (class
/// 0 is the empty set, "no region, no country").
#[derive(Debug, Default)]
struct Interner {
    sets: Sets,
}

impl Interner {
    /// Re-numbers one family's table from its own sets into the classes.
    fn merge<B>(&mut self, (table, local): (Vec<(B, u32)>, Sets)) -> Vec<(B, u32)> {
        let map: Vec<u32> = local.list.iter().map(|t| self.sets.intern(t)).collect();
        table
            .into_iter()
            .map(|(p, id)| (p, map[id as usize]))
            .collect()
    }

    /// Classes as region indices, each class's country id, and its
    /// refining tags (from `refine_base` on).
    fn split(
        self,
        country_base: u16,
        refine_base: u16,
    ) -> (Vec<Vec<u16>>, Vec<u16>, Vec<Vec<u16>>) {
        let mut classes = Vec::with_capacity(self.sets.list.len());
        let mut countries = Vec::with_capacity(self.sets.list.len());
        let mut refined = Vec::with_capacity(self.sets.list.len());
        for tags in &self.sets.list {
            classes.push(tags.iter().copied().filter(|t| *t < country_base).collect());
            countries.push(
                tags.iter()
                    .find(|t| (country_base..refine_base).contains(t))
                    .map_or(NO_COUNTRY, |t| t - country_base + 1),
            );
            refined.push(
                tags.iter()
                    .filter(|t| **t >= refine_base)
                    .map(|t| t - refine_base)
                    .collect(),
            );
        }
        (classes, countries, refined)
    }
}

/// Turns (prefix, tag) pairs into (prefix, tag set) LPM entries, exact
/// under longest-prefix match, without redundant nested prefixes. Sets are
/// interned as they are made, so a prefix costs one small lookup.
fn region_sets<B: Bits>(mut input: Vec<(B, u16)>) -> (Vec<(B, u32)>, Sets) {
    // Parents sort before their children: by address, then shorter first.
    input.sort_unstable_by_key(|(p, r)| (p.addr(), p.len(), *r));
    input.dedup();
    let mut sets = Sets::default();
    let mut out = Vec::with_capacity(input.len());
    // Enclosing prefixes with their full tag sets.
    let mut stack: Vec<(B, u32)> = Vec::new();
    let mut merged: Vec<u16> = Vec::new();
    let mut i = 0;
    while i < input.len() {
        let prefix = input[i].0;
        let first = i;
        while i < input.len() && input[i].0 == prefix {
            i += 1;
        }
        while stack
            .last()
            .is_some_and(|(top, _)| !top.contains_prefix(&prefix))
        {
            stack.pop();
        }
        let parent = stack.last().map_or(0, |(_, s)| *s);
        let parent_tags = sets.get(parent);
        let own = input[first..i].iter().map(|(_, t)| *t);
        let set = if own.clone().all(|t| parent_tags.binary_search(&t).is_ok()) {
            parent
        } else {
            merged.clear();
            merged.extend_from_slice(parent_tags);
            merged.extend(own);
            merged.sort_unstable();
            merged.dedup();
            sets.intern(&merged)
        };
        if stack.last().is_some() && parent == set {
            continue; // adds nothing to its parent
        }
        out.push((prefix, set));
        stack.push((prefix, set));
    }
    (out, sets)
}

/// [`region_sets`] with the sets interned as class ids.
#[cfg(test)]
fn build_table<B: Bits>(input: Vec<(B, u16)>, interner: &mut Interner) -> Vec<(B, u32)> {
    interner.merge(region_sets(input))
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

#[cfg(test)]
mod tests;
