//! Tasks cargo alone cannot do: the demo, the test run and the benchmark
//! as root, setup. Called through `./x`, which installs the toolchain first.

mod bench;
mod install;

use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build regionwall and run the sandbox demo.
    Demo,
    /// Run the whole test suite (unit, datapath, policy, end-to-end).
    Test {
        /// Extra arguments passed to `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks (per-packet cost, compile + publish, event path,
    /// RSS) and update the README's results; always runs optimized.
    Bench(bench::Args),
    /// Run the cargo-fuzz targets (policy parser, data loaders) for a
    /// bounded time each, from the committed seeds.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Only these targets (default: all).
        targets: Vec<String>,
    },
    /// Run the installer only.
    Setup,
    /// Build a release and install the binary, man pages, shell
    /// completions, the systemd unit and an example policy.
    Install(install::Args),
}

/// The cargo-fuzz targets in fuzz/Cargo.toml.
const FUZZ_TARGETS: [&str; 5] = [
    "policy",
    "cidr_list",
    "rir_delegated",
    "range_csv",
    "dns_answer",
];
/// cargo-fuzz needs nightly: the eBPF toolchain (already installed).
const NIGHTLY: &str = "+nightly-2026-07-20";

/// Runs each target for `seconds`, seeded from fuzz/seeds/<target>, with a
/// scratch corpus; a crash fails with the reproducer's path.
fn fuzz(targets: &[String], seconds: u64) -> anyhow::Result<()> {
    let all: Vec<String> = FUZZ_TARGETS.iter().map(ToString::to_string).collect();
    let targets = if targets.is_empty() { &all } else { targets };
    for target in targets {
        let corpus = std::path::Path::new("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        let mut cmd = nightly_cargo();
        cmd.args(["fuzz", "run", "--fuzz-dir", "fuzz", "-O", target])
            .arg(&corpus)
            .arg(format!("fuzz/seeds/{target}"))
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-rss_limit_mb=2048",
                "-print_final_stats=1",
            ]);
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        run(cmd)?;
    }
    Ok(())
}

/// `cargo +nightly…` through the rustup proxy (not $CARGO, and without
/// the variables cargo set for this process, which would pin the stable
/// toolchain).
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    for var in [
        "CARGO",
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd.arg(NIGHTLY);
    cmd
}

/// Clippy on the eBPF crate for the bpf target (as aya's own xtask does):
/// the default members' clippy cannot build it for the host.
fn ebpf_clippy() -> Command {
    let mut cmd = Command::new("cargo");
    // The rustup proxy picks the nightly from `+toolchain`; the variables
    // cargo set for this process would pin the stable one.
    for var in [
        "CARGO",
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd.current_dir("ebpf").args([
        NIGHTLY,
        "clippy",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--bins",
        "--target-dir",
        "../target/ebpf-clippy",
        "--",
        "-D",
        "warnings",
    ]);
    cmd
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(mut cmd: Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn require_root(what: &str) -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("{what} needs root (XDP programs and network namespaces); run it with sudo");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Task::Demo => {
            require_root("the demo")?;
            let mut build = cargo();
            build.args(["build", "--package", "regionwall", "--bin", "regionwall"]);
            run(build)?;
            let mut demo = Command::new("target/debug/regionwall");
            demo.arg("demo");
            run(demo)
        }
        Task::Test { args } => {
            require_root("the test suite")?;
            let mut fmt = cargo();
            fmt.args(["fmt", "--all", "--check"]);
            run(fmt)?;
            let mut clippy = cargo();
            clippy.args(["clippy", "--all-targets", "--", "-D", "warnings"]);
            run(clippy)?;
            run(ebpf_clippy())?;
            let mut test = cargo();
            // Default members only: the eBPF crate cannot be built for the host.
            test.args(["test"]).args(&args);
            if args.is_empty() {
                // The figures the tests measure (reloads, packets, lost
                // events, timings) are part of the result: show them.
                test.args(["--", "--show-output"]);
            }
            run(test)?;
            // The whole suite also fuzzes briefly (REGIONWALL_FUZZ_SECONDS
            // per target, 0 to skip); a filtered run does not.
            let seconds = std::env::var("REGIONWALL_FUZZ_SECONDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(10);
            if args.is_empty() && seconds > 0 {
                fuzz(&[], seconds)?;
            }
            Ok(())
        }
        Task::Fuzz { seconds, targets } => fuzz(&targets, seconds),
        Task::Bench(args) => {
            require_root("the benchmark")?;
            if cfg!(debug_assertions) {
                // Figures from a debug build mean nothing: build the
                // controller and re-run this task optimized.
                let mut build = cargo();
                build.args([
                    "build",
                    "--release",
                    "--package",
                    "regionwall",
                    "--bin",
                    "regionwall",
                ]);
                run(build)?;
                let mut again = cargo();
                again
                    .args([
                        "run",
                        "--quiet",
                        "--release",
                        "--package",
                        "xtask",
                        "--",
                        "bench",
                    ])
                    .args(std::env::args().skip_while(|a| a != "bench").skip(1));
                return run(again);
            }
            let root = std::env::current_dir()?;
            bench::main(&args, &root)
        }
        Task::Install(args) => install::main(&args),
        Task::Setup => run({
            let mut c = Command::new("bash");
            c.arg("scripts/setup.sh");
            c
        }),
    }
}
