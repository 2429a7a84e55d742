//! Queries over the history: filters and groupings, the SQL they become, and their rows.

use std::{fmt::Write as _, time::SystemTime};

use rusqlite::types::Value;

use super::{HistoryError, Store, from_micros, micros};
use crate::events::Record;

/// What totals can be grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    Device,
    Country,
    Host,
    Region,
    Verdict,
    Hour,
    Day,
}

impl Dim {
    pub const ALL: [Self; 7] = [
        Self::Device,
        Self::Country,
        Self::Host,
        Self::Region,
        Self::Verdict,
        Self::Hour,
        Self::Day,
    ];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Country => "country",
            Self::Host => "host",
            Self::Region => "region",
            Self::Verdict => "verdict",
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }
}

/// One grouping: device, country, host, region, verdict, hour or day.
pub fn parse_dim(s: &str) -> Result<Dim, String> {
    let part = s.trim();
    Dim::ALL.into_iter().find(|d| d.name() == part).ok_or_else(|| {
        format!(
            "{part:?} is not a grouping (expected device, country, host, region, verdict, hour or day, comma-separated)"
        )
    })
}

/// `device,country`: groupings, each once.
pub fn parse_dims(s: &str) -> Result<Vec<Dim>, String> {
    let mut dims = Vec::new();
    for part in s.split(',') {
        let dim = parse_dim(part)?;
        if dims.contains(&dim) {
            return Err(format!("{:?} is given twice", part.trim()));
        }
        dims.push(dim);
    }
    Ok(dims)
}

/// Which table answers a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Counter rollups by region: every packet, rate-limited drops included.
    Regions,
    /// Counter rollups by country.
    Countries,
    /// Events (hosts are only known per event; rate-limited drops and
    /// passed traffic are not in them).
    Events,
}

/// Filters and groupings.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    pub device: Option<String>,
    pub country: Option<String>,
    pub region: Option<String>,
    pub host: Option<String>,
    pub verdict: Option<String>,
    pub by: Vec<Dim>,
}

/// One grouped total.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Total {
    /// The grouping's values, in the order asked.
    pub keys: Vec<(Dim, String)>,
    /// Packets (rollups) or events (events).
    pub count: u64,
    pub bytes: u64,
}

/// Repeated events of one flow within one interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub first: SystemTime,
    pub last: SystemTime,
    pub count: u64,
    pub bytes: u64,
    pub device: String,
    pub dst_ip: String,
    pub protocol: String,
    pub dst_port: Option<u16>,
    pub country: String,
    pub host: Option<String>,
    pub region: String,
    pub rule: String,
    pub verdict: String,
}

impl Query {
    #[must_use]
    pub fn source(&self) -> Source {
        let wants = |d: Dim| self.by.contains(&d);
        let host = wants(Dim::Host) || self.host.is_some();
        let country = wants(Dim::Country) || self.country.is_some();
        let region = wants(Dim::Region) || self.region.is_some();
        if host || (country && region) {
            Source::Events
        } else if country {
            Source::Countries
        } else {
            Source::Regions
        }
    }

