//! Printing the benchmark: one line per table as it finishes, then the
//! whole table, the ratios and the target checks; JSON under target/bench/
//! and the README's results section between its markers.

use std::{fmt::Write as _, path::Path};

use anyhow::Context as _;

use super::{Results, TableResult};

const START: &str = "<!-- bench:start -->";
const END: &str = "<!-- bench:end -->";

pub fn print_table_line(t: &TableResult) {
    eprintln!(
        "  {:>5}: v4 floor {:.0} / parse {:.0} / lookup LPM {:.0} compiled {:.0} / LPM {:.0} / compiled {:.0} ns; v6 LPM {:.0} / compiled {:.0} ns; publish compiled {:.1} ms, LPM {:.1} ms",
        t.name,
        t.v4.floor,
        t.v4.parse,
        t.v4.class_lpm,
        t.v4.class_compiled,
        t.v4.lpm,
        t.v4.compiled,
        t.v6.lpm,
        t.v6.compiled,
        t.compile_ms + t.publish_compiled_ms,
        t.compile_ms + t.publish_lpm_ms,
    );
}

pub fn print_reject_line(r: &super::reject::RejectResult) {
    eprintln!(
        "  reject: v4 SYN driver {:.0} / dropped {:.0} / answered with a RST {:.0} ns; v6 {:.0} / {:.0} / {:.0} ns; {} of {} answered",
        r.v4.syn, r.v4.drop, r.v4.reject, r.v6.syn, r.v6.drop, r.v6.reject, r.answered, r.runs
    );
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

/// The reject path's table.
fn reject_section(s: &mut String, j: &super::reject::RejectResult) {
    s.push_str("\nReject path in ns per packet (a TCP SYN the driver writes over the frame before every run, then the production path with the compiled lookup; reject = answered with a RST built in place, XDP_TX; events limited as by default):\n\n");
    s.push_str("| family | SYN driver | dropped | rejected | reject - drop |\n");
    s.push_str("|---|---|---|---|---|\n");
    for (family, c) in [("IPv4", &j.v4), ("IPv6", &j.v6)] {
        let _ = writeln!(
            s,
            "| {family} | {:.0} | {:.0} | {:.0} | {:+.0} |",
            c.syn,
            c.drop,
            c.reject,
            c.reject - c.drop
        );
    }
}

/// What seeing costs: the world table with and without country and host
/// accounting, and as one region per country.
fn accounting_section(s: &mut String, a: &super::accounting::AccountingResult) {
    s.push_str("\nWhat seeing costs on the world table, ns per packet above the empty program (compiled path; the same 65,536 destinations in every row; host counting with 1,024 destinations is its steady state, with 65,536 distinct ones every packet makes an entry in the full LRU map, its worst case):\n\n");
    s.push_str("| configuration | regions | countries | v4 | v6 |\n|---|---|---|---|---|\n");
    for row in &a.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} | {:.1} |",
            row.name, row.regions, row.countries, row.v4, row.v6
        );
    }
}

/// The staged candidate's target: <= 10 ns added on the world table.
fn shadow_target(sh: &super::shadow::ShadowResult) -> Option<(bool, String)> {
    let (a4, a6) = sh.added(super::shadow::AGREEING)?;
    let (r4, r6) = sh.added(super::shadow::REFINED_AGREEING)?;
    let (n4, n6) = sh.noise()?;
    Some((
        a4.max(r4) <= 10.0 + n4 && a6.max(r6) <= 10.0 + n6,
        format!(
            "a staged candidate adds {a4:+.1} ns (IPv4), {a6:+.1} ns (IPv6) per packet on the world table, {r4:+.1} / {r6:+.1} ns with the live table refined for one with a new region (target <= 10 ns; this run's noise: {n4:.1} / {n6:.1} ns)"
        ),
    ))
}

/// The world table with and without a staged candidate policy.
fn shadow_section(s: &mut String, r: &super::shadow::ShadowResult) {
    s.push_str("\nWhat a staged candidate costs on the world table, ns per packet above the empty program (compiled path; the same 65,536 destinations in every row), and the difference against no candidate (median of the per-round differences, rows interleaved over 7 rounds):\n\n");
    s.push_str("| configuration | v4 | v6 | v4 added | v6 added |\n|---|---|---|---|---|\n");
    for row in &r.rows {
        let (a4, a6) = r.added(&row.name).unwrap_or_default();
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.1} | {a4:+.1} | {a6:+.1} |",
            row.name, row.v4, row.v6
        );
    }
}

