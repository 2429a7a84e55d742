//! The policy model: named regions (sets of prefixes), named devices, and
//! rules `devices -> block [regions]` with `allow` exceptions.
//!
//! [`parse_file`] turns a TOML file into a validated [`Policy`] or every
//! error it found, each with file, line and column: `parse` (the serde
//! shapes), `schema` (structural errors), `resolve` (data files and
//! sources), `check` (names and references); `load` runs them in turn.

mod check;
pub mod countries;
mod fetch;
mod load;
mod parse;
pub mod ports;
mod resolve;
mod schema;
mod widen;

use std::{net::IpAddr, path::PathBuf};

pub use crate::diag::{Diagnostic, Diagnostics, Lines, locate};
pub use crate::net::{Prefix, V4, V6};
pub use crate::sources::Origin;
/// Moved to the crate root; kept here for existing `policy::net` paths.
pub use crate::{net, set};
pub use countries::{Attribution, CountryDb, CountrySource};
pub use fetch::{Fetch, How, MAXMIND_ENDPOINT, Plan, update_plan};
pub use load::{
    Options, PolicyError, parse_file, parse_file_limited, parse_file_with, parse_str,
    parse_str_with,
};
pub use ports::{PacketKey, PortMatch};
pub use widen::{Widening, widening};

/// Name of the implicit device that stands for every source no device names.
pub const DEFAULT_DEVICE_NAME: &str = "default";
/// Name of the built-in region holding every address (0.0.0.0/0 and ::/0).
pub const ANY_REGION_NAME: &str = "any";

/// A named set of addresses: the union of `prefixes` (from any number of
/// sources, overlaps and duplicates allowed) minus the union of `except`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub name: String,
    pub prefixes: Vec<(Prefix, Origin)>,
    pub except: Vec<(Prefix, Origin)>,
}

impl Region {
    /// The exact set as minimal, disjoint IPv4 and IPv6 prefixes.
    #[must_use]
    pub fn merged(&self) -> (Vec<V4>, Vec<V6>) {
        let (v4, v6) = split(&self.prefixes);
        let (x4, x6) = split(&self.except);
        (
            set::RangeSet::from_prefixes(&v4)
                .subtract(&set::RangeSet::from_prefixes(&x4))
                .to_prefixes(),
            set::RangeSet::from_prefixes(&v6)
                .subtract(&set::RangeSet::from_prefixes(&x6))
                .to_prefixes(),
        )
    }

    #[must_use]
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.prefixes.iter().any(|(p, _)| p.contains(addr))
            && !self.except.iter().any(|(p, _)| p.contains(addr))
    }
}

fn split(list: &[(Prefix, Origin)]) -> (Vec<V4>, Vec<V6>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for (p, _) in list {
        match p {
            Prefix::V4(p) => v4.push(*p),
            Prefix::V6(p) => v6.push(*p),
        }
    }
    (v4, v6)
}

/// IPv4-mapped IPv6 addresses are treated as IPv4, like the kernel does.
#[must_use]
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

/// A named set of devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    /// Indices into [`Policy::devices`] (never the default device).
    pub members: Vec<usize>,
}

/// A device, recognised by source MAC first, then by source address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub macs: Vec<[u8; 6]>,
    pub prefixes: Vec<Prefix>,
}

/// Enforce drops; audit reports and passes; reject drops and answers (a
/// TCP RST, an ICMP "administratively prohibited"), so the sender fails at
/// once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Audit,
    Reject,
}

/// One rule. Ids given to the kernel are index + 1 (0 means "no rule").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    /// Indices into [`Policy::devices`] (0: the default device).
    pub devices: Vec<usize>,
    /// Indices into [`Policy::groups`].
    pub groups: Vec<usize>,
    /// Indices into [`Policy::regions`].
    pub block: Vec<usize>,
    /// Indices into [`Policy::regions`] (inline CIDRs become anonymous regions).
    pub allow: Vec<usize>,
    /// Protocol/port qualifiers; `None` applies the rule to all traffic.
    pub ports: Option<Vec<PortMatch>>,
    pub mode: Mode,
    /// Line of the rule in the policy file.
    pub line: usize,
}

/// A validated policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub source: PathBuf,
    /// Named regions first (sorted by name), then anonymous allow sets
    /// (named `rule-name/allow`). Region ids given to the kernel are index + 1.
    pub regions: Vec<Region>,
    /// Number of named regions at the start of `regions`.
    pub named_regions: usize,
    /// Index 0 is always the default device.
    pub devices: Vec<Device>,
    pub groups: Vec<Group>,
    pub rules: Vec<Rule>,
    /// `allow_empty = true`: the author means a reload to this policy to
    /// pass more than the last one did (no rules, or devices no rule
    /// covers any more); see [`widening`].
    pub allow_empty: bool,
    /// Every file and directory the loader read: the policy, `file =`
    /// lists, `regions_dir` and the country files read under it, source
    /// files and directories. Absolute (symlinks not resolved), each once,
    /// in the order first read; for watching them.
    pub inputs: Vec<PathBuf>,
    /// Problems that do not stop the policy from loading.
    pub warnings: Vec<Diagnostic>,
    /// Where every destination's country comes from (empty: no country
    /// database, destinations are counted under "-").
    pub countries: CountryDb,
    /// `[update] dir`: where `regionwall update` keeps versions and its
    /// status file (shown by `stats`).
    pub update_dir: Option<PathBuf>,
}