    /// The name of what [`Total::count`] counts.
    #[must_use]
    pub fn measure(&self) -> &'static str {
        if self.source() == Source::Events {
            "events"
        } else {
            "packets"
        }
    }

    /// `WHERE` clauses of the filters; `events` picks the event table's
    /// columns and units, else the rollups'.
    fn filters(&self, events: bool, params: &mut Vec<Value>) -> String {
        let mut clauses = Vec::new();
        let mut add = |clause: &str, v: Value| {
            params.push(v);
            clauses.push(clause.replace('#', &format!("?{}", params.len())));
        };
        let time = |t: SystemTime| {
            if events {
                micros(t)
            } else {
                micros(t) / 1_000_000
            }
        };
        let col = if events { "ts" } else { "minute" };
        if let Some(t) = self.since {
            add(&format!("{col} >= #"), Value::Integer(time(t)));
        }
        if let Some(t) = self.until {
            add(&format!("{col} < #"), Value::Integer(time(t)));
        }
        if let Some(d) = &self.device {
            add("device = #", Value::Text(d.clone()));
        }
        if let Some(v) = &self.verdict {
            add("verdict = #", Value::Text(v.clone()));
        }
        if events {
            if let Some(c) = &self.country {
                add("country = #", Value::Text(c.clone()));
            }
            if let Some(r) = &self.region {
                add("region = #", Value::Text(r.clone()));
            }
            if let Some(h) = &self.host {
                add(
                    "(host = # OR dst_ip = # OR canonical = #)",
                    Value::Text(h.clone()),
                );
            }
        } else if let Some(k) = self.country.as_ref().or(self.region.as_ref()) {
            add("key = #", Value::Text(k.clone()));
        }
        if clauses.is_empty() {
            "1".into()
        } else {
            clauses.join(" AND ")
        }
    }

    /// The SQL of the totals grouped by `self.by`, and its parameters.
    #[must_use]
    pub fn totals_sql(&self) -> (String, Vec<Value>) {
        let source = self.source();
        let events = source == Source::Events;
        let mut params = Vec::new();
        let column = |d: Dim| -> &'static str {
            match (d, events) {
                (Dim::Device, _) => "device",
                (Dim::Verdict, _) => "verdict",
                (Dim::Country, true) => "country",
                (Dim::Region, true) => "region",
                (Dim::Country | Dim::Region, false) => "key",
                (Dim::Host, _) => "coalesce(host, dst_ip, '-')",
                (Dim::Hour, true) => "ts / 3600000000 * 3600",
                (Dim::Day, true) => "ts / 86400000000 * 86400",
                (Dim::Hour, false) => "minute / 3600 * 3600",
                (Dim::Day, false) => "minute / 86400 * 86400",
            }
        };
        let mut select = String::new();
        for d in &self.by {
            let _ = write!(select, "{}, ", column(*d));
        }
        let (measure, table) = if events {
            ("count(*), coalesce(sum(bytes), 0)", "events")
        } else {
            (
                "coalesce(sum(packets), 0), coalesce(sum(bytes), 0)",
                // Minute rows and (older than two days) hourly rows.
                "all_rollups",
            )
        };
        let mut sql = format!("SELECT {select}{measure} FROM {table} WHERE ");
        if !events {
            let kind = if source == Source::Countries {
                "country"
            } else {
                "region"
            };
            params.push(Value::Text(kind.into()));
            sql.push_str("kind = ?1 AND ");
        }
        sql.push_str(&self.filters(events, &mut params));
        if !self.by.is_empty() {
            let n: Vec<String> = (1..=self.by.len()).map(|i| i.to_string()).collect();
            let _ = write!(sql, " GROUP BY {0} ORDER BY {0}", n.join(", "));
        }
        (sql, params)
    }

    /// The SQL of events (each, in time order) or, with `interval`
    /// seconds, of flows aggregated per interval.
    #[must_use]
    pub fn events_sql(&self, interval: Option<u64>) -> (String, Vec<Value>) {
        let mut params = Vec::new();
        let filters = self.filters(true, &mut params);
        let sql = match interval {
            None => format!("SELECT {EVENT_COLUMNS} FROM events WHERE {filters} ORDER BY ts, id"),
            Some(secs) => {
                let us = secs.max(1).saturating_mul(1_000_000);
                format!(
                    "SELECT min(ts), max(ts), count(*), sum(bytes), device, coalesce(dst_ip, '-'), proto, dst_port, country, host, region, rule, verdict
                     FROM events WHERE {filters}
                     GROUP BY ts / {us}, device, dst_ip, proto, dst_port, country, host, region, rule, verdict
                     ORDER BY min(ts)"
                )
            }
        };
        (sql, params)
    }
}

fn run_err(store: &Store) -> impl Fn(rusqlite::Error) -> HistoryError + '_ {
    move |source| HistoryError::Sqlite {
        path: store.path().to_path_buf(),
        what: "querying",
        source,
    }
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The totals of `q`.
pub fn totals(store: &Store, q: &Query) -> Result<Vec<Total>, HistoryError> {
    let (sql, params) = q.totals_sql();
    let mut stmt = store.conn().prepare(&sql).map_err(run_err(store))?;
    let n = q.by.len();
    let rows = stmt
        .query_map(rusqlite::params_from_iter(params), |r| {
            let mut keys = Vec::with_capacity(n);
            for (i, d) in q.by.iter().enumerate() {
                let value = match d {
                    Dim::Hour | Dim::Day => {
                        let secs: i64 = r.get(i)?;
                        humantime::format_rfc3339_seconds(from_micros(secs * 1_000_000)).to_string()
                    }
                    _ => r.get(i)?,
                };
                keys.push((*d, value));
            }
            Ok(Total {
                keys,
                count: u64_of(r.get(n)?),
                bytes: u64_of(r.get(n + 1)?),
            })
        })
        .map_err(run_err(store))?;
    rows.collect::<Result<_, _>>().map_err(run_err(store))
}

/// The columns of an event row, in the order [`record_of`] reads them.
pub const EVENT_COLUMNS: &str = "ts, interface, device, mac, src_ip, dst_ip, proto, src_port, dst_port, country, host, canonical, resolved, region, rule, verdict, reason, bytes, policy_epoch";

