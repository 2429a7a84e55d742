//! Unit tests of the table compiler: region classes of nested and
//! sibling prefixes.

use super::*;

fn v4(s: &str) -> V4 {
    match Prefix::parse(s).unwrap() {
        Prefix::V4(p) => p,
        Prefix::V6(_) => panic!("{s} is not IPv4"),
    }
}

fn named_classes(table: &[(V4, u32)], interner: &Interner) -> Vec<(String, Vec<u16>)> {
    table
        .iter()
        .map(|(p, c)| (p.to_string(), interner.sets.get(*c).to_vec()))
        .collect()
}

#[test]
fn nested_prefixes_get_union_classes_and_redundant_ones_vanish() {
    let mut interner = Interner::default();
    let table = build_table(
        vec![
            (v4("10.0.0.0/8"), 0),
            (v4("10.1.0.0/16"), 1),
            (v4("10.1.2.0/24"), 0),
            (v4("10.2.0.0/16"), 0),
        ],
        &mut interner,
    );
    // 10.1.2.0/24 (region 0 inside {0,1}) and 10.2.0.0/16 (region 0 inside {0}) add nothing.
    let got = named_classes(&table, &interner);
    assert_eq!(
        got,
        vec![
            ("10.0.0.0/8".into(), vec![0]),
            ("10.1.0.0/16".into(), vec![0, 1])
        ]
    );
}

#[test]
fn siblings_after_a_nested_run_pop_the_stack() {
    let mut interner = Interner::default();
    let table = build_table(
        vec![
            (v4("10.0.0.0/16"), 0),
            (v4("10.0.1.0/24"), 1),
            (v4("10.1.0.0/16"), 1),
            (v4("11.0.0.0/8"), 2),
        ],
        &mut interner,
    );
    let got = named_classes(&table, &interner);
    assert_eq!(
        got,
        vec![
            ("10.0.0.0/16".into(), vec![0]),
            ("10.0.1.0/24".into(), vec![0, 1]),
            ("10.1.0.0/16".into(), vec![1]),
            ("11.0.0.0/8".into(), vec![2]),
        ]
    );
}

/// Only the LPM tries have a fixed room: a table beyond it compiles (the
/// compiled lookup's maps are sized for it) and is refused for
/// `--lookup lpm` with the count and the room.
#[test]
fn the_lpm_room_limits_only_the_lpm_lookup() {
    let policy = crate::policy::parse_str(
        "[regions.r]\ncidrs = [\"198.51.100.0/24\"]\n[[rules]]\nname = \"x\"\ndevices = [\"default\"]\nblock = [\"r\"]\n",
        std::path::Path::new("inline.toml"),
    )
    .expect("policy");
    let mut compiled = compile(&policy).expect("compiles");
    assert!(lpm_fits(&compiled).is_ok());
    let one = compiled.v4[0];
    compiled.v4 = vec![one; regionwall_common::LPM_V4_MAX_ENTRIES as usize + 1];
    let e = lpm_fits(&compiled).expect_err("too many for the trie");
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "{} IPv4 prefixes",
            regionwall_common::LPM_V4_MAX_ENTRIES + 1
        )) && text.contains("at most 2097152")
            && text.contains("--lookup lpm"),
        "{text}"
    );
}
