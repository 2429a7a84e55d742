//! The dashboard's API latency on a 30-day history: a database built by the writer's own code, each history endpoint the page uses timed over real HTTP, against the 24-hour series.
//!
//! The database: [`DEVICES`] devices, each sending to 3 regions, 8 of
//! [`COUNTRIES`] countries and [`HOSTS`] hosts (a third of them active in
//! any minute). The last 48 hours are one counter snapshot a minute, the
//! 28 days before one an hour (what compaction leaves of minutes), all
//! through `Store::record_counters` and the retention pass. Answers are
//! not shared between requests here (the dashboard shares each for 10 or
//! 60 s): every request runs its query.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use regionwall::{
    controller::web::reader::{self, Reader},
    history::{
        self, Store,
        store::{Counted, Kind, Origin},
    },
};
use serde::Serialize;

const DEVICES: u64 = 40;
const COUNTRIES: u64 = 25;
const HOSTS: u64 = 30;
/// Requests per endpoint.
const REPEAT: usize = 40;

#[derive(Serialize, Default)]
pub struct Endpoint {
    pub path: String,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// p50 over the 24-hour series' p50.
    pub ratio: f64,
}

#[derive(Serialize, Default)]
pub struct DashboardResult {
    pub devices: u64,
    pub countries: u64,
    pub hosts: u64,
    pub minute_rows: u64,
    pub hourly_rows: u64,
    pub db_mib: f64,
    pub build_s: f64,
    pub endpoints: Vec<Endpoint>,
}

/// The cumulative counters after `minutes` minutes (each host grows in
/// a third of them).
fn rows(minutes: u64) -> Vec<Counted> {
    let mut out = Vec::new();
    for d in 0..DEVICES {
        let device = format!("device{d:02}");
        let mut row = |kind, key: String, verdict: &str, rate: u64, active: u64| {
            out.push(Counted {
                kind,
                device: device.clone(),
                key,
                verdict: verdict.into(),
                packets: active * rate,
                bytes: active * rate * 700,
            });
        };
        for (r, verdict) in [(0, "pass"), (1, "pass"), (2, "drop")] {
            row(Kind::Region, format!("region{r}"), verdict, 5 + r, minutes);
        }
        for c in 0..8 {
            let cc = (d * 3 + c) % COUNTRIES;
            let verdict = if c == 7 { "drop" } else { "pass" };
            row(Kind::Country, format!("C{cc:02}"), verdict, 1 + c, minutes);
        }
        for h in 0..HOSTS {
            // Host h grows in a third of the minutes (its own third).
            let active = (minutes + (h + d) % 3) / 3;
            row(
                Kind::Host,
                format!("h{h}.d{d}.example"),
                "pass",
                1 + h % 7,
                active,
            );
        }
    }
    out
}

/// Builds the 30-day history in `dir`.
fn build(dir: &Path) -> anyhow::Result<(Store, f64)> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut store = Store::open(&dir.join(history::FILE))?;
    let now = SystemTime::now();
    let started = Instant::now();
    let mut tick = 0;
    let mut elapsed = 0;
    let mut origin = Origin::Zero;
    // 28 days of hours (older than the 48 hours minutes are kept), then
    // two days of minutes.
    let hours = (2..30 * 24).rev().map(|h| (h * 3600, 60));
    let minutes = (1..=48 * 60).rev().map(|m| (m * 60, 1));
    for (age, per) in hours.chain(minutes) {
        tick += 1;
        elapsed += per;
        let at = now - Duration::from_secs(age);
        store.record_counters(at, &rows(elapsed), origin)?;
        origin = Origin::Continued;
        if tick % 600 == 0 {
            store.compact(at)?;
        }
    }
    store.enforce_retention(now, Duration::from_hours(30 * 24), 4 << 30)?;
    Ok((store, started.elapsed().as_secs_f64()))
}

/// A keep-alive HTTP/1.1 client of one connection.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(Self {
            writer: s.try_clone()?,
            reader: BufReader::new(s),
        })
    }

    /// GETs `path`; the status and the body's length.
    fn get(&mut self, path: &str) -> anyhow::Result<(u16, usize)> {
        write!(
            self.writer,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no status")?;
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse()?;
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, length))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a few dozen samples"
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn run(dir: &Path) -> anyhow::Result<DashboardResult> {
    let (store, build_s) = build(dir)?;
    let count = |table: &str| -> anyhow::Result<u64> {
        let n: i64 = store
            .conn()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
        Ok(u64::try_from(n)?)
    };
    #[expect(clippy::cast_precision_loss, reason = "a size in MiB")]
    let mut result = DashboardResult {
        devices: DEVICES,
        countries: COUNTRIES,
        hosts: HOSTS,
        minute_rows: count("rollups")?,
        hourly_rows: count("rollups_hourly")?,
        db_mib: store.size()? as f64 / f64::from(1 << 20),
        build_s,
        endpoints: Vec::new(),
    };
    let path = store.path().to_path_buf();
    drop(store);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || {
        rt.block_on(async move {
            let app = reader::router(Arc::new(Reader::unshared(Some(path))));
            let _ = axum::serve(listener, app).await;
        });
    });
    let mut client = Client::connect(addr)?;
    let paths = [
        "/api/series?range=24h",
        "/api/series?range=7d",
        "/api/series?range=30d",
        "/api/device/series?name=device07&by=country&range=24h",
        "/api/device/series?name=device07&by=host&range=24h",
        "/api/device/series?name=device07&by=country&range=30d",
        "/api/device/series?name=device07&by=host&range=30d",
        "/api/top?by=device&range=7d",
        "/api/top?by=country&range=30d",
        "/api/top?by=host&range=30d",
    ];
    let mut base = 0.0;
    for path in paths {
        let mut times = Vec::with_capacity(REPEAT);
        for _ in 0..REPEAT {
            let started = Instant::now();
            let (status, len) = client.get(path)?;
            times.push(started.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(status == 200 && len > 2, "{path}: {status}");
        }
        times.sort_by(f64::total_cmp);
        let p50 = percentile(&times, 0.5);
        if base == 0.0 {
            base = p50;
        }
        result.endpoints.push(Endpoint {
            path: path.into(),
            p50_ms: p50,
            p99_ms: percentile(&times, 0.99),
            ratio: p50 / base,
        });
    }
    drop(client);
    // The server thread ends with the process.
    drop(server);
    eprintln!(
        "bench: dashboard: 30-day history of {DEVICES} devices ({} minute rows, {} hourly rows, {:.1} MiB) built in {:.0} s",
        result.minute_rows, result.hourly_rows, result.db_mib, result.build_s
    );
    for e in &result.endpoints {
        eprintln!(
            "bench: dashboard: {:<58} p50 {:>7.2} ms  p99 {:>7.2} ms  ×{:.1}",
            e.path, e.p50_ms, e.p99_ms, e.ratio
        );
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(result)
}
