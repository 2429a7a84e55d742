//! Views of a statistics snapshot: totals by device, country, region or host (and their combinations the counters hold), biggest uploads first.
//!
//! Every byte the program counts is one a device sent (it sits on the
//! LAN side), so the headline figure is upload bytes. The kernel counts by
//! (device, region), by (device, country) and by (device, destination);
//! a view combines dimensions one of those holds: device with any one of
//! the others, and host with country (each host row has its country).
//! Country with region is refused: they are counted apart.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{control::Stats, verdict::Verdict};

/// A dimension of a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dim {
    Device,
    Country,
    Region,
    Host,
}

impl std::str::FromStr for Dim {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "device" => Ok(Self::Device),
            "country" => Ok(Self::Country),
            "region" => Ok(Self::Region),
            "host" => Ok(Self::Host),
            _ => Err(format!(
                "expected device, country, region or host, found \"{s}\""
            )),
        }
    }
}

impl Dim {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Country => "country",
            Self::Region => "region",
            Self::Host => "host",
        }
    }
}

/// A view that the counters cannot give.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ViewError {
    #[error(
        "--by country and --by region cannot be combined: the kernel counts them apart (each is complete on its own)"
    )]
    CountryWithRegion,
    #[error(
        "--by host cannot be combined with --by region: hosts are counted by device and country"
    )]
    HostWithRegion,
    #[error("no dimension given: expected --by device, country, region or host")]
    Empty,
}

/// Packets and bytes passed (pass), audited (passed and reported) and
/// blocked (drop and reject).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Totals {
    /// Everything the device sent: passed + audited + blocked.
    pub upload_bytes: u64,
    pub passed_packets: u64,
    pub passed_bytes: u64,
    pub audited_packets: u64,
    pub audited_bytes: u64,
    pub blocked_packets: u64,
    pub blocked_bytes: u64,
}

impl Totals {
    pub fn add(&mut self, verdict: Verdict, packets: u64, bytes: u64) {
        self.upload_bytes += bytes;
        let (p, b) = match verdict {
            Verdict::Pass => (&mut self.passed_packets, &mut self.passed_bytes),
            Verdict::Audit => (&mut self.audited_packets, &mut self.audited_bytes),
            Verdict::Drop | Verdict::Reject => (&mut self.blocked_packets, &mut self.blocked_bytes),
        };
        *p += packets;
        *b += bytes;
    }
}

/// One line of a view: its key (one value per dimension, in the view's
/// order) and its totals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Line {
    pub key: BTreeMap<Dim, String>,
    #[serde(flatten)]
    pub totals: Totals,
}

/// A view: its dimensions and lines, biggest uploads first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct View {
    pub by: Vec<Dim>,
    pub lines: Vec<Line>,
    pub total: Totals,
}

