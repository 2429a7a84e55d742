//! The dashboard's JSON endpoints and live tail: status, top-N views, explain, and drops as server-sent events (a device's page is in `device`, the series in `reader`).

use std::{convert::Infallible, net::IpAddr, sync::Arc, sync::atomic::Ordering, time::Duration};

use axum::{
    Json,
    extract::{Query, State},
    http::StatusCode,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::{
    state::Shared,
    top::{TOP_DEFAULT, TOP_MAX, top},
};
use crate::{
    events::Record,
    explain::{self, DeviceBy},
    policy::{Mode, PacketKey},
    verdict::Verdict,
    views::Dim,
};

pub(super) type Ctx = State<Arc<Shared>>;

/// A 400 with a JSON `{"error": ...}` body.
pub(super) fn bad(why: impl Into<String>) -> Response {
    #[derive(Serialize)]
    struct E {
        error: String,
    }
    (StatusCode::BAD_REQUEST, Json(E { error: why.into() })).into_response()
}

#[derive(Serialize)]
pub struct Hooks {
    pub xdp: bool,
    pub tc: bool,
}

#[derive(Serialize)]
pub struct Lost {
    pub ring_lost: u64,
    pub queue_dropped: u64,
    pub suppressed: u64,
    pub not_written: u64,
    /// Events the history could not record (full queue, failed commits).
    pub history_not_written: u64,
    /// Live-tail events this dashboard's browsers missed.
    pub live_lagged: u64,
}

#[derive(Serialize)]
pub struct Status {
    pub interface: String,
    /// "enforcing" (a rule drops or rejects), "audit" (every rule only
    /// audits) or "observe" (no rules).
    pub mode: &'static str,
    pub epoch: u32,
    /// When the live policy was put in force (unix seconds).
    pub loaded_at: u64,
    pub hooks: Hooks,
    pub lost: Lost,
    /// Device names of the live policy (for the filters and explain).
    pub devices: Vec<String>,
    pub dns_watched: bool,
    /// How long reading the last statistics snapshot took.
    pub snapshot_ms: f64,
    /// Snapshots that could not be read (the last one was shown).
    pub snapshots_failed: u64,
    /// `regionwall update`'s status file, for a policy with `[update]`
    /// (`None`: no `[update]`, or no update has run yet).
    pub update: Option<UpdateView>,
}

/// The data update status as the strip shows it.
#[derive(Serialize)]
pub struct UpdateView {
    /// Unix seconds of the last run, and of the last that succeeded.
    pub last_attempt: Option<u64>,
    pub last_success: Option<u64>,
    /// Whether the last run succeeded.
    pub ok: bool,
    /// Why the last run failed.
    pub error: Option<String>,
    /// The live data version.
    pub version: Option<u64>,
    /// Each source's last success and error, by name.
    pub sources: Vec<UpdateSource>,
}

/// One source of the data update.
#[derive(Serialize)]
pub struct UpdateSource {
    pub name: String,
    pub last_success: Option<u64>,
    pub error: Option<String>,
}

impl From<crate::update::status::Status> for UpdateView {
    fn from(s: crate::update::status::Status) -> Self {
        Self {
            last_attempt: s.last_attempt,
            last_success: s.last_success,
            ok: s.error.is_none(),
            error: s.error,
            version: s.version,
            sources: s
                .sources
                .into_iter()
                .map(|(name, src)| UpdateSource {
                    name,
                    last_success: src.last_success,
                    error: src.error,
                })
                .collect(),
        }
    }
}

/// The update status of the data directory `dir`, read on a blocking
/// thread (a small file, but a disk read all the same).
async fn update_status(dir: Option<std::path::PathBuf>) -> Option<UpdateView> {
    let dir = dir?;
    tokio::task::spawn_blocking(move || crate::update::status::read(&dir))
        .await
        .ok()
        .flatten()
        .map(UpdateView::from)
}

pub async fn status(State(s): Ctx) -> Json<Status> {
    let stats = s.stats().await;
    let policy = Arc::clone(&s.policy.borrow());
    let mode = if policy.rules.is_empty() {
        "observe"
    } else if policy.rules.iter().all(|r| r.mode == Mode::Audit) {
        "audit"
    } else {
        "enforcing"
    };
    let ifindex = crate::iface::ifindex(&s.iface).ok();
    let on_iface = |facts: Result<Option<crate::pin::LinkFacts>, crate::pin::PinError>| matches!((facts, ifindex), (Ok(Some(f)), Some(i)) if f.ifindex == i);
    let update = update_status(policy.update_dir.clone()).await;
    Json(Status {
        interface: s.iface.clone(),
        mode,
        epoch: stats.epoch,
        loaded_at: s.tally.loaded_at.load(Ordering::Relaxed),
        hooks: Hooks {
            xdp: on_iface(s.pins.link_facts()),
            tc: on_iface(s.pins.dns_link_facts()),
        },
        lost: Lost {
            ring_lost: stats.not_logged.ring_lost,
            queue_dropped: stats.not_logged.queue_dropped,
            suppressed: stats.not_logged.suppressed,
            not_written: stats.not_logged.not_written,
            history_not_written: s.history.as_ref().map_or(0, |h| h.stats().not_written),
            live_lagged: s.lagged.load(Ordering::Relaxed),
        },
        devices: policy.devices.iter().map(|d| d.name.clone()).collect(),
        dns_watched: s.hosts.is_some(),
        snapshot_ms: s.took().await.as_secs_f64() * 1e3,
        snapshots_failed: s.stale.load(Ordering::Relaxed),
        update,
    })
}

#[derive(Deserialize)]
pub struct TopQuery {
    by: String,
    n: Option<usize>,
    /// 24h, 7d or 30d: from the history; absent: since the counters
    /// began (the live snapshot).
    #[serde(default)]
    range: Option<String>,
}

pub async fn top_view(State(s): Ctx, Query(q): Query<TopQuery>) -> Response {
    let dim: Dim = match q.by.parse() {
        Ok(Dim::Region) | Err(_) => return bad("by: expected device, country or host"),
        Ok(d) => d,
    };
    let n = q.n.unwrap_or(TOP_DEFAULT).clamp(1, TOP_MAX);
    if let Some(range) = q.range {
        let range = match super::series::Range::parse(&range) {
            Ok(r) => r,
            Err(e) => return bad(e),
        };
        return match super::reader::totals(&s.reader, dim, range).await {
            Ok(lines) => Json(top(&lines, n)).into_response(),
            Err(e) => e.into_response(),
        };
    }
    let stats = s.stats().await;
    Json(top(stats.by(dim), n)).into_response()
}

#[derive(Deserialize)]
pub struct ExplainQuery {
    addr: String,
    #[serde(default)]
    device: String,
    #[serde(default)]
    packet: String,
}

pub async fn explain(State(s): Ctx, Query(q): Query<ExplainQuery>) -> Response {
    let Ok(addr) = q.addr.trim().parse::<IpAddr>() else {
        return bad(format!("{:?} is not an IPv4 or IPv6 address", q.addr));
    };
    let packet = match q.packet.trim() {
        "" => None,
        p => match p.parse::<PacketKey>() {
            Ok(k) => Some(k),
            Err(e) => return bad(format!("packet: {e}")),
        },
    };
    let Some((policy, index)) = s.explainer().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "explain index unavailable").into_response();
    };
    let (device, by) = match q.device.as_str() {
        "" | "default" => (0, DeviceBy::Default),
        name => match policy.devices.iter().position(|d| d.name == name) {
            Some(i) => (i, DeviceBy::Name),
            None => return bad(format!("unknown device {name:?}")),
        },
    };
    let mut e = explain::explain(&policy, &index, addr, device, by, packet);
    e.set_hosts(crate::control::HostsAnswer {
        watching: s.hosts.is_some(),
        lookups: s
            .hosts
            .as_ref()
            .map(|h| h.who_resolved(addr))
            .unwrap_or_default(),
    });
    Json(e).into_response()
}