/// The controller's DNS decoding and name cache.
fn dns_section(s: &mut String, d: &super::dns::DnsResult) {
    let _ = writeln!(
        s,
        "\nDNS names (the controller, one thread): {:.0} answers/s decoded into the name cache ({:.0} addresses/s; 1-3 CNAMEs and 1-8 addresses each); the cache at its cap of {} (device, address) pairs took {:.1} MiB of heap (computed bound {:.1} MiB).",
        d.answers_per_s,
        d.addresses_per_s,
        d.cache_entries,
        d.cache_rss_kib as f64 / 1024.0,
        d.cache_bound_kib as f64 / 1024.0
    );
}

/// The history database's write rate and query time.
fn history_section(s: &mut String, h: &super::history::HistoryResult) {
    let _ = writeln!(
        s,
        "\nHistory (SQLite, WAL): {:.0} events/s written in transactions of 4,096; `history --by device,host` over {} events in {:.0} ms ({} KiB on disk).",
        h.written_per_s, h.events, h.query_ms, h.db_kib
    );
}

/// The dashboard's history endpoints on a 30-day database.
fn dashboard_section(s: &mut String, d: &super::dashboard::DashboardResult) {
    let _ = writeln!(
        s,
        "\nDashboard API on a 30-day history ({} devices, {} countries, {} hosts each; {} minute and {} hourly rollup rows, {:.1} MiB), over HTTP, every request running its query (p50 / p99, and p50 against the 24 h series):\n",
        d.devices, d.countries, d.hosts, d.minute_rows, d.hourly_rows, d.db_mib
    );
    for e in &d.endpoints {
        let _ = writeln!(
            s,
            "- `{}`: {:.2} / {:.2} ms (×{:.1})",
            e.path, e.p50_ms, e.p99_ms, e.ratio
        );
    }
}

/// A `/metrics` scrape, batch lookups against per-key reads.
fn metrics_section(s: &mut String, m: &super::metrics::MetricsResult) {
    let _ = writeln!(
        s,
        "\n`/metrics` with {} devices × {} countries ({} counter rows, {} KiB of text): a scrape takes {:.0} ms reading the counters with batch lookups, {:.0} ms one key per syscall ({:.1}x); the counters alone {:.1} ms against {:.0} ms ({:.1}x).",
        m.devices,
        m.countries,
        m.rows,
        m.body_kib,
        m.scrape_bulk_ms,
        m.scrape_per_key_ms,
        m.scrape_per_key_ms / m.scrape_bulk_ms,
        m.read_bulk_ms,
        m.read_per_key_ms,
        m.read_per_key_ms / m.read_bulk_ms
    );
}

/// The controller's RSS with the world table.
fn rss_section(s: &mut String, rss: &[super::Rss]) {
    s.push_str("\nController RSS with the world table (`regionwall run`, 60 regions):\n\n");
    for rss in rss {
        let _ = writeln!(
            s,
            "- `--lookup {}`: peak {:.1} MiB, {:.1} MiB after loading",
            rss.lookup,
            rss.peak_kib as f64 / 1024.0,
            rss.current_kib as f64 / 1024.0
        );
    }
}

/// Cost growth by table size: the real controller per lookup, and the
/// per-packet cost from the table rows.
fn growth_section(s: &mut String, r: &Results) {
    for (name, why) in &r.refused {
        let _ = writeln!(s, "\nThe {name} table was refused: {why}.");
    }
    if r.growth.is_empty() {
        return;
    }
    s.push_str("\nGrowth with the table (the real `regionwall run` on a veth, `--no-history`; start = spawn to enforcing; kernel = `memlock` summed over its BPF maps, both generations; ns = IPv4 compiled / LPM path above the floor, from the rows above):\n\n");
    s.push_str("| table | prefixes | lookup | start ms | publish ms | RSS MiB (peak) | kernel MiB | ns/packet v4 |\n|---|---|---|---|---|---|---|---|\n");
    for row in &r.growth {
        let table = r.tables.iter().find(|t| t.name == row.name);
        for f in &row.lookups {
            let ns = table.map_or(f64::NAN, |t| {
                if f.lookup == "lpm" {
                    t.v4.lpm - t.v4.floor
                } else {
                    t.v4.compiled - t.v4.floor
                }
            });
            if let Some(why) = &f.refused {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | refused: {} | | | | |",
                    row.name,
                    row.prefixes,
                    f.lookup,
                    why.replace('|', "/")
                );
                continue;
            }
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.0} | {:.0} | {:.0} ({:.0}) | {:.1} | {ns:.0} |",
                row.name,
                row.prefixes,
                f.lookup,
                f.start_ms,
                f.publish_ms.unwrap_or(f64::NAN),
                f.rss_kib as f64 / 1024.0,
                f.peak_rss_kib as f64 / 1024.0,
                f.kernel_kib as f64 / 1024.0,
            );
        }
    }
}

