use which::which;

/// Makes cargo rebuild the program when bpf-linker changes (e.g. after
/// `scripts/setup.sh` rebuilt it against another LLVM).
fn main() {
    // Code generation, applied by bpf-linker (which runs LLVM's backend;
    // aya-build owns RUSTFLAGS): unaligned packet loads become single
    // loads instead of byte-by-byte assembly (the verifier allows them on
    // every architecture with efficient unaligned access, which is all XDP
    // targets in practice). (`+alu32` is not used: LLVM then spills packet
    // pointers as 32-bit values, which the verifier rejects.)
    println!("cargo:rustc-link-arg=--cpu-features=+allows-misaligned-mem-access");
    let bpf_linker = which("bpf-linker").expect("bpf-linker not found: run scripts/setup.sh");
    println!(
        "cargo:rerun-if-changed={}",
        bpf_linker.to_str().expect("bpf-linker path is UTF-8")
    );
}