/// An event row (selected as [`EVENT_COLUMNS`]) as it was streamed.
pub fn record_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    let ip = |i: usize| -> rusqlite::Result<Option<std::net::IpAddr>> {
        Ok(r.get::<_, Option<String>>(i)?.and_then(|s| s.parse().ok()))
    };
    let verdict: String = r.get(15)?;
    Ok(Record {
        timestamp: humantime::format_rfc3339_micros(from_micros(r.get(0)?)).to_string(),
        interface: r.get(1)?,
        device: r.get(2)?,
        src_mac: r.get(3)?,
        src_ip: ip(4)?,
        dst_ip: ip(5)?,
        protocol: r.get(6)?,
        src_port: r.get(7)?,
        dst_port: r.get(8)?,
        country: r.get(9)?,
        host: r.get(10)?,
        canonical: r.get(11)?,
        resolved: r.get(12)?,
        region: r.get(13)?,
        rule: r.get(14)?,
        verdict: verdict.parse().unwrap_or(crate::verdict::Verdict::Drop),
        reason: r.get(16)?,
        bytes: r.get(17)?,
        policy_epoch: r.get(18)?,
    })
}

/// The events of `q`, in time order, as they were streamed.
pub fn records(store: &Store, q: &Query) -> Result<Vec<Record>, HistoryError> {
    let (sql, params) = q.events_sql(None);
    let mut stmt = store.conn().prepare(&sql).map_err(run_err(store))?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(params), record_of)
        .map_err(run_err(store))?;
    rows.collect::<Result<_, _>>().map_err(run_err(store))
}

/// The events of `q` as flows, one per `interval` seconds each.
pub fn flows(store: &Store, q: &Query, interval: u64) -> Result<Vec<Flow>, HistoryError> {
    let (sql, params) = q.events_sql(Some(interval));
    let mut stmt = store.conn().prepare(&sql).map_err(run_err(store))?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(params), |r| {
            Ok(Flow {
                first: from_micros(r.get(0)?),
                last: from_micros(r.get(1)?),
                count: u64_of(r.get(2)?),
                bytes: u64_of(r.get(3)?),
                device: r.get(4)?,
                dst_ip: r.get(5)?,
                protocol: r.get(6)?,
                dst_port: r.get(7)?,
                country: r.get(8)?,
                host: r.get(9)?,
                region: r.get(10)?,
                rule: r.get(11)?,
                verdict: r.get(12)?,
            })
        })
        .map_err(run_err(store))?;
    rows.collect::<Result<_, _>>().map_err(run_err(store))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groupings_parse_and_name_the_bad_value() {
        assert_eq!(
            parse_dims("device,country"),
            Ok(vec![Dim::Device, Dim::Country])
        );
        assert!(
            parse_dims("device,planet")
                .unwrap_err()
                .contains("\"planet\"")
        );
        assert!(parse_dims("day,day").unwrap_err().contains("twice"));
    }

    #[test]
    fn the_table_follows_the_grouping() {
        let q = |by: &[Dim]| Query {
            by: by.to_vec(),
            ..Query::default()
        };
        assert_eq!(q(&[Dim::Device]).source(), Source::Regions);
        assert_eq!(q(&[Dim::Device, Dim::Country]).source(), Source::Countries);
        assert_eq!(q(&[Dim::Host]).source(), Source::Events);
        assert_eq!(q(&[Dim::Region, Dim::Country]).source(), Source::Events);
        let filtered = Query {
            country: Some("CN".into()),
            by: vec![Dim::Day],
            ..Query::default()
        };
        assert_eq!(filtered.source(), Source::Countries);
    }

    #[test]
    fn totals_sql_binds_every_filter() {
        let q = Query {
            since: Some(from_micros(120_000_000)),
            device: Some("tv".into()),
            country: Some("CN".into()),
            verdict: Some("drop".into()),
            by: vec![Dim::Device, Dim::Hour],
            ..Query::default()
        };
        let (sql, params) = q.totals_sql();
        assert_eq!(
            sql,
            "SELECT device, minute / 3600 * 3600, coalesce(sum(packets), 0), coalesce(sum(bytes), 0) FROM all_rollups WHERE kind = ?1 AND minute >= ?2 AND device = ?3 AND verdict = ?4 AND key = ?5 GROUP BY 1, 2 ORDER BY 1, 2"
        );
        assert_eq!(
            params,
            vec![
                Value::Text("country".into()),
                Value::Integer(120),
                Value::Text("tv".into()),
                Value::Text("drop".into()),
                Value::Text("CN".into()),
            ]
        );
    }

    #[test]
    fn event_totals_use_microseconds_and_hosts() {
        let q = Query {
            until: Some(from_micros(5_000_000)),
            host: Some("example.com".into()),
            by: vec![Dim::Host],
            ..Query::default()
        };
        let (sql, params) = q.totals_sql();
        assert!(
            sql.starts_with("SELECT coalesce(host, dst_ip, '-'), count(*)"),
            "{sql}"
        );
        assert!(
            sql.contains("ts < ?1 AND (host = ?2 OR dst_ip = ?2 OR canonical = ?2)"),
            "{sql}"
        );
        assert_eq!(params[0], Value::Integer(5_000_000));
    }
}
