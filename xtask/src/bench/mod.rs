//! `cargo xtask bench`: everything in one run on this machine, so every
//! ratio compares figures taken side by side.
//!
//! 1. Per-packet cost through BPF_PROG_TEST_RUN of the benchmark object's
//!    programs (empty floor, key driver, parser, LPM path, compiled path) on
//!    tables of 1k/10k/100k/world/1M prefixes, with 65,536 distinct
//!    destinations per family (half inside the table), IPv4 and IPv6.
//! 2. Compile + publish time of the same tables for both lookups, and
//!    `nft -f` loading them into interval sets (in a scratch namespace).
//! 3. The reject path: a TCP SYN answered with a RST (XDP_TX) beside the
//!    same SYN dropped, per packet through BPF_PROG_TEST_RUN.
//! 4. The event path: drop events consumed per second while the kernel
//!    floods the ring buffer, and every drop accounted for.
//! 5. The controller's peak RSS with the world table (the real binary).
//! 6. `regionwall check` of 1M CIDRs listed inline in a policy.
//! 7. What seeing costs: the world table's path with country attribution
//!    and counting, with host counting, and as one region per country.
//! 8. DNS answers decoded per second and the name cache's memory at cap.
//! 9. History: events written per second, a grouped query over them.
//! 10. What a staged candidate policy costs: the world table's path with
//!     none, one agreeing and one disagreeing on every packet.
//! 11. `/metrics` with 256 devices × 250 countries: a scrape with batch
//!     lookups against the per-key read, side by side.
//! 12. Real traffic (`--traffic`): frames to 65,536 destinations sent
//!     through a veth into a gateway namespace that does nothing, runs
//!     regionwall or an nftables chain with the world's IPv4 prefixes; CPU
//!     per frame on the receiving side.
//!
//! Prints a table with ratios and target checks, writes JSON under
//! target/bench/ and refreshes the README's results section.

#![allow(
    clippy::cast_precision_loss,
    reason = "counts and nanoseconds become f64 for display and ratios"
)]

mod accounting;
mod controller;
mod cost;
mod dashboard;
mod dns;
mod events;
mod growth;
mod history;
mod inline;
mod metrics;
mod reject;
mod report;
mod shadow;
mod tables;
mod traffic;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::bail;
use regionwall::{
    compile,
    datapath::{Datapath, LoadOptions},
    fib::{Capacity, Fib},
    policy::{self, Prefix},
};
use regionwall_common::{BENCH_KEYS, LPM_V4_MAX_ENTRIES, LPM_V6_MAX_ENTRIES, Lookup};
use regionwall_testkit::rng::Rng;
use serde::Serialize;

use self::{
    cost::{destinations, packet_cost},
    tables::Table,
};

/// No limit: the table is built whole, then the maps sized for it.
const UNLIMITED: Capacity = Capacity {
    slots: usize::MAX,
    ranges: usize::MAX,
    long: usize::MAX,
};

/// Room for the 1M table in both lookups (raised for a larger table).
const CAPACITY: Capacity = Capacity {
    slots: 1 << 23,
    ranges: 1 << 22,
    long: 1 << 16,
};

#[derive(clap::Args)]
pub struct Args {
    /// Runs of each test_run measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub samples: usize,
    /// Program runs per test_run call (a multiple of the 65,536-key pool).
    #[arg(long, default_value_t = 1 << 18)]
    pub repeat: u32,
    /// Only the 1k and world tables (a quick look, not the full report).
    #[arg(long)]
    pub quick: bool,
    /// Only these tables (1k, 10k, 100k, world, 1M) and sections
    /// (accounting, dns, history, dashboard, metrics, reject, events, rss,
    /// inline, traffic), e.g. `--only 1M,dns`.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Only the real-traffic section (`--only traffic`): regionwall
    /// against nftables on frames sent through a veth.
    #[arg(long)]
    pub traffic: bool,
    /// Leave README.md alone.
    #[arg(long)]
    pub no_readme: bool,
}

