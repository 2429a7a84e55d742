//! The dashboard's history endpoints: series over 24 h, 7 d and 30 d, a device's bytes by country or host over time, ranged top-N; read from the history file off the event loop, one query at a time, answers shared while fresh.
//!
//! The history file is the recorder's: the dashboard opens its own
//! read-only connection (WAL lets it read beside the writer) and uses it
//! on a blocking thread, one query at a time (a second request waits for
//! the first), and keeps each answer for [`FRESH_DAY`] (24 hours) or
//! [`FRESH_LONG`] (7 and 30 days), at most [`CACHED`] of them: however
//! many browsers look, the database sees at most one query per question
//! per interval. Without history the 24-hour series is the in-memory ring
//! (lost on restart) and the longer ranges answer 409.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};

use super::{
    ring::{Minute, Ring, unix_now},
    series::{self, By, Range},
};
use crate::{history::Store, views::Dim};

/// How long a 24-hour answer is shared.
pub const FRESH_DAY: Duration = Duration::from_secs(10);
/// How long a 7- or 30-day answer is shared.
pub const FRESH_LONG: Duration = Duration::from_secs(60);
/// Answers kept at most.
pub const CACHED: usize = 64;
/// Lines a device chart shows by default, and at most.
const LINES_DEFAULT: usize = 5;
const LINES_MAX: usize = 20;

/// Reads the history for the dashboard (or the ring, without history).
pub struct Reader {
    /// The history file; `None` with `--no-history`.
    path: Option<PathBuf>,
    conn: tokio::sync::Mutex<Option<Store>>,
    answers: Mutex<HashMap<String, (Instant, Arc<serde_json::Value>)>>,
    /// Whether answers are shared while fresh (off: every request runs
    /// its query, as the benchmark times them).
    share: bool,
    /// Per-minute totals since this controller started.
    pub ring: Mutex<Ring>,
}

/// A failed question: its status and why.
pub struct Failed(StatusCode, String);

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct E {
            error: String,
        }
        (self.0, Json(E { error: self.1 })).into_response()
    }
}

fn bad(why: String) -> Failed {
    Failed(StatusCode::BAD_REQUEST, why)
}

const NEEDS_HISTORY: &str =
    "the 7-day and 30-day views and the device charts need the history (run without --no-history)";

impl Reader {
    /// A reader of the history at `path` (`None`: no history).
    #[must_use]
    pub fn new(path: Option<PathBuf>) -> Self {
        Self {
            path,
            conn: tokio::sync::Mutex::new(None),
            answers: Mutex::new(HashMap::new()),
            share: true,
            ring: Mutex::new(Ring::default()),
        }
    }

    /// A reader whose every request runs its query (for the benchmark).
    #[must_use]
    pub fn unshared(path: Option<PathBuf>) -> Self {
        Self {
            share: false,
            ..Self::new(path)
        }
    }

    /// Whether there is a history to read.
    #[must_use]
    pub const fn has_history(&self) -> bool {
        self.path.is_some()
    }

