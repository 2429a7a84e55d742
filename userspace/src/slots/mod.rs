//! Stable counter slots: each device, country and region name keeps its counter index across reloads, restarts and adoption.
//!
//! The compiler numbers devices and regions by their position in the
//! policy, so a reload that adds a region sorting before another, or a
//! device, would move counts to other names. [`stabilize`] renumbers a
//! [`Compiled`] policy against the [`SlotTable`] of what was published
//! before (kept in the pinned map `NAMES`): a name keeps its index; a new
//! name takes a never-used index, else one whose name left the policy
//! before the last publish (its counters are zeroed first). Only indices
//! the kernel counts change: decisions' region ids, device table values and
//! the rows of the decision table; the per-packet path is the same.
//!
//! A name that leaves the policy keeps its index and its counts ("retired")
//! until a new name needs the index. An index is only handed to a new name
//! when no generation that may still run counts into it: a name retired in
//! the very reload that needs its index is never reused (the reload is
//! refused instead, see [`SlotError::Exhausted`]).

use regionwall_common::{
    Decision, MAX_COUNTRIES, MAX_DECISIONS, MAX_DEVICES, NAMES_COUNTRY_BASE, NAMES_REGION_BASE,
    SLOT_LIVE, SLOT_NAME_BYTES, SLOT_RETIRED, SlotName,
};

use crate::{compile::Compiled, policy::DEFAULT_DEVICE_NAME};

/// Who owns one counter index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub name: String,
    /// The name is in a published policy that may still count into the
    /// index. Cleared only after the policy without it has been live for
    /// the publish grace period, so a reader of the pins can trust a
    /// retired index is no longer counted into.
    pub live: bool,
}

/// A device index or a region id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    Device(u32),
    /// Region id, 1..=the region room.
    Region(u32),
    /// Country id, 1..=MAX_COUNTRIES.
    Country(u32),
}

/// Index -> owning name, for devices and regions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotTable {
    /// Device index -> owner (index 0 is "default" once published).
    pub devices: Vec<Option<Owner>>,
    /// Region id - 1 -> owner (id 0 is "no region" and never owned).
    pub regions: Vec<Option<Owner>>,
    /// Country id - 1 -> owner (id 0 is "no country" and never owned).
    pub countries: Vec<Option<Owner>>,
}

/// Why a policy cannot keep its names on their indices.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlotError {
    #[error(
        "no {kind} counter index is free for \"{name}\": all {max} are held by names in the live policy or removed by this reload; reload in two steps (first without the removed {kind}s, then with the new ones), or restart the controller with fresh pins (regions: the counters are sized at start, 1.5 times the policy's regions or --region-room)"
    )]
    Exhausted {
        kind: &'static str,
        name: String,
        max: u32,
    },
    #[error("{kind} name \"{name}\" is longer than {SLOT_NAME_BYTES} bytes")]
    NameTooLong { kind: &'static str, name: String },
    #[error("device 0 is \"{0}\", expected \"default\"")]
    NoDefault(String),
    #[error(
        "keeping every device on its counter index needs a decision table of {cells} cells; at most {max} are supported (restart the controller with fresh pins to renumber)"
    )]
    TooManyDecisions { cells: usize, max: u32 },
}

/// A compiled policy renumbered onto stable indices.
#[derive(Clone, Debug)]
pub struct Stable {
    /// The policy with stable device indices and region ids. Its
    /// `device_names`/`region_names` name every index up to the highest one
    /// in use (an index no device or region of this policy has carries the
    /// retired name that owns its counts, or ""). `classes` and
    /// `region_sizes` keep the policy's own region order.
    pub compiled: Compiled,
    /// The table once the policy is live and the previous one is gone.
    pub slots: SlotTable,
    /// The table to write before the flip: as [`Self::slots`], with the
    /// names retired by this reload still marked live (the previous
    /// generation counts into their indices until the flip and the grace
    /// period after it).
    pub before_flip: SlotTable,
    /// Indices taken by a name that did not own them: their counters must
    /// be zeroed before the flip (nothing counts into them until then).
    pub claimed: Vec<Slot>,
    /// Indices whose names left the policy in this reload (their counts stay).
    pub retired: Vec<Slot>,
}

impl SlotTable {
    /// Name owning device index `index`.
    #[must_use]
    pub fn device(&self, index: u32) -> Option<&str> {
        let i = usize::try_from(index).ok()?;
        self.devices.get(i)?.as_ref().map(|o| o.name.as_str())
    }

    /// Name owning region id `id` (`None` for 0).
    #[must_use]
    pub fn region(&self, id: u32) -> Option<&str> {
        let i = usize::try_from(id.checked_sub(1)?).ok()?;
        self.regions.get(i)?.as_ref().map(|o| o.name.as_str())
    }

