//! Starting regionwall as a new user would: the bare command only prints
//! help, `regionwall demo` runs from any directory (its policy is built
//! in), and `run` waits for a LAN interface that appears late (PPPoE,
//! VLAN, USB) instead of failing. Namespaces are named `rw-wtops-...` and
//! removed on drop.

mod common;

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{demo_policy_copy, exe, xdp_attached};
use regionwall_testkit::{
    netns::{NetNs, unique_name},
    sandbox::{Controller, GATEWAY_LAN, Topology},
    traffic::send_traffic,
};

/// Network namespaces and bpffs entries whose name holds `-<pid>-`: what
/// a process with that pid created through the test kit's naming.
fn traces_of(pid: u32) -> Vec<String> {
    let needle = format!("-{pid}-");
    let mut found: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .chain(std::fs::read_dir("/sys/fs/bpf"))
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path().display().to_string())
        .filter(|p| p.contains(&needle))
        .collect();
    found.sort();
    found
}

#[test]
fn bare_command_prints_help_and_touches_nothing() {
    let started = Instant::now();
    let child = Command::new(exe())
        .current_dir("/")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "bare `regionwall` in {took:?}, exit {:?}:\n{stderr}",
        out.status.code()
    );
    // clap's status for a missing subcommand: 2, help on stderr.
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "nothing on stdout");
    assert!(stderr.contains("Usage: regionwall <COMMAND>"), "{stderr}");
    for command in [
        "run", "check", "explain", "demo", "events", "stats", "detach", "history", "update",
        "stage", "diff", "promote", "discard",
    ] {
        assert!(
            stderr.contains(&format!("\n  {command} ")),
            "{command} listed"
        );
    }
    for hidden in ["manpages", "completions"] {
        assert!(!stderr.contains(hidden), "{hidden} is hidden");
    }
    assert!(!stderr.contains("namespaces phone"), "no demo started");
    assert_eq!(traces_of(pid), Vec::<String>::new(), "no namespace or pin");
}

#[test]
fn subcommand_summaries_are_imperative_without_a_period() {
    let out = Command::new(exe()).arg("--help").output().expect("help");
    let text = String::from_utf8_lossy(&out.stdout);
    let summaries: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    // Thirteen commands and `help`.
    assert_eq!(summaries.len(), 14, "{text}");
    for line in summaries {
        let summary = line.trim_start().split_once("  ").expect("name, summary").1;
        let summary = summary.trim();
        assert!(!summary.ends_with('.'), "no period: {line}");
        assert!(
            summary.starts_with(char::is_uppercase),
            "capitalised: {line}"
        );
        // Imperative: a verb first, not "Packets and bytes ..." or "Shows".
        let verb = summary.split(' ').next().unwrap_or_default();
        assert!(!verb.ends_with('s'), "imperative: {line}");
    }
}

