//! One module per subcommand.

pub mod candidate;
pub mod check;
pub mod client;
pub mod demo;
pub mod explain;
pub mod generate;
pub mod history;
pub mod input;
pub mod run;
pub mod update;

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

/// An error and its causes on one line, each cause once: library errors
/// often show their source in their own message too, and anyhow's `{:#}`
/// would then print the same text twice ("`BPF_OBJ_GET` failed: `BPF_OBJ_GET`
/// failed"). A cause whose text the line already holds is left out.
#[must_use]
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(part.as_str()) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("reading x: {0}")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn each_cause_once() {
        let io = std::io::Error::other("Is a directory");
        let e = anyhow::Error::new(Outer(io)).context("loading policy p.toml");
        assert_eq!(
            super::error_text(&e),
            "loading policy p.toml: reading x: Is a directory"
        );
    }
}
