//! Policy semantics checked three ways — the kernel (BPF_PROG_TEST_RUN on
//! crafted frames, with the rule named in its event), the policy reference
//! (`compile::decide`), and `explain` — for the precedence matrix, protocol
//! and port qualifiers, and 10,000 random destinations with the whole world
//! loaded.

mod common;

use regionwall_testkit::xdp::{XDP_DROP, XDP_PASS};
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use aya::maps::{MapData, RingBuf};
use common::frames::*;
use regionwall::{
    compile::{self, Compiled},
    datapath::Datapath,
    events::{self, BootClock, Names, Record},
    explain::{self, DeviceBy, Index},
    policy::{PacketKey, Policy},
};

const SRC4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("IPv6 literal")
}

fn mac(last: u8) -> [u8; 6] {
    [0x02, 0, 0x5e, 0, 0x53, last]
}

/// A packet to send: source MAC, destination, protocol and port.
#[derive(Clone, Copy, Debug)]
struct Pkt {
    mac: [u8; 6],
    dst: IpAddr,
    key: PacketKey,
    /// A later fragment (no L4 header).
    later_fragment: bool,
}

fn frame(p: &Pkt) -> Vec<u8> {
    let l4 = |port: u16| match p.key.proto {
        6 => tcp(40000, port),
        17 => udp(40000, port, b"x"),
        _ => icmp_echo(1, 1, b""),
    };
    let port = p.key.port.unwrap_or(0);
    match p.dst {
        IpAddr::V4(d) => {
            let (frag, payload) = if p.later_fragment {
                (0x00b9, vec![0u8; 16]) // offset 185 * 8
            } else {
                (0, l4(port))
            };
            ethernet(
                p.mac,
                &[],
                ETH_P_IP,
                &ipv4(SRC4, d, p.key.proto, 0, frag, &payload),
            )
        }
        IpAddr::V6(d) => {
            let proto = if p.key.proto == 1 { 58 } else { p.key.proto };
            let exts: &[Ext] = if p.later_fragment {
                &[Ext::Fragment(185)]
            } else {
                &[]
            };
            let payload = if p.later_fragment {
                vec![0u8; 16]
            } else {
                l4(port)
            };
            ethernet(
                p.mac,
                &[],
                ETH_P_IPV6,
                &ipv6(v6("2001:db8:1::99"), d, exts, proto, &payload),
            )
        }
    }
}

struct Kernel {
    dp: Datapath,
    ring: RingBuf<MapData>,
    names: Names,
}

impl Kernel {
    fn with(policy: &Policy) -> (Self, Arc<Compiled>) {
        let compiled = Arc::new(compile::compile(policy).expect("compile"));
        let mut dp = Datapath::load().expect("load XDP program");
        dp.publish(&compiled, 1).expect("publish");
        let ring = dp.take_events().expect("ring");
        let mut names = Names::default();
        names.insert(1, compiled.clone());
        (Self { dp, ring, names }, compiled)
    }

    fn run(&self, frame: &[u8]) -> u32 {
        common::prog::verdict_of(&self.dp, frame)
    }

    /// Verdict name and, for drops and audits, the rule named in the event.
    fn verdict(&mut self, p: &Pkt) -> (&'static str, Option<String>) {
        let ret = self.run(&frame(p));
        let mut evs = Vec::new();
        while let Some(item) = self.ring.next() {
            evs.push(events::decode(&item).expect("event"));
        }
        let rule = evs
            .first()
            .and_then(|e| Record::new(e, &self.names, &BootClock::now(), "test0"))
            .map(|r| r.rule);
        let name = match (ret, evs.len()) {
            (XDP_DROP, 1) => "drop",
            (XDP_PASS, 1) => "audit",
            (XDP_PASS, 0) => "pass",
            other => panic!("{p:?}: unexpected return/events {other:?}"),
        };
        (name, rule)
    }
}

/// The reference's verdict and deciding rule.
fn reference(policy: &Policy, p: &Pkt) -> (&'static str, String) {
    let device = compile::device_for(policy, Some(p.mac), None);
    let regions = compile::regions_containing(policy, p.dst);
    let d = compile::decide(policy, device, &regions, p.key);
    let rule = usize::from(d.rule)
        .checked_sub(1)
        .map_or("-".to_string(), |i| policy.rules[i].name.clone());
    (explain::verdict_name(d.verdict), rule)
}

