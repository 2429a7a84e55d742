//! Promoting a candidate keeps the reload's guarantees: a candidate that
//! would pass everything is refused like a reload would be; a promote
//! while a reload of the old file is being prepared is refused (that
//! reload would undo it); after a promote the controller watches the
//! promoted file and names it. Reloads of the live policy carry a staged
//! candidate over in the publish's own flip: under continuous traffic
//! through reloads, its counts equal what was sent, whether the live
//! table is its own or refined for the candidate; so do kill -9 and
//! restarts, whose first publish carries the pinned candidate. Real
//! traffic between sandbox namespaces.

mod common;

use std::{fmt::Write as _, path::Path, time::Duration};

use common::{exe, pins::PinRoot, text};
use regionwall::verdict::Verdict;
use regionwall_testkit::{
    sandbox::{Controller, Topology},
    traffic::udp_burst,
};

/// Zones and the phone; `rules` decides what is blocked.
fn policy(rules: &str) -> String {
    format!(
        "[regions.zone-a]\ncidrs = [\"198.51.100.0/24\"]\n\n[regions.zone-b]\ncidrs = [\"203.0.113.0/24\"]\n\n[devices.phone]\nip = [\"192.0.2.10\"]\n{rules}"
    )
}

const NO_A: &str = "\n[[rules]]\nname = \"no-a\"\ndevices = [\"phone\"]\nblock = [\"zone-a\"]\n";
const NO_B: &str = "\n[[rules]]\nname = \"no-b\"\ndevices = [\"phone\"]\nblock = [\"zone-b\"]\n";
const NO_AB: &str =
    "\n[[rules]]\nname = \"no-ab\"\ndevices = [\"phone\"]\nblock = [\"zone-a\", \"zone-b\"]\n";

fn cli(c: &Controller, root: &PinRoot, args: &[&str]) -> std::process::Output {
    let out = common::at_controller(c, root, args);
    println!("{args:?}: {}", text(&out));
    out
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8")
}

