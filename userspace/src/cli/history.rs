//! `regionwall history`: totals and events from the history database, read directly; and `run`'s history options.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use regionwall::{
    controller::recorder,
    history::{
        self, Store,
        query::{self, Dim, Query},
    },
};

/// History options of `regionwall run`.
#[derive(clap::Args, Clone, Debug)]
pub struct RecordArgs {
    /// Directory of the history database (`history.db`)
    /// [default: /var/lib/regionwall/<iface>/]
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Record no history (the controller's own counters are still kept in
    /// the state directory when it is given or already exists).
    #[arg(long)]
    pub no_history: bool,
    /// Events and rollups older than this are removed (e.g. 30d, 12h).
    #[arg(long, default_value = "30d", value_parser = history::parse_age)]
    pub retention: Duration,
    /// The database is kept under this size; the oldest events go first
    /// (e.g. 512M, 2G).
    #[arg(long, default_value = "512M", value_parser = history::parse_db_size)]
    pub max_db_size: u64,
    /// How often the counters are rolled up (tests shorten it).
    #[arg(long, default_value = "60s", value_parser = history::parse_age, hide = true)]
    pub history_interval: Duration,
    /// Events the history writer's queue holds; beyond it they are counted
    /// as not written.
    #[arg(long, default_value_t = 65_536, hide = true)]
    pub history_queue: usize,
}

impl RecordArgs {
    /// Where the controller's own counters are kept across restarts: the
    /// state directory when history is recorded, else the one given, or
    /// the default one if it exists.
    #[must_use]
    pub fn counters_dir(&self, iface: &str) -> Option<PathBuf> {
        match (&self.state_dir, self.no_history) {
            (Some(dir), _) => Some(dir.clone()),
            (None, false) => Some(history::default_state_dir(iface)),
            (None, true) => Some(history::default_state_dir(iface)).filter(|d| d.is_dir()),
        }
    }

    #[must_use]
    pub fn options(&self, iface: &str) -> recorder::Options {
        recorder::Options {
            state_dir: (!self.no_history).then(|| {
                self.state_dir
                    .clone()
                    .unwrap_or_else(|| history::default_state_dir(iface))
            }),
            retention: self.retention,
            max_bytes: self.max_db_size,
            interval: self.history_interval,
            queue: self.history_queue,
        }
    }
}

/// Where the history of an interface is.
#[derive(clap::Args, Clone, Debug)]
#[group(required = true, multiple = true)]
pub struct Place {
    /// The interface whose history to read (its default state directory).
    #[arg(long)]
    pub iface: Option<String>,
    /// The state directory `run --state-dir` was given.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

impl Place {
    #[must_use]
    pub fn db(&self) -> PathBuf {
        let dir = self.state_dir.clone().unwrap_or_else(|| {
            history::default_state_dir(self.iface.as_deref().unwrap_or_default())
        });
        dir.join(history::FILE)
    }
}

fn time_arg(s: &str) -> Result<SystemTime, String> {
    history::parse_time(s, SystemTime::now())
}

fn verdict_arg(s: &str) -> Result<String, String> {
    s.parse::<regionwall::verdict::Verdict>()
        .map(|v| v.to_string())
        .map_err(|_| format!("{s:?} is not a verdict (expected pass, drop, reject or audit)"))
}

/// Show what was blocked and passed, from the history database
///
/// Reads the database directly (read-only), with or without a running
/// controller. Totals (`--by`) come from the per-minute counter rollups,
/// which count every packet, rate-limited drops included; grouping or
/// filtering by host reads the events instead. Without `--by`, events are
/// listed, repeats of one flow in one interval on one line.
///
/// Examples:
///   regionwall history --iface lan0 --since 24h --by device,country
///   regionwall history --iface lan0 --since 2026-11-30 --verdict drop
///   regionwall history --state-dir /srv/rw --by day --csv
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent output flags, as clap reads them"
)]
pub struct Args {
    #[command(flatten)]
    pub place: Place,
    /// From this time: an age (24h, 7d), a date (2026-11-30, UTC) or an
    /// RFC 3339 time.
    #[arg(long, value_parser = time_arg)]
    pub since: Option<SystemTime>,
    /// Up to this time (same forms as --since).
    #[arg(long, value_parser = time_arg)]
    pub until: Option<SystemTime>,
    #[arg(long)]
    pub device: Option<String>,
    /// ISO code ("-" for destinations in no country).
    #[arg(long)]
    pub country: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    /// A name looked up, its canonical name, or an address.
    #[arg(long)]
    pub host: Option<String>,
    /// pass, drop, reject or audit.
    #[arg(long, value_parser = verdict_arg)]
    pub verdict: Option<String>,
    /// Totals by device, country, host, region, verdict, hour or day,
    /// comma-separated to combine.
    #[arg(long, value_delimiter = ',', value_parser = query::parse_dim)]
    pub by: Vec<Dim>,
    /// JSON lines.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// CSV with a header line.
    #[arg(long)]
    pub csv: bool,
    /// Repeats of one flow in one --interval on one line, with a count
    /// (the default for text).
    #[arg(long, conflicts_with = "no_aggregate")]
    pub aggregate: bool,
    /// Every event on its own line.
    #[arg(long)]
    pub no_aggregate: bool,
    /// The interval flows are aggregated over.
    #[arg(long, default_value = "1m", value_parser = history::parse_age)]
    pub interval: Duration,
}