    /// The answer to `key`: shared while fresh, else `ask`ed of the
    /// history on a blocking thread (one at a time).
    async fn ask<T, F>(
        &self,
        key: String,
        fresh: Duration,
        ask: F,
    ) -> Result<Arc<serde_json::Value>, Failed>
    where
        T: Serialize,
        F: FnOnce(&rusqlite::Connection) -> Result<T, series::ReadError> + Send + 'static,
    {
        let Some(path) = self.path.clone() else {
            return Err(Failed(StatusCode::CONFLICT, NEEDS_HISTORY.into()));
        };
        if let Some(v) = self.fresh(&key, fresh) {
            return Ok(v);
        }
        let mut held = self.conn.lock().await;
        // Another request may have answered while this one waited.
        if let Some(v) = self.fresh(&key, fresh) {
            return Ok(v);
        }
        let store = held.take();
        let (store, answer) = tokio::task::spawn_blocking(move || {
            let store = match store {
                Some(s) => s,
                None => match Store::open_read_only(&path) {
                    Ok(s) => s,
                    Err(e) => return (None, Err(e.to_string())),
                },
            };
            let answer = ask(store.conn())
                .map_err(|e| e.to_string())
                .and_then(|v| serde_json::to_value(v).map_err(|e| e.to_string()));
            // A failed read may mean a replaced file: open it anew next time.
            let keep = answer.is_ok().then_some(store);
            (keep, answer)
        })
        .await
        .map_err(|e| Failed(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        *held = store;
        let value = Arc::new(answer.map_err(|e| Failed(StatusCode::SERVICE_UNAVAILABLE, e))?);
        if let Ok(mut answers) = self.answers.lock() {
            if answers.len() >= CACHED {
                answers.retain(|_, (at, _)| at.elapsed() < fresh);
                if answers.len() >= CACHED {
                    answers.clear();
                }
            }
            answers.insert(key, (Instant::now(), Arc::clone(&value)));
        }
        Ok(value)
    }

    fn fresh(&self, key: &str, fresh: Duration) -> Option<Arc<serde_json::Value>> {
        if !self.share {
            return None;
        }
        let answers = self.answers.lock().ok()?;
        let (at, v) = answers.get(key)?;
        (at.elapsed() < fresh).then(|| Arc::clone(v))
    }

    /// Adds a snapshot's growth to the ring.
    pub fn add(&self, now: u64, delta: Minute) {
        if let Ok(mut ring) = self.ring.lock() {
            ring.add(now, delta);
        }
    }

    /// The ring's minutes (the last 24 hours at most).
    #[must_use]
    pub fn ring_series(&self, now: u64) -> Vec<Minute> {
        self.ring.lock().map(|r| r.series(now)).unwrap_or_default()
    }
}

const fn fresh_for(range: Range) -> Duration {
    match range {
        Range::Day => FRESH_DAY,
        Range::Week | Range::Month => FRESH_LONG,
    }
}

type Ctx = State<Arc<Reader>>;

#[derive(Deserialize)]
pub struct SeriesQuery {
    #[serde(default)]
    range: String,
}

/// The series as columns (what uPlot plots).
#[derive(Serialize)]
pub struct Series {
    pub range: &'static str,
    /// Seconds per step.
    pub step: u64,
    /// "history" or "memory" (since this controller started).
    pub source: &'static str,
    pub t: Vec<u64>,
    pub upload_bytes: Vec<u64>,
    pub drop_packets: Vec<u64>,
}

impl Series {
    fn of(range: Range, source: &'static str, minutes: &[Minute]) -> Self {
        Self {
            range: range.name(),
            step: range.step(),
            source,
            t: minutes.iter().map(|m| m.t).collect(),
            upload_bytes: minutes.iter().map(|m| m.upload_bytes).collect(),
            drop_packets: minutes.iter().map(|m| m.drop_packets).collect(),
        }
    }
}

/// `GET /api/series?range=24h|7d|30d`: uploads and drops per minute (24 h)
/// or hour. With history, from the rollups, the minutes since the last
/// rollup from the ring; without, 24 h from the ring only.
pub async fn series(State(r): Ctx, Query(q): Query<SeriesQuery>) -> Response {
    let range = match Range::parse(&q.range) {
        Ok(r) => r,
        Err(e) => return bad(e).into_response(),
    };
    let now = unix_now();
    if !r.has_history() && range == Range::Day {
        return Json(Series::of(range, "memory", &r.ring_series(now))).into_response();
    }
    let answer = r
        .ask(
            format!("series {}", range.name()),
            fresh_for(range),
            move |c| series::overall(c, range, now),
        )
        .await;
    let mut minutes: Vec<Minute> = match answer {
        Ok(v) => serde_json::from_value((*v).clone()).unwrap_or_default(),
        // An unreadable history (refused, removed) still leaves the ring.
        Err(_) if range == Range::Day => {
            return Json(Series::of(range, "memory", &r.ring_series(now))).into_response();
        }
        Err(e) => return e.into_response(),
    };
    if range == Range::Day {
        // Minutes not rolled up yet (the recorder writes once a minute).
        let recorded = minutes
            .iter()
            .rev()
            .find(|m| m.upload_bytes > 0 || m.drop_packets > 0)
            .map_or(0, |m| m.t);
        let newer: Vec<Minute> = r
            .ring_series(now)
            .into_iter()
            .filter(|m| m.t > recorded)
            .collect();
        minutes.retain(|m| m.t <= recorded);
        let start = minutes.last().map_or(0, |m| m.t + 60);
        minutes.extend(newer.into_iter().filter(|m| m.t >= start));
        minutes = gapless(&minutes, now);
    }
    Json(Series::of(range, "history", &minutes)).into_response()
}

/// `minutes` (in order) with the minutes missing between them, up to the
/// one holding `now`, as zeros.
fn gapless(minutes: &[Minute], now: u64) -> Vec<Minute> {
    let Some(first) = minutes.first() else {
        return Vec::new();
    };
    let end = now - now % 60;
    let mut out = Vec::with_capacity(minutes.len());
    let mut held = minutes.iter().peekable();
    let mut t = first.t;
    while t <= end.max(first.t) {
        match held.next_if(|m| m.t == t) {
            Some(m) => out.push(*m),
            None => out.push(Minute {
                t,
                ..Minute::default()
            }),
        }
        t += 60;
    }
    out
}

#[derive(Deserialize)]
pub struct DeviceSeriesQuery {
    name: String,
    #[serde(default)]
    by: String,
    #[serde(default)]
    range: String,
    n: Option<usize>,
}

/// `GET /api/device/series?name=&by=country|host&range=&n=`: a device's
/// bytes per step by country or host, the biggest `n` and the rest.
pub async fn device_series(State(r): Ctx, Query(q): Query<DeviceSeriesQuery>) -> Response {
    let (range, by) = match (Range::parse(&q.range), By::parse(&q.by)) {
        (Ok(r), Ok(b)) => (r, b),
        (Err(e), _) | (_, Err(e)) => return bad(e).into_response(),
    };
    let n = q.n.unwrap_or(LINES_DEFAULT).clamp(1, LINES_MAX);
    let now = unix_now();
    let key = format!("device {} {:?} {} {n}", range.name(), by, q.name);
    let name = q.name;
    match r
        .ask(key, fresh_for(range), move |c| {
            series::device(c, &name, by, range, n, now)
        })
        .await
    {
        Ok(v) => Json((*v).clone()).into_response(),
        Err(e) => e.into_response(),
    }
}

/// How long a device's recent drops from the history are shared.
pub const FRESH_RECENT: Duration = Duration::from_secs(1);

/// The newest `n` events of `device` from the history, newest first
/// (bounded by `n`; one indexed query, shared for [`FRESH_RECENT`]).
pub async fn recent(
    r: &Reader,
    device: &str,
    n: usize,
) -> Result<Vec<crate::events::Record>, Failed> {
    let name = device.to_string();
    let v = r
        .ask(format!("recent {n} {device}"), FRESH_RECENT, move |c| {
            series::recent(c, &name, n)
        })
        .await?;
    serde_json::from_value((*v).clone())
        .map_err(|e| Failed(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Totals by `dim` over `range` from the history (ranged top-N lists).
pub async fn totals(
    r: &Reader,
    dim: Dim,
    range: Range,
) -> Result<Vec<(String, crate::views::Totals)>, Failed> {
    let now = unix_now();
    let v = r
        .ask(
            format!("totals {} {dim:?}", range.name()),
            fresh_for(range),
            move |c| series::totals(c, dim, range, now),
        )
        .await?;
    serde_json::from_value((*v).clone())
        .map_err(|e| Failed(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[derive(Deserialize)]
pub struct TopQuery {
    by: String,
    n: Option<usize>,
    #[serde(default)]
    range: String,
}

/// `GET /api/top?by=&n=&range=` answered from the history (what the
/// dashboard's router does when a range is given).
pub async fn top(State(r): Ctx, Query(q): Query<TopQuery>) -> Response {
    let dim: Dim = match q.by.parse() {
        Ok(Dim::Region) | Err(_) => {
            return bad("by: expected device, country or host".into()).into_response();
        }
        Ok(d) => d,
    };
    let range = match Range::parse(&q.range) {
        Ok(r) => r,
        Err(e) => return bad(e).into_response(),
    };
    let n =
        q.n.unwrap_or(super::top::TOP_DEFAULT)
            .clamp(1, super::top::TOP_MAX);
    match totals(&r, dim, range).await {
        Ok(lines) => Json(super::top::top(&lines, n)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The series endpoints (merged into the dashboard's router).
pub fn routes() -> Router<Arc<Reader>> {
    Router::new()
        .route("/api/series", get(series))
        .route("/api/device/series", get(device_series))
}

/// The history endpoints alone, ranged top-N included, over `reader`
/// (what the benchmark serves: the dashboard's handlers without pins).
pub fn router(reader: Arc<Reader>) -> Router {
    routes().route("/api/top", get(top)).with_state(reader)
}

#[cfg(test)]
mod tests {
    use super::{Minute, gapless};

    #[test]
    fn gaps_between_recorded_and_remembered_minutes_are_zeros() {
        let m = |t, drops| Minute {
            t,
            drop_packets: drops,
            ..Minute::default()
        };
        let s = gapless(&[m(600, 5), m(780, 1)], 850);
        let t: Vec<u64> = s.iter().map(|x| x.t).collect();
        assert_eq!(t, [600, 660, 720, 780, 840]);
        assert_eq!(s.iter().map(|x| x.drop_packets).sum::<u64>(), 6);
    }
}
