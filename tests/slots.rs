//! Counter slots through BPF_PROG_TEST_RUN: every count stays under the
//! device and region name it was counted for, across reloads, adoption of
//! the pins and reuse of a retired slot.

mod common;

use std::net::Ipv4Addr;

use common::frames::{ETH_P_IP, ethernet, ipv4, udp};
use regionwall::{
    compile::Compiled,
    datapath::{Datapath, Readings as _},
    events::{self, BootClock, Names, Record},
};
use regionwall_testkit::xdp::{XDP_DROP, XDP_PASS};

const PHONE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const OTHER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x09];
const PHONE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const BLOCKED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

const W_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const A_DST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

/// Device x (PHONE_MAC) may not reach region r (drop); everyone is audited
/// going to r.
const SLOTS_A: &str = r#"
[regions.r]
cidrs = ["198.51.100.0/24"]

[devices.x]
mac = ["02:00:00:00:00:01"]

[[rules]]
name = "x-no-r"
devices = ["x"]
block = ["r"]

[[rules]]
name = "audit-r"
devices = ["default"]
block = ["r"]
mode = "audit"
"#;

/// A plus region a (sorts before r) and device w (sorts before x), which
/// may not reach a.
const SLOTS_B: &str = r#"
[regions.a]
cidrs = ["203.0.113.0/24"]

[regions.r]
cidrs = ["198.51.100.0/24"]

[devices.w]
mac = ["02:00:00:00:00:02"]

[devices.x]
mac = ["02:00:00:00:00:01"]

[[rules]]
name = "x-no-r"
devices = ["x"]
block = ["r"]

[[rules]]
name = "w-no-a"
devices = ["w"]
block = ["a"]

[[rules]]
name = "audit-r"
devices = ["default"]
block = ["r"]
mode = "audit"
"#;

fn compiled(text: &str) -> Compiled {
    regionwall::compile::compile(&common::policy(text)).expect("compile test policy")
}

fn send(dp: &Datapath, mac: [u8; 6], dst: Ipv4Addr, times: usize, verdict: u32) {
    let frame = ethernet(
        mac,
        &[],
        ETH_P_IP,
        &ipv4(PHONE_IP, dst, 17, 0, 0, &udp(40000, 443, b"payload")),
    );
    for _ in 0..times {
        let got = common::prog::verdict_of(dp, &frame);
        assert_eq!(got, verdict, "verdict to {dst}");
    }
}

/// (device, region, verdict, packets) of every row, sorted.
fn rows(maps: &impl regionwall::datapath::Readings) -> Vec<(String, String, String, u64)> {
    let stats = regionwall::control::Stats::read(
        maps,
        "test0",
        None,
        regionwall::control::Userspace::default(),
    )
    .expect("stats");
    assert!(stats.named, "names from NAMES");
    let mut out: Vec<_> = stats
        .traffic
        .into_iter()
        .map(|r| (r.device, r.region, r.verdict.to_string(), r.packets))
        .collect();
    out.sort();
    out
}

fn row(device: &str, region: &str, verdict: &str, packets: u64) -> (String, String, String, u64) {
    (device.into(), region.into(), verdict.into(), packets)
}

/// A pin directory under /sys/fs/bpf, removed on drop.
struct Pins(std::path::PathBuf, regionwall::pin::PinDir);

