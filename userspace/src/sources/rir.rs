//! RIR delegated statistics (AFRINIC, APNIC, ARIN, LACNIC, RIPE NCC), plain
//! and extended:
//!
//! ```text
//! 2|apnic|20141224|36277|19850701|20141223|+1000      version line
//! apnic|*|ipv4|*|26565|summary                         one per type
//! apnic|CN|ipv4|1.0.1.0|256|20110414|allocated         records
//! apnic|ZZ|ipv4|1.0.5.0|256||available|...             extended only
//! ```
//!
//! Only `allocated` and `assigned` records are taken. For IPv4, `value` is an
//! address count (not always a power of two) and becomes the exact minimal
//! set of CIDRs; for IPv6 it is a prefix length. The record count of every
//! type is checked against its summary line, and the total against the
//! version line, so a truncated download is an error, not a smaller region.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
    sync::Arc,
};

use super::Origin;
use super::{ByCountry, LoadError, field_column, read};
use crate::input::Inputs;
use crate::{
    diag::Diagnostic,
    net::{Prefix, V4},
    set::range_to_prefixes,
};

/// Statistics of one loaded file, for `check` and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RirStats {
    pub registry: String,
    /// Records per type (`asn`, `ipv4`, `ipv6`), as counted.
    pub records: HashMap<String, usize>,
    /// Records taken (allocated or assigned, IPv4 or IPv6).
    pub taken: usize,
    /// Records skipped for their status (available, reserved).
    pub skipped: usize,
}

/// Loads one delegated-statistics file.
pub fn load(path: &Path, inputs: &mut Inputs) -> Result<(ByCountry, RirStats), LoadError> {
    let text = read(path, inputs)?;
    parse(path, &text)
}

struct Ctx<'a> {
    path: &'a Path,
    errors: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn at(&mut self, line_no: usize, line: &str, field: usize, message: impl Into<String>) {
        let snippet = line.split('|').nth(field).unwrap_or_default();
        self.errors.push(Diagnostic::at_line(
            self.path,
            line_no,
            field_column(line, '|', field),
            line,
            snippet,
            message,
        ));
    }
}

