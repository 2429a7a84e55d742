//! Tasks cargo alone cannot do: the demo, the test run and the benchmark
//! as root, setup. Called through `./x`, which installs the toolchain first.

mod bench;

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
    /// Run the installer only.
    Setup,
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
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc_geteuid() };
    if euid != 0 {
        bail!("{what} needs root (XDP programs and network namespaces); run it with sudo");
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
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
            let mut test = cargo();
            // Default members only: the eBPF crate cannot be built for the host.
            test.args(["test"]).args(&args);
            run(test)
        }
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
        Task::Setup => run({
            let mut c = Command::new("bash");
            c.arg("scripts/setup.sh");
            c
        }),
    }
}
