//! Unit tests of the candidate's table: built in the live table's index
//! space whatever the live policy's device numbering, and refused with
//! the reason when the lookups cannot be shared.

use std::path::Path;

use regionwall_common::Verdict as KernelVerdict;

use super::{live_digest, table};
use crate::{
    compile::{self, Compiled},
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
    let before = parsed(&LIVE.replace("[devices.phone]", "[devices.zz]")).1;
    let earlier = stabilize(before, &SlotTable::default(), 64).expect("earlier");
    let stable = stabilize(c, &earlier.slots, 64).expect("stable").compiled;
    (p, stable)
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
        let err = table(&lc, &lp, &cc, &cp).expect_err("refused");
        assert!(err.contains(why), "{err}");
    }
}
