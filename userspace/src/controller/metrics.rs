//! `run --metrics`: serves the controller's Prometheus metrics over HTTP
//! (OpenMetrics text at `/metrics`) on the controller's tokio runtime.
//!
//! The listener is bound before the controller starts (a taken port or a
//! refused address fails `run` before anything is attached); serving is
//! its own task, and each scrape reads the maps on a blocking thread
//! through [`super::scrape::Scrape`], so neither the event loop nor
//! enforcement ever waits for it. A failed scrape is logged and answered
//! with what could be read (`regionwall_scrape_ok 0`).

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::registry::Registry;

use super::{
    Controller,
    scrape::{Scrape, Source},
};

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of the classic Prometheus text format.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Default number of devices with a label of their own.
pub const MAX_DEVICES_DEFAULT: usize = 64;

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "--metrics {addr}: not a loopback address; the metrics name every device of the policy, so serving them beyond this host needs --metrics-allow-remote"
    )]
    Remote { addr: SocketAddr },
    #[error("--metrics {addr}: binding: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What `run` was told about metrics.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub addr: SocketAddr,
    pub allow_remote: bool,
    pub max_devices: usize,
}

/// A bound, not yet serving, metrics listener.
pub struct Exporter {
    listener: std::net::TcpListener,
    max_devices: usize,
    /// Bound to loopback: a request must name loopback as its Host (a
    /// page in a browser here cannot read the metrics by rebinding DNS).
    loopback: bool,
}

impl Exporter {
    /// Binds `config.addr` (refusing a non-loopback address unless
    /// allowed); `None` without `--metrics`.
    pub fn bind(config: Option<Config>) -> Result<Option<Self>, MetricsError> {
        let Some(config) = config else {
            return Ok(None);
        };
        let addr = config.addr;
        if !addr.ip().is_loopback() && !config.allow_remote {
            return Err(MetricsError::Remote { addr });
        }
        let bound = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| MetricsError::Bind { addr, source })?;
        Ok(Some(Self {
            listener: bound,
            max_devices: config.max_devices,
            loopback: addr.ip().is_loopback(),
        }))
    }

    /// The address actually bound (port 0 picks one).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Starts serving `/metrics` for `ctl` on the current runtime; the
    /// task runs until aborted or the runtime ends.
    #[must_use]
    pub fn serve(self, ctl: &Controller) -> tokio::task::JoinHandle<()> {
        let source = Source {
            pins: ctl.pins().clone(),
            iface: ctl.config().iface.clone(),
            tally: Arc::clone(ctl.tally()),
            hosts: ctl.hosts().cloned(),
            max_devices: self.max_devices,
            policy: Some(ctl.watch_policy()),
            per_key: false,
            carry: Arc::clone(&ctl.carry),
            kept: ctl.kept.clone(),
            history: ctl.history.clone(),
        };
        let registry = Arc::new(registry(source));
        let addr = self.local_addr().ok();
        let listener = self.listener;
        tokio::spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    log::error!("metrics: not serving: {e}");
                    return;
                }
            };
            if let Some(addr) = addr {
                log::info!("serving metrics at http://{addr}/metrics");
            }
            let loopback = self.loopback;
            let app = Router::new().route(
                "/metrics",
                get(move |headers: HeaderMap| async move {
                    if loopback && !super::http::loopback_host(&headers) {
                        return (
                            StatusCode::FORBIDDEN,
                            "the Host header must name this host's loopback\n",
                        )
                            .into_response();
                    }
                    scrape(Arc::clone(&registry), headers).await.into_response()
                }),
            );
            let listener =
                super::http::Capped::new(listener, super::http::MAX_CONNECTIONS, super::http::IDLE);
            if let Err(e) = axum::serve(listener, app).await {
                log::error!("metrics: the server stopped: {e}");
            }
        })
    }
}

/// The registry `/metrics` serves: one collector reading `source` on every
/// scrape.
#[must_use]
pub fn registry(source: Source) -> Registry {
    let mut registry = Registry::with_prefix("regionwall");
    registry.register_collector(Box::new(Scrape(source)));
    registry
}

/// One scrape of `registry` as OpenMetrics text (reads the maps: call it
/// off the event loop).
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, registry).map(|()| body)
}

/// Encodes the registry on a blocking thread (the collector reads maps):
/// OpenMetrics when the client accepts it (Prometheus does), else the
/// classic text format (curl, `promtool check metrics`, older scrapers).
async fn scrape(registry: Arc<Registry>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let encoded = tokio::task::spawn_blocking(move || encode(&registry)).await;
    match encoded {
        Ok(Ok(body)) if openmetrics => {
            (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], body)
        }
        Ok(Ok(body)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, CLASSIC_CONTENT_TYPE)],
            classic(&body),
        ),
        Ok(Err(_)) | Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "encoding the metrics failed\n".to_string(),
        ),
    }
}

/// OpenMetrics text as the classic text format: a counter family's HELP
/// and TYPE name its samples (`x_total`, not `x`), and there are no UNIT
/// or EOF lines. The samples are the same.
#[must_use]
pub fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn classic_names_counter_families_by_their_samples() {
        let om = "# HELP a_seconds Age.\n# TYPE a_seconds gauge\n# UNIT a_seconds seconds\na_seconds 1.5\n# HELP p Packets.\n# TYPE p counter\np_total{v=\"x\"} 3\n# EOF\n";
        assert_eq!(
            super::classic(om),
            "# HELP a_seconds Age.\n# TYPE a_seconds gauge\na_seconds 1.5\n# HELP p_total Packets.\n# TYPE p_total counter\np_total{v=\"x\"} 3\n"
        );
    }
}