/// Live drops so far, once at least `n` (or after 20 s).
fn drops_when(c: &Controller, root: &PinRoot, n: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let d = common::stats(root, &c.socket).packets(Verdict::Drop);
        if d >= n || std::time::Instant::now() > deadline {
            return d;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn send(t: &Topology, to: &str, n: u64) {
    udp_burst(t, to, n, 100, Duration::ZERO).expect("udp burst");
}

#[test]
fn promote_keeps_the_reload_guard_and_moves_the_watch() {
    let t = Topology::create("rwshp-guard").expect("namespaces");
    let live = common::policy_file(&policy(NO_A));
    let root = PinRoot::new();
    let c = Controller::start(
        &exe(),
        &t,
        &live,
        &["--pin-root", root.arg(), "--no-history"],
    )
    .expect("start");

    // A candidate with no rules stages (it is only counted) but is not
    // promoted: it would pass everything, as a reload would be refused.
    let empty = common::policy_file(&policy(""));
    assert!(cli(&c, &root, &["stage", path(&empty)]).status.success());
    let out = cli(&c, &root, &["promote"]);
    assert!(!out.status.success(), "an empty candidate is not promoted");
    assert!(text(&out).contains("no rules"), "{}", text(&out));
    send(&t, "198.51.100.10:9", 5);
    assert_eq!(drops_when(&c, &root, 5), 5, "the live policy still drops");
    assert!(cli(&c, &root, &["discard"]).status.success());

    // A real candidate promotes; the publish names its file.
    let candidate = common::policy_file(&policy(NO_B));
    assert!(
        cli(&c, &root, &["stage", path(&candidate)])
            .status
            .success()
    );
    assert!(cli(&c, &root, &["promote"]).status.success());
    send(&t, "203.0.113.10:9", 3);
    assert_eq!(drops_when(&c, &root, 8), 8, "zone-b dropped after promote");
    // The promoted file is watched: editing it reloads it.
    std::fs::write(&candidate, policy(NO_AB)).expect("edit the promoted file");
    assert!(
        common::wait_count(&c, "reloaded policy", 1, Duration::from_secs(20)),
        "{}",
        c.log_text()
    );
    send(&t, "198.51.100.10:9", 4);
    assert_eq!(
        drops_when(&c, &root, 12),
        12,
        "the edited promoted file rules"
    );
    let log = c.log_text();
    assert!(
        log.contains(&format!("published policy {}", candidate.display())),
        "{log}"
    );
}

/// Every country as one region, `world`.
fn world() -> String {
    let dir = common::data_dir().join("country-ip-blocks");
    let mut world = format!("regions_dir = \"{}\"\n", dir.display());
    let mut codes: Vec<String> = std::fs::read_dir(&dir)
        .expect("country dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_uppercase())
        .collect();
    codes.sort();
    let list = codes
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    writeln!(world, "[regions.world]\ncountries = [{list}]").expect("write");
    world
}

/// Two stages asked one after the other apply in that order, though the
/// first (the world, refined) takes seconds to prepare and the second
/// (same regions) none: the later one is what stays staged.
#[test]
fn stages_apply_in_the_order_asked() {
    let t = Topology::create("rwshp-order").expect("namespaces");
    let live = common::policy_file(&policy(NO_A));
    let slow = common::policy_file(&format!("{}{}", world(), policy(NO_B)));
    let fast = common::policy_file(&policy(NO_B));
    let root = PinRoot::new();
    let c = Controller::start(
        &exe(),
        &t,
        &live,
        &["--pin-root", root.arg(), "--no-history", "--no-watch"],
    )
    .expect("start");
    let socket = c.socket.clone();
    let pins = root.arg().to_string();
    std::thread::scope(|scope| {
        let first = scope.spawn(|| {
            common::regionwall(&[
                "stage",
                path(&slow),
                "--iface",
                regionwall_testkit::sandbox::GATEWAY_LAN,
                "--pin-root",
                &pins,
                "--socket",
                path(&socket),
            ])
        });
        std::thread::sleep(Duration::from_millis(200));
        let second = cli(&c, &root, &["stage", path(&fast)]);
        assert!(second.status.success(), "{}", text(&second));
        let first = first.join().expect("first stage");
        assert!(first.status.success(), "{}", text(&first));
    });
    let out = cli(&c, &root, &["diff", "--json"]);
    let s: regionwall::candidate::Status = serde_json::from_slice(&out.stdout).expect("diff JSON");
    assert_eq!(s.path, fast.display().to_string(), "the later stage stays");
}

#[test]
fn promote_while_a_reload_is_prepared_is_refused() {
    let t = Topology::create("rwshp-race").expect("namespaces");
    // Preparing the world takes a while (seconds in a debug build), which
    // leaves room to ask for a promote meanwhile.
    let world = world();
    let live = common::policy_file(&format!("{world}{}", policy(NO_A)));
    let candidate = common::policy_file(&format!("{world}{}", policy(NO_B)));
    let root = PinRoot::new();
    let c = Controller::start(
        &exe(),
        &t,
        &live,
        &["--pin-root", root.arg(), "--no-history", "--no-watch"],
    )
    .expect("start");
    assert!(
        cli(&c, &root, &["stage", path(&candidate)])
            .status
            .success()
    );
    c.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(50));
    let out = cli(&c, &root, &["promote"]);
    assert!(
        !out.status.success(),
        "refused while the reload is prepared"
    );
    assert!(
        text(&out).contains("reload of the live policy is being prepared"),
        "{}",
        text(&out)
    );
    assert!(
        common::wait_count(&c, "reloaded policy", 1, Duration::from_secs(60)),
        "{}",
        c.log_text()
    );
    // The reload kept the candidate staged against the same policy: now
    // promote goes through and rules.
    let out = cli(&c, &root, &["promote"]);
    assert!(out.status.success(), "{}", text(&out));
    // zone-a first: once zone-b's drops are counted, so are its frames
    // (one veth queue, in order), so dropped they would make 5.
    send(&t, "198.51.100.10:9", 2);
    send(&t, "203.0.113.10:9", 3);
    assert_eq!(drops_when(&c, &root, 3), 3, "only zone-b is dropped");
}

/// kill -9 and restart `c` with `args`; the pinned candidate, whose file
/// changed, must not be adopted.
fn restart_not_adopted(c: Controller, t: &Topology, live: &Path, args: &[&str]) -> Controller {
    c.kill9().expect("kill -9");
    let c = Controller::start(&exe(), t, live, args).expect("restart");
    assert!(
        c.log_text().contains("changed since it was staged"),
        "{}",
        c.log_text()
    );
    c
}

#[test]
fn a_candidate_edited_before_a_restart_is_not_adopted_under_new_names() {
    let t = Topology::create("rwshp-edit").expect("namespaces");
    let live = common::policy_file(&policy(NO_A));
    let candidate = common::policy_file(&policy(NO_B));
    let root = PinRoot::new();
    let args = ["--pin-root", root.arg(), "--no-history"];
    let c = Controller::start(&exe(), &t, &live, &args).expect("start");
    assert!(
        cli(&c, &root, &["stage", path(&candidate)])
            .status
            .success()
    );
    send(&t, "203.0.113.10:9", 3);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while common::stats(&root, &c.socket).packets(Verdict::Pass) < 3 {
        assert!(std::time::Instant::now() < deadline, "3 passed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The file now says something else; the counts were the old rules'.
    std::fs::write(&candidate, policy(NO_AB).replace("no-ab", "edited")).expect("edit");
    let socket = c.socket.clone();
    let c = restart_not_adopted(
        c,
        &t,
        &live,
        &[&args[..], &["--socket", path(&socket)]].concat(),
    );
    let out = cli(&c, &root, &["diff"]);
    assert!(out.status.success());
    assert!(
        text(&out).contains("paused: its file changed"),
        "{}",
        text(&out)
    );
    assert!(
        !text(&out).contains("edited") && !text(&out).contains("would newly"),
        "no row named by the edited file, no totals it did not count"
    );
    let out = cli(&c, &root, &["promote"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("was not adopted"), "{}", text(&out));
    assert!(cli(&c, &root, &["discard"]).status.success());
    assert!(text(&cli(&c, &root, &["diff"])).contains("no candidate staged"));

    // Only the addresses of its region change (names and rules the
    // same): its counts were taken under the old ones, so not adopted.
    let refined = zone_c_candidate();
    assert!(cli(&c, &root, &["stage", path(&refined)]).status.success());
    let text_before = std::fs::read_to_string(&refined).expect("read");
    std::fs::write(
        &refined,
        text_before.replace("203.0.113.128/25", "203.0.113.192/26"),
    )
    .expect("edit");
    let c = restart_not_adopted(
        c,
        &t,
        &live,
        &[&args[..], &["--socket", path(&socket)]].concat(),
    );
    assert!(text(&cli(&c, &root, &["diff"])).contains("paused: its file changed"));
}

/// A candidate with a new region, zone-c, blocked (and zone-a not): the
/// live table is refined for it.
fn zone_c_candidate() -> std::path::PathBuf {
    common::policy_file(&format!(
        "{}\n[regions.zone-c]\ncidrs = [\"203.0.113.128/25\"]\n\n[[rules]]\nname = \"no-c\"\ndevices = [\"phone\"]\nblock = [\"zone-c\"]\n",
        policy("")
    ))
}

/// Live drop -> candidate pass counted so far, once at least `n` (or
/// after 20 s); the candidate must still be evaluated.
fn live_drop_candidate_pass(c: &Controller, root: &PinRoot, n: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = cli(c, root, &["diff", "--json"]);
        let s: regionwall::candidate::Status =
            serde_json::from_slice(&out.stdout).expect("diff JSON");
        let counted: u64 = s
            .rows
            .iter()
            .filter(|r| r.live == Verdict::Drop && r.candidate == Verdict::Pass)
            .map(|r| r.packets)
            .sum();
        if counted >= n || std::time::Instant::now() > deadline {
            assert!(s.evaluated, "still evaluated: {s:?}");
            return counted;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `count` datagrams to `to` at one per millisecond while `reloads`
/// SIGHUP reloads land one after another (each waited for by its epoch);
/// then the candidate must have counted every one as live drop ->
/// candidate pass.
fn reload_under_traffic(t: &Topology, c: &Controller, root: &PinRoot, to: &str, count: u64) {
    let before = common::stats(root, &c.socket).epoch;
    let reloads = 8;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            udp_burst(t, to, count, 100, Duration::from_millis(1)).expect("udp burst");
        });
        for n in 1..=reloads {
            c.signal(libc::SIGHUP);
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while common::stats(root, &c.socket).epoch < before + n
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    });
    assert_eq!(
        common::stats(root, &c.socket).epoch,
        before + reloads,
        "every reload landed: {}",
        c.log_text()
    );
    let counted = live_drop_candidate_pass(c, root, count);
    assert_eq!(
        counted, count,
        "the candidate counted every datagram sent across {reloads} reloads"
    );
}

#[test]
fn reloads_under_traffic_lose_no_candidate_count() {
    let t = Topology::create("rwshp-carry").expect("namespaces");
    let live = common::policy_file(&policy(NO_A));
    let root = PinRoot::new();
    let c = Controller::start(
        &exe(),
        &t,
        &live,
        &["--pin-root", root.arg(), "--no-history", "--no-watch"],
    )
    .expect("start");

    // The same regions: the candidate's table lies over the live one.
    let same = common::policy_file(&policy(NO_B));
    assert!(cli(&c, &root, &["stage", path(&same)]).status.success());
    reload_under_traffic(&t, &c, &root, "198.51.100.10:9", 1500);
    assert!(cli(&c, &root, &["discard"]).status.success());

    // A new region: the live table is refined for the candidate, and
    // every reload compiles it over the same refinement.
    let refined = zone_c_candidate();
    assert!(cli(&c, &root, &["stage", path(&refined)]).status.success());
    reload_under_traffic(&t, &c, &root, "198.51.100.10:9", 1500);
    assert_eq!(
        drops_when(&c, &root, 3000),
        3000,
        "the live policy dropped every datagram throughout"
    );
    assert_eq!(
        c.log_text().matches("candidate paused").count(),
        0,
        "{}",
        c.log_text()
    );
}

/// kill -9 and restart `c` under continuous traffic, three times: the
/// restarted controller's first publish carries the pinned candidate (over
/// its refinement), so it counts every datagram sent.
#[test]
fn restarts_under_traffic_lose_no_candidate_count() {
    let t = Topology::create("rwshp-again").expect("namespaces");
    let live = common::policy_file(&policy(NO_A));
    let root = PinRoot::new();
    let args = ["--pin-root", root.arg(), "--no-history", "--no-watch"];
    let c = Controller::start(&exe(), &t, &live, &args).expect("start");
    let socket = c.socket.clone();
    let refined = zone_c_candidate();
    assert!(cli(&c, &root, &["stage", path(&refined)]).status.success());
    let count = 3000;
    let mut with_socket = args.to_vec();
    with_socket.extend(["--socket", socket.to_str().expect("UTF-8")]);
    let c = std::thread::scope(|scope| {
        scope.spawn(|| {
            udp_burst(&t, "198.51.100.10:9", count, 100, Duration::from_millis(1))
                .expect("udp burst");
        });
        let mut c = c;
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(300));
            c.kill9().expect("kill -9");
            c = Controller::start(&exe(), &t, &live, &with_socket).expect("restart");
        }
        c
    });
    let log = c.log_text();
    assert!(log.contains("counting through the restart"), "{log}");
    let counted = live_drop_candidate_pass(&c, &root, count);
    assert_eq!(counted, count, "every datagram counted across 3 restarts");
    assert_eq!(drops_when(&c, &root, count), count, "enforced throughout");
}
