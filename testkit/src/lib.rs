//! regionwall's test kit: sandbox namespaces, the controller process, traffic and frames.
//!
//! Used by the integration tests, `cargo xtask bench` and the `regionwall
//! demo` subcommand. It spawns the `regionwall` executable by path and does
//! not depend on the `regionwall` library (whose binary depends on this kit).
//!
//! - [`netns`]: network namespaces with unique names.
//! - [`sandbox`]: the `phone -> gateway -> internet` topology and the
//!   `regionwall run` child process ([`sandbox::Controller`]).
//! - [`traffic`]: one bounded burst of UDP and TCP to a host ([`traffic::send_traffic`]).
//! - [`flow`]: continuous UDP to several hosts ([`flow::Flow`]).
//! - [`frames`]: hand-built frames for BPF_PROG_TEST_RUN.
//! - [`dns`]: DNS questions and answers in wire form.
//! - [`pins`]: a pin root of a test's own, cleaned up on drop.
//! - [`rng`]: the seeded generator.
//! - [`xdp`]: XDP return codes.
//! - [`kernel`]: the running kernel's version, for tests needing a feature.

pub mod dns;
pub mod flow;
pub mod frames;
pub mod kernel;
pub mod netns;
pub mod pins;
pub mod rng;
pub mod sandbox;
pub mod traffic;
pub mod xdp;
