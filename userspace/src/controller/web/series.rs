//! The dashboard's questions to the history: uploads and drops over a range, a device's bytes by country or host over time, and top-N lists, each with the rest as "other".
//!
//! Every function reads one connection (read-only in the dashboard) and
//! answers whole: the steps of the range from the first recorded one to
//! now, quiet steps as zeros, the biggest `n` keys and the rest summed.
//! The 24-hour range reads minute rows (at most 1,440 steps); 7 and 30
//! days read hourly steps (168 or 720), from minute rows of the last two
//! days and hourly rows before (`all_rollups`).

use std::collections::{BTreeMap, HashMap};

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::{
    history::rollup::OTHER_HOST,
    verdict::Verdict,
    views::{Dim, Totals},
};

use super::ring::Minute;

/// A time range the page offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Range {
    Day,
    Week,
    Month,
}

impl Range {
    /// `24h`, `7d` or `30d`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "" | "24h" => Ok(Self::Day),
            "7d" => Ok(Self::Week),
            "30d" => Ok(Self::Month),
            other => Err(format!("range: expected 24h, 7d or 30d, found {other:?}")),
        }
    }

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Day => "24h",
            Self::Week => "7d",
            Self::Month => "30d",
        }
    }

    /// Seconds the range covers.
    #[must_use]
    pub const fn span(self) -> u64 {
        match self {
            Self::Day => 86_400,
            Self::Week => 7 * 86_400,
            Self::Month => 30 * 86_400,
        }
    }

    /// Seconds per step: a minute for 24 hours, an hour beyond.
    #[must_use]
    pub const fn step(self) -> u64 {
        match self {
            Self::Day => 60,
            Self::Week | Self::Month => 3600,
        }
    }

    /// The first step of the range ending in the step holding `now`.
    #[must_use]
    pub const fn since(self, now: u64) -> u64 {
        let end = now - now % self.step();
        end.saturating_sub(self.span() - self.step())
    }
}

/// Why the history could not answer.
#[derive(Debug, thiserror::Error)]
#[error("reading the history: {0}")]
pub struct ReadError(#[from] pub rusqlite::Error);

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The steps from `first` (or the end, with nothing recorded) to the step
/// holding `now`.
fn steps(range: Range, first: Option<u64>, now: u64) -> Vec<u64> {
    let step = range.step();
    let end = now - now % step;
    let start = first.map_or(end, |f| f.max(range.since(now))).min(end);
    (0..=(end - start) / step)
        .map(|k| start + k * step)
        .collect()
}

/// Uploads (every verdict) and dropped or rejected packets per step, from
/// the `total` rows (one range of the key).
pub fn overall(conn: &Connection, range: Range, now: u64) -> Result<Vec<Minute>, ReadError> {
    let step = range.step();
    let table = if range == Range::Day {
        "rollups"
    } else {
        "all_rollups"
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT minute / ?1 * ?1, sum(bytes),
                sum(CASE WHEN verdict IN ('drop', 'reject') THEN packets ELSE 0 END),
                sum(CASE WHEN verdict IN ('drop', 'reject') THEN bytes ELSE 0 END)
         FROM {table} WHERE kind = 'total' AND device = '*' AND minute >= ?2 GROUP BY 1"
    ))?;
    let mut by_t: BTreeMap<u64, Minute> = BTreeMap::new();
    let rows = stmt.query_map(params![i(step), i(range.since(now))], |r| {
        Ok(Minute {
            t: u(r.get(0)?),
            upload_bytes: u(r.get(1)?),
            drop_packets: u(r.get(2)?),
            drop_bytes: u(r.get(3)?),
        })
    })?;
    for m in rows {
        let m = m?;
        by_t.insert(m.t, m);
    }
    Ok(steps(range, by_t.keys().next().copied(), now)
        .into_iter()
        .map(|t| {
            by_t.get(&t).copied().unwrap_or(Minute {
                t,
                ..Minute::default()
            })
        })
        .collect())
}

