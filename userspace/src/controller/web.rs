//! `run --web`: a read-only dashboard (embedded page, JSON API, live drop tail) served from the controller.
//!
//! The listener is bound before the controller starts (a refused address
//! or a taken port fails `run` before anything is attached). Serving is
//! its own task: statistics are read from the pinned maps on a blocking
//! thread (shared by every request while fresh, see [`state`]), events from
//! the controller's broadcast, explanations from the live policy. Every
//! route is GET: nothing here can change enforcement.
//!
//! Security: loopback only, unless a token file is given; then every
//! request carries the token (`Authorization: Bearer`, or the cookie a
//! `?token=` link sets). Every answer has a strict Content-Security-Policy
//! (no inline script or style: the page is plain files), `nosniff`, and
//! may not be framed. On loopback without a token, the Host header must
//! name loopback too, so a DNS-rebinding page cannot read the API.

pub mod api;
pub mod device;
pub mod reader;
pub mod ring;
pub mod series;
pub mod state;
pub mod top;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::Controller;
use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};

/// The Content-Security-Policy of every answer.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The cookie a `?token=` link sets.
const COOKIE: &str = "regionwall_token";

/// Shortest token accepted.
const TOKEN_MIN: usize = 16;

/// The page: HTML, CSS, JS and the vendored uPlot, compiled in.
#[derive(rust_embed::Embed)]
#[folder = "web/"]
struct Assets;

/// Why the dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(
        "--web {addr}: not a loopback address; the dashboard shows every device and destination, so serving it beyond this host needs --web-token-file"
    )]
    Remote { addr: SocketAddr },
    #[error("--web-token-file {}: {source}", path.display())]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--web-token-file {}: the token must be at least {TOKEN_MIN} characters of one line (e.g. `head -c 24 /dev/urandom | base64`)",
        path.display()
    )]
    WeakToken { path: PathBuf },
    #[error("--web {addr}: binding: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What `run` was told about the dashboard.
#[derive(Clone, Debug)]
pub struct Config {
    pub addr: SocketAddr,
    pub token_file: Option<PathBuf>,
}

/// A bound, not yet serving, dashboard.
pub struct Dashboard {
    listener: std::net::TcpListener,
    token: Option<String>,
    loopback: bool,
}

/// Reads the token: one line, trimmed, long enough to guess at no rate.
fn read_token(path: &Path) -> Result<String, WebError> {
    let text = std::fs::read_to_string(path).map_err(|source| WebError::Token {
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.trim();
    if token.len() < TOKEN_MIN || token.contains(char::is_whitespace) || !token.is_ascii() {
        return Err(WebError::WeakToken {
            path: path.to_path_buf(),
        });
    }
    Ok(token.to_string())
}

impl Dashboard {
    /// Reads the token and binds `config.addr` (a non-loopback address
    /// only with a token); `None` without `--web`.
    pub fn bind(config: Option<Config>) -> Result<Option<Self>, WebError> {
        let Some(config) = config else {
            return Ok(None);
        };
        let addr = config.addr;
        let token = config.token_file.as_deref().map(read_token).transpose()?;
        let loopback = addr.ip().is_loopback();
        if !loopback && token.is_none() {
            return Err(WebError::Remote { addr });
        }
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| WebError::Bind { addr, source })?;
        Ok(Some(Self {
            listener,
            token,
            loopback,
        }))
    }

    /// The address actually bound (port 0 picks one).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Starts serving for `ctl`. The tasks run until the returned one is
    /// aborted or the runtime ends.
    #[must_use]
    pub fn serve(self, ctl: &Controller) -> tokio::task::JoinHandle<()> {
        let shared = Arc::new(state::Shared::new(ctl));
        let addr = self.local_addr().ok();
        let guard = Arc::new(Guard {
            token: self.token,
            loopback_host: self.loopback,
        });
        let listener = self.listener;
        tokio::spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    log::error!("web: not serving: {e}");
                    return;
                }
            };
            if let Some(addr) = addr {
                log::info!("serving the dashboard at http://{addr}/");
            }
            let keeper = tokio::spawn(keep(Arc::clone(&shared)));
            let listener =
                super::http::Capped::new(listener, super::http::MAX_CONNECTIONS, super::http::IDLE);
            if let Err(e) = axum::serve(listener, router(&shared, guard)).await {
                log::error!("web: the server stopped: {e}");
            }
            keeper.abort();
        })
    }
}

