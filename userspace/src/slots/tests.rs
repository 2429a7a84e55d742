//! Unit tests of the stable counter slots: renumbering, placeholders,
//! retirement and reuse, overflow, NAMES records.

use std::{net::IpAddr, path::Path};

use regionwall_common::{MAX_DEVICES, REGION_ROOM_DEFAULT, Verdict, names_slots};

use super::*;
use crate::{compile, policy};

/// Policy text with `regions` (each blocked for every device by its own
/// rule, a /24 of 10.<i>.0.0 per region) and `devices` (one IP each).
fn text(regions: &[&str], devices: &[&str]) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    for (i, r) in regions.iter().enumerate() {
        let _ = writeln!(t, "[regions.{r}]\ncidrs = [\"10.{i}.0.0/24\"]");
    }
    for (i, d) in devices.iter().enumerate() {
        let _ = writeln!(t, "[devices.{d}]\nip = [\"192.168.0.{}\"]", i + 1);
    }
    for r in regions {
        let _ = writeln!(
            t,
            "[[rules]]\nname = \"no-{r}\"\ndevices = [\"default\"]\nblock = [\"{r}\"]"
        );
    }
    t
}

/// Region room of the tests' counter maps.
const ROOM: u32 = REGION_ROOM_DEFAULT;

/// [`super::stabilize`] with the default region room.
fn stabilize(c: Compiled, previous: &SlotTable) -> Result<Stable, SlotError> {
    super::stabilize(c, previous, ROOM)
}

fn parse(text: &str) -> policy::Policy {
    policy::parse_str(text, Path::new("test.toml")).expect("test policy parses")
}

fn compiled(regions: &[&str], devices: &[&str]) -> Compiled {
    compile::compile(&parse(&text(regions, devices))).expect("compiles")
}

fn live(names: &[&str]) -> Vec<Option<Owner>> {
    names
        .iter()
        .map(|n| {
            (!n.is_empty()).then(|| Owner {
                name: (*n).to_string(),
                live: true,
            })
        })
        .collect()
}

fn names(list: &[Option<Owner>]) -> Vec<&str> {
    list.iter()
        .map(|o| o.as_ref().map_or("", |o| o.name.as_str()))
        .collect()
}

/// The (device, region id, verdict) the stabilized tables give a
/// packet from `src` to `dst`.
fn verdict(stable: &Compiled, src: &str, dst: &str) -> (String, String, u8) {
    let src: IpAddr = src.parse().unwrap();
    let dst: IpAddr = dst.parse().unwrap();
    let device = stable
        .device_v4
        .iter()
        .filter(|(p, _)| policy::Prefix::V4(*p).contains(src))
        .max_by_key(|(p, _)| p.len)
        .map_or(0, |(_, d)| *d);
    let class = stable
        .v4
        .iter()
        .filter(|(p, _)| policy::Prefix::V4(*p).contains(dst))
        .max_by_key(|(p, _)| p.len)
        .map_or(0, |(_, c)| *c);
    let stride = stable.classes.len() * stable.port_class_count;
    let d = stable.decisions[device as usize * stride + class as usize * stable.port_class_count];
    (
        stable
            .device_name(u16::try_from(device).unwrap())
            .to_string(),
        stable.region_name(d.region).to_string(),
        d.verdict,
    )
}

#[test]
fn fresh_table_keeps_the_compilers_numbering() {
    let c = compiled(&["b", "d"], &["x"]);
    let s = stabilize(c.clone(), &SlotTable::default()).unwrap();
    assert_eq!(s.compiled.device_names, c.device_names);
    assert_eq!(s.compiled.region_names, c.region_names);
    assert_eq!(s.compiled.decisions, c.decisions);
    assert_eq!(names(&s.slots.devices), ["default", "x"]);
    assert_eq!(names(&s.slots.regions), ["b", "d"]);
    assert_eq!(
        s.claimed,
        [
            Slot::Device(0),
            Slot::Device(1),
            Slot::Region(1),
            Slot::Region(2)
        ]
    );
    assert!(s.retired.is_empty());
    assert_eq!(s.before_flip, s.slots);
}

#[test]
fn names_keep_their_indices_when_others_sort_before_them() {
    let first = stabilize(compiled(&["b", "d"], &["x"]), &SlotTable::default()).unwrap();
    // "a" sorts before "b", "c" between; device "w" before "x".
    let c = compiled(&["a", "b", "c", "d"], &["w", "x"]);
    let s = stabilize(c, &first.slots).unwrap();
    assert_eq!(names(&s.slots.devices), ["default", "x", "w"]);
    assert_eq!(names(&s.slots.regions), ["b", "d", "a", "c"]);
    assert_eq!(s.compiled.device_names, ["default", "x", "w"]);
    assert_eq!(s.compiled.region_names, ["b", "d", "a", "c"]);
    assert_eq!(
        s.claimed,
        [Slot::Device(2), Slot::Region(3), Slot::Region(4)]
    );
    // The renumbered tables decide as before, under the right names.
    let drop = Verdict::Drop as u8;
    for (i, r) in ["a", "b", "c", "d"].iter().enumerate() {
        let dst = format!("10.{i}.0.1");
        assert_eq!(
            verdict(&s.compiled, "192.168.0.1", &dst),
            ("w".into(), (*r).into(), drop)
        );
        assert_eq!(
            verdict(&s.compiled, "192.168.0.2", &dst),
            ("x".into(), (*r).into(), drop)
        );
        assert_eq!(
            verdict(&s.compiled, "192.168.9.9", &dst),
            ("default".into(), (*r).into(), drop)
        );
    }
    assert_eq!(
        verdict(&s.compiled, "192.168.0.2", "11.0.0.1"),
        ("x".into(), "-".into(), 0)
    );
}