/// One line of a chart: a key and its bytes per step.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Line {
    pub name: String,
    pub total: u64,
    pub bytes: Vec<u64>,
}

/// A device's bytes over time by country or host: the biggest keys of
/// the range, the rest as `other` ("other (k more)").
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stacked {
    pub range: &'static str,
    pub step: u64,
    pub t: Vec<u64>,
    pub lines: Vec<Line>,
    pub other: Option<Line>,
}

/// What a device's chart is broken down by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum By {
    Country,
    Host,
}

impl By {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "" | "country" => Ok(Self::Country),
            "host" => Ok(Self::Host),
            other => Err(format!("by: expected country or host, found {other:?}")),
        }
    }

    const fn kind(self) -> &'static str {
        match self {
            Self::Country => "country",
            Self::Host => "host",
        }
    }
}

/// `device`'s bytes per step by country or host, the biggest `n` keys of
/// the range and the rest (and the store's own `(other)` hosts) summed.
pub fn device(
    conn: &Connection,
    name: &str,
    by: By,
    range: Range,
    n: usize,
    now: u64,
) -> Result<Stacked, ReadError> {
    let step = range.step();
    let table = if range == Range::Day {
        "rollups"
    } else {
        "all_rollups"
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT minute / ?1 * ?1, key, sum(bytes) FROM {table}
         WHERE kind = ?3 AND device = ?4 AND minute >= ?2 GROUP BY 1, 2"
    ))?;
    let mut cells: Vec<(u64, String, u64)> = Vec::new();
    let rows = stmt.query_map(
        params![i(step), i(range.since(now)), by.kind(), name],
        |r| Ok((u(r.get(0)?), r.get::<_, String>(1)?, u(r.get(2)?))),
    )?;
    for row in rows {
        cells.push(row?);
    }
    let t = steps(range, cells.iter().map(|c| c.0).min(), now);
    let start = t.first().copied().unwrap_or(0);
    let slot = |at: u64| usize::try_from((at.saturating_sub(start)) / step).unwrap_or(0);
    let mut totals: HashMap<&str, u64> = HashMap::new();
    for (_, key, bytes) in &cells {
        *totals.entry(key.as_str()).or_default() += bytes;
    }
    let mut ranked: Vec<(&str, u64)> = totals
        .into_iter()
        .filter(|(k, b)| *k != OTHER_HOST && *b > 0)
        .collect();
    ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let shown: HashMap<&str, usize> = ranked
        .iter()
        .take(n)
        .enumerate()
        .map(|(i, (k, _))| (*k, i))
        .collect();
    let mut lines: Vec<Line> = ranked
        .iter()
        .take(n)
        .map(|(k, total)| Line {
            name: (*k).to_string(),
            total: *total,
            bytes: vec![0; t.len()],
        })
        .collect();
    let mut other = Line {
        bytes: vec![0; t.len()],
        ..Line::default()
    };
    let mut hidden = ranked.len().saturating_sub(n);
    let mut folded_other = false;
    for (at, key, bytes) in &cells {
        let k = slot(*at).min(t.len().saturating_sub(1));
        if let Some(&i) = shown.get(key.as_str()) {
            lines[i].bytes[k] += bytes;
        } else {
            other.bytes[k] += bytes;
            other.total += bytes;
            folded_other |= key == OTHER_HOST;
        }
    }
    if folded_other {
        // The hosts the store already folded count as one more.
        hidden += 1;
    }
    other.name = format!("other ({hidden} more)");
    Ok(Stacked {
        range: range.name(),
        step,
        t,
        lines,
        other: (other.total > 0).then_some(other),
    })
}