#[test]
fn demo_runs_from_any_directory() {
    let started = Instant::now();
    let child = Command::new(exe())
        .args(["demo", "--tag", "wtops-demo"])
        .current_dir("/")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!(
        "`regionwall demo` from / in {:?}:\n{stdout}{}",
        started.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    assert!(
        stdout.contains("rw-wtops-demo-"),
        "namespaces carry the tag"
    );
    assert!(stdout.contains("demo ok: blocked ranges dropped, allowed ranges delivered"));
    assert_eq!(traces_of(pid), Vec::<String>::new(), "the demo cleaned up");
    let scratch = std::env::temp_dir().join(format!("regionwall-demo-{pid}"));
    assert!(!scratch.exists(), "{} removed", scratch.display());
}

/// Makes the gateway's LAN veth and the phone's side as the sandbox wires
/// them (addresses, up, the phone's default routes).
fn make_lan(t: &Topology) {
    let (g, p) = (&t.gateway, &t.phone);
    t.add_lan_veth().expect("veth");
    for (ns, dev, v4, v6) in [
        (g, GATEWAY_LAN, "192.0.2.1/24", "2001:db8:1::1/64"),
        (p, "eth0", "192.0.2.10/24", "2001:db8:1::10/64"),
    ] {
        ns.ip(&["addr", "add", v4, "dev", dev]).expect("addr");
        ns.ip(&["-6", "addr", "add", v6, "dev", dev, "nodad"])
            .expect("addr");
        ns.ip(&["link", "set", dev, "up"]).expect("up");
    }
    p.ip(&["route", "add", "default", "via", "192.0.2.1"])
        .expect("route");
    p.ip(&["-6", "route", "add", "default", "via", "2001:db8:1::1"])
        .expect("route");
}

#[test]
fn run_waits_for_a_lan_interface_that_appears_late() {
    let t = Topology::create("wtops-late").expect("namespaces");
    t.gateway
        .ip(&["link", "del", GATEWAY_LAN])
        .expect("no LAN interface yet");
    let policy = demo_policy_copy();
    let exe = exe();
    let (c, appeared) = std::thread::scope(|s| {
        let starting = s.spawn(|| Controller::start(&exe, &t, &policy, &[]));
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            !starting.is_finished(),
            "run neither exits nor enforces before the interface exists"
        );
        let appeared = Instant::now();
        make_lan(&t);
        let c = starting.join().expect("no panic").expect("enforcing");
        (c, appeared.elapsed())
    });
    let log = c.log_text();
    println!("enforcing {appeared:?} after the interface was made:\n{log}");
    assert_eq!(
        log.matches("interface lan0 does not exist yet; waiting for it")
            .count(),
        1,
        "the wait is logged once"
    );
    assert_eq!(log.matches("interface lan0 appeared").count(), 1);
    // A liveness bound, not a speed claim: the wait polls every 500 ms
    // and netlink wakes it earlier; ten seconds only catches a hang.
    assert!(appeared < Duration::from_secs(10), "{appeared:?}");
    assert!(xdp_attached(&t));
    for (label, addr, delivered) in [
        ("blocked v4", "198.51.100.10", 0),
        ("allowed v4", "203.0.113.10", 5),
        ("blocked v6", "2001:db8:bad::10", 0),
        ("allowed v6", "2001:db8:600d::10", 5),
    ] {
        let d = send_traffic(&t, label, addr, 5).expect("traffic");
        println!(
            "{label} {addr}: sent {} delivered {}",
            d.udp_sent, d.udp_delivered
        );
        assert_eq!(d.udp_delivered, delivered, "{label}");
    }
    let events = c.drain_lines(10, Duration::from_secs(2));
    assert!(events.len() >= 10, "drops reported: {events:?}");
    let status = c.stop().expect("stop");
    assert!(status.success(), "{status}");
}

#[test]
fn sigterm_ends_the_wait_for_an_interface() {
    let ns = NetNs::create(&unique_name("wtops-wait")).expect("namespace");
    let pin_root = std::path::Path::new("/sys/fs/bpf").join(unique_name("wtops-wait-pins"));
    let socket = std::env::temp_dir().join(unique_name("wtops-wait.sock"));
    let policy = demo_policy_copy();
    let mut child = ns
        .command(exe().to_str().expect("UTF-8"))
        .args(["run", "--iface", "lan0", "--policy"])
        .arg(&policy)
        .arg("--pin-root")
        .arg(&pin_root)
        .arg("--socket")
        .arg(&socket)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let waiting = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("a log line");
    assert!(waiting.contains("does not exist yet; waiting"), "{waiting}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().expect("wait").is_none(), "still waiting");
    let signalled = Instant::now();
    // SAFETY: signalling our own child (nsenter execs regionwall).
    unsafe { libc::kill(i32::try_from(child.id()).expect("pid"), libc::SIGTERM) };
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "exits on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let rest: Vec<String> = lines.try_iter().collect();
    println!(
        "exited {status} {:?} after SIGTERM: {rest:?}",
        signalled.elapsed()
    );
    assert!(status.success(), "{status}");
    assert!(
        rest.iter().any(|l| l.contains("nothing was attached")),
        "{rest:?}"
    );
    assert!(!pin_root.exists(), "no pin root");
    assert!(!socket.exists(), "no socket");
}
