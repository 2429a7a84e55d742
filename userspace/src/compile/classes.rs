//! Region classes: (prefix, tag) pairs turned into longest-prefix-match
//! entries of interned tag sets, and the sets split into regions, country
//! and refining tags.

use std::collections::HashMap;

use regionwall_common::NO_COUNTRY;

use crate::net::Bits;

/// Interned tag sets: id 0 is the empty set. A tag is a region index, or
/// a country (the country base plus its index).
#[derive(Debug)]
pub(super) struct Sets {
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

    pub(super) fn get(&self, id: u32) -> &[u16] {
        self.list.get(id as usize).map_or(&[], |t| t)
    }
}

/// Region classes: every tag set the tables use, numbered densely (class
/// 0 is the empty set, "no region, no country").
#[derive(Debug, Default)]
pub(super) struct Interner {
    pub(super) sets: Sets,
}

impl Interner {
    /// Re-numbers one family's table from its own sets into the classes.
    pub(super) fn merge<B>(&mut self, (table, local): (Vec<(B, u32)>, Sets)) -> Vec<(B, u32)> {
        let map: Vec<u32> = local.list.iter().map(|t| self.sets.intern(t)).collect();
        table
            .into_iter()
            .map(|(p, id)| (p, map[id as usize]))
            .collect()
    }

    /// Classes as region indices, each class's country id, and its
    /// refining tags (from `refine_base` on).
    pub(super) fn split(
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
pub(super) fn region_sets<B: Bits>(mut input: Vec<(B, u16)>) -> (Vec<(B, u32)>, Sets) {
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
pub(super) fn build_table<B: Bits>(input: Vec<(B, u16)>, interner: &mut Interner) -> Vec<(B, u32)> {
    interner.merge(region_sets(input))
}