/// Builds the view of `stats` by `dims` (duplicates ignored).
pub fn view(stats: &Stats, dims: &[Dim]) -> Result<View, ViewError> {
    let mut by: Vec<Dim> = dims.to_vec();
    by.sort_unstable();
    by.dedup();
    let has = |d: Dim| by.contains(&d);
    if by.is_empty() {
        return Err(ViewError::Empty);
    }
    if has(Dim::Country) && has(Dim::Region) {
        return Err(ViewError::CountryWithRegion);
    }
    if has(Dim::Host) && has(Dim::Region) {
        return Err(ViewError::HostWithRegion);
    }
    // (values by dimension, verdict, packets, bytes) from the one counter
    // family that holds the view.
    let mut rows: Vec<(BTreeMap<Dim, String>, Verdict, u64, u64)> = Vec::new();
    let key = |pairs: &[(Dim, &str)]| -> BTreeMap<Dim, String> {
        pairs
            .iter()
            .filter(|(d, _)| has(*d))
            .map(|(d, v)| (*d, (*v).to_string()))
            .collect()
    };
    if has(Dim::Host) {
        // With DNS watched, an address no device resolved is marked, and a
        // name shows where its CNAME chain ends.
        let watched = stats.dns.is_some();
        for h in &stats.hosts {
            let host = match (&h.canonical, h.resolved) {
                (Some(c), true) => format!("{} (cname {c})", h.host),
                (None, false) if watched => format!("{} (unresolved)", h.host),
                _ => h.host.clone(),
            };
            let k = key(&[
                (Dim::Device, &h.device),
                (Dim::Host, &host),
                (Dim::Country, &h.country),
            ]);
            rows.push((k.clone(), Verdict::Pass, h.passed_packets, h.passed_bytes));
            rows.push((k, Verdict::Drop, h.blocked_packets, h.blocked_bytes));
        }
    } else if has(Dim::Country) {
        for r in &stats.countries {
            let k = key(&[(Dim::Device, &r.device), (Dim::Country, &r.country)]);
            rows.push((k, r.verdict, r.packets, r.bytes));
        }
    } else {
        for r in &stats.traffic {
            let k = key(&[(Dim::Device, &r.device), (Dim::Region, &r.region)]);
            rows.push((k, r.verdict, r.packets, r.bytes));
        }
    }
    let mut lines: BTreeMap<BTreeMap<Dim, String>, Totals> = BTreeMap::new();
    let mut total = Totals::default();
    for (k, verdict, packets, bytes) in rows {
        lines.entry(k).or_default().add(verdict, packets, bytes);
        total.add(verdict, packets, bytes);
    }
    let mut lines: Vec<Line> = lines
        .into_iter()
        .filter(|(_, t)| t.upload_bytes > 0 || t.passed_packets + t.blocked_packets > 0)
        .map(|(key, totals)| Line { key, totals })
        .collect();
    lines.sort_by(|a, b| {
        b.totals
            .upload_bytes
            .cmp(&a.totals.upload_bytes)
            .then_with(|| a.key.cmp(&b.key))
    });
    Ok(View { by, lines, total })
}

impl View {
    /// A table: the key columns, then upload bytes and passed, audited and
    /// blocked side by side, then a total line.
    #[must_use]
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let width = |d: Dim| {
            self.lines
                .iter()
                .filter_map(|l| l.key.get(&d))
                .map(String::len)
                .chain([d.as_str().len(), 5])
                .max()
                .unwrap_or(8)
        };
        let widths: Vec<usize> = self.by.iter().map(|d| width(*d)).collect();
        let mut out = String::new();
        for (d, w) in self.by.iter().zip(&widths) {
            let _ = write!(out, "{:<w$} ", d.as_str().to_uppercase());
        }
        let _ = writeln!(
            out,
            "{:>14} {:>12} {:>14} {:>12} {:>14} {:>12} {:>14}",
            "UPLOAD BYTES",
            "PASSED PKTS",
            "PASSED BYTES",
            "AUDITED PKTS",
            "AUDITED BYTES",
            "BLOCKED PKTS",
            "BLOCKED BYTES"
        );
        let row = |out: &mut String, t: &Totals| {
            let _ = writeln!(
                out,
                "{:>14} {:>12} {:>14} {:>12} {:>14} {:>12} {:>14}",
                t.upload_bytes,
                t.passed_packets,
                t.passed_bytes,
                t.audited_packets,
                t.audited_bytes,
                t.blocked_packets,
                t.blocked_bytes
            );
        };
        for line in &self.lines {
            for (d, w) in self.by.iter().zip(&widths) {
                let v = line.key.get(d).map_or("", String::as_str);
                let _ = write!(out, "{v:<w$} ");
            }
            row(&mut out, &line.totals);
        }
        for (i, w) in widths.iter().enumerate() {
            let _ = write!(out, "{:<w$} ", if i == 0 { "TOTAL" } else { "" });
        }
        row(&mut out, &self.total);
        out
    }
}

#[cfg(test)]
mod tests;