fn key(s: &str) -> PacketKey {
    s.parse().expect("packet key")
}

fn pkt(m: u8, dst: &str, k: &str) -> Pkt {
    Pkt {
        mac: mac(m),
        dst: dst.parse().expect("dst"),
        key: key(k),
        later_fragment: false,
    }
}

/// Checks each row with the kernel, the reference and explain.
fn check_rows(policy: &Policy, rows: &[(Pkt, &str, &str)]) {
    let (mut kernel, _) = Kernel::with(policy);
    let index = Index::new(policy);
    for (p, want, want_rule) in rows {
        let (got, event_rule) = kernel.verdict(p);
        let (ref_verdict, ref_rule) = reference(policy, p);
        let device = compile::device_for(policy, Some(p.mac), None);
        let e = explain::explain(policy, &index, p.dst, device, DeviceBy::Mac, Some(p.key));
        let ctx = format!("{p:?} (device {})", policy.devices[device].name);
        assert_eq!(got, *want, "kernel: {ctx}");
        assert_eq!(ref_verdict, *want, "reference: {ctx}");
        assert_eq!(e.verdict, *want, "explain: {ctx}");
        assert_eq!(ref_rule, *want_rule, "reference rule: {ctx}");
        assert_eq!(
            e.rule.as_deref().unwrap_or("-"),
            *want_rule,
            "explain rule: {ctx}"
        );
        if got != "pass" {
            assert_eq!(event_rule.as_deref(), Some(*want_rule), "event rule: {ctx}");
        }
    }
    println!("{} rows agree: kernel, reference, explain", rows.len());
}

/// Device `a` and `b` are in group `g`; `c` is in no group; MAC 0x09 is
/// unknown (default).
const MATRIX: &str = r#"
[regions.wide8]
cidrs = ["198.0.0.0/8", "2001:db8::/32"]
[regions.host32]
cidrs = ["198.51.100.7/32", "2001:db8:bad::7/128"]
[regions.doc113-8]
cidrs = ["203.0.0.0/8"]
[regions.doc113-24]
cidrs = ["203.0.113.0/24"]
[regions.same-a]
cidrs = ["192.0.2.0/24"]
[regions.same-b]
cidrs = ["192.0.2.0/24"]
[regions.doc100]
cidrs = ["198.51.100.0/24"]

[devices.a]
mac = ["02:00:5e:00:53:0a"]
[devices.b]
mac = ["02:00:5e:00:53:0b"]
[devices.c]
mac = ["02:00:5e:00:53:0c"]

[groups]
g = ["a", "b"]

# Default level: block /8, allow /32 inside it.
[[rules]]
name = "default-block-8"
devices = ["default"]
block = ["wide8"]
[[rules]]
name = "default-allow-32"
devices = ["default"]
allow = ["host32"]
# Default blocks a /24; group g allows the /8 around it.
[[rules]]
name = "default-block-24"
devices = ["default"]
block = ["doc113-24"]
[[rules]]
name = "group-allow-8"
devices = ["g"]
allow = ["doc113-8"]
# Equal prefixes at one level: allow wins over block.
[[rules]]
name = "b-block-same"
devices = ["b"]
block = ["same-a"]
[[rules]]
name = "b-allow-same"
devices = ["b"]
allow = ["same-b"]
# Group allows the /8; device a blocks a /24 inside it (audit), device
# c is not in the group.
[[rules]]
name = "group-allow-wide"
devices = ["g"]
allow = ["wide8"]
[[rules]]
name = "a-audit-doc100"
devices = ["a"]
block = ["doc100"]
mode = "audit"
# Enforce beats audit at one level, whatever the order.
[[rules]]
name = "c-audit-same"
devices = ["c"]
block = ["same-a"]
mode = "audit"
[[rules]]
name = "c-block-same"
devices = ["c"]
block = ["same-b"]
"#;

