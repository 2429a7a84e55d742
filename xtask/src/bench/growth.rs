//! How cost grows with the table: the real `regionwall run` started on a
//! veth in a scratch namespace with policies of 10k, 100k, world, 1M and
//! 4M prefixes, per lookup — time to enforcing, the publish's own time,
//! controller RSS and the kernel memory of its maps (each map's `memlock`
//! from the controller's fdinfo, which the kernel reports as what the map
//! really uses) — or the refusal and the size it asked for.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{controller::Controller, tables::Table};

/// One controller start: what it cost, or why it refused.
#[derive(Serialize, Default, Clone)]
pub struct Footprint {
    pub lookup: String,
    /// Spawn to "enforcing", ms (reading, compiling, loading, publishing).
    pub start_ms: f64,
    /// The publish alone (tables into the kernel), ms, from its log line.
    pub publish_ms: Option<f64>,
    pub peak_rss_kib: u64,
    pub rss_kib: u64,
    /// Sum of `memlock` over the controller's BPF maps.
    pub kernel_kib: u64,
    /// The controller's error when it did not start (e.g. a table too big).
    pub refused: Option<String>,
}

/// A table size's row: each lookup's footprint.
#[derive(Serialize, Default, Clone)]
pub struct GrowthRow {
    pub name: String,
    pub prefixes: usize,
    pub lookups: Vec<Footprint>,
}

/// Starts the release controller with `policy` and measures it. A start
/// that fails is a [`Footprint::refused`], not an error.
pub fn footprint(root: &Path, policy: &Path, lookup: &str) -> anyhow::Result<Footprint> {
    let binary = root.join("target/release/regionwall");
    let ns =
        regionwall_testkit::netns::NetNs::create(&regionwall_testkit::netns::unique_name("grow"))?;
    ns.ip(&[
        "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
    ])?;
    ns.ip(&["link", "set", "lan0", "up"])?;
    ns.ip(&["link", "set", "lan1", "up"])?;
    let started = Instant::now();
    let args = ["--lookup", lookup, "--no-history"];
    let mut out = Footprint {
        lookup: lookup.to_string(),
        ..Footprint::default()
    };
    let c = match Controller::start(&ns, &binary, "lan0", policy, &args) {
        Ok(c) => c,
        Err(e) => {
            out.start_ms = f64::NAN;
            out.refused = Some(format!("{e:#}"));
            return Ok(out);
        }
    };
    out.start_ms = started.elapsed().as_secs_f64() * 1000.0;
    let pid = c.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    out.peak_rss_kib = field("VmHWM:");
    out.rss_kib = field("VmRSS:");
    out.kernel_kib = map_memlock(pid) / 1024;
    out.publish_ms = c.log().iter().find_map(|l| publish_ms(l));
    Ok(out)
}

/// The duration at the end of "published policy ... in 12.3ms".
fn publish_ms(line: &str) -> Option<f64> {
    if !line.contains("published policy") {
        return None;
    }
    let tail = line.rsplit(" in ").next()?.trim();
    let (number, unit) = tail.split_at(tail.find(|c: char| c.is_ascii_alphabetic() || c == 'µ')?);
    let v: f64 = number.parse().ok()?;
    Some(match unit {
        "s" => v * 1000.0,
        "ms" => v,
        "µs" | "us" => v / 1000.0,
        "ns" => v / 1e6,
        _ => return None,
    })
}

/// Bytes of `memlock` over every BPF map fd of `pid`.
fn map_memlock(pid: u32) -> u64 {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    fds.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter(|info| info.lines().any(|l| l.starts_with("map_type:")))
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

/// The table sizes measured, by name.
pub const SIZES: [&str; 5] = ["10k", "100k", "world", "1M", "4M"];

/// A row per table of [`SIZES`] among `tables`, both lookups.
pub fn run(tables: &[Table], root: &Path) -> anyhow::Result<Vec<GrowthRow>> {
    eprintln!("bench: the controller's footprint by table size");
    let mut rows = Vec::new();
    for table in tables.iter().filter(|t| SIZES.contains(&t.name.as_str())) {
        let dir = root.join("target/bench/growth").join(&table.name);
        let policy = table.write_policy(&dir)?;
        let mut row = GrowthRow {
            name: table.name.clone(),
            prefixes: table.prefixes.len(),
            lookups: Vec::new(),
        };
        for lookup in ["compiled", "lpm"] {
            let f = footprint(root, &policy, lookup)?;
            match &f.refused {
                None => eprintln!(
                    "bench: growth {:>5} {lookup:<8}: enforcing after {:.0} ms (publish {:.0} ms), RSS {:.0} MiB (peak {:.0}), kernel {:.1} MiB",
                    table.name,
                    f.start_ms,
                    f.publish_ms.unwrap_or(f64::NAN),
                    f.rss_kib as f64 / 1024.0,
                    f.peak_rss_kib as f64 / 1024.0,
                    f.kernel_kib as f64 / 1024.0
                ),
                Some(why) => eprintln!(
                    "bench: growth {:>5} {lookup:<8}: refused: {why}",
                    table.name
                ),
            }
            row.lookups.push(f);
            // Freeing large maps is deferred kernel work: let it settle.
            std::thread::sleep(Duration::from_secs(1));
        }
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::publish_ms;

    #[test]
    fn reads_the_publish_time() {
        let l = "[INFO] published policy /p.toml (epoch 1): 1 IPv4 + 0 IPv6 prefixes, 2 classes, 3 compiled ranges (4 KiB), in 12.5ms";
        assert_eq!(publish_ms(l), Some(12.5));
        assert_eq!(publish_ms(&l.replace("12.5ms", "1.5s")), Some(1500.0));
        assert_eq!(publish_ms(&l.replace("12.5ms", "250µs")), Some(0.25));
        assert_eq!(publish_ms("something else in 3ms"), None);
    }
}
