//! regionwall: region egress policies enforced by an XDP program.
//!
//! - [`net`], [`set`]: address prefixes and exact prefix-set algebra.
//! - [`diag`]: diagnostics with file, line, column and what was expected.
//! - [`input`]: bounded, non-blocking reading of every input file.
//! - [`policy`]: the policy model and its TOML parser with precise errors.
//! - [`sources`]: loaders for country databases, RIR statistics, GeoLite2 and range CSVs.
//! - [`candidate`]: the staged candidate's disagreements as reported and printed.
//! - [`compile`]: policy -> kernel tables (region classes, decisions).
//! - [`fib`]: the compiled destination lookup (direct /16 table + range runs).
//! - [`explain`]: why an address is blocked (regions, source lines, rule).
//! - [`layout`]: the program's map names, defined once.
//! - [`readings`]: counters, policy facts and slot names read from the maps.
//! - [`datapath`]: the loaded program; publish, link, events ring.
//! - [`control`]: the control socket protocol and statistics snapshots.
//! - [`controller`]: the running enforcement of one interface (`regionwall run`).
//! - [`verdict`]: pass, drop, audit, reject as a userspace type.
//! - [`shown`]: input shown in logs with control characters escaped.
//! - [`events`]: decoding and printing drop/reject/audit events.
//! - [`history`]: events and counter rollups kept across restarts (SQLite).
//! - [`pin`]: the pinned state that keeps enforcing without the controller.
//! - [`slots`]: stable counter indices for device and region names.

pub mod candidate;
pub mod compile;
pub mod control;
pub mod controller;
pub mod datapath;
pub mod diag;
pub mod dns;
pub mod error;
pub mod events;
pub mod explain;
pub mod fib;
pub mod history;
mod iface;
pub mod input;
pub mod layout;
pub mod net;
pub mod pin;
pub mod policy;
pub mod readings;
pub mod set;
pub mod shown;
pub mod slots;
pub mod sources;
mod sys;
pub mod update;
pub mod verdict;
pub mod views;

pub use error::{CompileError, DatapathError, FibError, PolicyError, Shortfall};