impl Args {
    fn query(&self) -> Query {
        Query {
            since: self.since,
            until: self.until,
            device: self.device.clone(),
            country: self.country.clone(),
            region: self.region.clone(),
            host: self.host.clone(),
            verdict: self.verdict.clone(),
            by: dedup(&self.by),
        }
    }
}

/// Each grouping once, in the order first given.
fn dedup(dims: &[Dim]) -> Vec<Dim> {
    let mut out = Vec::new();
    for d in dims {
        if !out.contains(d) {
            out.push(*d);
        }
    }
    out
}

/// Opens the history of `db` read-only, saying what to check on failure.
pub fn open(db: &Path) -> anyhow::Result<Store> {
    Store::open_read_only(db).with_context(|| format!("reading the history {}", db.display()))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn main(args: &Args) -> anyhow::Result<ExitCode> {
    super::default_sigpipe();
    if let (Some(since), Some(until)) = (args.since, args.until)
        && until < since
    {
        anyhow::bail!(
            "--until ({}) is before --since ({}): nothing could match",
            humantime::format_rfc3339_seconds(until),
            humantime::format_rfc3339_seconds(since)
        );
    }
    let store = open(&args.place.db())?;
    let q = args.query();
    let mut out = std::io::stdout().lock();
    let structured = args.json || args.csv;
    if !q.by.is_empty() {
        print_totals(&mut out, args, &query::totals(&store, &q)?, q.measure())?;
    } else if args.aggregate || (!structured && !args.no_aggregate) {
        let flows = query::flows(&store, &q, args.interval.as_secs().max(1))?;
        print_flows(&mut out, args, &flows)?;
    } else {
        print_events(&mut out, args, &query::records(&store, &q)?)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_totals(
    out: &mut impl std::io::Write,
    args: &Args,
    totals: &[query::Total],
    measure: &str,
) -> std::io::Result<()> {
    let by: Vec<&str> = args.query().by.iter().map(|d| d.name()).collect();
    if args.csv {
        writeln!(out, "{},{measure},bytes", by.join(","))?;
    }
    for t in totals {
        if args.json {
            let mut obj = serde_json::Map::new();
            for (d, v) in &t.keys {
                obj.insert(d.name().into(), v.clone().into());
            }
            obj.insert(measure.into(), t.count.into());
            obj.insert("bytes".into(), t.bytes.into());
            writeln!(out, "{}", serde_json::Value::Object(obj))?;
        } else if args.csv {
            let mut row: Vec<String> = t.keys.iter().map(|(_, v)| csv_field(v)).collect();
            row.extend([t.count.to_string(), t.bytes.to_string()]);
            writeln!(out, "{}", row.join(","))?;
        } else {
            let keys: Vec<String> = t.keys.iter().map(|(_, v)| format!("{v:<16}")).collect();
            writeln!(
                out,
                "{} {:>10} {measure} {:>12} bytes",
                keys.join(" "),
                t.count,
                t.bytes
            )?;
        }
    }
    Ok(())
}

fn print_flows(
    out: &mut impl std::io::Write,
    args: &Args,
    flows: &[query::Flow],
) -> std::io::Result<()> {
    if args.csv {
        writeln!(
            out,
            "first,last,count,bytes,device,dst_ip,protocol,dst_port,country,host,region,rule,verdict"
        )?;
    }
    for f in flows {
        let first = humantime::format_rfc3339_seconds(f.first).to_string();
        let last = humantime::format_rfc3339_seconds(f.last).to_string();
        let port = f.dst_port.map_or_else(|| "-".into(), |p| p.to_string());
        let host = f.host.as_deref().unwrap_or("-");
        if args.json {
            let v = serde_json::json!({
                "first": first, "last": last, "count": f.count, "bytes": f.bytes,
                "device": f.device, "dst_ip": f.dst_ip, "protocol": f.protocol,
                "dst_port": f.dst_port, "country": f.country, "host": f.host,
                "region": f.region, "rule": f.rule, "verdict": f.verdict,
            });
            writeln!(out, "{v}")?;
        } else if args.csv {
            let row = [
                first,
                last,
                f.count.to_string(),
                f.bytes.to_string(),
                csv_field(&f.device),
                f.dst_ip.clone(),
                f.protocol.clone(),
                port,
                csv_field(&f.country),
                csv_field(host),
                csv_field(&f.region),
                csv_field(&f.rule),
                f.verdict.clone(),
            ];
            writeln!(out, "{}", row.join(","))?;
        } else {
            writeln!(
                out,
                "{first} .. {last}  {:>6}x  {} {} -> {}:{port} {} ({}, {}) host={host} rule={}",
                f.count, f.verdict, f.device, f.dst_ip, f.protocol, f.region, f.country, f.rule
            )?;
        }
    }
    Ok(())
}

fn print_events(
    out: &mut impl std::io::Write,
    args: &Args,
    records: &[regionwall::events::Record],
) -> std::io::Result<()> {
    if args.csv {
        writeln!(
            out,
            "timestamp,device,mac,dst_ip,protocol,dst_port,country,host,region,rule,verdict,bytes"
        )?;
    }
    for r in records {
        if args.json {
            writeln!(out, "{}", r.json())?;
        } else if args.csv {
            let row = [
                r.timestamp.clone(),
                csv_field(&r.device),
                r.src_mac.clone(),
                r.dst_ip.map(|a| a.to_string()).unwrap_or_default(),
                r.protocol.clone(),
                r.dst_port.map(|p| p.to_string()).unwrap_or_default(),
                csv_field(&r.country),
                csv_field(r.host.as_deref().unwrap_or("")),
                csv_field(&r.region),
                csv_field(&r.rule),
                r.verdict.to_string(),
                r.bytes.to_string(),
            ];
            writeln!(out, "{}", row.join(","))?;
        } else {
            writeln!(out, "{}", r.line())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: super::Args,
    }

    fn parse(given: &[&str]) -> Result<super::Args, String> {
        let mut line = vec!["history"];
        line.extend_from_slice(given);
        Cli::try_parse_from(line)
            .map(|c| c.args)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn parses_a_full_query() {
        let a = parse(&[
            "--iface",
            "lan0",
            "--since",
            "24h",
            "--by",
            "device,country",
            "--verdict",
            "drop",
            "--json",
        ])
        .expect("parses");
        assert_eq!(
            a.place.db(),
            std::path::Path::new("/var/lib/regionwall/lan0/history.db")
        );
        assert_eq!(a.query().by.len(), 2);
        assert_eq!(a.verdict.as_deref(), Some("drop"));
    }

    #[test]
    fn errors_name_the_flag_and_the_value() {
        for (flag, bad, shown) in [
            ("--since", "yesterday", "yesterday"),
            ("--until", "2026-13-45", "2026-13-45"),
            ("--by", "device,planet", "planet"),
            ("--verdict", "maybe", "maybe"),
            ("--interval", "often", "often"),
        ] {
            let e = parse(&["--iface", "lan0", flag, bad]).expect_err(bad);
            assert!(e.contains(flag) && e.contains(shown), "{flag} {bad}: {e}");
        }
    }

    #[test]
    fn needs_a_place() {
        let e = parse(&["--since", "1h"]).expect_err("no place");
        assert!(e.contains("--iface") || e.contains("--state-dir"), "{e}");
    }
}
