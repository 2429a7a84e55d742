//! `run --web`, with the real controller in sandbox namespaces and real
//! traffic: a headless chromium (driven over WebDriver by fantoccini, in
//! the gateway namespace so loopback is the controller's) shows the
//! device, the country and the drop count, a new drop reaches the live
//! tail within a second, and the explain form answers; screenshots go to
//! target/screenshots/. Without a browser: the security headers, GET
//! only, a non-loopback address refused without a token, and the token
//! checked on every request.

mod common;

use std::{
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use common::{exe, pins::PinRoot, regionwall, text};
use fantoccini::{Client, ClientBuilder, Locator};
use regionwall_testkit::sandbox::{Controller, Topology};

/// The dashboard inside the (unique) gateway namespace.
const WEB: &str = "127.0.0.1:8080";
/// chromedriver inside the same namespace.
const DRIVER_PORT: u16 = 9515;

/// A country database: AA blocked, CC allowed (documentation addresses).
fn setup(tag: &str) -> (PathBuf, PathBuf) {
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

fn start(t: &Topology, policy: &Path, root: &PinRoot, extra: &[&str]) -> Controller {
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
fn send(t: &Topology, to: &str, count: usize, size: usize) {
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
fn curl(t: &Topology, args: &[&str]) -> (u16, String, String) {
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

/// Mean and worst wall time of `n` GETs of `url` (one curl, keep-alive).
fn latency(t: &Topology, url: &str, n: usize) -> (f64, f64) {
    let times = common::curl_times(t, url, n);
    #[expect(clippy::cast_precision_loss, reason = "a few requests")]
    let mean = times.iter().sum::<f64>() / n as f64;
    (mean, times.iter().copied().fold(0.0, f64::max))
}

#[test]
fn headers_are_strict_only_get_is_served_and_answers_are_fast() {
    let t = Topology::create("web-hdr").expect("namespaces");
    let (dir, policy) = setup("hdr");
    let root = PinRoot::new();
    let _c = start(&t, &policy, &root, &["--web", WEB]);
    send(&t, "198.51.100.10:9", 3, 100);

    let (status, head, body) = curl(&t, &[&format!("http://{WEB}/")]);
    assert_eq!(status, 200);
    assert!(
        head.contains("content-security-policy: default-src 'self'"),
        "{head}"
    );
    assert!(!head.contains("unsafe-inline"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(body.contains("<script src=\"/app.js\""), "{body}");
    assert!(!body.contains("<script>"), "no inline script");
    let (status, head, _) = curl(
        &t,
        &[&format!("http://{WEB}/vendor/uplot/uPlot.iife.min.js")],
    );
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/javascript"), "{head}");

    for method in ["POST", "PUT", "DELETE"] {
        let (status, head, _) = curl(&t, &["-X", method, &format!("http://{WEB}/api/status")]);
        assert_eq!(status, 405, "{method}");
        assert!(head.contains("allow: get, head"), "{head}");
    }
    // A DNS-rebinding page would send its own name as Host.
    let (status, ..) = curl(
        &t,
        &[
            "-H",
            "Host: evil.example",
            &format!("http://{WEB}/api/status"),
        ],
    );
    assert_eq!(status, 403);

    let (status, _, body) = curl(&t, &[&format!("http://{WEB}/api/status")]);
    assert_eq!(status, 200);
    let s: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    assert_eq!(s["mode"], "enforcing", "{s}");
    assert_eq!(s["hooks"]["xdp"], true, "{s}");
    assert!(s["epoch"].as_u64() >= Some(1), "{s}");
    // Snapshots are shared for a second: the drops show within one.
    let deadline = Instant::now() + Duration::from_secs(5);
    let top = loop {
        let (_, _, body) = curl(&t, &[&format!("http://{WEB}/api/top?by=device")]);
        let top: serde_json::Value = serde_json::from_str(&body).expect("top JSON");
        if top["blocked"][0]["packets"] == 3 || Instant::now() > deadline {
            break top;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(top["blocked"][0]["name"], "phone", "{top}");
    assert_eq!(top["blocked"][0]["packets"], 3, "{top}");
    let (status, ..) = curl(&t, &[&format!("http://{WEB}/api/top?by=region")]);
    assert_eq!(status, 400);

    for path in [
        "/api/status",
        "/api/top?by=host",
        "/api/series",
        "/api/device?name=phone",
    ] {
        let (mean, worst) = latency(&t, &format!("http://{WEB}{path}"), 50);
        eprintln!(
            "latency {path}: mean {:.2} ms, worst {:.2} ms",
            mean * 1e3,
            worst * 1e3
        );
        assert!(worst < 0.5, "{path}: {worst} s");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_non_loopback_address_needs_a_token_and_every_request_carries_it() {
    let (dir, policy) = setup("token");
    let unique = regionwall_testkit::netns::unique_name("web-refused");
    let socket = std::env::temp_dir().join(format!("{unique}.sock"));
    let pin_root = format!("/sys/fs/bpf/{unique}");
    let out = regionwall(&[
        "run",
        "--iface",
        "lo",
        "--policy",
        policy.to_str().expect("UTF-8"),
        "--no-wait",
        "--web",
        "192.0.2.1:8080",
        "--socket",
        socket.to_str().expect("UTF-8"),
        "--pin-root",
        &pin_root,
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--web-token-file"), "{}", text(&out));
    assert!(!socket.exists(), "the control socket is removed again");
    assert!(!Path::new(&pin_root).exists(), "nothing was pinned");

    let t = Topology::create("web-token").expect("namespaces");
    let token = "s3cret-token-0123456789";
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).expect("token");
    let root = PinRoot::new();
    let _c = start(
        &t,
        &policy,
        &root,
        &[
            "--web",
            "192.0.2.1:8080",
            "--web-token-file",
            token_file.to_str().expect("UTF-8"),
        ],
    );
    let url = "http://192.0.2.1:8080/api/status";
    let (status, head, _) = curl(&t, &[url]);
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    assert!(head.contains("content-security-policy"), "{head}");
    let (status, ..) = curl(
        &t,
        &["-H", "Authorization: Bearer wrong-token-0123456789", url],
    );
    assert_eq!(status, 401);
    let (status, ..) = curl(&t, &[&format!("{url}?token=wrong")]);
    assert_eq!(status, 401);
    let (status, ..) = curl(&t, &["-H", &format!("Authorization: Bearer {token}"), url]);
    assert_eq!(status, 200);
    // The link with the token trades it for a cookie.
    let (status, head, _) = curl(&t, &[&format!("http://192.0.2.1:8080/?token={token}")]);
    assert_eq!(status, 303);
    assert!(
        head.contains(&format!("set-cookie: regionwall_token={token}")),
        "{head}"
    );
    assert!(
        head.contains("httponly") && head.contains("samesite=strict"),
        "{head}"
    );
    let (status, ..) = curl(
        &t,
        &["-H", &format!("Cookie: regionwall_token={token}"), url],
    );
    assert_eq!(status, 200);
    // Even with the token, nothing but GET.
    let (status, ..) = curl(
        &t,
        &[
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {token}"),
            url,
        ],
    );
    assert_eq!(status, 405);
    let _ = std::fs::remove_dir_all(dir);
}

/// chromedriver in the gateway namespace, killed on drop.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/screenshots"
    ));
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Waits until `f` answers `Some`, polling every 50 ms.
async fn until<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
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
async fn text_of(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

/// Sends one UDP datagram from the phone (by namespace name: this runs on
/// the browser's thread, inside the gateway namespace).
fn one_datagram(phone: &str, to: &str) {
    let (addr, port) = to.split_once(':').expect("addr:port");
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{phone}"))
        .args(["bash", "-c", &format!("echo drop > /dev/udp/{addr}/{port}")])
        .output()
        .expect("nsenter");
    assert!(out.status.success(), "{}", text(&out));
}

async fn browse(phone: String, profile: PathBuf) {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1400", format!("--user-data-dir={}", profile.display())],
        }),
    );
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{DRIVER_PORT}"))
        .await
        .expect("a WebDriver session with chromium");
    overview(&c).await;
    live_tail(&c, &phone).await;
    explain_form(&c).await;
    tail_controls(&c, &phone).await;
    device_page(&c).await;
    c.close().await.expect("close the browser");
}

/// The overview: device, country and host counts, status, chart, tail.
async fn overview(c: &Client) {
    c.goto(&format!("http://{WEB}/"))
        .await
        .expect("open the dashboard");
    // The device and the country with the right drop counts.
    let phone_blocked = "#top-device table.blocked tr[data-name='phone'] td:nth-child(2)";
    let drops = until("the phone's drops", Duration::from_secs(10), || async {
        text_of(c, phone_blocked).await.filter(|t| t == "5")
    })
    .await;
    assert_eq!(drops, "5");
    let aa = text_of(
        c,
        "#top-country table.blocked tr[data-name='AA'] td:nth-child(2)",
    )
    .await;
    assert_eq!(aa.as_deref(), Some("5"));
    let cc = text_of(
        c,
        "#top-country table.allowed tr[data-name='CC'] td:nth-child(2)",
    )
    .await;
    assert_eq!(cc.as_deref(), Some("7"));
    let host = text_of(
        c,
        "#top-host table.blocked tr[data-name='198.51.100.10 (unresolved)'] td:nth-child(2)",
    )
    .await;
    assert_eq!(host.as_deref(), Some("5"));
    let status = text_of(c, "#status").await.unwrap_or_default();
    assert!(
        status.contains("enforcing") && status.contains("xdp attached"),
        "{status}"
    );
    // The chart drew (uPlot makes a canvas): the script ran under the CSP.
    until("the chart", Duration::from_secs(10), || async {
        c.find(Locator::Css("#chart canvas")).await.ok()
    })
    .await;
    until("the live tail", Duration::from_secs(10), || async {
        text_of(c, "#tail-state").await.filter(|t| t == "live")
    })
    .await;
}

/// A new drop reaches the live tail within a second.
async fn live_tail(c: &Client, phone: &str) {
    // A new drop reaches the live tail within a second.
    let sent = Instant::now();
    one_datagram(phone, "198.51.100.12:9");
    let seen = until(
        "the new drop in the tail",
        Duration::from_secs(5),
        || async {
            text_of(c, "#tail tr:first-child")
                .await
                .filter(|t| t.contains("198.51.100.12"))
                .map(|_| sent.elapsed())
        },
    )
    .await;
    eprintln!("live tail: the drop showed after {seen:?}");
    assert!(seen < Duration::from_secs(1), "{seen:?}");
    let row = text_of(c, "#tail tr:first-child").await.unwrap_or_default();
    assert!(
        row.contains("phone") && row.contains("drop") && row.contains("AA"),
        "{row}"
    );
}

/// The explain form answers with the live policy; the overview's screenshot.
async fn explain_form(c: &Client) {
    let shots = screenshots();
    // The explain form answers with the live policy.
    c.find(Locator::Css("#explain-addr"))
        .await
        .expect("address field")
        .send_keys("198.51.100.7")
        .await
        .expect("type");
    c.find(Locator::Css("#explain-device option[value='phone']"))
        .await
        .expect("phone in the device list")
        .click()
        .await
        .expect("choose");
    c.find(Locator::Css("#explain button[type='submit']"))
        .await
        .expect("button")
        .click()
        .await
        .expect("submit");
    let answer = until("the explanation", Duration::from_secs(10), || async {
        text_of(c, "#explain-out")
            .await
            .filter(|t| t.contains("DROP"))
    })
    .await;
    assert!(
        answer.contains("rule: no-aa") && answer.contains("country: AA"),
        "{answer}"
    );
    std::fs::write(
        shots.join("dashboard.png"),
        c.screenshot().await.expect("screenshot"),
    )
    .expect("save");
}

/// Pausing closes the stream; resuming and the filters reconnect it.
async fn tail_controls(c: &Client, phone: &str) {
    // Pausing closes the stream; resuming and the filters reconnect it.
    let click = |css: &'static str| {
        let c = c.clone();
        async move {
            c.find(Locator::Css(css))
                .await
                .expect(css)
                .click()
                .await
                .expect(css);
        }
    };
    click("#tail-pause").await;
    assert_eq!(text_of(c, "#tail-state").await.as_deref(), Some("paused"));
    click("#tail-pause").await;
    click("#tail-verdict option[value='audit']").await;
    let live = || async { text_of(c, "#tail-state").await.filter(|t| t == "live") };
    until("the audit-only tail", Duration::from_secs(5), live).await;
    one_datagram(phone, "198.51.100.13:9");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let first = text_of(c, "#tail tr:first-child").await.unwrap_or_default();
    assert!(
        !first.contains("198.51.100.13"),
        "a drop passed the audit filter: {first}"
    );
    click("#tail-device option[value='phone']").await;
    click("#tail-verdict option[value='drop']").await;
    until("the phone's drop tail", Duration::from_secs(5), live).await;
    one_datagram(phone, "198.51.100.14:9");
    until("the filtered drop", Duration::from_secs(2), || async {
        text_of(c, "#tail tr:first-child")
            .await
            .filter(|t| t.contains("198.51.100.14"))
    })
    .await;
}

/// The device's page: bytes by country and host, the rules that apply,
/// its recent drops.
async fn device_page(c: &Client) {
    let shots = screenshots();
    // The device's page: bytes by country and host, its recent drops.
    c.goto(&format!("http://{WEB}/device?name=phone"))
        .await
        .expect("device page");
    let blocked = until("the device's totals", Duration::from_secs(10), || async {
        text_of(c, "#device-blocked")
            .await
            .filter(|t| t.contains("8 packets"))
    })
    .await;
    assert!(blocked.contains("blocked"), "{blocked}");
    let aa = text_of(
        c,
        "#dev-country table.blocked tr[data-name='AA'] td:nth-child(2)",
    )
    .await;
    assert_eq!(aa.as_deref(), Some("8"));
    let drops = c
        .find_all(Locator::Css("#dev-drops tr"))
        .await
        .expect("rows");
    assert!(!drops.is_empty(), "recent drops listed");
    let rule = text_of(c, "#dev-rules tr td:nth-child(1)").await;
    assert_eq!(rule.as_deref(), Some("no-aa"), "the rule that applies");
    let blocks = text_of(c, "#dev-rules tr td:nth-child(4)").await;
    assert_eq!(blocks.as_deref(), Some("aa"));
    std::fs::write(
        shots.join("device.png"),
        c.screenshot().await.expect("screenshot"),
    )
    .expect("save");
}

#[test]
fn a_browser_shows_traffic_live_drops_and_explanations() {
    let t = Topology::create("web-ui").expect("namespaces");
    let (dir, policy) = setup("ui");
    let root = PinRoot::new();
    let ctl = start(&t, &policy, &root, &["--web", WEB]);
    send(&t, "198.51.100.10:9", 5, 100);
    send(&t, "203.0.113.10:9", 7, 200);

    let driver = Driver(
        t.gateway
            .command("chromedriver")
            .arg(format!("--port={DRIVER_PORT}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (scripts/setup.sh installs chromium-driver)"),
    );
    let phone = t.phone.name().to_string();
    let profile = dir.join("chromium");
    let browsing = t
        .gateway
        .run(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            // chromedriver takes a moment to listen.
            rt.block_on(async {
                until("chromedriver", Duration::from_secs(10), || async {
                    tokio::net::TcpStream::connect(("127.0.0.1", DRIVER_PORT))
                        .await
                        .ok()
                })
                .await;
                browse(phone, profile).await;
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
    assert!(!ctl.log_text().contains("web:"), "{}", ctl.log_text());
    let _ = std::fs::remove_dir_all(dir);
}
