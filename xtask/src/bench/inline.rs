//! `regionwall check` of a policy listing 1M CIDRs inline in a rule's
//! `allow` (no `file =`): the parser's cost per inline value must not grow
//! with the size of the policy text.

use std::{fmt::Write as _, path::Path, process::Command, time::Instant};

use anyhow::{Context as _, bail};

/// CIDRs in the generated policy.
pub const COUNT: usize = 1_000_000;

/// Writes the policy and times the release binary's `check` of it;
/// returns seconds.
pub fn run(root: &Path) -> anyhow::Result<f64> {
    let dir = root.join("target/bench/inline");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut text = String::with_capacity(COUNT * 24);
    text.push_str(
        "[[rules]]\nname = \"inline\"\ndevices = [\"default\"]\nblock = [\"any\"]\nallow = [\n",
    );
    for i in 0..COUNT {
        // Every other /25 of 16.0.0.0 upwards: nothing merges.
        let (a, b, c) = (16 + (i >> 16), (i >> 8) & 0xff, i & 0xff);
        writeln!(text, "  \"{a}.{b}.{c}.0/25\",")?;
    }
    text.push_str("]\n");
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, text).with_context(|| format!("writing {}", policy.display()))?;
    let started = Instant::now();
    let out = Command::new(root.join("target/release/regionwall"))
        .arg("check")
        .arg(&policy)
        .output()
        .context("running regionwall check")?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "regionwall check of {} failed: {}",
            policy.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(seconds)
}
