//! One module per subcommand.

pub mod check;
pub mod demo;
pub mod run;

use std::path::Path;

use anyhow::Context as _;
use regionwall::{PolicyError, compile, policy};

/// Parses and compiles a policy, printing every diagnostic on failure.
pub fn load_policy(path: &Path) -> anyhow::Result<(policy::Policy, compile::Compiled)> {
    let parsed = match policy::parse_file(path) {
        Ok(p) => p,
        Err(PolicyError::Invalid(diags)) => {
            anyhow::bail!("policy {} rejected:\n{diags}", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("loading policy {}", path.display())),
    };
    for w in &parsed.warnings {
        log::warn!("{w}");
    }
    let compiled = compile::compile(&parsed)
        .with_context(|| format!("compiling policy {}", path.display()))?;
    Ok((parsed, compiled))
}
