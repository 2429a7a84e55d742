//! The candidate's decision table in the live table's index space.

use std::collections::HashMap;

use regionwall_common::Decision;

use crate::{compile::Compiled, policy::Policy};

/// Why a candidate's table cannot be laid over the live one.
#[derive(Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// Its region data splits destinations differently: the live policy
    /// must be republished over a common refinement first.
    Classes,
    /// Not expressible at all (devices, port qualifiers): the reason.
    Refused(String),
}

/// Whether two policies have the same regions (names, addresses, inline
/// allow lists) and country database: then their classes are the same.
#[must_use]
pub fn same_region_data(a: &Policy, b: &Policy) -> bool {
    let region_data = |p: &Policy| {
        p.regions
            .iter()
            .map(|r| {
                let list = |l: &[(crate::policy::Prefix, crate::policy::Origin)]| {
                    l.iter().map(|(p, _)| *p).collect::<Vec<_>>()
                };
                (r.name.clone(), list(&r.prefixes), list(&r.except))
            })
            .collect::<Vec<_>>()
    };
    a.countries == b.countries && region_data(a) == region_data(b)
}

/// FNV-1a digest of the live policy as published (decisions, port
/// classes, names): a candidate is evaluated only against the live policy
/// whose digest it was staged with.
#[must_use]
pub fn live_digest(live: &Compiled) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
        }
    };
    for d in &live.decisions {
        eat(&[d.verdict]);
        eat(&d.region.to_le_bytes());
        eat(&d.rule.to_le_bytes());
        eat(&d.country.to_le_bytes());
    }
    for p in &live.port_classes {
        eat(&p.to_le_bytes());
    }
    eat(&live.names_digest().to_le_bytes());
    h
}

impl super::Staged {
    /// The candidate's table for `stable`, a live policy (read from
    /// `live`) about to be published, if it is the live policy the
    /// candidate was staged against (else `None`: it pauses).
    pub(in crate::controller) fn table_for(
        &self,
        stable: &Compiled,
        live: &Policy,
    ) -> Option<Vec<Decision>> {
        if live_digest(stable) != self.live_digest {
            return None;
        }
        table(stable, live, &self.compiled, &self.policy).ok()
    }
}

/// Digest of a staged candidate as compiled: [`live_digest`] and its
/// destination tables (every prefix and its class), so a candidate whose
/// region addresses changed is not adopted with counts taken under the
/// old ones.
#[must_use]
pub fn candidate_digest(candidate: &Compiled) -> u32 {
    let mut h = live_digest(candidate);
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
        }
    };
    for (p, class) in &candidate.v4 {
        eat(&p.octets());
        eat(&[p.len]);
        eat(&class.to_le_bytes());
    }
    for (p, class) in &candidate.v6 {
        eat(&p.octets());
        eat(&[p.len]);
        eat(&class.to_le_bytes());
    }
    h
}

/// Live class id -> the candidate's class id holding it. Identity when both
/// tables resolve destinations alike; through the refining tags when the
/// live table was compiled over the candidate's regions and countries
/// ([`crate::compile::Refine::of`]); else [`Mismatch::Classes`].
fn class_map(live: &Compiled, candidate: &Compiled) -> Result<Vec<usize>, Mismatch> {
    if live.refined.is_empty() {
        if live.v4 != candidate.v4 || live.v6 != candidate.v6 || live.classes != candidate.classes {
            return Err(Mismatch::Classes);
        }
        return Ok((0..live.classes.len()).collect());
    }
    let regions = u16::try_from(candidate.region_names.len()).map_err(|_| Mismatch::Classes)?;
    let own: HashMap<(&[u16], u16), usize> = candidate
        .classes
        .iter()
        .zip(&candidate.class_countries)
        .enumerate()
        .map(|(i, (set, country))| ((set.as_slice(), *country), i))
        .collect();
    live.refined
        .iter()
        .map(|tags| {
            let set: Vec<u16> = tags.iter().copied().filter(|t| *t < regions).collect();
            let country = tags
                .iter()
                .find(|t| **t >= regions)
                .map_or(regionwall_common::NO_COUNTRY, |t| t - regions + 1);
            own.get(&(set.as_slice(), country))
                .copied()
                .ok_or(Mismatch::Classes)
        })
        .collect()
}

/// The candidate's decisions in the live table's index space: row of
/// stable device index `d`, class `c`, port class `p` holds what the
/// candidate decides for the device of that name, a destination of class
/// `c` and port class `p`; the country stays the live one (counts are
/// keyed like the live ones). Devices and port qualifiers must match the
/// live policy's; region data may differ only when the live table is a
/// common refinement of both (see [`class_map`]).
pub fn table(
    live: &Compiled,
    live_policy: &Policy,
    candidate: &Compiled,
    candidate_policy: &Policy,
) -> Result<Vec<Decision>, Mismatch> {
    if live_policy.devices != candidate_policy.devices {
        return Err(Mismatch::Refused(
            "its devices (names, MACs or addresses) differ".into(),
        ));
    }
    if live.port_classes != candidate.port_classes
        || live.port_class_count != candidate.port_class_count
    {
        return Err(Mismatch::Refused(
            "its protocol/port qualifiers split ports differently".into(),
        ));
    }
    let map = class_map(live, candidate)?;
    let classes = live.classes.len();
    let own_classes = candidate.classes.len();
    let ports = live.port_class_count.max(1);
    let mut out = vec![Decision::default(); live.decisions.len()];
    for (d, name) in live.device_names.iter().enumerate() {
        let Some(own) = candidate.device_names.iter().position(|n| n == name) else {
            continue; // a retired index: no device table entry leads here
        };
        for (c, &oc) in map.iter().enumerate() {
            let country = live.class_countries.get(c).copied().unwrap_or(0);
            for p in 0..ports {
                let (at, from) = (
                    (d * classes + c) * ports + p,
                    (own * own_classes + oc) * ports + p,
                );
                if let (Some(cell), Some(src)) = (out.get_mut(at), candidate.decisions.get(from)) {
                    *cell = Decision { country, ..*src };
                }
            }
        }
    }
    Ok(out)
}
