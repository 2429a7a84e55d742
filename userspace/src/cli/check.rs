//! `regionwall check`: validate a policy and summarise what it compiles to.

use std::{path::PathBuf, process::ExitCode};

use regionwall::{PolicyError, compile, policy};
use regionwall_common::{
    EVENT_RING_BYTES, FIB_LONG_DEFAULT, FIB_RANGES_DEFAULT, FIB_SLOTS_DEFAULT, GENERATIONS,
    MAX_DECISIONS, PORT_SLOTS, TRAFFIC_SLOTS,
};

/// Validate a policy file without touching the kernel
///
/// Prints every error with file, line and column and exits non-zero, or a
/// summary: regions with their IPv4/IPv6 prefix counts after merging,
/// devices, groups, rules, compiled table sizes and kernel memory.
///
/// Example:
///   regionwall check policies/home.toml
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Policy file (TOML).
    pub policy: PathBuf,
    /// Country database directory (overrides the policy's `regions_dir`).
    #[arg(long)]
    pub regions_dir: Option<PathBuf>,
    #[command(flatten)]
    pub input: super::input::InputArgs,
}

/// Kernel bytes of one LPM trie element: `struct lpm_trie_node` (rcu head,
/// two child pointers, prefix length, flags) plus key data and value,
/// rounded to 8. Intermediate nodes can add up to as many again.
fn lpm_node_bytes(key: usize) -> usize {
    (40 + key + 4).next_multiple_of(8)
}

fn mib(bytes: usize) -> String {
    #[expect(clippy::cast_precision_loss, reason = "a display figure")]
    let m = bytes as f64 / (1024.0 * 1024.0);
    format!("{m:.1} MiB")
}

