//! What a staged candidate policy costs on the packet path: the world
//! table's compiled path with no candidate, with one that agrees on every
//! packet (the extra table read only), with one that disagrees on every
//! packet (the read, a per-CPU count and a rate-limited event), and with
//! none again (the run's noise). One program, one table, the same
//! destinations in every row. The four configurations are measured in
//! turn, [`ROUNDS`] times over, and each row is the median of its rounds
//! (a machine shared with other work drifts; interleaving spreads the
//! drift over every row); each row is printed as a difference against
//! the first.

use std::path::Path;

use regionwall::{
    compile,
    datapath::{Datapath, LoadOptions},
    fib::Fib,
    policy,
};
use regionwall_common::{
    CandidateMeta, Decision, EVENT_BURST_DEFAULT, EVENT_RATE_DEFAULT, Lookup, Verdict,
};
use regionwall_testkit::rng::Rng;
use serde::Serialize;

use super::{
    Args, CAPACITY,
    cost::{destinations, frame, median_ns},
    median,
    tables::Table,
};

#[derive(Serialize, Default, Clone)]
pub struct ShadowRow {
    pub name: String,
    /// ns per packet above the empty program, IPv4 and IPv6.
    pub v4: f64,
    pub v6: f64,
}

#[derive(Serialize, Default)]
pub struct ShadowResult {
    pub rows: Vec<ShadowRow>,
}

/// Times each configuration is measured, in turn with the others.
pub const ROUNDS: usize = 7;

/// The rows, in order.
pub const NO_CANDIDATE: &str = "no candidate";
pub const AGREEING: &str = "candidate staged, agreeing on every packet";
pub const DISAGREEING: &str = "candidate staged, disagreeing on every packet";
pub const AGAIN: &str = "no candidate (again)";

impl ShadowResult {
    fn get(&self, name: &str) -> Option<&ShadowRow> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// ns a row adds per packet over the no-candidate row (IPv4, IPv6).
    #[must_use]
    pub fn added(&self, name: &str) -> Option<(f64, f64)> {
        let (a, b) = (self.get(NO_CANDIDATE)?, self.get(name)?);
        Some((b.v4 - a.v4, b.v6 - a.v6))
    }

    /// The no-candidate row measured first and last (IPv4, IPv6).
    #[must_use]
    pub fn noise(&self) -> Option<(f64, f64)> {
        self.added(AGAIN).map(|(a, b)| (a.abs(), b.abs()))
    }
}

/// Runs the four rows on the world table's prefixes.
pub fn run_world(
    prefixes: Vec<(policy::Prefix, usize)>,
    root: &Path,
    args: &Args,
) -> anyhow::Result<ShadowResult> {
    eprintln!("bench: staged candidate on the world table");
    let table = Table {
        name: "world".into(),
        prefixes,
    };
    run(&table, &root.join("target/bench/shadow"), args)
}

/// Runs the four rows on `world`.
pub fn run(world: &Table, dir: &Path, args: &Args) -> anyhow::Result<ShadowResult> {
    let path = world.write_policy(dir)?;
    let policy = policy::parse_file(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let compiled = compile::compile(&policy)?;
    let fib = Fib::build(&compiled.v4, &compiled.v6, CAPACITY)?;
    let mut rng = Rng(0x5ad0_2026);
    let keys_v4 = destinations(&compiled, &fib, true, &mut rng).0;
    let keys_v6 = destinations(&compiled, &fib, false, &mut rng).0;
    let mut dp = Datapath::load_bench(LoadOptions {
        lookup: Lookup::Compiled,
        fib: CAPACITY,
        both_tables: false,
        ..LoadOptions::default()
    })?;
    dp.publish(&compiled, 1)?;
    dp.set_event_limit(EVENT_RATE_DEFAULT, EVENT_BURST_DEFAULT)?;
    // The bench policy passes everything: the disagreeing candidate drops
    // everything, so every packet is counted and offered an event.
    let agreeing = compiled.decisions.clone();
    let disagreeing: Vec<Decision> = compiled
        .decisions
        .iter()
        .map(|d| Decision {
            verdict: if d.verdict == Verdict::Pass as u8 {
                Verdict::Drop as u8
            } else {
                Verdict::Pass as u8
            },
            ..*d
        })
        .collect();
    let meta = CandidateMeta {
        staged: 1,
        ..CandidateMeta::default()
    };
    let names = [NO_CANDIDATE, AGREEING, DISAGREEING, AGAIN];
    // Per configuration: ns above the floor, per round, IPv4 and IPv6.
    let mut rounds: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); names.len()];
    for round in 0..ROUNDS {
        for (i, name) in names.iter().enumerate() {
            match *name {
                AGREEING => dp.stage_candidate(&agreeing, &meta, true)?,
                DISAGREEING => dp.stage_candidate(&disagreeing, &meta, true)?,
                _ => dp.discard_candidate()?,
            }
            for v4 in [true, false] {
                dp.set_bench_keys(if v4 { &keys_v4 } else { &keys_v6 })?;
                let frame = frame(v4);
                let floor = median_ns(&dp, "bench_floor", &frame, None, args)?;
                let path = median_ns(&dp, "bench_compiled", &frame, None, args)?;
                let side = if v4 {
                    &mut rounds[i].0
                } else {
                    &mut rounds[i].1
                };
                side.push(path - floor);
            }
        }
        eprintln!("bench: shadow round {} of {ROUNDS}", round + 1);
    }
    let mut out = ShadowResult::default();
    for (name, (mut v4, mut v6)) in names.iter().zip(rounds) {
        out.rows.push(ShadowRow {
            name: (*name).into(),
            v4: median(&mut v4),
            v6: median(&mut v6),
        });
        let (d4, d6) = out.added(name).unwrap_or_default();
        let row = out.rows.last().cloned().unwrap_or_default();
        eprintln!(
            "bench: shadow {name:<48} IPv4 {:>6.1} ns ({d4:+.1}), IPv6 {:>6.1} ns ({d6:+.1}) above the floor (difference against no candidate)",
            row.v4, row.v6,
        );
    }
    Ok(out)
}