    /// Code owning country id `id` (`None` for 0).
    #[must_use]
    pub fn country(&self, id: u32) -> Option<&str> {
        let i = usize::try_from(id.checked_sub(1)?).ok()?;
        self.countries.get(i)?.as_ref().map(|o| o.name.as_str())
    }

    /// Whether no index is owned.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.devices
            .iter()
            .chain(&self.regions)
            .chain(&self.countries)
            .all(Option::is_none)
    }

    /// The `entries` entries of map `NAMES` (see
    /// [`regionwall_common::names_slots`]). Names longer than
    /// [`SLOT_NAME_BYTES`] (never made by [`stabilize`]) are cut; regions
    /// beyond the room are left out (never made by [`stabilize`]).
    #[must_use]
    pub fn records(&self, entries: usize) -> Vec<SlotName> {
        let mut out = vec![SlotName::EMPTY; entries];
        let devices = self.devices.iter().take(MAX_DEVICES as usize).enumerate();
        let countries = self.countries.iter().take(MAX_COUNTRIES as usize);
        let countries = countries
            .enumerate()
            .map(|(i, o)| (NAMES_COUNTRY_BASE as usize + 1 + i, o));
        let regions = self.regions.iter().enumerate();
        let regions = regions.map(|(i, o)| (NAMES_REGION_BASE as usize + 1 + i, o));
        for (i, owner) in devices.chain(countries).chain(regions) {
            if let (Some(owner), Some(slot)) = (owner, out.get_mut(i)) {
                *slot = record(owner);
            }
        }
        out
    }

    /// The table held in the entries of map `NAMES`; entries that are not
    /// valid names are taken as never used.
    #[must_use]
    pub fn from_records(records: &[SlotName]) -> Self {
        let owner = |r: &SlotName| {
            let live = match r.state {
                SLOT_LIVE => true,
                SLOT_RETIRED => false,
                _ => return None,
            };
            let bytes = r.name.get(..usize::from(r.len))?;
            let name = std::str::from_utf8(bytes).ok()?;
            (!name.is_empty()).then(|| Owner {
                name: name.to_string(),
                live,
            })
        };
        let countries = NAMES_COUNTRY_BASE as usize;
        let regions = NAMES_REGION_BASE as usize;
        let mut table = Self {
            devices: records.iter().take(countries).map(owner).collect(),
            countries: records
                .iter()
                .take(regions)
                .skip(countries + 1)
                .map(owner)
                .collect(),
            regions: records.iter().skip(regions + 1).map(owner).collect(),
        };
        trim(&mut table.devices);
        trim(&mut table.countries);
        trim(&mut table.regions);
        table
    }
}

fn record(owner: &Owner) -> SlotName {
    let bytes = owner.name.as_bytes();
    let len = bytes.len().min(SLOT_NAME_BYTES);
    let mut r = SlotName {
        state: if owner.live { SLOT_LIVE } else { SLOT_RETIRED },
        len: u8::try_from(len).unwrap_or(u8::MAX),
        ..SlotName::EMPTY
    };
    r.name[..len].copy_from_slice(&bytes[..len]);
    r
}

/// Drops trailing never-used entries.
fn trim(list: &mut Vec<Option<Owner>>) {
    while list.last().is_some_and(Option::is_none) {
        list.pop();
    }
}

/// Assigns indices to `names` (in order) against `previous`; returns each
/// name's 0-based index, the table before and after the flip, the claimed
/// and the retired indices (0-based).
struct Assignment {
    index: Vec<usize>,
    before: Vec<Option<Owner>>,
    after: Vec<Option<Owner>>,
    claimed: Vec<usize>,
    retired: Vec<usize>,
}

