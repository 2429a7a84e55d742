//! `regionwall check`: validate a policy and summarise what it compiles to.

use std::{path::PathBuf, process::ExitCode};

use regionwall::{PolicyError, compile, policy};

/// Validate a policy file without touching the kernel.
///
/// Prints every error with file, line and column and exits non-zero, or a
/// summary of regions, devices, rules and compiled table sizes.
///
/// Example:
///   regionwall check policies/home.toml
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Policy file (TOML).
    pub policy: PathBuf,
}

pub fn main(args: &Args) -> anyhow::Result<ExitCode> {
    let parsed = match policy::parse_file(&args.policy) {
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
    let compiled = match compile::compile(&parsed) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: error: {e}", args.policy.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("{}: ok", args.policy.display());
    println!("regions:");
    for r in parsed.regions.iter().take(parsed.named_regions) {
        let v4 = r
            .prefixes
            .iter()
            .filter(|(p, _)| matches!(p, policy::Prefix::V4(_)))
            .count();
        println!(
            "  {:<24} {:>8} IPv4 {:>8} IPv6 prefixes",
            r.name,
            v4,
            r.prefixes.len() - v4
        );
    }
    println!("devices:");
    for d in &parsed.devices {
        println!(
            "  {:<24} {} MAC, {} address prefixes",
            d.name,
            d.macs.len(),
            d.prefixes.len()
        );
    }
    println!("rules:");
    for r in &parsed.rules {
        let names = |ids: &[usize], table: &[policy::Region]| {
            ids.iter()
                .map(|i| table[*i].name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let devices = r
            .devices
            .iter()
            .map(|d| parsed.devices[*d].name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "  {:<24} line {:<4} {:?}: [{devices}] block [{}] allow [{}]",
            r.name,
            r.line,
            r.mode,
            names(&r.block, &parsed.regions),
            names(&r.allow, &parsed.regions)
        );
    }
    println!(
        "compiled: {} IPv4 + {} IPv6 prefixes (after merging), {} region classes, {} decisions, ~{} KiB of table data",
        compiled.v4.len(),
        compiled.v6.len(),
        compiled.classes.len(),
        compiled.decisions.len(),
        compiled.table_bytes().div_ceil(1024)
    );
    Ok(ExitCode::SUCCESS)
}