#[derive(Serialize, Default, Clone)]
pub struct PacketCost {
    pub floor: f64,
    pub keys: f64,
    pub parse: f64,
    /// Driver + parser + the destination lookup alone.
    pub class_lpm: f64,
    pub class_compiled: f64,
    pub lpm: f64,
    pub compiled: f64,
}

#[derive(Serialize, Default, Clone)]
pub struct TableResult {
    pub name: String,
    pub source_v4: usize,
    pub source_v6: usize,
    pub lpm_v4: usize,
    pub lpm_v6: usize,
    pub classes: usize,
    pub fib_ranges: usize,
    pub fib_long: usize,
    pub fib_kib: usize,
    pub keys_inside_v4: usize,
    pub keys_inside_v6: usize,
    /// ns per packet, median of the samples.
    pub v4: PacketCost,
    pub v6: PacketCost,
    /// ms: policy -> tables (shared by both lookups).
    pub compile_ms: f64,
    /// ms: tables -> live in the kernel (compiled: includes building the
    /// range tables), median of 3; LPM: one run.
    pub publish_compiled_ms: f64,
    pub publish_lpm_ms: f64,
    /// ms for `nft -f` of the same prefixes into interval sets, if nft exists.
    pub nft_ms: Option<f64>,
    pub nft_error: Option<String>,
}

#[derive(Serialize, Default)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: u64,
    pub kernel: String,
    pub date: String,
}

#[derive(Serialize, Default)]
pub struct Results {
    pub machine: Machine,
    pub samples: usize,
    pub repeat: u32,
    pub tables: Vec<TableResult>,
    pub events: Option<events::EventResult>,
    /// ns per rejected (RST) vs dropped SYN.
    pub reject: Option<reject::RejectResult>,
    pub rss: Vec<Rss>,
    /// The world table's path with country and host accounting.
    pub accounting: Option<accounting::AccountingResult>,
    /// The controller's DNS decoding and name cache.
    pub dns: Option<dns::DnsResult>,
    /// The history database's write rate and a grouped query.
    pub history: Option<history::HistoryResult>,
    /// The dashboard's history endpoints on a 30-day database.
    pub dashboard: Option<dashboard::DashboardResult>,
    /// A `/metrics` scrape with 256 devices × 250 countries.
    pub metrics: Option<metrics::MetricsResult>,
    /// Seconds for `regionwall check` of [`inline::COUNT`] inline CIDRs.
    pub inline_check_s: Option<f64>,
    /// The world table's path with and without a staged candidate.
    pub shadow: Option<shadow::ShadowResult>,
    /// The real controller per table size and lookup: start time, RSS,
    /// kernel memory.
    pub growth: Vec<growth::GrowthRow>,
    /// Tables the compiler refused, with the reason.
    pub refused: Vec<(String, String)>,
    /// Real frames through a veth: regionwall against nftables.
    pub traffic: Option<traffic::TrafficResult>,
}

#[derive(Serialize, Default)]
pub struct Rss {
    pub lookup: String,
    pub peak_kib: u64,
    pub current_kib: u64,
}

