//! What seeing costs on the packet path: the world table's compiled path
//! without a country database, with one (every packet attributed and
//! counted per country), with per-destination host counting on top, and
//! the world as one region per country; the first configuration again at
//! the end shows the run's noise.

use std::{fmt::Write as _, path::Path};

use anyhow::Context as _;
use regionwall::{
    compile,
    datapath::{Datapath, LoadOptions},
    fib::Fib,
    policy,
};
use regionwall_common::Lookup;
use regionwall_testkit::rng::Rng;
use serde::Serialize;

use super::{
    Args, CAPACITY,
    cost::{destinations, packet_cost},
    tables::Table,
};

#[derive(Serialize, Default, Clone)]
pub struct AccountingRow {
    pub name: String,
    pub regions: usize,
    pub countries: usize,
    pub host_counters: bool,
    /// ns per packet above the empty program, IPv4 and IPv6.
    pub v4: f64,
    pub v6: f64,
}

#[derive(Serialize, Default)]
pub struct AccountingResult {
    pub rows: Vec<AccountingRow>,
}

impl AccountingResult {
    fn get(&self, name: &str) -> Option<&AccountingRow> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// ns added per packet by counting countries (IPv4, IPv6).
    #[must_use]
    pub fn country_cost(&self) -> Option<(f64, f64)> {
        let (a, b) = (self.get("regions")?, self.get("regions+countries")?);
        Some((b.v4 - a.v4, b.v6 - a.v6))
    }

    /// ns added per packet by counting hosts on top of countries, in the
    /// steady state (every destination already has its entry).
    #[must_use]
    pub fn host_cost(&self) -> Option<(f64, f64)> {
        let (b, c) = (
            self.get("regions+countries")?,
            self.get("regions+countries+hosts, 1,024 destinations")?,
        );
        Some((c.v4 - b.v4, c.v6 - b.v6))
    }

    /// The same configuration measured first and last (IPv4, IPv6).
    #[must_use]
    pub fn noise(&self) -> Option<(f64, f64)> {
        let (a, z) = (self.get("regions")?, self.get("regions (again)")?);
        Some(((z.v4 - a.v4).abs(), (z.v6 - a.v6).abs()))
    }
}

struct Config {
    name: &'static str,
    policy: String,
    hosts: bool,
    /// Distinct destinations in the key pool (default: all 65,536).
    pool: Option<usize>,
}

/// Destinations of a busy home network: the host counters' steady state,
/// where every packet finds its (device, destination) entry.
const STEADY_POOL: usize = 1024;

/// Runs every configuration on the world table.
pub fn run(
    world: &Table,
    countries: &Path,
    dir: &Path,
    args: &Args,
) -> anyhow::Result<AccountingResult> {
    let base = world.write_policy(&dir.join("regions"))?;
    let base_text = std::fs::read_to_string(&base)?;
    let db = format!("regions_dir = {:?}\n", countries.display().to_string());
    let per_country = per_country_policy(countries, &db)?;
    let config = |name, policy: &String, hosts, pool| Config {
        name,
        policy: policy.clone(),
        hosts,
        pool,
    };
    let with_db = format!("{db}{base_text}");
    let configs = [
        config("regions", &base_text, false, None),
        config("regions+countries", &with_db, false, None),
        config(
            "regions+countries+hosts, 1,024 destinations",
            &with_db,
            true,
            Some(STEADY_POOL),
        ),
        config(
            "regions+countries+hosts, 65,536 new destinations",
            &with_db,
            true,
            None,
        ),
        config("one region per country", &per_country, false, None),
        config("regions (again)", &base_text, false, None),
    ];
    // The same destinations for every configuration: the base table's.
    let policy = policy::parse_file(&base).map_err(|e| anyhow::anyhow!("{e}"))?;
    let compiled = compile::compile(&policy)?;
    let fib = Fib::build(&compiled.v4, &compiled.v6, CAPACITY)?;
    let mut rng = Rng(0xacc0_2026);
    let keys_v4 = destinations(&compiled, &fib, true, &mut rng).0;
    let keys_v6 = destinations(&compiled, &fib, false, &mut rng).0;
    drop((compiled, fib));

    let mut out = AccountingResult::default();
    for (i, config) in configs.iter().enumerate() {
        let sub = dir.join(format!("c{i}"));
        std::fs::create_dir_all(&sub)?;
        // The world table's files are shared: the policies name them by path.
        let path = sub.join("policy.toml");
        let text = config.policy.replace(
            "file = \"r",
            &format!("file = \"{}/r", dir.join("regions").display()),
        );
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        let policy = policy::parse_file(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let compiled = compile::compile(&policy)?;
        let regions = compiled.region_names.len();
        let mut dp = Datapath::load_bench(LoadOptions {
            lookup: Lookup::Compiled,
            fib: CAPACITY,
            both_tables: false,
            region_room: u32::try_from(regions + 8).unwrap_or(u32::MAX),
        })?;
        dp.publish(&compiled, 1)?;
        dp.set_host_counters(config.hosts)?;
        let mut row = AccountingRow {
            name: config.name.into(),
            regions,
            countries: compiled.country_names.len(),
            host_counters: config.hosts,
            ..AccountingRow::default()
        };
        for v4 in [true, false] {
            let keys = if v4 { &keys_v4 } else { &keys_v6 };
            dp.set_bench_keys(&keys[..config.pool.unwrap_or(keys.len()).min(keys.len())])?;
            let cost = packet_cost(&dp, v4, args)?;
            let above = cost.compiled - cost.floor;
            if v4 {
                row.v4 = above;
            } else {
                row.v6 = above;
            }
        }
        eprintln!(
            "bench: accounting {:<50} {:>4} regions {:>4} countries: IPv4 {:>6.1} ns, IPv6 {:>6.1} ns above the floor",
            row.name, row.regions, row.countries, row.v4, row.v6
        );
        out.rows.push(row);
        drop(dp);
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    Ok(out)
}

/// One region per country of the database, every one allowed (the
/// decision is computed, no event is sent).
fn per_country_policy(countries: &Path, db: &str) -> anyhow::Result<String> {
    let mut text = db.to_string();
    let mut names = Vec::new();
    for dir in super::tables::country_dirs(countries)? {
        let Some(code) = dir.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let name = code.to_ascii_lowercase();
        let code = code.to_ascii_uppercase();
        writeln!(text, "[regions.c_{name}]\ncountries = [\"{code}\"]")?;
        names.push(format!("\"c_{name}\""));
    }
    writeln!(
        text,
        "[[rules]]\nname = \"bench\"\ndevices = [\"default\"]\nallow = [{}]",
        names.join(", ")
    )?;
    Ok(text)
}
