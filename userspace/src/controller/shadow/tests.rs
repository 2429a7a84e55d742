//! Unit tests of the candidate's table: built in the live table's index
//! space whatever the live policy's device numbering, and refused with
//! the reason when the lookups cannot be shared; a live table republished
//! over a common refinement decides exactly as before, and the candidate's
//! cells over it exactly as the candidate's own tables.

use std::path::Path;

use regionwall_common::Verdict as KernelVerdict;

use super::{Mismatch, live_digest, table};
use crate::{
    compile::{self, Compiled, Refine},
    net::{Bits, V4},
    policy::{Policy, parse_str},
    slots::{SlotTable, stabilize},
};

const LIVE: &str = r#"
[regions.a]
cidrs = ["198.51.100.0/24"]
[regions.b]
cidrs = ["203.0.113.0/24"]
[devices.phone]
ip = ["192.0.2.10"]
[devices.tv]
ip = ["192.0.2.20"]
[[rules]]
name = "tv-no-a"
devices = ["tv"]
block = ["a"]
"#;

fn parsed(text: &str) -> (Policy, Compiled) {
    let p = parse_str(text, Path::new("p.toml")).expect("policy");
    let c = compile::compile(&p).expect("compile");
    (p, c)
}

/// The live policy as published: renumbered on a slot table where the
/// devices were numbered in another order before.
fn live() -> (Policy, Compiled) {
    let (p, c) = parsed(LIVE);
    (p, published(c))
}

/// `c` renumbered like the live policy's publish, after devices were
/// numbered in another order.
fn published(c: Compiled) -> Compiled {
    let before = parsed(&LIVE.replace("[devices.phone]", "[devices.zz]")).1;
    let earlier = stabilize(before, &SlotTable::default(), 64).expect("earlier");
    stabilize(c, &earlier.slots, 64).expect("stable").compiled
}

#[test]
fn cells_follow_the_live_numbering() {
    let (lp, lc) = live();
    // The candidate blocks b for the phone instead.
    let (cp, cc) = parsed(&LIVE.replace(
        "name = \"tv-no-a\"\ndevices = [\"tv\"]\nblock = [\"a\"]",
        "name = \"phone-no-b\"\ndevices = [\"phone\"]\nblock = [\"b\"]",
    ));
    let cells = table(&lc, &lp, &cc, &cp).expect("shared lookup");
    assert_eq!(cells.len(), lc.decisions.len());
    let classes = lc.classes.len();
    let class_of = |region: u16| {
        lc.classes
            .iter()
            .position(|set| set == &vec![region])
            .expect("class")
    };
    let device = |name: &str| {
        lc.device_names
            .iter()
            .position(|n| n == name)
            .expect("device")
    };
    let cell = |d: &str, region: u16| cells[device(d) * classes + class_of(region)];
    let live_cell = |d: &str, region: u16| lc.decisions[device(d) * classes + class_of(region)];
    assert_eq!(cell("phone", 1).verdict, KernelVerdict::Drop as u8);
    assert_eq!(cc.rule_name(cell("phone", 1).rule), "phone-no-b");
    assert_eq!(cell("tv", 0).verdict, KernelVerdict::Pass as u8);
    assert_eq!(live_cell("tv", 0).verdict, KernelVerdict::Drop as u8);
    assert_eq!(live_cell("phone", 1).verdict, KernelVerdict::Pass as u8);
    // The live policy's digest changes with its decisions.
    let (_, other) = parsed(&LIVE.replace("block = [\"a\"]", "block = [\"b\"]"));
    assert_ne!(live_digest(&lc), live_digest(&other));
}

#[test]
fn other_regions_devices_or_ports_are_refused_with_the_reason() {
    let (lp, lc) = live();
    for (change, why) in [
        (LIVE.replace("203.0.113.0/24", "203.0.113.0/25"), "regions"),
        (LIVE.replace("192.0.2.20", "192.0.2.21"), "devices"),
        (
            LIVE.replace("block = [\"a\"]", "block = [\"a\"]\nports = [\"tcp/443\"]"),
            "port",
        ),
    ] {
        let (cp, cc) = parsed(&change);
        match table(&lc, &lp, &cc, &cp).expect_err("refused") {
            Mismatch::Classes => assert_eq!(why, "regions"),
            Mismatch::Refused(err) => assert!(err.contains(why), "{err}"),
        }
    }
}

/// Drops the live region a, adds c over parts of a and b and blocks it for
/// every device, blocks b for the phone.
const CANDIDATE: &str = r#"
[regions.b]
cidrs = ["203.0.113.0/24"]
[regions.c]
cidrs = ["198.51.100.64/26", "203.0.113.128/25", "192.0.2.200/32"]
[devices.phone]
ip = ["192.0.2.10"]
[devices.tv]
ip = ["192.0.2.20"]
[[rules]]
name = "no-c"
devices = ["default"]
block = ["c"]
[[rules]]
name = "phone-no-b"
devices = ["phone"]
block = ["b"]
"#;

/// The class of `a` under longest-prefix match (0: none).
fn lpm(table: &[(V4, u32)], a: u128) -> usize {
    table
        .iter()
        .filter(|(p, _)| p.contains_addr(a))
        .max_by_key(|(p, _)| p.len())
        .map_or(0, |(_, c)| *c as usize)
}

#[test]
fn a_refined_live_table_decides_as_before_and_carries_the_candidate() {
    let (lp, lc) = live();
    let (cp, cc) = parsed(CANDIDATE);
    assert_eq!(table(&lc, &lp, &cc, &cp), Err(Mismatch::Classes));
    let refined = compile::compile_refined(&lp, &Refine::of(&cp, &cc)).expect("refined");
    let rc = published(refined);
    assert!(
        rc.classes.len() > lc.classes.len(),
        "the classes were split"
    );
    assert_eq!(rc.device_names, lc.device_names);
    assert_eq!(rc.region_names, lc.region_names);
    let cells = table(&rc, &lp, &cc, &cp).expect("refined lookup shared");
    // Every boundary of either policy's prefixes, and beside it.
    let mut addrs = vec![0_u128, u128::from(u32::MAX)];
    for (p, _) in lc.v4.iter().chain(&cc.v4).chain(&rc.v4) {
        for a in [p.addr(), p.last()] {
            addrs.extend([a.saturating_sub(1), a, a + 1]);
        }
    }
    let (lk, rk, ck) = (lc.classes.len(), rc.classes.len(), cc.classes.len());
    let mut disagreements = 0;
    for &a in &addrs {
        for (d, name) in lc.device_names.iter().enumerate() {
            let (l, r) = (lpm(&lc.v4, a), lpm(&rc.v4, a));
            assert_eq!(
                lc.decisions[d * lk + l],
                rc.decisions[d * rk + r],
                "live decision of {name} to {a:#x}"
            );
            let Some(own) = cc.device_names.iter().position(|n| n == name) else {
                continue; // a retired index
            };
            let want = cc.decisions[own * ck + lpm(&cc.v4, a)];
            let got = cells[d * rk + r];
            assert_eq!(
                (got.verdict, got.region, got.rule),
                (want.verdict, want.region, want.rule),
                "candidate decision of {name} to {a:#x}"
            );
            assert_eq!(got.country, rc.decisions[d * rk + r].country);
            disagreements += usize::from(got.verdict != rc.decisions[d * rk + r].verdict);
        }
    }
    assert!(
        disagreements > 0,
        "the candidate decides differently somewhere"
    );
}