fn assign(
    kind: &'static str,
    names: &[&str],
    previous: &[Option<Owner>],
    capacity: usize,
    fixed: Option<(usize, &str)>,
) -> Result<Assignment, SlotError> {
    let mut before: Vec<Option<Owner>> = previous.to_vec();
    let mut index = vec![usize::MAX; names.len()];
    let mut taken = vec![false; capacity.max(previous.len())];
    let find = |name: &str| {
        previous
            .iter()
            .position(|o| o.as_ref().is_some_and(|o| o.name == name))
    };
    // Names that keep their index (the fixed one first, wherever it was).
    for (n, name) in names.iter().enumerate() {
        if name.len() > SLOT_NAME_BYTES {
            return Err(SlotError::NameTooLong {
                kind,
                name: (*name).to_string(),
            });
        }
        let kept = match fixed {
            Some((at, fixed_name)) if *name == fixed_name => Some(at),
            _ => find(name).filter(|&i| i < capacity && fixed.is_none_or(|(at, _)| i != at)),
        };
        if let Some(i) = kept {
            index[n] = i;
            taken[i] = true;
        }
    }
    // The fixed name where something else was recorded: a fresh index.
    let mut claimed: Vec<usize> = index
        .iter()
        .enumerate()
        .filter(|&(n, &i)| {
            i != usize::MAX
                && previous
                    .get(i)
                    .and_then(Option::as_ref)
                    .is_none_or(|o| o.name != names[n])
        })
        .map(|(_, &i)| i)
        .collect();
    // New names: never-used indices first, then indices whose names were
    // retired before this reload (not live), lowest first.
    for (n, name) in names.iter().enumerate() {
        if index[n] != usize::MAX {
            continue;
        }
        let free = |i: usize, taken: &[bool]| !taken[i] && fixed.is_none_or(|(at, _)| i != at);
        let never =
            (0..capacity).find(|&i| free(i, &taken) && previous.get(i).is_none_or(Option::is_none));
        let retired = || {
            (0..capacity).find(|&i| {
                free(i, &taken)
                    && previous
                        .get(i)
                        .is_some_and(|o| o.as_ref().is_some_and(|o| !o.live))
            })
        };
        let Some(i) = never.or_else(retired) else {
            return Err(SlotError::Exhausted {
                kind,
                name: (*name).to_string(),
                max: u32::try_from(capacity).unwrap_or(u32::MAX),
            });
        };
        index[n] = i;
        taken[i] = true;
        claimed.push(i);
    }
    let used = index.iter().map(|i| i + 1).max().unwrap_or(0);
    if before.len() < used {
        before.resize(used, None);
    }
    let mut after = before.clone();
    let mut retired = Vec::new();
    for (i, (b, a)) in before.iter_mut().zip(after.iter_mut()).enumerate() {
        match index.iter().position(|&x| x == i) {
            Some(n) => {
                // A kept name stays live; a claimed index gets its new name.
                let owner = Owner {
                    name: names[n].to_string(),
                    live: true,
                };
                *b = Some(owner.clone());
                *a = Some(owner);
            }
            None => {
                if let Some(o) = a.as_mut() {
                    if o.live {
                        retired.push(i);
                    }
                    o.live = false;
                }
            }
        }
    }
    trim(&mut before);
    trim(&mut after);
    Ok(Assignment {
        index,
        before,
        after,
        claimed,
        retired,
    })
}