/// The markdown report (also printed).
/// The sections only some runs have (`--only`).
fn optional_sections(s: &mut String, r: &Results) {
    if let Some(a) = &r.accounting {
        accounting_section(s, a);
    }
    if let Some(sh) = &r.shadow {
        shadow_section(s, sh);
    }
    if let Some(d) = &r.dns {
        dns_section(s, d);
    }
    if let Some(h) = &r.history {
        history_section(s, h);
    }
    if let Some(d) = &r.dashboard {
        dashboard_section(s, d);
    }
    if let Some(m) = &r.metrics {
        metrics_section(s, m);
    }
    if let Some(t) = &r.traffic {
        super::traffic::section(s, t);
    }
}

fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let _ = writeln!(
        s,
        "Measured {} on {} ({} cores, {} GiB), Linux {}; `cargo xtask bench`, median of {} test_runs x {} repeats, 65,536 distinct destinations per family (half inside the table).\n",
        m.date, m.cpu, m.cores, m.memory_gib, m.kernel, r.samples, r.repeat
    );
    s.push_str("Per-packet cost in ns (BPF_PROG_TEST_RUN; floor = empty program, parse = key driver + parser, LPM/compiled = the whole production path):\n\n");
    s.push_str("| table | prefixes v4+v6 | kernel entries v4+v6 | v4 floor | v4 parse | v4 LPM | v4 compiled | v4 LPM/compiled | v6 floor | v6 parse | v6 LPM | v6 compiled | v6 LPM/compiled |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for t in &r.tables {
        let _ = writeln!(
            s,
            "| {} | {}+{} | {}+{} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1}x | {:.0} | {:.0} | {:.0} | {:.0} | {:.1}x |",
            t.name,
            t.source_v4,
            t.source_v6,
            t.lpm_v4,
            t.lpm_v6,
            t.v4.floor,
            t.v4.parse,
            t.v4.lpm,
            t.v4.compiled,
            ratio(t.v4.lpm, t.v4.compiled),
            t.v6.floor,
            t.v6.parse,
            t.v6.lpm,
            t.v6.compiled,
            ratio(t.v6.lpm, t.v6.compiled),
        );
    }
    s.push_str("\nCompile + publish in ms (policy -> tables live in the kernel; `nft -f` loads the same prefixes into two auto-merge interval sets):\n\n");
    s.push_str("| table | compile | + publish compiled | + publish LPM | LPM/compiled | compiled table | nft -f |\n");
    s.push_str("|---|---|---|---|---|---|---|\n");
    for t in &r.tables {
        let nft = match (&t.nft_ms, &t.nft_error) {
            (Some(ms), _) => format!("{ms:.0}"),
            (None, Some(e)) => format!("failed: {}", e.replace('|', "/")),
            (None, None) => "nft not installed".into(),
        };
        let compiled = t.compile_ms + t.publish_compiled_ms;
        let lpm = t.compile_ms + t.publish_lpm_ms;
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1}x | {} ranges + {} long, {} KiB | {} |",
            t.name,
            t.compile_ms,
            compiled,
            lpm,
            ratio(lpm, compiled),
            t.fib_ranges,
            t.fib_long,
            t.fib_kib,
            nft
        );
    }
    if let Some(j) = &r.reject {
        reject_section(&mut s, j);
    }
    if let Some(e) = &r.events {
        s.push_str("\nEvent path (one core floods drops through test_run, the other runs the controller's ring reader and a consumer):\n\n");
        s.push_str("| consumer | drops | drops/s | consumed | consumed/s | lost in kernel | dropped from queue | unaccounted |\n");
        s.push_str("|---|---|---|---|---|---|---|---|\n");
        for run in &e.runs {
            let _ = writeln!(
                s,
                "| {} | {} | {:.2}M | {} | {:.2}M | {} | {} | {} |",
                run.consumer,
                run.drops,
                run.drops_per_sec / 1e6,
                run.consumed,
                run.consumed_per_sec / 1e6,
                run.lost_in_kernel,
                run.dropped_from_queue,
                run.unaccounted
            );
        }
    }
    optional_sections(&mut s, r);
    rss_section(&mut s, &r.rss);
    growth_section(&mut s, r);
    s.push_str("\nTargets:\n\n");
    for (ok, line) in targets(r) {
        let _ = writeln!(s, "- {} {line}", if ok { "met:" } else { "**missed:**" });
    }
    s
}

