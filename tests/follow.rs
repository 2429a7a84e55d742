//! `regionwall events` follows a controller through a restart: when the
//! stream closes it reconnects on the same socket, replays from the
//! history what was recorded in between, and shows every drop once.

mod common;

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{exe, pins::PinRoot};
use regionwall_testkit::{
    sandbox::{Controller, GATEWAY_LAN, Topology},
    traffic::udp_burst,
};

const BLOCKED: &str = "198.51.100.10:9";

fn start(
    t: &Topology,
    policy: &std::path::Path,
    root: &PinRoot,
    state: &str,
    socket: &str,
) -> Controller {
    Controller::start(
        &exe(),
        t,
        policy,
        &[
            "--pin-root",
            root.arg(),
            "--socket",
            socket,
            "--state-dir",
            state,
            "--history-interval",
            "1s",
            "--event-rate",
            "0",
        ],
    )
    .expect("controller")
}

/// Lines the client printed, waiting up to `wait` for `n` in all.
fn lines(rx: &mpsc::Receiver<String>, got: &mut Vec<String>, n: usize, wait: Duration) {
    let deadline = Instant::now() + wait;
    while got.len() < n && Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(50)) {
            got.push(l);
        }
    }
}

#[test]
fn events_reconnect_after_a_restart_and_show_every_drop_once() {
    let t = Topology::create("follow").expect("sandbox");
    let root = PinRoot::new();
    let dir = std::env::temp_dir().join(format!("rw-follow-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let state = dir.join("state");
    let state = state.to_str().expect("UTF-8");
    let socket = dir.join("ctl.sock");
    let socket = socket.to_str().expect("UTF-8");
    let policy = common::demo_policy_copy();
    let c = start(&t, &policy, &root, state, socket);

    let mut client = Command::new(exe())
        .args([
            "events",
            "--json",
            "--iface",
            GATEWAY_LAN,
            "--pin-root",
            root.arg(),
        ])
        .args([
            "--socket",
            socket,
            "--state-dir",
            state,
            "--verdict",
            "drop",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("events client");
    let (tx, rx) = mpsc::channel();
    let stdout = client.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    assert!(c.wait_log("events client attached", Duration::from_secs(5)));
    let mut got = Vec::new();
    udp_burst(&t, BLOCKED, 3, 32, Duration::from_millis(5)).expect("send");
    lines(&rx, &mut got, 3, Duration::from_secs(5));
    assert_eq!(got.len(), 3, "{got:?}");

    // The controller dies; the pins keep dropping (and queue the events).
    let _ = c.kill9();
    let _ = std::fs::remove_file(socket);
    udp_burst(&t, BLOCKED, 4, 32, Duration::from_millis(5)).expect("send");
    std::thread::sleep(Duration::from_millis(500));
    let c = start(&t, &policy, &root, state, socket);
    udp_burst(&t, BLOCKED, 2, 32, Duration::from_millis(5)).expect("send");
    lines(&rx, &mut got, 9, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    while let Ok(l) = rx.try_recv() {
        got.push(l);
    }
    let mut seen: Vec<(String, String)> = got
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON event");
            (v["timestamp"].to_string(), v["src_port"].to_string())
        })
        .collect();
    let shown = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), shown, "an event shown twice: {got:?}");
    assert_eq!(shown, 9, "3 before, 4 while down, 2 after: {got:?}");
    let _ = client.kill();
    let _ = client.wait();
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut client.stderr.take().expect("stderr"), &mut err);
    assert!(
        err.contains("reconnecting") && err.contains("reconnected"),
        "{err}"
    );
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}
