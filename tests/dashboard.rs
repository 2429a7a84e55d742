//! `run --web`, with the real controller in sandbox namespaces and real
//! traffic: a headless chromium (driven over WebDriver by fantoccini, in
//! the gateway namespace so loopback is the controller's) shows the
//! device, the country and the drop count, a new drop reaches the live
//! tail within a second, and the explain form answers; screenshots go to
//! target/screenshots/. Without a browser: the security headers, GET
//! only, a non-loopback address refused without a token, and the token
//! checked on every request.

mod common;
#[path = "common/web.rs"]
mod web;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use common::{pins::PinRoot, regionwall, text};
use fantoccini::{Client, Locator};
use regionwall_testkit::sandbox::Topology;
use web::{
    WEB, curl, failed_update, rolled_up, rolled_up_drops, screenshots, send, series_with, setup,
    start, text_of, until,
};

/// Mean and worst wall time of `n` GETs of `url` (one curl, keep-alive).
fn latency(t: &Topology, url: &str, n: usize) -> (f64, f64) {
    let times = common::curl_times(t, url, n);
    #[expect(clippy::cast_precision_loss, reason = "a few requests")]
    let mean = times.iter().sum::<f64>() / n as f64;
    (mean, times.iter().copied().fold(0.0, f64::max))
}