fn targets(r: &Results) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let find = |name: &str| r.tables.iter().find(|t| t.name == name);
    if let Some(w) = find("world") {
        let above = w.v4.compiled - w.v4.floor;
        out.push((
            above <= 25.0,
            format!("world, IPv4: compiled path {above:.0} ns above the empty-program floor (target <= 25 ns; the parser alone costs {:.0} ns above it)", w.v4.parse - w.v4.floor),
        ));
        let x = ratio(w.v4.lpm, w.v4.compiled);
        out.push((
            x >= 5.0,
            format!("world, IPv4: compiled {x:.1}x faster than the LPM trie per packet (target >= 5x; lookup alone, above the parser: {:.1}x)", ratio(w.v4.lpm - w.v4.parse, w.v4.compiled - w.v4.parse)),
        ));
        let x6 = ratio(w.v6.lpm, w.v6.compiled);
        out.push((
            x6 >= 3.0,
            format!("world, IPv6: compiled {x6:.1}x faster than the LPM trie (target >= 3x)"),
        ));
        let cp = w.compile_ms + w.publish_compiled_ms;
        out.push((
            cp < 100.0,
            format!("world: compile + publish {cp:.1} ms (target < 100 ms)"),
        ));
    }
    let compiled: Vec<f64> = r.tables.iter().map(|t| t.v4.compiled).collect();
    if compiled.len() > 1 {
        let max = compiled.iter().copied().fold(f64::MIN, f64::max);
        let min = compiled.iter().copied().fold(f64::MAX, f64::min);
        out.push((
            ratio(max, min) <= 2.0,
            format!(
                "IPv4 compiled path flat across {}..{}: {min:.0}..{max:.0} ns, {:.2}x (target within 2x)",
                r.tables.first().map_or("", |t| t.name.as_str()),
                r.tables.last().map_or("", |t| t.name.as_str()),
                ratio(max, min)
            ),
        ));
    }
    if let Some(m) = find("1M") {
        let cp = m.compile_ms + m.publish_compiled_ms;
        out.push((
            cp < 300.0,
            format!("1M: compile + publish {cp:.1} ms (target < 300 ms)"),
        ));
    }
    if let Some(e) = &r.events
        && let Some(count) = e.runs.iter().find(|r| r.consumer == "count")
    {
        out.push((
            count.consumed_per_sec >= 1e6,
            format!(
                "events consumed: {:.2}M/s (target >= 1M/s)",
                count.consumed_per_sec / 1e6
            ),
        ));
        let unaccounted: i64 = e.runs.iter().map(|r| r.unaccounted.abs()).sum();
        out.push((
            unaccounted == 0,
            format!("unaccounted events: {unaccounted} (drops = consumed + dropped from queue + lost in kernel)"),
        ));
    }
    if let Some(a) = &r.accounting
        && let (Some((c4, c6)), Some((n4, n6))) = (a.country_cost(), a.noise())
    {
        out.push((
            c4 <= 5.0 + n4 && c6 <= 5.0 + n6,
            format!("country accounting adds {c4:+.1} ns (IPv4), {c6:+.1} ns (IPv6) per packet (target <= 5 ns; this run's noise, the same configuration first and last: {n4:.1} / {n6:.1} ns)"),
        ));
        if let Some((h4, h6)) = a.host_cost() {
            out.push((
                true,
                format!("host counting adds {h4:+.1} ns (IPv4), {h6:+.1} ns (IPv6) per packet on top with 1,024 destinations (no target; `--no-host-counters` turns it off)"),
            ));
        }
    }
    out.extend(r.shadow.as_ref().and_then(shadow_target));
    out.extend(r.traffic.iter().flat_map(super::traffic::targets));
    if let Some(rss) = r.rss.iter().find(|r| r.lookup == "compiled") {
        let mib = rss.peak_kib as f64 / 1024.0;
        out.push((
            mib < 64.0,
            format!("controller peak RSS with the world table: {mib:.1} MiB (target < 64 MiB)"),
        ));
    }
    if let Some(s) = r.inline_check_s {
        out.push((
            s < 2.0,
            format!(
                "{}M inline CIDRs checked in {s:.2} s (target < 2 s)",
                super::inline::COUNT / 1_000_000
            ),
        ));
    }
    out
}

pub fn finish(r: &Results, root: &Path, readme: bool) -> anyhow::Result<()> {
    let text = markdown(r);
    println!("\n{text}");
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let json = serde_json::to_string_pretty(r)?;
    let stamp = r.machine.date.replace([' ', ':'], "-");
    for name in ["latest.json".to_string(), format!("bench-{stamp}.json")] {
        let path = dir.join(name);
        std::fs::write(&path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("JSON: {}", dir.join("latest.json").display());
    if readme {
        let path = root.join("README.md");
        let old = std::fs::read_to_string(&path).context("reading README.md")?;
        if let (Some(a), Some(b)) = (old.find(START), old.find(END)) {
            let new = format!("{}{START}\n{text}{}", &old[..a], &old[b..]);
            std::fs::write(&path, new).context("writing README.md")?;
            println!("README.md: results section updated");
        } else {
            println!("README.md has no {START} ... {END} section; not updated");
        }
    }
    Ok(())
}