/// Totals per device, country or host over the range (every verdict),
/// from the rollups: what the top-N lists rank for 7 and 30 days.
pub fn totals(
    conn: &Connection,
    dim: Dim,
    range: Range,
    now: u64,
) -> Result<Vec<(String, Totals)>, ReadError> {
    let (column, kind) = match dim {
        Dim::Device => ("device", "region"),
        Dim::Country => ("key", "country"),
        Dim::Host => ("key", "host"),
        Dim::Region => ("key", "region"),
    };
    let table = if range == Range::Day {
        "rollups"
    } else {
        "all_rollups"
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT {column}, verdict, sum(packets), sum(bytes) FROM {table}
         WHERE minute >= ?1 AND kind = ?2 GROUP BY 1, 2"
    ))?;
    let mut by: BTreeMap<String, Totals> = BTreeMap::new();
    let rows = stmt.query_map(params![i(range.since(now)), kind], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            u(r.get(2)?),
            u(r.get(3)?),
        ))
    })?;
    for row in rows {
        let (key, verdict, packets, bytes) = row?;
        let verdict = verdict.parse().unwrap_or(Verdict::Pass);
        by.entry(key).or_default().add(verdict, packets, bytes);
    }
    Ok(by.into_iter().collect())
}

/// Events [`recent`] looks through at most (the newest by row id): a
/// device with few or no events never makes it walk the whole table.
pub const RECENT_SCANNED: u64 = 100_000;

/// The newest `n` events of `device` (drops, rejects, audits) among the
/// newest [`RECENT_SCANNED`] of every device, newest first: the device
/// page's recent drops, which survive a restart. Rows are in write order,
/// which is time order (the writer inserts them as they came).
pub fn recent(
    conn: &Connection,
    device: &str,
    n: usize,
) -> Result<Vec<crate::events::Record>, ReadError> {
    use crate::history::query::{EVENT_COLUMNS, record_of};
    let mut stmt = conn.prepare(&format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE id > (SELECT coalesce(max(id), 0) FROM events) - ?3 AND device = ?1
         ORDER BY id DESC LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![device, i(n as u64), i(RECENT_SCANNED)], record_of)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::{RECENT_SCANNED, Range, recent, steps};

    #[test]
    fn recent_is_newest_first_and_looks_only_at_the_newest_rows() {
        let dir = std::env::temp_dir().join(format!("rw-series-recent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let store = crate::history::Store::open(&dir.join("h.db")).expect("store");
        let c = store.conn();
        c.execute_batch(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {})
             INSERT INTO events (ts, interface, device, mac, proto, country, region, rule, verdict, reason, bytes, policy_epoch)
             SELECT i * 1000, 'lan', CASE WHEN i <= 3 THEN 'old' WHEN i % 2 = 0 THEN 'tv' ELSE 'pc' END,
                    '', 'udp', '-', '-', 'r', 'drop', '', i, 1 FROM n",
            RECENT_SCANNED + 3
        ))
        .expect("rows");
        let tv = recent(c, "tv", 3).expect("tv");
        let bytes: Vec<u32> = tv.iter().map(|r| r.bytes).collect();
        let last = u32::try_from(RECENT_SCANNED + 3).expect("small");
        let newest_even = last - last % 2;
        assert_eq!(bytes, [newest_even, newest_even - 2, newest_even - 4]);
        assert!(tv[0].timestamp > tv[1].timestamp);
        // The three oldest rows are beyond the newest RECENT_SCANNED.
        assert!(recent(c, "old", 50).expect("old").is_empty());
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ranges_step_by_minutes_then_hours() {
        assert_eq!(Range::parse("7d"), Ok(Range::Week));
        assert!(Range::parse("1y").unwrap_err().contains("\"1y\""));
        let now = 10 * 86_400 + 125;
        assert_eq!(Range::Day.since(now), 9 * 86_400 + 180);
        let s = steps(Range::Day, Some(0), now);
        assert_eq!(s.len(), 1440);
        assert_eq!(*s.last().expect("steps"), 10 * 86_400 + 120);
        let s = steps(Range::Week, Some(10 * 86_400 - 7200), now);
        assert_eq!(s, [10 * 86_400 - 7200, 10 * 86_400 - 3600, 10 * 86_400]);
        assert_eq!(steps(Range::Month, None, now), [10 * 86_400]);
    }
}
