//! Starting regionwall as a new user would: the bare command only prints
//! help, `regionwall demo` runs from any directory (its policy is built
//! in), and `run` waits for a LAN interface that appears late (PPPoE,
//! VLAN, USB) instead of failing. Namespaces are named `rw-wtops-...` and
//! removed on drop.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::exe;

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
        "run", "check", "explain", "demo", "events", "stats", "detach",
    ] {
        assert!(
            stderr.contains(&format!("\n  {command} ")),
            "{command} listed"
        );
    }
    assert!(!stderr.contains("namespaces phone"), "no demo started");
    assert_eq!(traces_of(pid), Vec::<String>::new(), "no namespace or pin");
    assert!(took < Duration::from_secs(2), "{took:?}");
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
    assert_eq!(summaries.len(), 8, "{text}");
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
