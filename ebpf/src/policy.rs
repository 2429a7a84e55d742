//! Policy lookups: destination -> region class, source -> device, (protocol,
//! port) -> port class when the policy has qualifiers, then one array read
//! for (device, class, port class). The cost per packet is at most four map
//! lookups whatever the number of rules.

use aya_ebpf::maps::lpm_trie::Key;
use regionwall_common::{
    Control, Counter, DEFAULT_DEVICE, DEVICE_BY_MAC, DEVICE_BY_V4, DEVICE_BY_V6, Decision, Lookup,
    MAX_DECISIONS, MacKey, NO_CLASS, NO_REGION, NO_RULE, PolicyMeta, Verdict, port_slot,
};

use crate::{
    counters::count,
    fib,
    maps::{CONTROL, Generation, POLICY_META},
    parse::{Packet, bytes16},
};

/// Reads the control record. The array always has index 0; the zero value
/// (generation 0, unparsed pass) is the documented default before the
/// controller wrote anything.
#[inline(always)]
pub fn control() -> Control {
    match CONTROL.get(0) {
        Some(c) => *c,
        None => Control::default(),
    }
}

/// The decision reported for frames dropped by `--unparsed drop`.
#[inline(always)]
pub fn unparsed_decision() -> Decision {
    Decision {
        verdict: Verdict::Drop as u8,
        region: NO_REGION,
        rule: NO_RULE,
        ..Decision::default()
    }
}

/// `::ffff:a.b.c.d` (RFC 4291 section 2.5.5.2): the IPv4 word.
#[inline(always)]
fn mapped_v4(addr: [u32; 4]) -> Option<u32> {
    if addr[0] == 0 && addr[1] == 0 && addr[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff]) {
        Some(addr[3])
    } else {
        None
    }
}

#[inline(always)]
fn region_class_v4<const G: u32>(lookup: Lookup, dst: u32) -> u32 {
    if lookup == Lookup::Compiled {
        return fib::class_v4::<G>(u32::from_be(dst));
    }
    let key = Key::new(32, dst.to_ne_bytes());
    let hit = Generation::<G>::region_v4().get(&key);
    hit.copied().unwrap_or(NO_CLASS)
}

/// Region class of the destination in generation `G`.
#[inline(always)]
pub fn region_class<const G: u32>(lookup: Lookup, pkt: &Packet) -> u32 {
    if pkt.family == 4 {
        return region_class_v4::<G>(lookup, pkt.dst[0]);
    }
    if let Some(v4) = mapped_v4(pkt.dst) {
        count(Counter::MappedV6);
        return region_class_v4::<G>(lookup, v4);
    }
    if lookup == Lookup::Compiled {
        return fib::class_v6::<G>(pkt.dst);
    }
    let key = Key::new(128, bytes16(pkt.dst));
    let hit = Generation::<G>::region_v6().get(&key);
    hit.copied().unwrap_or(NO_CLASS)
}

/// Device by source MAC, else by source IP, else the default device. Tables
/// the policy left empty are not looked up.
#[inline(always)]
fn device<const G: u32>(tables: u32, pkt: &Packet) -> u32 {
    if tables & DEVICE_BY_MAC != 0 {
        let b = pkt.src_mac.to_ne_bytes();
        let mac = MacKey::new([b[0], b[1], b[2], b[3], b[4], b[5]]);
        // SAFETY: the value is a plain u32 copied out at once; hash map values
        // may be replaced concurrently, which a u32 read tolerates.
        let by_mac = unsafe { Generation::<G>::device_mac().get(&mac) };
        if let Some(d) = by_mac {
            return *d;
        }
    }
    let by_ip = if pkt.family == 4 {
        if tables & DEVICE_BY_V4 == 0 {
            return DEFAULT_DEVICE;
        }
        let key = Key::new(32, pkt.src[0].to_ne_bytes());
        Generation::<G>::device_v4().get(&key)
    } else {
        if tables & DEVICE_BY_V6 == 0 {
            return DEFAULT_DEVICE;
        }
        let key = Key::new(128, bytes16(pkt.src));
        Generation::<G>::device_v6().get(&key)
    };
    by_ip.copied().unwrap_or(DEFAULT_DEVICE)
}

/// Epoch of the policy in `generation`, for events outside a decision.
#[inline(always)]
pub fn epoch(generation: u32) -> u32 {
    POLICY_META.get(generation).map_or(0, |m| m.epoch)
}

/// Index of a decision that did not come from the table (no candidate
/// cell is read for it).
pub const NO_INDEX: u32 = u32::MAX;

/// Returns the decision of generation `G`, the device index, the policy
/// epoch and the decision's index in the table (the staged candidate's
/// cell for the same packet), or [`NO_INDEX`].
#[inline(always)]
pub fn decide<const G: u32>(lookup: Lookup, pkt: &Packet) -> (Decision, u32, u32, u32) {
    let meta = match POLICY_META.get(G) {
        Some(m) => *m,
        None => PolicyMeta::default(),
    };
    let class = region_class::<G>(lookup, pkt);
    let device = device::<G>(meta.device_tables, pkt);
    let pass = Decision::default();
    // A class or device outside the published table can only come from a
    // controller bug; pass (the gateway must not black-hole) and count it.
    if class >= meta.classes || device >= meta.devices {
        count(Counter::BadDecision);
        return (pass, DEFAULT_DEVICE, meta.epoch, NO_INDEX);
    }
    let mut index = device * meta.classes + class;
    if meta.port_classes > 1 {
        let slot = port_slot(pkt.proto, pkt.has_ports, pkt.dst_port);
        let pclass = match Generation::<G>::port_class().get(slot) {
            Some(p) if *p < meta.port_classes => *p,
            _ => {
                count(Counter::BadDecision);
                return (pass, DEFAULT_DEVICE, meta.epoch, NO_INDEX);
            }
        };
        index = index * meta.port_classes + pclass;
    }
    if index >= MAX_DECISIONS {
        count(Counter::BadDecision);
        return (pass, DEFAULT_DEVICE, meta.epoch, NO_INDEX);
    }
    match Generation::<G>::decisions().get(index) {
        Some(d) => (*d, device, meta.epoch, index),
        None => {
            count(Counter::BadDecision);
            (pass, DEFAULT_DEVICE, meta.epoch, NO_INDEX)
        }
    }
}