#[test]
fn precedence_matrix() {
    let policy = common::policy(MATRIX);
    let (a, b, c, other) = (0x0a, 0x0b, 0x0c, 0x09);
    let rows = [
        // block /8 + allow /32 (default level)
        (
            pkt(other, "198.51.100.7", "udp/53"),
            "pass",
            "default-allow-32",
        ),
        (
            pkt(other, "198.51.100.8", "udp/53"),
            "drop",
            "default-block-8",
        ),
        (
            pkt(other, "2001:db8:bad::7", "tcp/443"),
            "pass",
            "default-allow-32",
        ),
        (
            pkt(other, "2001:db8:bad::8", "tcp/443"),
            "drop",
            "default-block-8",
        ),
        // allow /8 (group) + block /24 (default): the group is more specific
        (pkt(a, "203.0.113.5", "tcp/443"), "pass", "group-allow-8"),
        (
            pkt(other, "203.0.113.5", "tcp/443"),
            "drop",
            "default-block-24",
        ),
        (pkt(c, "203.0.113.5", "tcp/443"), "drop", "default-block-24"),
        (pkt(other, "203.0.114.5", "tcp/443"), "pass", "-"),
        // equal prefixes at one level: allow wins
        (pkt(b, "192.0.2.50", "tcp/80"), "pass", "b-allow-same"),
        // enforce beats audit at one level
        (pkt(c, "192.0.2.50", "tcp/80"), "drop", "c-block-same"),
        // device beats group: a's audit rule decides inside the group's allow
        (pkt(a, "198.51.100.9", "udp/53"), "audit", "a-audit-doc100"),
        (pkt(b, "198.51.100.9", "udp/53"), "pass", "group-allow-wide"),
        // group beats default: the group allows what default blocks
        (pkt(b, "198.18.0.1", "udp/53"), "pass", "group-allow-wide"),
        (pkt(c, "198.18.0.1", "udp/53"), "drop", "default-block-8"),
        // a device with no matching rule of its own falls to its group, then default
        (pkt(a, "192.0.2.50", "tcp/80"), "pass", "-"),
    ];
    check_rows(&policy, &rows);
}

const PORTS: &str = r#"
[regions.doc100]
cidrs = ["198.51.100.0/24", "2001:db8:100::/48"]
[regions.doc113]
cidrs = ["203.0.113.0/24", "2001:db8:113::/48"]

[devices.tcp-only]
mac = ["02:00:5e:00:53:0d"]

# Block only HTTPS (TCP 443) to doc100.
[[rules]]
name = "no-https-doc100"
devices = ["default"]
block = ["doc100"]
ports = ["tcp/443"]
# Block everything to doc113 ...
[[rules]]
name = "block-doc113"
devices = ["default"]
block = ["doc113"]
# ... but DNS may go anywhere.
[[rules]]
name = "dns-anywhere"
devices = ["default"]
allow = ["any"]
ports = ["udp/53", "tcp/53"]
# A device whose TCP to doc113 is blocked, fragments included.
[[rules]]
name = "tcp-doc113"
devices = ["tcp-only"]
block = ["doc113"]
ports = ["tcp"]
"#;

#[test]
fn protocol_and_port_qualifiers() {
    let policy = common::policy(PORTS);
    let d = 0x09;
    let t = 0x0d;
    let frag = |p: Pkt| Pkt {
        later_fragment: true,
        key: PacketKey {
            proto: p.key.proto,
            port: None,
        },
        ..p
    };
    let rows = [
        (pkt(d, "198.51.100.9", "tcp/443"), "drop", "no-https-doc100"),
        (
            pkt(d, "2001:db8:100::9", "tcp/443"),
            "drop",
            "no-https-doc100",
        ),
        (pkt(d, "198.51.100.9", "tcp/80"), "pass", "-"),
        (pkt(d, "198.51.100.9", "udp/443"), "pass", "-"),
        (pkt(d, "203.0.113.9", "udp/53"), "pass", "dns-anywhere"),
        (pkt(d, "2001:db8:113::9", "tcp/53"), "pass", "dns-anywhere"),
        (pkt(d, "203.0.113.9", "udp/54"), "drop", "block-doc113"),
        (pkt(d, "203.0.113.9", "icmp"), "drop", "block-doc113"),
        // A later fragment has no port: port rules do not apply to it
        // (its first fragment was dropped), whole-protocol rules do.
        (frag(pkt(d, "198.51.100.9", "tcp/443")), "pass", "-"),
        (
            frag(pkt(d, "203.0.113.9", "udp/53")),
            "drop",
            "block-doc113",
        ),
        (pkt(t, "203.0.113.9", "tcp/8080"), "drop", "tcp-doc113"),
        (
            frag(pkt(t, "2001:db8:113::9", "tcp/8080")),
            "drop",
            "tcp-doc113",
        ),
        (pkt(t, "203.0.113.9", "udp/53"), "pass", "dns-anywhere"),
        (pkt(t, "203.0.113.9", "udp/54"), "drop", "block-doc113"),
    ];
    check_rows(&policy, &rows);
}

