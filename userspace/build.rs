//! Builds the eBPF programs (`ebpf/`) with aya-build and embeds them.
//!
//! aya-build relays every line of the inner cargo build as a
//! `cargo::warning`, so every build of this crate printed dozens of
//! "warning: regionwall@0.1.0: Compiling …" lines. This script runs
//! aya-build in a child copy of itself, passes its cargo directives on,
//! and shows the relayed output only when the eBPF build fails.

use std::process::Command;

use anyhow::{Context as _, anyhow, bail};
use aya_build::{Package, Toolchain};

/// The eBPF toolchain pinned in ebpf/rust-toolchain.toml: its LLVM major must
/// match bpf-linker's (see ../shared/TOOLCHAIN.md).
const EBPF_TOOLCHAIN: &str = "nightly-2026-07-20";

/// Set in the child copy of this script that runs aya-build.
const INNER: &str = "REGIONWALL_EBPF_BUILD_INNER";

fn build_ebpf() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("userspace crate has no parent directory"))?
        .join("ebpf");
    // The shared ABI crate lives outside ebpf/, which aya-build watches.
    println!("cargo::rerun-if-changed={manifest_dir}/../common/src");
    let root = root
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", root.display()))?;
    aya_build::build_ebpf(
        [Package {
            name: "regionwall-ebpf",
            root_dir: root,
            ..Package::default()
        }],
        Toolchain::Custom(EBPF_TOOLCHAIN),
    )
    .context("building the eBPF program (run scripts/setup.sh if the toolchain is missing)")
}

fn main() -> anyhow::Result<()> {
    if std::env::var_os(INNER).is_some() {
        return build_ebpf();
    }
    let me = std::env::current_exe().context("locating the build script")?;
    let out = Command::new(me)
        .env(INNER, "1")
        .output()
        .context("running the eBPF build")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (relayed, directives): (Vec<&str>, Vec<&str>) = stdout
        .lines()
        .partition(|l| l.starts_with("cargo::warning=") || l.starts_with("cargo:warning="));
    for line in directives {
        println!("{line}");
    }
    if !out.status.success() {
        for line in relayed {
            println!("{line}");
        }
        bail!(
            "the eBPF build failed (its output is above):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
