//! What the dashboard tests share: the sandbox's policy (and a data update status), a controller serving the page, traffic and curl in its namespaces, history rollups and series polled, and a headless chromium driven over WebDriver (fantoccini) with the waits it needs.

use std::{
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use crate::common::{exe, pins::PinRoot, text};

use fantoccini::{Client, ClientBuilder, Locator};
use regionwall_testkit::sandbox::{Controller, Topology};

/// The dashboard inside the (unique) gateway namespace.
pub const WEB: &str = "127.0.0.1:8080";

/// A country database: AA blocked, CC allowed (documentation addresses).
pub fn setup(tag: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("rw-dashboard-{tag}-{}", std::process::id()));
    let db = dir.join("countries");
    for (cc, v4) in [("aa", "198.51.100.0/24\n"), ("cc", "203.0.113.0/24\n")] {
        let d = db.join(cc);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("ipv4-aggregated.txt"), v4).expect("write");
        std::fs::write(d.join("ipv6-aggregated.txt"), "").expect("write");
    }
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "regions_dir = {:?}\n[regions.aa]\ncountries = [\"AA\"]\n\n[devices.phone]\nip = [\"192.0.2.10\"]\n\n[[rules]]\nname = \"no-aa\"\ndevices = [\"phone\"]\nblock = [\"aa\"]\n",
            db.display().to_string()
        ),
    )
    .expect("policy");
    (dir, policy)
}

pub fn start(t: &Topology, policy: &Path, root: &PinRoot, extra: &[&str]) -> Controller {
    let mut args = vec!["--json", "--pin-root", root.arg()];
    args.extend_from_slice(extra);
    let c = Controller::start(&exe(), t, policy, &args).expect("controller");
    assert!(
        c.wait_log("serving the dashboard", Duration::from_secs(20)),
        "{}",
        c.log_text()
    );
    c
}

/// Sends `count` UDP datagrams of `size` bytes from the phone to `to`.
pub fn send(t: &Topology, to: &str, count: usize, size: usize) {
    let to: SocketAddr = to.parse().expect("socket address");
    t.phone
        .run(move || -> std::io::Result<()> {
            let sock = UdpSocket::bind("0.0.0.0:0")?;
            for _ in 0..count {
                sock.send_to(&vec![0x5a; size], to)?;
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        })
        .expect("phone thread")
        .join()
        .expect("join")
        .expect("enter the phone")
        .expect("send");
}

/// `curl -i` inside the gateway namespace: (status, headers, body).
pub fn curl(t: &Topology, args: &[&str]) -> (u16, String, String) {
    let out = t
        .gateway
        .command("curl")
        .args(["-sS", "-i", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl {args:?}: {}", text(&out));
    let all = String::from_utf8(out.stdout).expect("UTF-8");
    let (head, body) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// chromedriver inside the gateway namespace.
pub const DRIVER_PORT: u16 = 9515;

/// chromedriver in the gateway namespace, killed on drop.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where screenshots go (`target/screenshots/`).
pub fn screenshots() -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/screenshots"
    ));
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Waits until `f` answers `Some`, polling every 50 ms.
pub async fn until<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The text of the first element matching `css`, if any.
pub async fn text_of(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

/// An attribute of the first element matching `css`, if any.
pub async fn attr_of(c: &Client, css: &str, name: &str) -> Option<String> {
    c.find(Locator::Css(css))
        .await
        .ok()?
        .attr(name)
        .await
        .ok()?
}

/// Runs `browse` with a chromium session in `t`'s gateway namespace (so
/// loopback is the controller's), chromedriver started for it and ended
/// after; on a failure, prints `ctl`'s log and fails.
pub fn in_browser<F, Fut>(t: &Topology, ctl: &Controller, profile: PathBuf, browse: F)
where
    F: FnOnce(Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let driver = Driver(
        t.gateway
            .command("chromedriver")
            .arg(format!("--port={DRIVER_PORT}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (scripts/setup.sh installs chromium-driver)"),
    );
    let browsing = t
        .gateway
        .run(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                // chromedriver takes a moment to listen.
                until("chromedriver", Duration::from_secs(10), || async {
                    tokio::net::TcpStream::connect(("127.0.0.1", DRIVER_PORT))
                        .await
                        .ok()
                })
                .await;
                let mut caps = serde_json::Map::new();
                caps.insert(
                    "goog:chromeOptions".into(),
                    serde_json::json!({
                        "binary": "/usr/bin/chromium",
                        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                 "--window-size=1280,1400", format!("--user-data-dir={}", profile.display())],
                    }),
                );
                let c = ClientBuilder::new(
                    hyper_util::client::legacy::connect::HttpConnector::new(),
                )
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{DRIVER_PORT}"))
                .await
                .expect("a WebDriver session with chromium");
                browse(c.clone()).await;
                c.close().await.expect("close the browser");
            });
        })
        .expect("gateway thread")
        .join();
    drop(driver);
    match browsing {
        Ok(entered) => entered.expect("enter the gateway"),
        Err(panic) => {
            eprintln!("controller log:\n{}", ctl.log_text());
            std::panic::resume_unwind(panic);
        }
    }
}

/// Gives `policy` an `[update]` table (`dir = "data"` beside it) and
/// writes, with the real status writer, a last run that failed on one
/// source an hour after the last success; that success's unix time.
pub fn failed_update(dir: &Path, policy: &Path) -> u64 {
    use regionwall::update::status::{self, SourceStatus, Status};
    let mut text = std::fs::read_to_string(policy).expect("policy");
    text.push_str("\n[update]\ndir = \"data\"\n");
    std::fs::write(policy, text).expect("policy");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let success = now - 3 * 3600;
    let mut s = Status {
        last_attempt: Some(now - 60),
        last_success: Some(success),
        error: Some("source ripe: HTTP 404".into()),
        version: Some(4),
        ..Status::default()
    };
    s.sources.insert(
        "apnic".into(),
        SourceStatus {
            last_success: Some(now - 60),
            ..SourceStatus::default()
        },
    );
    s.sources.insert(
        "ripe".into(),
        SourceStatus {
            last_success: Some(success),
            error: Some("HTTP 404".into()),
            ..SourceStatus::default()
        },
    );
    status::write(&data, &s).expect("status file");
    success
}

/// Dropped packets in the history's rollups (0 before the file exists).
pub fn rolled_up_drops(db: &Path) -> i64 {
    rolled_up(db, "kind = 'region' AND verdict = 'drop'")
}

/// Packets in the history's rollups matching `filter` (0 before the file
/// exists).
pub fn rolled_up(db: &Path, filter: &str) -> i64 {
    regionwall::history::Store::open_read_only(db).map_or(0, |s| {
        s.conn()
            .query_row(
                &format!("SELECT coalesce(sum(packets), 0) FROM rollups WHERE {filter}"),
                [],
                |r| r.get(0),
            )
            .unwrap_or(0)
    })
}

/// Polls `/api/series?range=RANGE` until its drops add up to `drops`;
/// the answer.
pub fn series_with(t: &Topology, range: &str, drops: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, body) = curl(t, &[&format!("http://{WEB}/api/series?range={range}")]);
        assert_eq!(status, 200, "{body}");
        let s: serde_json::Value = serde_json::from_str(&body).expect("series JSON");
        let sum: u64 = s["drop_packets"]
            .as_array()
            .expect("drops")
            .iter()
            .filter_map(serde_json::Value::as_u64)
            .sum();
        if sum == drops {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{range}: {sum} drops, not {drops}: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
