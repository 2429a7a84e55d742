//! regionwall: region egress policies enforced by an XDP program.
//!
//! - [`policy`]: the policy model and its TOML parser with precise errors.
//! - [`sources`]: loaders for country databases, RIR statistics, GeoLite2 and range CSVs.
//! - [`compile`]: policy -> kernel tables (region classes, decisions).
//! - [`fib`]: the compiled destination lookup (direct /16 table + range runs).
//! - [`explain`]: why an address is blocked (regions, source lines, rule).
//! - [`datapath`]: the loaded program; publish, counters, events ring.
//! - [`control`]: the control socket protocol and statistics snapshots.
//! - [`controller`]: the running enforcement of one interface (`regionwall run`).
//! - [`events`]: decoding and printing drop/audit events.
//! - [`pin`]: the pinned state that keeps enforcing without the controller.
//! - [`slots`]: stable counter indices for device and region names.
//! - [`netns`]: network namespace helpers for the demo and tests.
//! - [`demo`]: the sandbox demo.

pub mod compile;
pub mod control;
pub mod controller;
pub mod datapath;
pub mod demo;
pub mod error;
pub mod events;
pub mod explain;
pub mod fib;
pub mod input;
pub mod netns;
pub mod pin;
pub mod policy;
pub mod slots;
pub mod sources;
mod sys;

pub use error::{CompileError, DatapathError, PolicyError};
pub use fib::{FibError, Shortfall};