/// Renumbers `compiled` so every device, country and region name keeps the
/// index it has in `previous` (see the module documentation). Regions are
/// given indices only if some decision can count under them (named regions
/// and "any"; inline allow sets never are), at most `region_room` of them
/// (what the counter maps were sized for).
#[expect(
    clippy::too_many_lines,
    reason = "one renumbering in the order the module docs give"
)]
pub fn stabilize(
    compiled: Compiled,
    previous: &SlotTable,
    region_room: u32,
) -> Result<Stable, SlotError> {
    let mut compiled = compiled;
    let default = compiled.device_names.first().map_or("", String::as_str);
    if default != DEFAULT_DEVICE_NAME {
        return Err(SlotError::NoDefault(default.to_string()));
    }
    // Devices: all of them.
    let device_names: Vec<&str> = compiled.device_names.iter().map(String::as_str).collect();
    let devices = assign(
        "device",
        &device_names,
        &previous.devices,
        MAX_DEVICES as usize,
        Some((0, DEFAULT_DEVICE_NAME)),
    )?;
    // Regions: those a decision counts under, in policy order.
    let mut counted = vec![false; compiled.region_names.len()];
    for d in &compiled.decisions {
        if let Some(i) = usize::from(d.region).checked_sub(1)
            && let Some(c) = counted.get_mut(i)
        {
            *c = true;
        }
    }
    let region_ids: Vec<usize> = (0..counted.len()).filter(|&i| counted[i]).collect();
    let region_names: Vec<&str> = region_ids
        .iter()
        .map(|&i| compiled.region_names[i].as_str())
        .collect();
    let regions = assign(
        "region",
        &region_names,
        &previous.regions,
        region_room as usize,
        None,
    )?;
    let (countries, country_map) = assign_countries(&compiled, previous)?;
    let recountry = |c: u16| country_map.get(usize::from(c)).copied().unwrap_or(0);

    // Policy region id -> stable id (0 stays 0; uncounted regions get 0,
    // which no decision carries).
    let mut region_map = vec![0u16; compiled.region_names.len() + 1];
    for (k, &i) in region_ids.iter().enumerate() {
        region_map[i + 1] = u16::try_from(regions.index[k] + 1).unwrap_or(u16::MAX);
    }
    let device_map: Vec<u32> = devices
        .index
        .iter()
        .map(|&i| u32::try_from(i).unwrap_or(u32::MAX))
        .collect();

    let rows = devices.index.iter().map(|i| i + 1).max().unwrap_or(1);
    let stride = compiled.decisions.len() / compiled.device_names.len().max(1);
    let cells = rows * stride;
    if cells > MAX_DECISIONS as usize {
        return Err(SlotError::TooManyDecisions {
            cells,
            max: MAX_DECISIONS,
        });
    }
    // Rows of indices no device of this policy has are never read (no
    // device table entry leads there): plain passes.
    let mut decisions = vec![Decision::default(); cells];
    for (old, row) in compiled.decisions.chunks(stride.max(1)).enumerate() {
        let at = devices.index[old] * stride;
        for (dst, src) in decisions[at..at + stride].iter_mut().zip(row) {
            *dst = Decision {
                region: region_map
                    .get(usize::from(src.region))
                    .copied()
                    .unwrap_or(0),
                country: recountry(src.country),
                ..*src
            };
        }
    }
    compiled.decisions = decisions;
    remap_values(&mut compiled.device_macs, &device_map);
    remap_values(&mut compiled.device_v4, &device_map);
    remap_values(&mut compiled.device_v6, &device_map);
    compiled.device_names = names_of(&devices.after, rows);
    let region_rows = regions.index.iter().map(|i| i + 1).max().unwrap_or(0);
    compiled.region_names = names_of(&regions.after, region_rows);
    for c in &mut compiled.class_countries {
        *c = recountry(*c);
    }
    let country_rows = countries.index.iter().map(|i| i + 1).max().unwrap_or(0);
    compiled.country_names = names_of(&countries.after, country_rows);

    let slots = SlotTable {
        devices: devices.after,
        regions: regions.after,
        countries: countries.after,
    };
    let before_flip = SlotTable {
        devices: devices.before,
        regions: regions.before,
        countries: countries.before,
    };
    let to_device = |i: &usize| Slot::Device(u32::try_from(*i).unwrap_or(u32::MAX));
    let to_region = |i: &usize| Slot::Region(u32::try_from(*i + 1).unwrap_or(u32::MAX));
    let to_country = |i: &usize| Slot::Country(u32::try_from(*i + 1).unwrap_or(u32::MAX));
    Ok(Stable {
        compiled,
        slots,
        before_flip,
        claimed: devices
            .claimed
            .iter()
            .map(to_device)
            .chain(regions.claimed.iter().map(to_region))
            .chain(countries.claimed.iter().map(to_country))
            .collect(),
        retired: devices
            .retired
            .iter()
            .map(to_device)
            .chain(regions.retired.iter().map(to_region))
            .chain(countries.retired.iter().map(to_country))
            .collect(),
    })
}

/// Stable ids for the countries some class has; returns the assignment
/// and the map from the policy's country ids to the stable ones.
fn assign_countries(
    compiled: &Compiled,
    previous: &SlotTable,
) -> Result<(Assignment, Vec<u16>), SlotError> {
    let mut counted = vec![false; compiled.country_names.len()];
    for &c in &compiled.class_countries {
        if let Some(i) = usize::from(c).checked_sub(1)
            && let Some(k) = counted.get_mut(i)
        {
            *k = true;
        }
    }
    let ids: Vec<usize> = (0..counted.len()).filter(|&i| counted[i]).collect();
    let names: Vec<&str> = ids
        .iter()
        .map(|&i| compiled.country_names[i].as_str())
        .collect();
    let countries = assign(
        "country",
        &names,
        &previous.countries,
        MAX_COUNTRIES as usize,
        None,
    )?;
    let mut map = vec![0u16; compiled.country_names.len() + 1];
    for (k, &i) in ids.iter().enumerate() {
        map[i + 1] = u16::try_from(countries.index[k] + 1).unwrap_or(u16::MAX);
    }
    Ok((countries, map))
}

fn remap_values<K>(entries: &mut [(K, u32)], map: &[u32]) {
    for (_, v) in entries {
        if let Some(&to) = usize::try_from(*v).ok().and_then(|i| map.get(i)) {
            *v = to;
        }
    }
}

/// Names of indices `0..rows`: the owner's, or "" for an index never used.
fn names_of(owners: &[Option<Owner>], rows: usize) -> Vec<String> {
    (0..rows)
        .map(|i| {
            owners
                .get(i)
                .and_then(Option::as_ref)
                .map_or_else(String::new, |o| o.name.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests;