impl Pins {
    fn new() -> Self {
        let root = std::path::Path::new("/sys/fs/bpf").join(format!(
            "wtslots-{}",
            regionwall_testkit::netns::unique_name("pins")
        ));
        let pins = regionwall::pin::PinDir::new(&root, "slots0");
        pins.create().expect("pin directory");
        Self(root, pins)
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = self.1.remove_all();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn counts_keep_their_names_across_reloads_and_adoption() {
    let pins = Pins::new();
    let mut dp = Datapath::load().expect("load");
    let (_, _) = dp
        .publish_stable(compiled(SLOTS_A), None, 1)
        .expect("publish A");
    dp.pin(&pins.1).expect("pin");
    send(&dp, PHONE_MAC, BLOCKED, 3, XDP_DROP);
    send(&dp, OTHER_MAC, BLOCKED, 2, XDP_PASS);

    // B numbers a before r and w before x: without stable slots x's drops
    // would show under w and r's counts under a.
    let (stable, _) = dp
        .publish_stable(compiled(SLOTS_B), None, 2)
        .expect("publish B");
    assert_eq!(stable.device_names, ["default", "x", "w"]);
    assert_eq!(stable.region_names, ["r", "a"]);
    send(&dp, PHONE_MAC, BLOCKED, 1, XDP_DROP);
    send(&dp, OTHER_MAC, BLOCKED, 1, XDP_PASS);
    send(&dp, W_MAC, A_DST, 4, XDP_DROP);
    send(&dp, W_MAC, BLOCKED, 1, XDP_PASS);
    let want = vec![
        row("default", "r", "audit", 3),
        row("w", "a", "drop", 4),
        row("w", "r", "audit", 1),
        row("x", "r", "drop", 4),
    ];
    assert_eq!(rows(&dp), want);
    // From the pins, without a controller and without the policy file.
    let pinned = regionwall::pin::PinnedMaps::open(&pins.1).expect("open pins");
    assert_eq!(rows(&pinned), want);

    // Events read from the pins are named by NAMES too.
    let mut ring = regionwall::pin::PinnedMaps::events(&pins.1).expect("pinned ring");
    let mut names = Names::default();
    names.set_slots(pinned.read_slots().expect("pinned slots"));
    let mut seen = std::collections::BTreeSet::new();
    while let Some(item) = ring.next() {
        let ev = events::decode(&item).expect("event");
        let r = Record::new(&ev, &names, &BootClock::now(), "test0").expect("an event of ours");
        seen.insert((r.device, r.region, r.verdict.to_string()));
    }
    let expected: std::collections::BTreeSet<_> = want
        .iter()
        .map(|(d, r, v, _)| (d.clone(), r.clone(), v.clone()))
        .collect();
    assert_eq!(seen, expected);

    // A restarted controller adopts the pins: same names, same counts, and
    // publishing the same policy again moves nothing.
    let slots = dp.read_slots().expect("slots");
    let mut adopted =
        Datapath::adopt(regionwall::datapath::LoadOptions::default(), &pins.1).expect("adopt");
    assert_eq!(adopted.read_slots().expect("adopted slots"), slots);
    assert_eq!(adopted.epoch(), 2);
    let (again, _) = adopted
        .publish_stable(compiled(SLOTS_B), None, 3)
        .expect("publish B again");
    assert_eq!(again.device_names, ["default", "x", "w"]);
    assert_eq!(adopted.read_slots().expect("slots"), slots);
    send(&adopted, PHONE_MAC, BLOCKED, 1, XDP_DROP);
    let mut want = want;
    want[3].3 += 1;
    assert_eq!(rows(&adopted), want);
    assert_eq!(rows(&pinned), want);

    // A policy without w and a: their counts stay under their names.
    let (_, _) = adopted
        .publish_stable(compiled(SLOTS_A), None, 4)
        .expect("publish A again");
    assert_eq!(rows(&pinned), want);
    let slots = adopted.read_slots().expect("slots");
    assert_eq!(slots.device(2), Some("w"));
    assert!(!slots.devices[2].as_ref().expect("w").live);
    assert!(slots.devices[1].as_ref().expect("x").live);
}

#[test]
fn a_reused_slot_starts_at_zero() {
    use std::fmt::Write as _;
    let text = |names: &[String]| {
        let mut t = String::new();
        for n in names {
            // r<i> is 10.<i>.0.0/24, s0 10.200.0.0/24.
            let i = n[1..].parse::<u8>().unwrap_or(0) + if n.starts_with('s') { 200 } else { 0 };
            writeln!(t, "[regions.{n}]\ncidrs = [\"10.{i}.0.0/24\"]").expect("write");
        }
        let list: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
        writeln!(
            t,
            "[[rules]]\nname = \"audit-all\"\ndevices = [\"default\"]\nblock = [{}]\nmode = \"audit\"",
            list.join(", ")
        )
        .expect("write");
        t
    };
    let dst = |i: u8| Ipv4Addr::new(10, i, 0, 1);
    let all: Vec<String> = (0..regionwall_common::REGION_ROOM_DEFAULT)
        .map(|i| format!("r{i:02}"))
        .collect();
    let mut dp = Datapath::load().expect("load");
    dp.publish_stable(compiled(&text(&all)), None, 1)
        .expect("publish all");
    send(&dp, OTHER_MAC, dst(0), 2, XDP_PASS);
    assert_eq!(rows(&dp), vec![row("default", "r00", "audit", 2)]);

    // r00 leaves: its count stays under its name, its slot is not live.
    let rest = all[1..].to_vec();
    dp.publish_stable(compiled(&text(&rest)), None, 2)
        .expect("publish without r00");
    assert_eq!(rows(&dp), vec![row("default", "r00", "audit", 2)]);

    // s0 needs a slot; every never-used one is gone: it takes r00's, zeroed.
    let mut with_s0 = rest;
    with_s0.push("s0".into());
    let (stable, _) = dp
        .publish_stable(compiled(&text(&with_s0)), None, 3)
        .expect("publish with s0");
    assert_eq!(stable.region_name(1), "s0");
    assert_eq!(rows(&dp), vec![]);
    send(&dp, OTHER_MAC, dst(200), 1, XDP_PASS);
    send(&dp, OTHER_MAC, dst(1), 1, XDP_PASS);
    assert_eq!(
        rows(&dp),
        vec![
            row("default", "r01", "audit", 1),
            row("default", "s0", "audit", 1),
        ]
    );
}