/// Keeps the per-minute ring filled while nobody looks (a snapshot every
/// 10 s) and remembers recent events for the device pages.
async fn keep(shared: Arc<state::Shared>) {
    let mut rx = shared.feed.subscribe();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => { shared.stats().await; }
            r = rx.recv() => match r {
                Ok(record) => shared.remember(record),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// The router: the API, the page, and the guard around every route.
pub fn router(shared: &Arc<state::Shared>, guard: Arc<Guard>) -> Router {
    Router::new()
        .route("/api/status", get(api::status))
        .route("/api/top", get(api::top_view))
        .route("/api/device", get(device::device))
        .route("/api/explain", get(api::explain))
        .route("/api/live", get(api::live))
        .fallback(asset)
        .with_state(Arc::clone(shared))
        .merge(reader::routes().with_state(Arc::clone(&shared.reader)))
        .layer(middleware::from_fn_with_state(guard, guarded))
}

/// Who may ask.
#[derive(Debug)]
pub struct Guard {
    pub token: Option<String>,
    /// Require a loopback Host header (bound to loopback without token).
    pub loopback_host: bool,
}

/// Equal without an early exit on the first differing byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token a request carries: bearer header, cookie, or `?token=`.
fn presented(headers: &HeaderMap, uri: &Uri) -> (Option<String>, bool) {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    if bearer.is_some() {
        return (bearer, false);
    }
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .map(str::to_string);
    if cookie.is_some() {
        return (cookie, false);
    }
    let query = uri
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("token="))
        .map(str::to_string);
    let from_query = query.is_some();
    (query, from_query)
}

/// GET only, the token checked, the security headers on every answer.
async fn guarded(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let mut res = check(&guard, req, next).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

async fn check(guard: &Guard, req: Request, next: Next) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "the dashboard is read-only\n",
        )
            .into_response();
    }
    if guard.loopback_host && guard.token.is_none() && !super::http::loopback_host(req.headers()) {
        return (StatusCode::FORBIDDEN, "Host must be a loopback name\n").into_response();
    }
    let Some(token) = &guard.token else {
        return next.run(req).await;
    };
    let (given, from_query) = presented(req.headers(), req.uri());
    if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a valid token is required (Authorization: Bearer, or open the link with ?token=)\n",
        )
            .into_response();
    }
    if from_query {
        // Trade the token in the address for a cookie, and drop it from
        // the address bar (and from history) with a redirect.
        let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
        let path = req.uri().path().to_string();
        return (
            StatusCode::SEE_OTHER,
            [(header::SET_COOKIE, cookie), (header::LOCATION, path)],
        )
            .into_response();
    }
    next.run(req).await
}

/// The content type of an embedded file.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "text/plain; charset=utf-8",
    }
}

/// An embedded file (`/` is the overview, `/device` a device's page).
async fn asset(uri: Uri) -> Response {
    let path = match uri.path() {
        "/" => "index.html",
        "/device" => "device.html",
        p => p.trim_start_matches('/'),
    };
    match Assets::get(path) {
        Some(file) => (
            [
                (header::CONTENT_TYPE, content_type(path)),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            file.data,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, Uri, header};

    #[test]
    fn tokens_come_from_bearer_cookie_or_query() {
        let mut h = HeaderMap::new();
        let uri: Uri = "/api/status?x=1&token=abc".parse().expect("uri");
        assert_eq!(super::presented(&h, &uri), (Some("abc".into()), true));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; regionwall_token=ck"),
        );
        assert_eq!(super::presented(&h, &uri), (Some("ck".into()), false));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer br"));
        assert_eq!(super::presented(&h, &uri), (Some("br".into()), false));
    }

    #[test]
    fn only_loopback_hosts_pass_the_rebinding_check() {
        let host = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static(v));
            crate::controller::http::loopback_host(&h)
        };
        assert!(host("127.0.0.1:8080"));
        assert!(host("localhost:8080"));
        assert!(host("[::1]:8080"));
        assert!(!host("evil.example:8080"));
        assert!(!host("192.0.2.1"));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(super::same(b"abcdef", b"abcdef"));
        assert!(!super::same(b"abcdef", b"abcdeg"));
        assert!(!super::same(b"abc", b"abcdef"));
    }
}
