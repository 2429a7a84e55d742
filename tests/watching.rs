//! Everything a policy reads is watched: a `file =` list, the country
//! database under `regions_dir`, and a policy reached through a symlink in
//! another directory reload on save (debounced, rejected-and-kept like any
//! reload); a policy that says `allow_empty = true` may drop every rule;
//! FIFOs and devices as data files are refused at once.

mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use common::{demo_policy_copy, exe, pins::PinRoot};
use regionwall_testkit::{
    sandbox::{Controller, Topology},
    traffic::send_traffic,
};

const BLOCKED: &str = "198.51.100.10";
const LISTED: &str = "203.0.113.10";

/// The demo policy with its blocked zone also read from `list`.
fn with_list(full: &str, list: &Path) -> String {
    full.replace(
        "cidrs = [\"198.51.100.0/24\", \"2001:db8:bad::/48\"]",
        &format!(
            "cidrs = [\"198.51.100.0/24\", \"2001:db8:bad::/48\"]\nfile = \"{}\"",
            list.display()
        ),
    )
}

#[test]
fn saves_to_every_input_reload_even_through_a_symlink() {
    let t = Topology::create("inputs").expect("namespaces");
    let root = PinRoot::new();
    let real = demo_policy_copy();
    let full = std::fs::read_to_string(&real).expect("policy");
    let list = real.with_file_name("extra.txt");
    std::fs::write(&list, "# nothing yet\n").expect("list");
    std::fs::write(&real, with_list(&full, &list)).expect("policy");
    // --policy is a symlink in another directory.
    let link_dir = std::env::temp_dir().join(regionwall_testkit::netns::unique_name("link"));
    std::fs::create_dir_all(&link_dir).expect("dir");
    let link = link_dir.join("policy.toml");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let c = Controller::start(&exe(), &t, &link, &["--pin-root", root.arg()]).expect("start");
    let open = send_traffic(&t, "listed", LISTED, 5).expect("traffic");
    assert_eq!(open.udp_delivered, 5, "not listed yet");

    // The list gains the address: reload, and it is dropped.
    std::fs::write(&list, "203.0.113.0/24\n").expect("list");
    assert!(
        common::wait_count(&c, "reloaded policy", 1, Duration::from_secs(5)),
        "{}",
        c.log_text()
    );
    let listed = send_traffic(&t, "listed", LISTED, 5).expect("traffic");
    println!(
        "after the list changed: {}/5 delivered",
        listed.udp_delivered
    );
    assert_eq!(listed.udp_delivered, 0);

    // A broken list is rejected and the old one (with the address) kept.
    std::fs::write(&list, "203.0.113.0/33\n").expect("list");
    assert!(
        common::wait_count(&c, "rejected", 1, Duration::from_secs(5)),
        "{}",
        c.log_text()
    );
    assert!(c.log_text().contains("extra.txt:1:"), "{}", c.log_text());
    let still = send_traffic(&t, "listed", LISTED, 5).expect("traffic");
    assert_eq!(still.udp_delivered, 0, "old list still enforcing");
    std::fs::write(&list, "203.0.113.0/24\n").expect("list");
    assert!(
        common::wait_count(&c, "reloaded policy", 2, Duration::from_secs(5)),
        "{}",
        c.log_text()
    );

    // The symlink's target is saved (in its own directory): reload.
    std::fs::write(
        &real,
        with_list(&full, &list).replace("198.51.100.77", "198.51.100.10"),
    )
    .expect("save target");
    assert!(
        common::wait_count(&c, "reloaded policy", 3, Duration::from_secs(5)),
        "{}",
        c.log_text()
    );
    let allowed_now = send_traffic(&t, "blocked", BLOCKED, 5).expect("traffic");
    println!(
        "after the symlinked policy was saved: {}/5 delivered to the newly allowed host",
        allowed_now.udp_delivered
    );
    assert_eq!(allowed_now.udp_delivered, 5, "the saved policy allows it");

    // Dropping every rule needs allow_empty = true.
    let regions_only = full.split("[[rules]]").next().expect("regions").to_string();
    std::fs::write(&real, format!("allow_empty = true\n{regions_only}")).expect("empty");
    assert!(
        common::wait_count(&c, "reloaded policy", 4, Duration::from_secs(5)),
        "{}",
        c.log_text()
    );
    let open = send_traffic(&t, "blocked", BLOCKED, 5).expect("traffic");
    assert_eq!(open.udp_delivered, 5, "allow_empty said so");
    let _ = std::fs::remove_dir_all(&link_dir);
}

#[test]
fn fifos_and_devices_as_data_files_are_refused_at_once() {
    let t = Topology::create("devfiles").expect("namespaces");
    let root = PinRoot::new();
    let policy = demo_policy_copy();
    let full = std::fs::read_to_string(&policy).expect("policy");
    let c = Controller::start(
        &exe(),
        &t,
        &policy,
        &["--pin-root", root.arg(), "--no-watch"],
    )
    .expect("start");
    let fifo = policy.with_file_name("list.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success()
    );
    for (n, (file, what)) in [
        (fifo.as_path(), "FIFO"),
        (Path::new("/dev/zero"), "character device"),
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::write(&policy, with_list(&full, file)).expect("write");
        let asked = Instant::now();
        c.signal(libc::SIGHUP);
        assert!(
            common::wait_count(
                &c,
                "reload (SIGHUP) rejected",
                n + 1,
                Duration::from_secs(5)
            ),
            "{}",
            c.log_text()
        );
        println!("{} refused in {:?}", file.display(), asked.elapsed());
        let log = c.log_text();
        assert!(
            log.contains(what),
            "names what {} is:\n{log}",
            file.display()
        );
        let blocked = send_traffic(&t, "blocked", BLOCKED, 3).expect("traffic");
        assert_eq!(blocked.udp_delivered, 0, "old policy enforcing");
    }
    let _ = std::fs::remove_file(&fifo);
}

#[test]
fn an_updated_country_database_reloads() {
    let t = Topology::create("ccdata").expect("namespaces");
    let root = PinRoot::new();
    // A country database of the test's own over documentation ranges.
    let dir = std::env::temp_dir().join(regionwall_testkit::netns::unique_name("countries"));
    let zz = dir.join("zz");
    std::fs::create_dir_all(&zz).expect("dir");
    let list = zz.join("ipv4-aggregated.txt");
    std::fs::write(&list, "# ZZ\n198.51.100.0/24\n").expect("list");
    let policy = common::policy_file(&format!(
        "regions_dir = \"{}\"\n[regions.zz]\ncountries = [\"ZZ\"]\n[[rules]]\ndevices = [\"default\"]\nblock = [\"zz\"]\n",
        dir.display()
    ));
    let c = Controller::start(&exe(), &t, &policy, &["--pin-root", root.arg()]).expect("start");
    let open = send_traffic(&t, "listed", LISTED, 5).expect("traffic");
    assert_eq!(open.udp_delivered, 5, "not in ZZ yet");
    // The data is updated in place, as a copy or an update tool would.
    std::fs::write(&list, "# ZZ\n198.51.100.0/24\n203.0.113.0/24\n").expect("list");
    assert!(
        common::wait_count(&c, "reloaded policy", 1, Duration::from_secs(5)),
        "{}",
        c.log_text()
    );
    let listed = send_traffic(&t, "listed", LISTED, 5).expect("traffic");
    println!(
        "after the country database changed: {}/5 delivered",
        listed.udp_delivered
    );
    assert_eq!(listed.udp_delivered, 0);
    let _ = std::fs::remove_dir_all(&dir);
}