pub fn main(args: &Args, root: &Path) -> anyhow::Result<()> {
    let data = std::env::var_os("REGIONWALL_DATA")
        .map_or_else(|| root.join("../shared/data"), PathBuf::from);
    let countries = data.join("country-ip-blocks");
    let scratch = root.join("target/bench/tables");
    let mut results = Results {
        machine: machine(),
        samples: args.samples,
        repeat: args.repeat,
        ..Results::default()
    };
    eprintln!(
        "bench: reading the world table from {}",
        countries.display()
    );
    let world = tables::world(&countries)?;
    let mut rng = Rng(0x5eed_2026);
    let mut specs: Vec<Table> = Vec::new();
    if args.quick {
        specs.push(tables::sample(&world, 1000, &mut rng));
    } else {
        for n in [1000, 10_000, 100_000] {
            specs.push(tables::sample(&world, n, &mut rng));
        }
    }
    let world_len = world.prefixes.len();
    let mut only = args.only.clone();
    if args.traffic {
        only.push("traffic".into());
    }
    let wants = |section: &str| only.is_empty() || only.iter().any(|o| o == section);
    let big = |n: usize| {
        let named = |o: &String| o == "growth" || *o == format!("{}M", n / 1_000_000);
        (!args.quick && (only.is_empty() || only.iter().any(named)))
            .then_some(Rng(0x5eed_2026 ^ n as u64))
    };
    let million = big(1_000_000).map(|mut rng| tables::world_plus(&world, 1_000_000, &mut rng));
    let four_million =
        big(4_000_000).map(|mut rng| tables::world_hosts(&world, 4_000_000, &mut rng));
    let accounting_table = wants("accounting").then(|| world.prefixes.clone());
    let shadow_table = wants("shadow").then(|| world.prefixes.clone());
    let traffic_table = wants("traffic").then(|| world.prefixes.clone());
    specs.push(world);
    specs.extend(million);
    specs.extend(four_million);

    if wants("growth") && !args.quick {
        results.growth = growth::run(&specs, root)?;
    }
    specs.retain(|t| only.is_empty() || only.contains(&t.name));
    run_tables(&specs, &scratch, args, &mut results)?;
    if let Some(prefixes) = accounting_table {
        eprintln!("bench: country and host accounting on the world table");
        let table = Table {
            name: "world".into(),
            prefixes,
        };
        results.accounting = Some(accounting::run(
            &table,
            &countries,
            &root.join("target/bench/accounting"),
            args,
        )?);
    }
    if let Some(prefixes) = shadow_table {
        results.shadow = Some(shadow::run_world(prefixes, root, args)?);
    }
    observability(&mut results, root, &wants)?;
    if wants("reject") {
        eprintln!("bench: reject path");
        let rejects = reject::run(args, &root.join("target/bench/reject"))?;
        report::print_reject_line(&rejects);
        results.reject = Some(rejects);
    }
    if wants("events") {
        eprintln!("bench: event path");
        results.events = Some(events::run()?);
    }
    if wants("rss") {
        eprintln!("bench: controller RSS with the world table ({world_len} prefixes)");
        for lookup in ["compiled", "lpm"] {
            results.rss.push(rss(root, &countries, lookup)?);
        }
    }
    if wants("inline") {
        eprintln!("bench: check of {} inline CIDRs", inline::COUNT);
        let seconds = inline::run(root)?;
        eprintln!(
            "bench: {}M inline CIDRs checked in {seconds:.2} s",
            inline::COUNT / 1_000_000
        );
        results.inline_check_s = Some(seconds);
    }
    if let Some(prefixes) = traffic_table {
        eprintln!("bench: real traffic through a veth, regionwall against nftables");
        results.traffic = Some(traffic::run(prefixes, root)?);
    }
    report::finish(&results, root, !args.no_readme)
}