/// Parses delegated statistics read from `path`.
#[expect(
    clippy::too_many_lines,
    reason = "one pass over the lines of the format"
)]
pub fn parse(path: &Path, text: &str) -> Result<(ByCountry, RirStats), LoadError> {
    let file: Arc<Path> = Arc::from(path);
    let mut cx = Ctx {
        path,
        errors: Vec::new(),
    };
    let mut out = ByCountry::default();
    let mut stats = RirStats::default();
    // (line number, line, declared total)
    let mut version: Option<(usize, String, usize)> = None;
    // type -> (line number, line, declared count)
    let mut summaries: HashMap<String, (usize, String, usize)> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        if version.is_none() {
            // version|registry|serial|records|startdate|enddate|UTCoffset
            let ok_version = fields[0].split('.').all(|p| p.parse::<u32>().is_ok());
            if fields.len() < 7 || !ok_version {
                cx.at(
                    n,
                    line,
                    0,
                    "expected the version line `version|registry|serial|records|startdate|enddate|UTCoffset` before any record",
                );
                break;
            }
            let Ok(total) = fields[3].parse::<usize>() else {
                cx.at(
                    n,
                    line,
                    3,
                    "expected the total record count in the version line",
                );
                break;
            };
            stats.registry = fields[1].to_string();
            version = Some((n, line.to_string(), total));
            continue;
        }
        if fields.len() >= 6 && fields[1] == "*" && fields[5] == "summary" {
            match fields[4].parse::<usize>() {
                Ok(count) => {
                    summaries.insert(fields[2].to_string(), (n, line.to_string(), count));
                }
                Err(_) => cx.at(n, line, 4, "expected a record count in the summary line"),
            }
            continue;
        }
        if fields.len() < 7 {
            cx.at(
                n,
                line,
                fields.len().saturating_sub(1),
                format!(
                    "expected a record `registry|cc|type|start|value|date|status`, found {} field(s)",
                    fields.len()
                ),
            );
            continue;
        }
        let kind = fields[2];
        if !matches!(kind, "asn" | "ipv4" | "ipv6") {
            cx.at(
                n,
                line,
                2,
                format!("expected type asn, ipv4 or ipv6, found `{kind}`"),
            );
            continue;
        }
        *stats.records.entry(kind.to_string()).or_default() += 1;
        match fields[6] {
            "allocated" | "assigned" => {}
            "available" | "reserved" => {
                stats.skipped += 1;
                continue;
            }
            other => {
                cx.at(
                    n,
                    line,
                    6,
                    format!(
                        "expected status allocated, assigned, available or reserved, found `{other}`"
                    ),
                );
                continue;
            }
        }
        if kind == "asn" {
            continue;
        }
        let Some(cc) = super::country_code(fields[1]) else {
            cx.at(
                n,
                line,
                1,
                format!("expected a two-letter country code, found `{}`", fields[1]),
            );
            continue;
        };
        let origin = Origin {
            file: file.clone(),
            line: n,
        };
        let entry = out.countries.entry(cc).or_default();
        if kind == "ipv4" {
            let Ok(start) = fields[3].parse::<Ipv4Addr>() else {
                cx.at(n, line, 3, "expected an IPv4 start address");
                continue;
            };
            let start = u128::from(u32::from(start));
            let count = match fields[4].parse::<u64>() {
                Ok(c) if c > 0 => u128::from(c),
                _ => {
                    cx.at(n, line, 4, "expected an address count of at least 1");
                    continue;
                }
            };
            let end = start + count - 1;
            if end > u128::from(u32::MAX) {
                cx.at(n, line, 4, "the address count runs past 255.255.255.255");
                continue;
            }
            let mut prefixes: Vec<V4> = Vec::new();
            range_to_prefixes(start, end, &mut prefixes);
            entry.extend(
                prefixes
                    .into_iter()
                    .map(|p| (Prefix::V4(p), origin.clone())),
            );
        } else {
            let Ok(start) = fields[3].parse::<Ipv6Addr>() else {
                cx.at(n, line, 3, "expected an IPv6 start address");
                continue;
            };
            let len = match fields[4].parse::<u8>() {
                Ok(l) if l <= 128 => l,
                _ => {
                    cx.at(n, line, 4, "expected an IPv6 prefix length from 0 to 128");
                    continue;
                }
            };
            match Prefix::parse(&format!("{start}/{len}")) {
                Ok(p @ Prefix::V6(_)) => entry.push((p, origin)),
                Ok(Prefix::V4(_)) | Err(_) => {
                    cx.at(
                        n,
                        line,
                        3,
                        format!("`{start}/{len}` has host bits set; expected a network address"),
                    );
                    continue;
                }
            }
        }
        stats.taken += 1;
    }
    match &version {
        None if cx.errors.is_empty() => cx.errors.push(Diagnostic::at_line(
            path,
            1,
            1,
            "",
            "",
            "no version line found: expected RIR delegated statistics (`2|registry|serial|records|...`)",
        )),
        None => {}
        Some((n, line, total)) => {
            let counted: usize = stats.records.values().sum();
            if counted != *total && cx.errors.is_empty() {
                cx.at(
                    *n,
                    line,
                    3,
                    format!("the version line declares {total} records but the file has {counted}: truncated or corrupt download?"),
                );
            }
        }
    }
    let mut kinds: Vec<_> = summaries.into_iter().collect();
    kinds.sort();
    for (kind, (n, line, declared)) in kinds {
        let counted = stats.records.get(&kind).copied().unwrap_or(0);
        if counted != declared {
            cx.at(
                n,
                &line,
                4,
                format!("summary declares {declared} {kind} records but the file has {counted}"),
            );
        }
    }
    if cx.errors.is_empty() {
        Ok((out, stats))
    } else {
        Err(LoadError::Invalid(cx.errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# comment
2.3|apnic|20141224|6|19850701|20141223|+1000
apnic|*|asn|*|1|summary
apnic|*|ipv4|*|4|summary
apnic|*|ipv6|*|1|summary
apnic|JP|asn|173|1|20020801|allocated
apnic|CN|ipv4|1.0.1.0|768|20110414|allocated|A91
apnic|AU|ipv4|1.0.0.0|256|20110811|assigned
apnic|ZZ|ipv4|1.0.5.0|256||available|
apnic||ipv4|1.0.9.0|256||reserved|
apnic|CN|ipv6|2001:250::|35|20000426|allocated
";

    #[test]
    fn counts_not_powers_of_two_become_exact_cidrs() {
        let (data, stats) = parse(Path::new("t"), SAMPLE).unwrap();
        let cn: Vec<String> = data.countries["CN"]
            .iter()
            .map(|(p, _)| p.to_string())
            .collect();
        assert_eq!(cn, ["1.0.1.0/24", "1.0.2.0/23", "2001:250::/35"]);
        assert_eq!(data.countries["CN"][1].1.line, 7);
        assert_eq!(stats.taken, 3);
        assert_eq!(stats.skipped, 2);
        assert!(!data.countries.contains_key("ZZ"));
    }

    #[test]
    fn a_truncated_file_fails_its_summary_check() {
        let cut: String = SAMPLE.lines().take(9).collect::<Vec<_>>().join("\n");
        let Err(LoadError::Invalid(errs)) = parse(Path::new("t"), &cut) else {
            panic!("truncated file accepted");
        };
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|e| e.starts_with("t:2:")
                    && e.contains("declares 6 records but the file has 4")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|e| e.starts_with("t:4:")
                && e.contains("summary declares 4 ipv4 records but the file has 3")),
            "{text:?}"
        );
    }

    /// The same records in the dialects of all five registries: plain and
    /// extended version lines, empty or `ZZ` codes on unassigned space,
    /// opaque ids and trailing extension fields.
    #[test]
    fn every_registry_dialect_parses() {
        for (registry, version, cc, extra) in [
            ("afrinic", "2", "ZA", ""),
            ("apnic", "2.3", "JP", "|A9125F3C"),
            (
                "arin",
                "2.3",
                "US",
                "|7bd4a4cf64d7f4e3f8d2f0e8fb6b5e67|e-stats",
            ),
            ("lacnic", "2", "BR", ""),
            ("ripencc", "2", "NL", "|0a7b3e1c"),
        ] {
            let text = format!(
                "{version}|{registry}|20241127|3|19830705|20241126|+0000\n\
                 {registry}|*|ipv4|*|2|summary\n\
                 {registry}|*|ipv6|*|1|summary\n\
                 {registry}|{cc}|ipv4|198.51.100.0|96|20100712|allocated{extra}\n\
                 {registry}||ipv4|203.0.113.0|256||available{extra}\n\
                 {registry}|{cc}|ipv6|2001:db8:100::|40|20100712|assigned{extra}\n"
            );
            let (data, stats) =
                parse(Path::new(registry), &text).unwrap_or_else(|e| panic!("{registry}: {e:?}"));
            assert_eq!(stats.registry, registry);
            assert_eq!((stats.taken, stats.skipped), (2, 1), "{registry}");
            let got: Vec<String> = data.countries[cc]
                .iter()
                .map(|(p, _)| p.to_string())
                .collect();
            assert_eq!(
                got,
                ["198.51.100.0/26", "198.51.100.64/27", "2001:db8:100::/40"],
                "{registry}"
            );
        }
    }

    #[test]
    fn bad_fields_are_reported_at_their_column() {
        let bad = SAMPLE.replace("1.0.0.0|256", "1.0.0.x|256");
        let Err(LoadError::Invalid(errs)) = parse(Path::new("t"), &bad) else {
            panic!("bad address accepted");
        };
        assert_eq!((errs[0].line, errs[0].column), (8, 15));
        assert_eq!(errs[0].snippet, "1.0.0.x");
        assert!(errs[0].message.contains("IPv4 start address"));
    }
}
