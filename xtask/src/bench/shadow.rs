//! What a staged candidate policy costs on the packet path: the world
//! table's compiled path with no candidate, with one that agrees on every
//! packet (the extra table read only), with one that disagrees on every
//! packet (the read, a per-CPU count and a rate-limited event), with the
//! live table refined for a candidate with one more region (without and
//! with that candidate), and with none again (the run's noise). One
//! program, the same destinations in every row. The configurations are
//! measured in turn, [`ROUNDS`] times over; a row's difference against no
//! candidate is the median of its per-round differences (a machine shared
//! with other work drifts; pairing within a round cancels the drift).

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
    /// Median over rounds of (this row - no candidate) in the same round.
    pub added_v4: f64,
    pub added_v6: f64,
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
pub const REFINED: &str = "live table refined for a candidate with a new region, none staged";
pub const REFINED_AGREEING: &str = "refined live table, that candidate staged";
pub const AGAIN: &str = "no candidate (again)";

/// Prefixes of the world table moved into the refining candidate's extra
/// region (every n-th).
const EXTRA_EVERY: usize = 50;

impl ShadowResult {
    fn get(&self, name: &str) -> Option<&ShadowRow> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// ns a row adds per packet over the no-candidate row (IPv4, IPv6):
    /// the median of the per-round differences.
    #[must_use]
    pub fn added(&self, name: &str) -> Option<(f64, f64)> {
        let row = self.get(name)?;
        Some((row.added_v4, row.added_v6))
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

/// The candidate with one more region (every [`EXTRA_EVERY`]-th prefix
/// of the world), blocked, and the live table refined for it.
fn refining(
    policy: &policy::Policy,
    world: &Table,
    dir: &Path,
) -> anyhow::Result<(compile::Compiled, Vec<Decision>)> {
    use std::fmt::Write as _;
    let live_text = std::fs::read_to_string(world.write_policy(dir)?)?;
    let mut extra = String::new();
    for (p, _) in world.prefixes.iter().step_by(EXTRA_EVERY) {
        writeln!(extra, "{p}")?;
    }
    std::fs::write(dir.join("extra.txt"), extra)?;
    let text = format!(
        "{live_text}[regions.extra]\nfile = \"extra.txt\"\n[[rules]]\nname = \"no-extra\"\ndevices = [\"default\"]\nblock = [\"extra\"]\n"
    );
    // The extra rule comes after the allow-all rule: the candidate agrees
    // on every packet, so the row measures the refined table alone.
    let path = dir.join("candidate.toml");
    std::fs::write(&path, text)?;
    let candidate = policy::parse_file(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let cand_compiled = compile::compile(&candidate)?;
    let refined =
        compile::compile_refined(policy, &compile::Refine::of(&candidate, &cand_compiled))?;
    let table = regionwall::controller::shadow::table(&refined, policy, &cand_compiled, &candidate)
        .map_err(|m| anyhow::anyhow!("the refining candidate does not fit: {m:?}"))?;
    Ok((refined, table))
}

/// Runs the rows on `world`.
pub fn run(world: &Table, dir: &Path, args: &Args) -> anyhow::Result<ShadowResult> {
    let path = world.write_policy(dir)?;
    let policy = policy::parse_file(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let compiled = compile::compile(&policy)?;
    let fib = Fib::build(&compiled.v4, &compiled.v6, CAPACITY)?;
    let (refined, refined_table) = refining(&policy, world, &dir.join("refining"))?;
    let mut rng = Rng(0x5ad0_2026);
    let keys_v4 = destinations(&compiled, &fib, true, &mut rng).0;
    let keys_v6 = destinations(&compiled, &fib, false, &mut rng).0;
    let mut dp = Datapath::load_bench(LoadOptions {
        lookup: Lookup::Compiled,
        fib: CAPACITY,
        both_tables: false,
        ..LoadOptions::default()
    })?;
    let mut epoch = 1;
    dp.publish(&compiled, epoch)?;
    let mut live_refined = false;
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
    let names = [
        NO_CANDIDATE,
        AGREEING,
        DISAGREEING,
        REFINED,
        REFINED_AGREEING,
        AGAIN,
    ];
    // Per configuration: ns above the floor, per round, IPv4 and IPv6.
    let mut rounds: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); names.len()];
    for round in 0..ROUNDS {
        for (i, name) in names.iter().enumerate() {
            let wants_refined = matches!(*name, REFINED | REFINED_AGREEING);
            if wants_refined != live_refined {
                dp.discard_candidate()?;
                epoch += 1;
                dp.publish(if wants_refined { &refined } else { &compiled }, epoch)?;
                live_refined = wants_refined;
            }
            match *name {
                AGREEING => dp.stage_candidate(&agreeing, &meta, true)?,
                DISAGREEING => dp.stage_candidate(&disagreeing, &meta, true)?,
                REFINED_AGREEING => dp.stage_candidate(&refined_table, &meta, true)?,
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
    let base = rounds[0].clone();
    let paired = |own: &[f64], base: &[f64]| {
        let mut d: Vec<f64> = own.iter().zip(base).map(|(a, b)| a - b).collect();
        median(&mut d)
    };
    let mut out = ShadowResult::default();
    for (name, (mut v4, mut v6)) in names.iter().zip(rounds) {
        let row = ShadowRow {
            name: (*name).into(),
            added_v4: paired(&v4, &base.0),
            added_v6: paired(&v6, &base.1),
            v4: median(&mut v4),
            v6: median(&mut v6),
        };
        eprintln!(
            "bench: shadow {name:<66} IPv4 {:>6.1} ns ({:+.1}), IPv6 {:>6.1} ns ({:+.1}) above the floor (paired difference against no candidate)",
            row.v4, row.added_v4, row.v6, row.added_v6,
        );
        out.rows.push(row);
    }
    Ok(out)
}