#[test]
fn headers_are_strict_and_only_get_is_served() {
    let t = Topology::create("web-hdr").expect("namespaces");
    let (dir, policy) = setup("hdr");
    let success = failed_update(&dir, &policy);
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
    // The data update's status file, as `regionwall update` wrote it.
    let u = &s["update"];
    assert_eq!(u["ok"], false, "{s}");
    assert_eq!(u["last_success"], success, "{s}");
    assert_eq!(u["version"], 4, "{s}");
    assert_eq!(u["error"], "source ripe: HTTP 404", "{s}");
    assert_eq!(
        u["sources"],
        serde_json::json!([
            {"name": "apnic", "last_success": success + 3 * 3600 - 60, "error": null},
            {"name": "ripe", "last_success": success, "error": "HTTP 404"},
        ]),
        "{s}"
    );
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

async fn browse(c: Client, phone: String) {
    let c = &c;
    overview(c).await;
    live_tail(c, &phone).await;
    explain_form(c).await;
    tail_controls(c, &phone).await;
    device_page(c).await;
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
    // The data update: failed, its last success 3 hours back, the source.
    let update = text_of(c, "#update").await.unwrap_or_default();
    assert!(
        update.contains("data update failed, last success 3 h ago (version 4)"),
        "{update}"
    );
    let ripe = text_of(c, "#update-errors li[data-source='ripe']").await;
    assert_eq!(ripe.as_deref(), Some("ripe: HTTP 404"));
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
    failed_update(&dir, &policy);
    let root = PinRoot::new();
    let ctl = start(&t, &policy, &root, &["--web", WEB]);
    send(&t, "198.51.100.10:9", 5, 100);
    send(&t, "203.0.113.10:9", 7, 200);

    let phone = t.phone.name().to_string();
    web::in_browser(&t, &ctl, dir.join("chromium"), move |c| browse(c, phone));
    assert!(!ctl.log_text().contains("web:"), "{}", ctl.log_text());
    let _ = std::fs::remove_dir_all(dir);
}

/// Waits until `css`'s attribute `name` satisfies `ok`; its value.
async fn attr_until(c: &Client, css: &str, name: &str, ok: impl Fn(&str) -> bool) -> String {
    until(
        &format!("{css} [{name}]"),
        Duration::from_secs(15),
        || async { web::attr_of(c, css, name).await.filter(|v| ok(v)) },
    )
    .await
}

/// After the restart: the 24 h chart from the history, 7 d from the
/// rollups (the top lists too), the device's charts by country and host.
async fn history_pages(c: Client) {
    let c = &c;
    c.goto(&format!("http://{WEB}/")).await.expect("overview");
    attr_until(c, "#chart", "data-source", |v| v == "history").await;
    attr_until(c, "#chart", "data-drops", |v| v == "5").await;
    until("the 24 h chart", Duration::from_secs(10), || async {
        c.find(Locator::Css("#chart canvas")).await.ok()
    })
    .await;
    c.find(Locator::Css("#ranges button[data-range='7d']"))
        .await
        .expect("7 d button")
        .click()
        .await
        .expect("click");
    attr_until(c, "#chart", "data-range", |v| v == "7d").await;
    assert_eq!(
        attr_until(c, "#chart", "data-drops", |v| v == "5").await,
        "5"
    );
    assert_eq!(
        web::attr_of(c, "#chart", "data-source").await.as_deref(),
        Some("history")
    );
    c.find(Locator::Css("#chart canvas"))
        .await
        .expect("the 7 d chart drew");
    let aa = "#top-country table.blocked tr[data-name='AA'] td:nth-child(2)";
    until("the 7 d country list", Duration::from_secs(10), || async {
        text_of(c, aa).await.filter(|t| t == "5")
    })
    .await;
    std::fs::write(
        screenshots().join("dashboard-7d.png"),
        c.screenshot().await.expect("screenshot"),
    )
    .expect("save");

    c.goto(&format!("http://{WEB}/device?name=phone"))
        .await
        .expect("device page");
    let countries = attr_until(c, "#dev-chart-country", "data-lines", |v| !v.is_empty()).await;
    let names: Vec<&str> = countries.split(',').collect();
    assert_eq!(
        names,
        ["CC", "AA"],
        "by bytes: 7 × 200 to CC, 5 × 100 to AA"
    );
    c.find(Locator::Css("#dev-chart-country canvas"))
        .await
        .expect("the country chart drew");
    let legend = text_of(c, "#dev-chart-country .u-legend")
        .await
        .unwrap_or_default();
    assert!(legend.contains("AA") && legend.contains("CC"), "{legend}");
    let hosts = attr_until(c, "#dev-chart-host", "data-lines", |v| !v.is_empty()).await;
    assert!(
        hosts.contains("198.51.100.10") && hosts.contains("203.0.113.10"),
        "{hosts}"
    );
    std::fs::write(
        screenshots().join("device-history.png"),
        c.screenshot().await.expect("screenshot"),
    )
    .expect("save");
}

#[test]
fn a_restart_keeps_the_chart_and_the_device_page_charts_countries() {
    let t = Topology::create("web-rst").expect("namespaces");
    let (dir, policy) = setup("restart");
    let root = PinRoot::new();
    let state = dir.join("state");
    let state = state.to_str().expect("UTF-8");
    let args = [
        "--web",
        WEB,
        "--state-dir",
        state,
        "--history-interval",
        "1s",
    ];
    let first = start(&t, &policy, &root, &args);
    send(&t, "198.51.100.10:9", 5, 100);
    send(&t, "203.0.113.10:9", 7, 200);
    // Wait until the rollups hold the drops (the page shares a 7 d
    // answer for a minute: ask it only then).
    let db = dir.join("state").join(regionwall::history::FILE);
    let deadline = Instant::now() + Duration::from_secs(30);
    // The passed datagrams to CC too: the device chart ranks CC first.
    while rolled_up_drops(&db) != 5
        || rolled_up(&db, "kind = 'country' AND key = 'CC' AND verdict = 'pass'") < 7
    {
        assert!(Instant::now() < deadline, "{}", first.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    first.stop().expect("the first controller stops");

    let second = start(&t, &policy, &root, &args);
    let s = series_with(&t, "24h", 5);
    assert_eq!(s["source"], "history", "{s}");
    assert_eq!(s["step"], 60, "{s}");
    // The device page's recent drops come from the history's events: the
    // new controller's memory tail is empty, the five drops are listed.
    let (status, _, body) = curl(&t, &[&format!("http://{WEB}/api/device?name=phone")]);
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).expect("device JSON");
    let drops = page["drops"].as_array().expect("drops");
    assert_eq!(drops.len(), 5, "{page}");
    for d in drops {
        assert_eq!(
            (&d["device"], &d["verdict"], &d["dst_ip"], &d["country"]),
            (
                &serde_json::json!("phone"),
                &serde_json::json!("drop"),
                &serde_json::json!("198.51.100.10"),
                &serde_json::json!("AA")
            ),
            "{d}"
        );
    }
    let times: Vec<&str> = drops
        .iter()
        .map(|d| d["timestamp"].as_str().expect("timestamp"))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    web::in_browser(&t, &second, dir.join("chromium"), history_pages);
    // A drop after the restart is listed first, from the memory tail or the history.
    one_datagram(t.phone.name(), "198.51.100.11:9");
    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        let (_, _, body) = curl(&t, &[&format!("http://{WEB}/api/device?name=phone")]);
        let page: serde_json::Value = serde_json::from_str(&body).expect("device JSON");
        if page["drops"][0]["dst_ip"] == "198.51.100.11" || Instant::now() > deadline {
            break page;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(page["drops"][0]["dst_ip"], "198.51.100.11", "{page}");
    assert_eq!(page["drops"].as_array().map(Vec::len), Some(6), "{page}");
    assert!(!second.log_text().contains("web:"), "{}", second.log_text());
    let _ = std::fs::remove_dir_all(dir);
}
