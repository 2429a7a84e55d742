use which::which;

/// Makes cargo rebuild the program when bpf-linker changes (e.g. after
/// `scripts/setup.sh` rebuilt it against another LLVM).
fn main() {
    let bpf_linker = which("bpf-linker").expect("bpf-linker not found: run scripts/setup.sh");
    println!(
        "cargo:rerun-if-changed={}",
        bpf_linker.to_str().expect("bpf-linker path is UTF-8")
    );
}