#[derive(Deserialize)]
pub struct LiveQuery {
    #[serde(default)]
    device: String,
    #[serde(default)]
    verdict: String,
}

/// Drops, rejects and audits as they are named, as server-sent events
/// (`drop` events with a [`Record`] each; `lagged` with how many this
/// browser missed), filtered by device and verdict when given.
pub async fn live(State(s): Ctx, Query(q): Query<LiveQuery>) -> Response {
    let verdict = match q.verdict.as_str() {
        "" => None,
        "drop" => Some(Verdict::Drop),
        "reject" => Some(Verdict::Reject),
        "audit" => Some(Verdict::Audit),
        other => {
            return bad(format!(
                "verdict: expected drop, reject or audit, found {other:?}"
            ));
        }
    };
    let rx = s.feed.subscribe();
    let device = (!q.device.is_empty()).then_some(q.device);
    Sse::new(tail(s, rx, device, verdict))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn tail(
    s: Arc<Shared>,
    rx: tokio::sync::broadcast::Receiver<Arc<Record>>,
    device: Option<String>,
    verdict: Option<Verdict>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold((s, rx), move |(s, mut rx)| {
        let device = device.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(r) => {
                        if device.as_ref().is_some_and(|d| *d != r.device)
                            || verdict.is_some_and(|v| v != r.verdict)
                        {
                            continue;
                        }
                        let Ok(data) = serde_json::to_string(&*r) else {
                            continue;
                        };
                        return Some((Ok(Event::default().event("drop").data(data)), (s, rx)));
                    }
                    Err(RecvError::Lagged(n)) => {
                        s.lagged.fetch_add(n, Ordering::Relaxed);
                        let e = Event::default().event("lagged").data(n.to_string());
                        return Some((Ok(e), (s, rx)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    })
}