/// Every country of the database in one of 60 regions (neighbouring
/// allocations of different countries stay distinct, so the kernel holds
/// the full ~175k + 68k prefixes), rules of every kind over them, and
/// 10,000 random destinations: the kernel's verdict equals explain's.
#[test]
fn explain_agrees_with_kernel_on_the_world() {
    const GROUPS: usize = 60;
    let (mut text, countries) = common::world_regions(GROUPS);
    text.push_str(
        r#"
[devices.phone]
mac = ["02:00:5e:00:53:01"]
[groups]
family = ["phone"]
[[rules]]
name = "default-block-third"
devices = ["default"]
block = ["r0", "r3", "r6", "r9", "r12", "r15", "r18", "r21", "r24", "r27", "r30", "r33", "r36", "r39", "r42", "r45", "r48", "r51", "r54", "r57"]
[[rules]]
name = "default-audit"
devices = ["default"]
block = ["r1", "r4", "r7", "r10", "r13", "r16"]
mode = "audit"
[[rules]]
name = "family-allow-some"
devices = ["family"]
allow = ["r0", "r3"]
ports = ["tcp/443"]
[[rules]]
name = "phone-block-more"
devices = ["phone"]
block = ["r2", "r5", "r8"]
"#,
    );
    let path = common::policy_file(&text);
    let started = std::time::Instant::now();
    let policy = regionwall::policy::parse_file(&path).expect("world policy");
    let parse_time = started.elapsed();
    let started = std::time::Instant::now();
    let (mut kernel, compiled) = Kernel::with(&policy);
    let load_time = started.elapsed();
    let index = Index::new(&policy);
    let sources: usize = policy.regions.iter().map(|r| r.prefixes.len()).sum();
    println!(
        "world: {} countries in {GROUPS} regions, {sources} source prefixes -> {} IPv4 + {} IPv6 kernel entries, {} classes; parse {parse_time:?}, compile+publish {load_time:?}",
        countries,
        compiled.v4.len(),
        compiled.v6.len(),
        compiled.classes.len()
    );
    assert!(compiled.v4.len() > 150_000 && compiled.v6.len() > 60_000);

    // Random destinations: half IPv4, half IPv6 inside 2000::/4 (where the
    // table is); random devices and packet kinds.
    let mut rng = common::Rng(0x2545_F491_4F6C_DD1D);
    let mut tally = std::collections::BTreeMap::new();
    for i in 0..10_000u32 {
        let dst = rng.destination(i % 2 == 0);
        let who = if rng.next_u64().is_multiple_of(2) {
            0x01
        } else {
            0x09
        };
        let kind =
            ["tcp/443", "tcp/80", "udp/53"][usize::try_from(rng.next_u64() % 3).expect("small")];
        let p = pkt(who, &dst.to_string(), kind);
        let (got, _) = kernel.verdict(&p);
        let device = compile::device_for(&policy, Some(p.mac), None);
        let e = explain::explain(&policy, &index, dst, device, DeviceBy::Mac, Some(p.key));
        assert_eq!(got, e.verdict, "{dst} {kind} from {}: {e}", e.device);
        *tally.entry(got).or_insert(0) += 1;
    }
    println!("world: 10000 random destinations, kernel == explain: {tally:?}");
    assert!(tally.len() == 3, "all verdicts occur: {tally:?}");
}
