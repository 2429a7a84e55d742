//! The names of the program's maps, defined once: the shared maps, the
//! per-generation table sets a publish writes whole, and the controller's
//! own records. Pinning, adoption and publishing all take them from here;
//! a test checks they are exactly the object's maps.

/// The maps of one table set (generation): written whole by a publish,
/// live after the flip of `CONTROL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSet {
    pub region_v4: &'static str,
    pub region_v6: &'static str,
    pub fib_slots: &'static str,
    pub fib_ranges: &'static str,
    pub fib_long: &'static str,
    pub device_mac: &'static str,
    pub device_v4: &'static str,
    pub device_v6: &'static str,
    pub port_class: &'static str,
    pub decisions: &'static str,
    /// The staged candidate's decisions, indexed like `decisions`.
    pub candidate_decisions: &'static str,
}

/// Each base name once; the generation is its suffix.
macro_rules! table_set {
    ($g:literal) => {
        TableSet {
            region_v4: concat!("REGION_V4_", $g),
            region_v6: concat!("REGION_V6_", $g),
            fib_slots: concat!("FIB_SLOTS_", $g),
            fib_ranges: concat!("FIB_RANGES_", $g),
            fib_long: concat!("FIB_LONG_", $g),
            device_mac: concat!("DEVICE_MAC_", $g),
            device_v4: concat!("DEVICE_V4_", $g),
            device_v6: concat!("DEVICE_V6_", $g),
            port_class: concat!("PORT_CLASS_", $g),
            decisions: concat!("DECISIONS_", $g),
            candidate_decisions: concat!("CANDIDATE_DECISIONS_", $g),
        }
    };
}

/// The table sets, indexed by generation.
pub const TABLE_SETS: [TableSet; regionwall_common::GENERATIONS as usize] =
    [table_set!("0"), table_set!("1")];

impl TableSet {
    /// The table set of `generation` (taken modulo the generations).
    #[must_use]
    pub const fn of(generation: u32) -> &'static Self {
        &TABLE_SETS[(generation % regionwall_common::GENERATIONS) as usize]
    }

    /// Its map names.
    #[must_use]
    pub const fn names(&self) -> [&'static str; 11] {
        [
            self.region_v4,
            self.region_v6,
            self.fib_slots,
            self.fib_ranges,
            self.fib_long,
            self.device_mac,
            self.device_v4,
            self.device_v6,
            self.port_class,
            self.decisions,
            self.candidate_decisions,
        ]
    }
}

/// Maps shared by both generations, read or written by the program.
pub const SHARED_MAPS: [&str; 12] = [
    "CONTROL",
    "POLICY_META",
    "COUNTERS_MAP",
    "TRAFFIC",
    "COUNTRY_TRAFFIC",
    "DESTINATIONS",
    "RATE_LIMIT",
    "REJECT_LIMIT",
    "EVENTS",
    "CANDIDATE_EVENTS",
    "CANDIDATE_TRAFFIC",
    "CANDIDATE_RATE_LIMIT",
];

/// Maps of the TC egress DNS copier (`regionwall_dns`), not of the XDP
/// program: adoption checks them against the pinned classifier.
pub const DNS_MAPS: [&str; 2] = ["DNS_RING", "DNS_COUNTERS"];

/// Maps the program never uses: the controller's own records, kept with
/// the pins. `LAYOUT` (layout version and lookup) is pinned last: a
/// replacement interrupted while re-pinning leaves the old version, which
/// the next controller replaces again.
pub const CONTROLLER_MAPS: [&str; 3] = ["NAMES", "CANDIDATE_META", "LAYOUT"];

/// Every map of the production object, in pinning order (`LAYOUT` last).
pub const PINNED_MAPS: [&str; 39] = pinned_maps();

const fn pinned_maps() -> [&'static str; 39] {
    let mut out = [""; 39];
    let mut n = 0;
    let mut i = 0;
    while i < SHARED_MAPS.len() {
        out[n] = SHARED_MAPS[i];
        n += 1;
        i += 1;
    }
    let mut g = 0;
    while g < TABLE_SETS.len() {
        let names = TABLE_SETS[g].names();
        let mut i = 0;
        while i < names.len() {
            out[n] = names[i];
            n += 1;
            i += 1;
        }
        g += 1;
    }
    let mut i = 0;
    while i < DNS_MAPS.len() {
        out[n] = DNS_MAPS[i];
        n += 1;
        i += 1;
    }
    let mut i = 0;
    while i < CONTROLLER_MAPS.len() {
        out[n] = CONTROLLER_MAPS[i];
        n += 1;
        i += 1;
    }
    assert!(n == 39, "PINNED_MAPS has room for every map");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_map_once_layout_last() {
        let mut names = PINNED_MAPS.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PINNED_MAPS.len());
        assert_eq!(PINNED_MAPS.last(), Some(&"LAYOUT"));
        assert_eq!(TableSet::of(1).fib_ranges, "FIB_RANGES_1");
        assert_eq!(TableSet::of(2), TableSet::of(0));
    }
}
