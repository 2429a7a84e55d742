//! The policy model: named regions (sets of prefixes), named devices, and
//! rules `devices -> block [regions]` with `allow` exceptions.
//!
//! [`parse`] turns a TOML file into a validated [`Policy`] or every error it
//! found, each with file, line and column.

mod diag;
pub mod net;
mod parse;

use std::path::PathBuf;

pub use diag::{Diagnostic, Diagnostics, locate};
pub use net::{Prefix, V4, V6};
pub use parse::{parse_file, parse_str};

/// Name of the implicit device that stands for every source no device names.
pub const DEFAULT_DEVICE_NAME: &str = "default";
/// Name of the built-in region holding every address (0.0.0.0/0 and ::/0).
pub const ANY_REGION_NAME: &str = "any";

/// Where a prefix came from, for `explain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

/// A named set of prefixes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub name: String,
    pub prefixes: Vec<(Prefix, Origin)>,
}

/// A device, recognised by source MAC first, then by source address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub macs: Vec<[u8; 6]>,
    pub prefixes: Vec<Prefix>,
}

/// Enforce drops; audit reports and passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Audit,
}

/// One rule. Ids given to the kernel are index + 1 (0 means "no rule").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    /// Indices into [`Policy::devices`].
    pub devices: Vec<usize>,
    /// Indices into [`Policy::regions`].
    pub block: Vec<usize>,
    /// Indices into [`Policy::regions`] (inline CIDRs become anonymous regions).
    pub allow: Vec<usize>,
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
    pub rules: Vec<Rule>,
    /// Problems that do not stop the policy from loading.
    pub warnings: Vec<Diagnostic>,
}
