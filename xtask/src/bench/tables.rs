//! The benchmark's prefix tables: the real world table from the country
//! database, random subsets of it, the world plus seeded synthetic
//! prefixes up to 1M, and the world plus host addresses up to 4M (a large
//! blocklist), written as regionwall policies.

use std::{fmt::Write as _, path::Path};

use anyhow::{Context as _, bail};
use regionwall::policy::Prefix;
use regionwall_testkit::rng::Rng;

/// Regions the countries are spread over (as in the world tests).
pub const REGIONS: usize = 60;

/// One table: source prefixes with the region each belongs to.
pub struct Table {
    pub name: String,
    pub prefixes: Vec<(Prefix, usize)>,
}

impl Table {
    pub fn count(&self, v4: bool) -> usize {
        self.prefixes
            .iter()
            .filter(|(p, _)| matches!(p, Prefix::V4(_)) == v4)
            .count()
    }

    /// Writes one CIDR file per region and a policy that allows every region
    /// for the default device: each lookup runs and each decision is
    /// computed, but no event is emitted (the event path is measured on its
    /// own). Returns the policy path.
    pub fn write_policy(&self, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
        self.write_policy_as(dir, "allow")
    }

    /// As [`Self::write_policy`], with every region under `verb` (`allow`
    /// or `block`).
    pub fn write_policy_as(&self, dir: &Path, verb: &str) -> anyhow::Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut files = vec![String::new(); REGIONS];
        for (p, r) in &self.prefixes {
            writeln!(files[*r], "{p}")?;
        }
        let mut policy = String::new();
        for (r, body) in files.iter().enumerate() {
            let file = dir.join(format!("r{r}.txt"));
            std::fs::write(&file, body).with_context(|| format!("writing {}", file.display()))?;
            writeln!(policy, "[regions.r{r}]\nfile = \"r{r}.txt\"")?;
        }
        let all: Vec<String> = (0..REGIONS).map(|r| format!("\"r{r}\"")).collect();
        writeln!(
            policy,
            "[[rules]]\nname = \"bench\"\ndevices = [\"default\"]\n{verb} = [{}]",
            all.join(", ")
        )?;
        let path = dir.join("policy.toml");
        std::fs::write(&path, policy).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// The country directories of the database, sorted by code.
pub fn country_dirs(countries_dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut dirs: Vec<_> = std::fs::read_dir(countries_dir)
        .with_context(|| format!("reading {}", countries_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        bail!("no countries under {}", countries_dir.display());
    }
    Ok(dirs)
}

/// Every country's prefixes, countries spread round robin over [`REGIONS`].
pub fn world(countries_dir: &Path) -> anyhow::Result<Table> {
    let codes = country_dirs(countries_dir)?;
    let mut prefixes = Vec::new();
    for (i, dir) in codes.iter().enumerate() {
        for file in ["ipv4-aggregated.txt", "ipv6-aggregated.txt"] {
            let path = dir.join(file);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let p = Prefix::parse(line)
                    .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 1))?;
                prefixes.push((p, i % REGIONS));
            }
        }
    }
    Ok(Table {
        name: "world".into(),
        prefixes,
    })
}

/// `n` prefixes drawn at random from `world` (both families in the world's
/// proportion).
pub fn sample(world: &Table, n: usize, rng: &mut Rng) -> Table {
    let mut all = world.prefixes.clone();
    rng.shuffle(&mut all);
    all.truncate(n);
    Table {
        name: label(n),
        prefixes: all,
    }
}

/// The world plus synthetic prefixes up to `n`, in the world's family
/// proportion: IPv4 mostly /24 (some /20-/23 and /25-/28) anywhere in
/// 1.0.0.0-223.255.255.255; IPv6 /32-/48 with some /56, /64 and a few
/// longer than /64 inside 2000::/3. Regions at random.
pub fn world_plus(world: &Table, n: usize, rng: &mut Rng) -> Table {
    let mut prefixes = world.prefixes.clone();
    let v4_share = world.count(true) as f64 / world.prefixes.len().max(1) as f64;
    let mut long = 0;
    while prefixes.len() < n {
        let r = rng.next_u64();
        let region = usize::try_from(rng.below(REGIONS as u64)).unwrap_or(0);
        let p = if (r % 1000) as f64 / 1000.0 < v4_share {
            let len = match rng.below(10) {
                0..=6 => 24,
                7..=8 => 25 + rng.below(4),
                _ => 20 + rng.below(4),
            };
            let addr = 0x0100_0000 + rng.below(0xe000_0000 - 0x0100_0000);
            let host = (1u64 << (32 - len)) - 1;
            Prefix::parse(&format!(
                "{}/{len}",
                std::net::Ipv4Addr::from(u32::try_from(addr & !host).unwrap_or(0))
            ))
        } else {
            let mut len = match rng.below(20) {
                0..=11 => 32 + rng.below(17),
                12..=16 => 56,
                17..=18 => 64,
                _ => 65 + rng.below(64),
            };
            if len > 64 {
                long += 1;
                if long > 4000 {
                    len = 48;
                }
            }
            let addr = (0x2u128 << 124)
                | (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())) >> 3;
            let host = (1u128 << (128 - len)) - 1;
            Prefix::parse(&format!("{}/{len}", std::net::Ipv6Addr::from(addr & !host)))
        };
        if let Ok(p) = p {
            prefixes.push((p, region));
        }
    }
    Table {
        name: label(n),
        prefixes,
    }
}

/// The world plus seeded host addresses up to `n` (a blocklist's shape:
/// IPv4 /32s anywhere in 1.0.0.0-223.255.255.255, every fourth an IPv6
/// /64 inside 2000::/3, as IPv6 blocklists list networks), regions at
/// random. Hosts nest in at most one
/// world prefix, so the classes stay few (random nested ranges of 60
/// regions need more classes than the compiled table holds).
pub fn world_hosts(world: &Table, n: usize, rng: &mut Rng) -> Table {
    let mut prefixes = world.prefixes.clone();
    while prefixes.len() < n {
        let region = usize::try_from(rng.below(REGIONS as u64)).unwrap_or(0);
        let p = if rng.below(4) == 0 {
            let addr = (0x2u128 << 124)
                | (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())) >> 3;
            let net = addr & !((1u128 << 64) - 1);
            Prefix::parse(&format!("{}/64", std::net::Ipv6Addr::from(net)))
        } else {
            let addr = 0x0100_0000 + rng.below(0xe000_0000 - 0x0100_0000);
            Prefix::parse(&format!(
                "{}/32",
                std::net::Ipv4Addr::from(u32::try_from(addr).unwrap_or(0))
            ))
        };
        if let Ok(p) = p {
            prefixes.push((p, region));
        }
    }
    Table {
        name: label(n),
        prefixes,
    }
}

fn label(n: usize) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}
