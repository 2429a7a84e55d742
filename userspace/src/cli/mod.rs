//! One module per subcommand.

pub mod check;
pub mod client;
pub mod demo;
pub mod explain;
pub mod input;
pub mod run;

use std::path::Path;

use anyhow::Context as _;
use regionwall::{PolicyError, compile, input::Limits, policy};

/// Parses a policy, reading files within `limits`; every diagnostic goes
/// into the error.
pub fn parse_policy(
    path: &Path,
    options: &policy::Options,
    limits: Limits,
) -> anyhow::Result<policy::Policy> {
    let parsed = match policy::parse_file_limited(path, options, limits) {
        Ok(p) => p,
        Err(PolicyError::Invalid(diags)) => {
            anyhow::bail!("policy {} rejected:\n{diags}", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("loading policy {}", path.display())),
    };
    for w in &parsed.warnings {
        log::warn!("{w}");
    }
    Ok(parsed)
}

/// Parses and compiles a policy, printing every diagnostic on failure.
pub fn load_policy(
    path: &Path,
    options: &policy::Options,
) -> anyhow::Result<(policy::Policy, compile::Compiled)> {
    let parsed = parse_policy(path, options, Limits::default())?;
    let compiled = compile::compile(&parsed)
        .with_context(|| format!("compiling policy {}", path.display()))?;
    Ok((parsed, compiled))
}

/// For commands that only print: a closed stdout (`| head`) ends the process
/// quietly, as for other Unix tools, instead of a panic on the next print.
pub fn default_sigpipe() {
    // SAFETY: resetting a signal disposition to its default has no
    // preconditions; no handler of ours is replaced.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
