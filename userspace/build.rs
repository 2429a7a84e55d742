use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// The eBPF toolchain pinned in ebpf/rust-toolchain.toml: its LLVM major must
/// match bpf-linker's (see ../shared/TOOLCHAIN.md).
const EBPF_TOOLCHAIN: &str = "nightly-2026-07-20";

fn main() -> anyhow::Result<()> {
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
