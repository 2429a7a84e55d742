//! A loopback HTTP server of the test's own that serves region data the
//! way mirrors and MaxMind do (ETag and 304, slow, endless, 404, 429, the
//! geoipupdate protocol), and counts every request and the bytes sent.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode, Uri, header},
    response::Response,
};

/// How one path answers.
#[derive(Clone, Debug)]
pub enum Route {
    /// 200 with this body and ETag; 304 (no body) when If-None-Match matches.
    File { body: Vec<u8>, etag: String },
    /// This status, no body.
    Status(u16),
    /// 200 after this long.
    Slow(Duration),
    /// 200 with a chunked body (no Content-Length) of this many bytes.
    Endless(usize),
    /// 302 to this location.
    Redirect(String),
}

/// MaxMind's update endpoint for one edition.
#[derive(Clone, Debug)]
pub struct MaxMind {
    pub edition: String,
    pub account: String,
    pub key: String,
    /// The md5 the metadata call announces.
    pub md5: String,
    pub date: String,
    /// What the download answers (a tar.gz).
    pub tarball: Vec<u8>,
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Hit {
    pub path: String,
    pub query: String,
    pub if_none_match: Option<String>,
    pub authorization: Option<String>,
    pub status: u16,
    /// Body bytes the server sent.
    pub sent: usize,
}

#[derive(Default)]
struct Inner {
    routes: HashMap<String, Route>,
    maxmind: Option<MaxMind>,
    hits: Vec<Hit>,
}

/// The running server; stops when dropped (its runtime is dropped).
pub struct Origin {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    _runtime: tokio::runtime::Runtime,
}

impl Origin {
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .fallback(serve)
            .with_state(Arc::clone(&inner));
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            inner,
            _runtime: runtime,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn route(&self, path: &str, route: Route) {
        self.inner
            .lock()
            .expect("lock")
            .routes
            .insert(path.into(), route);
    }

    pub fn maxmind(&self, m: MaxMind) {
        self.inner.lock().expect("lock").maxmind = Some(m);
    }

    /// Every request so far to `path`.
    pub fn hits(&self, path: &str) -> Vec<Hit> {
        self.inner
            .lock()
            .expect("lock")
            .hits
            .iter()
            .filter(|h| h.path == path)
            .cloned()
            .collect()
    }
}

async fn serve(State(inner): State<Arc<Mutex<Inner>>>, uri: Uri, headers: HeaderMap) -> Response {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or_default().to_string();
    let mut hit = Hit {
        path: path.clone(),
        query: query.clone(),
        if_none_match: text(header::IF_NONE_MATCH),
        authorization: text(header::AUTHORIZATION),
        status: 200,
        sent: 0,
    };
    let mut location = None;
    let (route, maxmind) = {
        let i = inner.lock().expect("lock");
        (i.routes.get(&path).cloned(), i.maxmind.clone())
    };
    let (status, body, etag): (u16, Body, Option<String>) = match (route, maxmind) {
        (Some(Route::File { body, etag }), _) => {
            if hit.if_none_match.as_deref() == Some(etag.as_str()) {
                (304, Body::empty(), Some(etag))
            } else {
                hit.sent = body.len();
                (200, Body::from(body), Some(etag))
            }
        }
        (Some(Route::Status(s)), _) => (s, Body::empty(), None),
        (Some(Route::Redirect(to)), _) => {
            location = Some(to);
            (302, Body::empty(), None)
        }
        (Some(Route::Slow(d)), _) => {
            tokio::time::sleep(d).await;
            (200, Body::from("late"), None)
        }
        (Some(Route::Endless(n)), _) => {
            hit.sent = n;
            let chunks = (0..n.div_ceil(4096)).map(|_| Ok::<_, std::io::Error>(vec![b'#'; 4096]));
            (
                200,
                Body::from_stream(futures_util::stream::iter(chunks)),
                None,
            )
        }
        (None, Some(m)) => {
            let auth = hit.authorization.clone();
            maxmind_answer(&m, &path, &query, auth.as_deref(), &mut hit)
        }
        (None, None) => (404, Body::empty(), None),
    };
    hit.status = status;
    inner.lock().expect("lock").hits.push(hit);
    let mut resp = Response::builder().status(StatusCode::from_u16(status).expect("status"));
    if let Some(e) = etag {
        resp = resp.header(header::ETAG, e);
    }
    if let Some(to) = location {
        resp = resp.header(header::LOCATION, to);
    }
    resp.body(body).expect("response")
}

fn maxmind_answer(
    m: &MaxMind,
    path: &str,
    query: &str,
    auth: Option<&str>,
    hit: &mut Hit,
) -> (u16, Body, Option<String>) {
    use base64_free::encode;
    let expected = format!("Basic {}", encode(&format!("{}:{}", m.account, m.key)));
    if auth != Some(expected.as_str()) {
        return (
            401,
            Body::from("{\"code\":\"AUTHORIZATION_INVALID\"}"),
            None,
        );
    }
    if path == "/geoip/updates/metadata" {
        if !query.contains(&format!("edition_id={}", m.edition)) {
            return (400, Body::empty(), None);
        }
        let body = format!(
            "{{\"databases\":[{{\"edition_id\":\"{}\",\"md5\":\"{}\",\"date\":\"{}\"}}]}}",
            m.edition, m.md5, m.date
        );
        hit.sent = body.len();
        return (200, Body::from(body), None);
    }
    let date: String = m.date.chars().filter(char::is_ascii_digit).collect();
    if path == format!("/geoip/databases/{}/download", m.edition)
        && query.contains(&format!("date={date}"))
        && query.contains("suffix=tar.gz")
    {
        hit.sent = m.tarball.len();
        return (200, Body::from(m.tarball.clone()), None);
    }
    (404, Body::empty(), None)
}

/// Base64 for the expected Authorization header, written here so the
/// server does not share the client's encoder.
mod base64_free {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

/// A tar.gz of `files` (path, bytes).
pub fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, *data).expect("append");
    }
    tar.into_inner().expect("tar").finish().expect("gzip")
}
