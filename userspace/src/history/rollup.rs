//! Counter rollups: kernel counters into per-minute rows (hosts bounded to each device's biggest, regions summed as totals), and minutes older than two days compacted into hours.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::SystemTime,
};

use rusqlite::{OptionalExtension as _, params};

use super::{
    HistoryError, micros,
    store::{Counted, Kind, MINUTES_KEPT, Origin, Store, count, sql, to_i64},
};

/// Hosts of one device kept per minute (by bytes); the rest are summed as
/// [`OTHER_HOST`]. A minute thus holds at most `devices × (HOSTS_PER_DEVICE
/// + 1) × 2` host rows (two verdicts), however many hosts the kernel counts.
pub const HOSTS_PER_DEVICE: usize = 10;

/// The key of the hosts beyond [`HOSTS_PER_DEVICE`] (parenthesised: no
/// host name or address can be it).
pub const OTHER_HOST: &str = "(other)";

/// A key of a counter: kind, device, key, verdict.
type Key<'a> = (Kind, &'a str, &'a str, &'a str);

/// Keeps the [`HOSTS_PER_DEVICE`] hosts of each device that grew most (in
/// bytes, both verdicts together) and folds the others into [`OTHER_HOST`].
fn bound_hosts(deltas: Vec<(Key<'_>, (i64, i64))>) -> Vec<(Key<'_>, (i64, i64))> {
    let mut by_host: HashMap<(&str, &str), i64> = HashMap::new();
    for ((kind, device, key, _), (_, bytes)) in &deltas {
        if *kind == Kind::Host {
            *by_host.entry((device, key)).or_default() += bytes;
        }
    }
    let mut per_device: HashMap<&str, Vec<(&str, i64)>> = HashMap::new();
    for ((device, key), bytes) in by_host {
        per_device.entry(device).or_default().push((key, bytes));
    }
    let mut kept: HashSet<(&str, &str)> = HashSet::new();
    for (device, mut hosts) in per_device {
        hosts.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        kept.extend(
            hosts
                .into_iter()
                .take(HOSTS_PER_DEVICE)
                .map(|(k, _)| (device, k)),
        );
    }
    let mut out = Vec::with_capacity(deltas.len());
    let mut other: BTreeMap<(&str, &str), (i64, i64)> = BTreeMap::new();
    for ((kind, device, key, verdict), d) in deltas {
        if kind == Kind::Host && !kept.contains(&(device, key)) {
            let o = other.entry((device, verdict)).or_default();
            o.0 += d.0;
            o.1 += d.1;
        } else {
            out.push(((kind, device, key, verdict), d));
        }
    }
    out.extend(
        other
            .into_iter()
            .map(|((device, verdict), d)| ((Kind::Host, device, OTHER_HOST, verdict), d)),
    );
    out
}

/// Removes the bases of hosts missing from the snapshot: they left the
/// kernel's LRU, so the bases stay as bounded as the LRU, and a host
/// counted again later counts from zero (not from its old base).
fn forget_gone_hosts(
    tx: &rusqlite::Transaction<'_>,
    seen: &[(&str, &str, &str)],
    p: &std::path::Path,
) -> Result<(), HistoryError> {
    let seen: HashSet<(&str, &str, &str)> = seen.iter().copied().collect();
    let mut bases = tx
        .prepare("SELECT device, key, verdict FROM counter_base WHERE kind = 'host'")
        .map_err(sql(p, "preparing"))?;
    let gone: Vec<(String, String, String)> = bases
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(sql(p, "reading host bases"))?
        .into_iter()
        .filter(|(d, k, v): &(String, String, String)| {
            !seen.contains(&(d.as_str(), k.as_str(), v.as_str()))
        })
        .collect();
    let mut forget = tx
        .prepare(
            "DELETE FROM counter_base WHERE kind = 'host' AND device = ?1 AND key = ?2 AND verdict = ?3",
        )
        .map_err(sql(p, "preparing"))?;
    for (d, k, v) in &gone {
        forget
            .execute(params![d, k, v])
            .map_err(sql(p, "forgetting host bases"))?;
    }
    Ok(())
}

/// Adds a `total` row per verdict: the region rows summed.
fn add_totals(deltas: &mut Vec<(Key<'_>, (i64, i64))>) {
    let mut totals: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for ((kind, _, _, verdict), d) in deltas.iter() {
        if *kind == Kind::Region {
            let t = totals.entry(verdict).or_default();
            t.0 += d.0;
            t.1 += d.1;
        }
    }
    deltas.extend(
        totals
            .into_iter()
            .map(|(verdict, d)| ((Kind::Total, "*", "*", verdict), d)),
    );
}

impl Store {
    /// Adds the counters' growth since the last rollup to the minute of
    /// `at`, and keeps the values as the next base, in one transaction (a
    /// failed write leaves the base as it was, so the next one counts it:
    /// nothing is lost or counted twice). A counter lower than its base
    /// was reset (pins removed and made again) and counts from zero. Host
    /// rows are bounded (see [`HOSTS_PER_DEVICE`]).
    pub fn record_counters(
        &mut self,
        at: SystemTime,
        rows: &[Counted],
        origin: Origin,
    ) -> Result<u64, HistoryError> {
        let minute = micros(at) / 1_000_000 / 60 * 60;
        // One value per key (a name can appear twice when indices share it).
        let mut summed: BTreeMap<Key<'_>, (u64, u64)> = BTreeMap::new();
        for r in rows {
            let e = summed
                .entry((r.kind, &r.device, &r.key, &r.verdict))
                .or_default();
            e.0 += r.packets;
            e.1 += r.bytes;
        }
        let p = self.path().to_path_buf();
        let tx = self
            .conn_mut()
            .transaction()
            .map_err(sql(&p, "starting a write"))?;
        if origin == Origin::Zero {
            tx.execute("DELETE FROM counter_base", [])
                .map_err(sql(&p, "resetting counter bases"))?;
        }
        let baselined = origin == Origin::Zero
            || tx
                .query_row(
                    "SELECT 1 FROM meta WHERE name = 'baselined'",
                    [],
                    |_| Ok(()),
                )
                .optional()
                .map_err(sql(&p, "reading meta"))?
                .is_some();
        let mut written = 0;
        {
            let mut base = tx
                .prepare(
                    "SELECT packets, bytes FROM counter_base WHERE kind = ?1 AND device = ?2 AND key = ?3 AND verdict = ?4",
                )
                .map_err(sql(&p, "preparing"))?;
            let mut set_base = tx
                .prepare(
                    "INSERT INTO counter_base VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT DO UPDATE SET packets = excluded.packets, bytes = excluded.bytes",
                )
                .map_err(sql(&p, "preparing"))?;
            let mut add = tx
                .prepare(
                    "INSERT INTO rollups VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT DO UPDATE SET packets = packets + excluded.packets, bytes = bytes + excluded.bytes",
                )
                .map_err(sql(&p, "preparing"))?;
            let mut deltas = Vec::with_capacity(summed.len());
            let summed_hosts: Vec<(&str, &str, &str)> = summed
                .keys()
                .filter(|k| k.0 == Kind::Host)
                .map(|k| (k.1, k.2, k.3))
                .collect();
            for ((kind, device, key, verdict), (packets, bytes)) in summed {
                let old: Option<(i64, i64)> = base
                    .query_row(params![kind.name(), device, key, verdict], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()
                    .map_err(sql(&p, "reading counter bases"))?;
                let now = (to_i64(packets), to_i64(bytes));
                let delta = match old {
                    Some((bp, bb)) if now.0 >= bp && now.1 >= bb => (now.0 - bp, now.1 - bb),
                    Some(_) => now,
                    None if baselined => now,
                    // The first snapshot ever, of counters adopted from
                    // pins: what they hold belongs to no known minute.
                    None => (0, 0),
                };
                if delta != (0, 0) {
                    deltas.push(((kind, device, key, verdict), delta));
                }
                set_base
                    .execute(params![kind.name(), device, key, verdict, now.0, now.1])
                    .map_err(sql(&p, "writing counter bases"))?;
            }
            forget_gone_hosts(&tx, &summed_hosts, &p)?;
            add_totals(&mut deltas);
            for ((kind, device, key, verdict), delta) in bound_hosts(deltas) {
                add.execute(params![
                    minute,
                    kind.name(),
                    device,
                    key,
                    verdict,
                    delta.0,
                    delta.1
                ])
                .map_err(sql(&p, "writing rollups"))?;
                written += 1;
            }
        }
        tx.execute("INSERT OR IGNORE INTO meta VALUES ('baselined', '1')", [])
            .map_err(sql(&p, "writing meta"))?;
        tx.commit().map_err(sql(&p, "committing rollups"))?;
        Ok(written)
    }

    /// Sums the minute rollups older than [`MINUTES_KEPT`] (whole hours
    /// only) into `rollups_hourly` and removes them, in one transaction.
    /// The rows removed.
    pub fn compact(&mut self, now: SystemTime) -> Result<u64, HistoryError> {
        let secs = micros(now) / 1_000_000;
        let kept = i64::try_from(MINUTES_KEPT.as_secs()).unwrap_or(i64::MAX);
        let cutoff = secs.saturating_sub(kept) / 3600 * 3600;
        self.compact_before(cutoff)
    }

    /// [`Store::compact`] up to `cutoff` (seconds, a whole hour).
    fn compact_before(&mut self, cutoff: i64) -> Result<u64, HistoryError> {
        let p = self.path().to_path_buf();
        let tx = self
            .conn_mut()
            .transaction()
            .map_err(sql(&p, "starting a compaction"))?;
        tx.execute(
            "INSERT INTO rollups_hourly
             SELECT minute / 3600 * 3600, kind, device, key, verdict, sum(packets), sum(bytes)
             FROM rollups WHERE minute < ?1 GROUP BY 1, 2, 3, 4, 5
             ON CONFLICT DO UPDATE SET packets = packets + excluded.packets, bytes = bytes + excluded.bytes",
            [cutoff],
        )
        .map_err(sql(&p, "compacting rollups into hours"))?;
        let removed = tx
            .execute("DELETE FROM rollups WHERE minute < ?1", [cutoff])
            .map_err(sql(&p, "removing compacted minutes"))?;
        tx.commit().map_err(sql(&p, "committing the compaction"))?;
        Ok(count(removed))
    }
}

#[cfg(test)]
mod tests {
    use super::{HOSTS_PER_DEVICE, OTHER_HOST, bound_hosts};
    use crate::history::store::Kind;

    #[test]
    fn each_device_keeps_its_biggest_hosts_and_the_rest_is_other() {
        let names: Vec<String> = (0..30).map(|i| format!("h{i}")).collect();
        let mut deltas = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let b = i64::try_from(i).expect("small");
            deltas.push(((Kind::Host, "tv", n.as_str(), "pass"), (1, b * 10)));
            deltas.push(((Kind::Host, "tv", n.as_str(), "drop"), (1, 1)));
        }
        deltas.push(((Kind::Region, "tv", "aa", "drop"), (5, 500)));
        let out = bound_hosts(deltas);
        let hosts: Vec<_> = out.iter().filter(|(k, _)| k.0 == Kind::Host).collect();
        assert_eq!(hosts.len(), (HOSTS_PER_DEVICE + 1) * 2);
        assert!(hosts.iter().any(|(k, _)| k.2 == "h29"));
        assert!(!hosts.iter().any(|(k, _)| k.2 == "h0"));
        let other_pass = hosts
            .iter()
            .find(|(k, _)| k.2 == OTHER_HOST && k.3 == "pass")
            .expect("other");
        // h0..h19 (20 hosts) summed: 10 * (0 + ... + 19).
        assert_eq!(other_pass.1, (20, 1900));
        let total: i64 = out.iter().map(|(_, d)| d.0).sum();
        assert_eq!(total, 60 + 5, "nothing lost");
    }
}