#[test]
fn removed_names_hold_their_index_until_reused_after_one_reload() {
    let one = stabilize(
        compiled(&["a", "b", "c"], &["x", "y"]),
        &SlotTable::default(),
    )
    .unwrap();
    // "a" and "x" leave: they keep their indices (placeholder rows) and counts.
    let two = stabilize(compiled(&["b", "c"], &["y"]), &one.slots).unwrap();
    assert_eq!(two.retired, [Slot::Device(1), Slot::Region(1)]);
    assert!(two.claimed.is_empty());
    assert_eq!(names(&two.slots.regions), ["a", "b", "c"]);
    assert!(!two.slots.regions[0].as_ref().unwrap().live);
    assert!(two.before_flip.regions[0].as_ref().unwrap().live);
    assert_eq!(two.compiled.device_names, ["default", "x", "y"]);
    assert_eq!(two.compiled.region_names, ["a", "b", "c"]);
    // Nothing leads to the hole row: no device entry has index 1, no
    // decision region 1.
    assert!(two.compiled.device_v4.iter().all(|(_, d)| *d != 1));
    assert!(two.compiled.decisions.iter().all(|d| d.region != 1));
    // A returning name gets its index back.
    let back = stabilize(compiled(&["a", "b", "c"], &["x", "y"]), &two.slots).unwrap();
    assert_eq!(names(&back.slots.regions), ["a", "b", "c"]);
    assert!(back.claimed.is_empty());
    // New names take never-used indices first...
    let three = stabilize(compiled(&["b", "c", "e"], &["y", "z"]), &two.slots).unwrap();
    assert_eq!(names(&three.slots.regions), ["a", "b", "c", "e"]);
    assert_eq!(names(&three.slots.devices), ["default", "x", "y", "z"]);
    assert_eq!(three.claimed, [Slot::Device(3), Slot::Region(4)]);
}

#[test]
fn retired_indices_are_reused_when_never_used_ones_run_out() {
    let full: Vec<String> = (0..ROOM).map(|i| format!("r{i:02}")).collect();
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    let one = stabilize(compiled(&refs, &[]), &SlotTable::default()).unwrap();
    // Remove r00 and r01: retired, still live until the flip is over.
    let two = stabilize(compiled(&refs[2..], &[]), &one.slots).unwrap();
    let mut with_new = refs[2..].to_vec();
    with_new.push("s0");
    // Adding in the same reload that removed them is refused...
    let mut one_plus = refs[1..].to_vec();
    one_plus.push("s0");
    let err = stabilize(compiled(&one_plus, &[]), &one.slots).unwrap_err();
    assert!(
        matches!(err, SlotError::Exhausted { kind: "region", .. }),
        "{err}"
    );
    // ...the next reload takes the lowest retired index, zeroed.
    let three = stabilize(compiled(&with_new, &[]), &two.slots).unwrap();
    assert_eq!(three.slots.region(1), Some("s0"));
    assert_eq!(three.slots.region(2), Some("r01"));
    assert_eq!(three.claimed, [Slot::Region(1)]);
    assert_eq!(three.compiled.region_name(1), "s0");
}

#[test]
fn devices_overflow_is_a_clear_error() {
    let mut table = SlotTable::default();
    let all: Vec<String> = (1..MAX_DEVICES).map(|i| format!("d{i:03}")).collect();
    table.devices = live(
        &std::iter::once("default")
            .chain(all.iter().map(String::as_str))
            .collect::<Vec<_>>(),
    );
    let err = stabilize(compiled(&["a"], &["new"]), &table).unwrap_err();
    assert!(
        matches!(err, SlotError::Exhausted { kind: "device", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("two steps"), "{err}");
}

#[test]
fn only_counted_regions_take_indices() {
    // The inline allow set and "any" (blocked) : "any" is counted, the
    // allow set never is.
    let p = parse(
        "[regions.eu]\ncidrs = [\"10.0.0.0/8\"]\n[[rules]]\nname = \"r\"\ndevices = [\"default\"]\nblock = [\"any\"]\nallow = [\"10.1.0.0/16\"]\n",
    );
    let c = compile::compile(&p).unwrap();
    assert_eq!(c.region_names, ["eu", "any", "r/allow"]);
    let s = stabilize(c, &SlotTable::default()).unwrap();
    assert_eq!(names(&s.slots.regions), ["eu", "any"]);
    assert_eq!(s.compiled.region_names, ["eu", "any"]);
}

#[test]
fn records_round_trip() {
    let s = stabilize(compiled(&["b", "d"], &["x"]), &SlotTable::default()).unwrap();
    let two = stabilize(compiled(&["d"], &["x"]), &s.slots).unwrap();
    let entries = names_slots(ROOM + 1) as usize;
    let records = two.slots.records(entries);
    assert_eq!(records.len(), entries);
    assert_eq!(SlotTable::from_records(&records), two.slots);
    assert_eq!(
        SlotTable::from_records(&SlotTable::default().records(entries)),
        SlotTable::default()
    );
    let long = "r".repeat(64) + "/allow";
    let t = SlotTable {
        devices: live(&["default"]),
        regions: live(&["", &long]),
        countries: live(&["CN", "", "US"]),
    };
    assert_eq!(
        SlotTable::from_records(&t.records(names_slots(ROOM + 1) as usize)),
        t
    );
    assert_eq!(
        SlotTable::from_records(&t.records(names_slots(ROOM + 1) as usize)).region(2),
        Some(long.as_str())
    );
}