/// Each table's row; a table the compiler refuses (the 4M table's
/// classes) is reported with its reason and the run goes on.
fn run_tables(
    specs: &[Table],
    scratch: &Path,
    args: &Args,
    results: &mut Results,
) -> anyhow::Result<()> {
    for table in specs {
        eprintln!(
            "bench: table {} ({} prefixes)",
            table.name,
            table.prefixes.len()
        );
        let dir = scratch.join(&table.name);
        match bench_table(table, &dir, args) {
            Ok(result) => {
                report::print_table_line(&result);
                results.tables.push(result);
            }
            Err(e) if table.prefixes.len() > 1_000_000 => {
                eprintln!("bench: table {} refused: {e:#}", table.name);
                results.refused.push((table.name.clone(), format!("{e:#}")));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The sections on seeing traffic: DNS names, the history, the dashboard's
/// API and `/metrics`.
fn observability(
    results: &mut Results,
    root: &Path,
    wants: &dyn Fn(&str) -> bool,
) -> anyhow::Result<()> {
    if wants("dns") {
        eprintln!("bench: DNS decoding and the name cache");
        results.dns = Some(dns::run());
    }
    if wants("history") {
        eprintln!("bench: the history database");
        results.history = Some(history::run(&root.join("target/bench/history"))?);
    }
    if wants("dashboard") {
        eprintln!("bench: the dashboard's API on a 30-day history");
        results.dashboard = Some(dashboard::run(&root.join("target/bench/dashboard"))?);
    }
    if wants("metrics") {
        eprintln!("bench: /metrics with 256 devices x 250 countries");
        results.metrics = Some(metrics::run()?);
    }
    Ok(())
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let output = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        memory_gib: memory_kib.div_ceil(1 << 20),
        kernel: output("uname", &["-r"]),
        date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    }
}

fn bench_table(table: &Table, dir: &Path, args: &Args) -> anyhow::Result<TableResult> {
    let path = table.write_policy(dir)?;
    let policy = policy::parse_file(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut r = TableResult {
        name: table.name.clone(),
        source_v4: table.count(true),
        source_v6: table.count(false),
        ..TableResult::default()
    };

    // Per-packet cost: both lookups' tables in one benchmark object (the
    // LPM tries only when the table fits their fixed room).
    let compiled = compile::compile(&policy)?;
    r.lpm_v4 = compiled.v4.len();
    r.lpm_v6 = compiled.v6.len();
    r.classes = compiled.classes.len();
    let lpm_fits =
        r.lpm_v4 <= LPM_V4_MAX_ENTRIES as usize && r.lpm_v6 <= LPM_V6_MAX_ENTRIES as usize;
    let fib = Fib::build(&compiled.v4, &compiled.v6, UNLIMITED)?;
    let capacity = Capacity {
        slots: CAPACITY.slots.max(fib.slots.len()),
        ranges: CAPACITY.ranges.max(fib.ranges.len()),
        long: CAPACITY.long.max(fib.long.len()),
    };
    let mut dp = Datapath::load_bench(LoadOptions {
        lookup: Lookup::Compiled,
        fib: capacity,
        both_tables: lpm_fits,
        ..LoadOptions::default()
    })?;
    let publish = dp.publish(&compiled, 1)?;
    r.fib_ranges = publish.fib_ranges;
    r.fib_long = publish.fib_long;
    r.fib_kib = publish.fib_bytes / 1024;
    let mut rng = Rng(0x0bad_cafe ^ table.prefixes.len() as u64);
    for v4 in [true, false] {
        let (keys, inside) = destinations(&compiled, &fib, v4, &mut rng);
        // The figures mean something only with the promised key mix.
        if keys.len() != BENCH_KEYS as usize || inside != keys.len() / 2 {
            bail!(
                "table {}: {} destinations, {inside} inside; wanted {BENCH_KEYS}, half inside",
                table.name,
                keys.len()
            );
        }
        dp.set_bench_keys(&keys)?;
        let mut cost = packet_cost(&dp, v4, args)?;
        if !lpm_fits {
            // Empty tries: not a measurement of the LPM lookup.
            cost.class_lpm = f64::NAN;
            cost.lpm = f64::NAN;
        }
        if v4 {
            r.keys_inside_v4 = inside;
            r.v4 = cost;
        } else {
            r.keys_inside_v6 = inside;
            r.v6 = cost;
        }
    }
    drop(dp);
    // Freeing a large LPM trie is deferred work in the kernel that competes
    // with the next measurement: give it time.
    std::thread::sleep(Duration::from_secs(1));

    // Compile + publish, each lookup on a fresh program (no old tables to clear).
    let mut compile_times = Vec::new();
    let mut fib_times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let compiled = compile::compile(&policy)?;
        compile_times.push(ms(started.elapsed()));
        let mut dp = Datapath::load_with(LoadOptions {
            lookup: Lookup::Compiled,
            fib: capacity,
            both_tables: false,
            ..LoadOptions::default()
        })?;
        let report = dp.publish(&compiled, 1)?;
        fib_times.push(ms(report.write_time));
    }
    r.compile_ms = median(&mut compile_times);
    r.publish_compiled_ms = median(&mut fib_times);
    r.publish_lpm_ms = f64::NAN;
    if lpm_fits {
        let compiled = compile::compile(&policy)?;
        let mut dp = Datapath::load_with(LoadOptions {
            lookup: Lookup::Lpm,
            fib: CAPACITY,
            both_tables: false,
            ..LoadOptions::default()
        })?;
        let report = dp.publish(&compiled, 1)?;
        r.publish_lpm_ms = ms(report.write_time);
    }
    if table.prefixes.len() > 1_000_000 {
        r.nft_error = Some("not timed above 1M prefixes (minutes per run)".into());
        return Ok(r);
    }
    match nft(table, dir) {
        Ok(Some(t)) => r.nft_ms = Some(t),
        Ok(None) => {}
        Err(e) => r.nft_error = Some(format!("{e:#}")),
    }

    std::thread::sleep(Duration::from_secs(1));
    Ok(r)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `nft -f` of the table's prefixes into one IPv4 and one IPv6 interval
/// set (auto-merge, as overlapping lists need), in a scratch namespace so
/// the host's ruleset is untouched. `None` if nft is not installed.
fn nft(table: &Table, dir: &Path) -> anyhow::Result<Option<f64>> {
    if Command::new("nft").arg("--version").output().is_err() {
        return Ok(None);
    }
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for (p, _) in &table.prefixes {
        match p {
            Prefix::V4(_) => v4.push(p.to_string()),
            Prefix::V6(_) => v6.push(p.to_string()),
        }
    }
    let text = format!(
        "table inet regionwall_bench {{\n{}{}}}\n",
        nft_set("v4", "ipv4_addr", &v4),
        nft_set("v6", "ipv6_addr", &v6)
    );
    let file = dir.join("nft.conf");
    std::fs::write(&file, text)?;
    let ns =
        regionwall_testkit::netns::NetNs::create(&regionwall_testkit::netns::unique_name("bench"))?;
    let started = Instant::now();
    let out = ns
        .command("timeout")
        .args(["300", "nft", "-f"])
        .arg(&file)
        .stdout(Stdio::null())
        .output()?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        bail!(
            "nft -f failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("")
        );
    }
    Ok(Some(ms(elapsed)))
}

/// An nft interval set of `elems` (auto-merge, as overlapping lists need),
/// as a line of a table's body.
fn nft_set(name: &str, ty: &str, elems: &[String]) -> String {
    let elements = if elems.is_empty() {
        String::new()
    } else {
        format!(" elements = {{ {} }}", elems.join(", "))
    };
    format!("  set {name} {{ type {ty}; flags interval; auto-merge;{elements} }}\n")
}

/// Peak and current RSS of the real `regionwall run` with the world table
/// (countries over 60 regions), attached to a veth in a scratch namespace.
fn rss(root: &Path, countries: &Path, lookup: &str) -> anyhow::Result<Rss> {
    let dir = root.join("target/bench/rss");
    std::fs::create_dir_all(&dir)?;
    let codes: Vec<String> = tables::country_dirs(countries)?
        .iter()
        .filter_map(|d| d.file_name())
        .map(|n| n.to_string_lossy().to_ascii_uppercase())
        .collect();
    let mut text = format!("regions_dir = \"{}\"\n", countries.display());
    for g in 0..tables::REGIONS {
        let members: Vec<String> = codes
            .iter()
            .skip(g)
            .step_by(tables::REGIONS)
            .map(|c| format!("\"{c}\""))
            .collect();
        writeln!(text, "[regions.r{g}]\ncountries = [{}]", members.join(", "))?;
    }
    text.push_str(
        "[[rules]]\nname = \"block\"\ndevices = [\"default\"]\nblock = [\"r0\", \"r1\"]\n",
    );
    let policy = dir.join("world.toml");
    std::fs::write(&policy, text)?;
    let f = growth::footprint(root, &policy, lookup)?;
    if let Some(why) = f.refused {
        bail!("regionwall run did not start enforcing the world policy: {why}");
    }
    Ok(Rss {
        lookup: lookup.to_string(),
        peak_kib: f.peak_rss_kib,
        current_kib: f.rss_kib,
    })
}