pub fn main(args: &Args) -> anyhow::Result<ExitCode> {
    super::default_sigpipe();
    let options = policy::Options {
        regions_dir: args.regions_dir.clone(),
        ..policy::Options::default()
    };
    let started = std::time::Instant::now();
    let parsed = match policy::parse_file_limited(&args.policy, &options, args.input.limits()) {
        Ok(p) => p,
        Err(PolicyError::Invalid(diags)) => {
            eprintln!("{diags}");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    for w in &parsed.warnings {
        eprintln!("warning: {w}");
    }
    let parse_time = started.elapsed();
    let started = std::time::Instant::now();
    let compiled = match compile::compile(&parsed) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "regionwall: error: compiling {}: {e}",
                regionwall::shown::Shown(&args.policy)
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let compile_time = started.elapsed();
    println!(
        "{}: ok (read and checked in {} ms, compiled in {} ms)",
        args.policy.display(),
        parse_time.as_millis(),
        compile_time.as_millis()
    );
    println!("regions (prefixes after merging overlaps and removing exceptions):");
    // Inline allow lists (`rule/allow`) are the policy's own, not regions
    // the user named: they are shown with their rule.
    for (r, (v4, v6)) in parsed
        .regions
        .iter()
        .zip(&compiled.region_sizes)
        .filter(|(r, _)| !r.name.contains('/'))
    {
        println!(
            "  {:<28} {v4:>8} IPv4 {v6:>8} IPv6   ({}{})",
            r.name,
            plural(r.prefixes.len(), "source prefix", "source prefixes"),
            if r.except.is_empty() {
                String::new()
            } else {
                format!(", {} excepted", r.except.len())
            }
        );
    }
    println!("devices:");
    for d in &parsed.devices {
        println!(
            "  {:<28} {}, {}",
            d.name,
            plural(d.macs.len(), "MAC", "MACs"),
            plural(d.prefixes.len(), "address prefix", "address prefixes")
        );
    }
    if !parsed.groups.is_empty() {
        println!("groups:");
        for g in &parsed.groups {
            let members: Vec<&str> = g
                .members
                .iter()
                .map(|m| parsed.devices[*m].name.as_str())
                .collect();
            println!("  {:<28} {}", g.name, members.join(", "));
        }
    }
    print_rules(&parsed);
    let trie = compiled.v4.len() * lpm_node_bytes(4) + compiled.v6.len() * lpm_node_bytes(16);
    let fixed = (MAX_DECISIONS as usize * 8 + PORT_SLOTS as usize * 8) * GENERATIONS as usize
        + EVENT_RING_BYTES as usize;
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let per_cpu = TRAFFIC_SLOTS as usize * 16 * cpus;
    println!(
        "compiled: {} IPv4 + {} IPv6 LPM entries, {}, {}, {}",
        compiled.v4.len(),
        compiled.v6.len(),
        plural(compiled.classes.len(), "region class", "region classes"),
        plural(compiled.port_class_count, "port class", "port classes"),
        plural(compiled.decisions.len(), "decision", "decisions"),
    );
    let fib_prealloc = print_fib(&compiled);
    println!(
        "kernel memory: {} preallocated for the compiled lookup (both generations, default room; `run` sizes it to 1.5x this policy's need when larger), {} preallocated for decision and port tables and the event ring, {} of per-CPU traffic counters on {cpus} CPUs; with --lookup lpm instead, {} of LPM tries (up to twice that with inner nodes, and twice during a reload)",
        mib(fib_prealloc),
        mib(fixed),
        mib(per_cpu),
        mib(trie),
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints the compiled lookup's size; returns the bytes the kernel
/// preallocates for it with the default room.
fn print_fib(compiled: &compile::Compiled) -> usize {
    let capacity = regionwall::fib::Capacity {
        slots: FIB_SLOTS_DEFAULT as usize,
        ranges: FIB_RANGES_DEFAULT as usize,
        long: FIB_LONG_DEFAULT as usize,
    };
    let started = std::time::Instant::now();
    // Built with unlimited room so the sizes are known even when they
    // exceed the defaults.
    let unlimited = regionwall::fib::Capacity {
        slots: usize::MAX,
        ranges: usize::MAX,
        long: usize::MAX,
    };
    match regionwall::fib::Fib::build(&compiled.v4, &compiled.v6, unlimited) {
        Ok(fib) => {
            println!(
                "compiled lookup (default): {} slots ({} split blocks), {} ranges, {} long ranges = {} used, built in {:.1?}",
                fib.slots.len(),
                fib.splits,
                fib.ranges.len(),
                fib.long.len(),
                mib(fib.bytes()),
                started.elapsed()
            );
            if let Err(regionwall::FibError::Capacity(short)) = fib.fits(capacity) {
                let flags: Vec<String> = short
                    .iter()
                    .map(|t| format!("{} {}", t.flag, t.suggested()))
                    .collect();
                println!(
                    "note: larger than the default room ({} slots, {} ranges, {} long ranges): `run` sizes its tables from the policy it starts with (1.5x); to reload into this size after starting smaller, start with {} (1.5 times the need)",
                    capacity.slots,
                    capacity.ranges,
                    capacity.long,
                    flags.join(" ")
                );
            }
        }
        Err(e) => println!("compiled lookup: not possible ({e}); run with --lookup lpm"),
    }
    (FIB_SLOTS_DEFAULT as usize * 8
        + FIB_RANGES_DEFAULT as usize * 8
        + FIB_LONG_DEFAULT as usize * 16)
        * GENERATIONS as usize
}

fn print_rules(parsed: &policy::Policy) {
    println!("rules:");
    for r in &parsed.rules {
        let names = |ids: &[usize]| {
            ids.iter()
                .map(|i| {
                    let region = &parsed.regions[*i];
                    if region.name.contains('/') {
                        plural(region.prefixes.len(), "inline prefix", "inline prefixes")
                    } else {
                        region.name.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let who: Vec<&str> = r
            .devices
            .iter()
            .map(|d| parsed.devices[*d].name.as_str())
            .chain(r.groups.iter().map(|g| parsed.groups[*g].name.as_str()))
            .collect();
        let ports = r.ports.as_ref().map_or(String::new(), |p| {
            format!(
                " ports [{}]",
                p.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
        println!(
            "  {:<28} line {:<4} {}: [{}] block [{}] allow [{}]{ports}",
            r.name,
            r.line,
            match r.mode {
                policy::Mode::Enforce => "enforce",
                policy::Mode::Audit => "audit",
                policy::Mode::Reject => "reject",
            },
            who.join(", "),
            names(&r.block),
            names(&r.allow)
        );
    }
}

/// `1 thing`, `2 things`.
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
