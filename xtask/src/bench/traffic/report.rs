//! The traffic benchmark's part of the report: its table in the README's
//! results block and its target checks.

use std::fmt::Write as _;

use super::{Sample, TrafficResult, case::Case};

/// `part` / `whole` as "N.Nx", or "n/a" unless both are above 0.
fn times(part: f64, whole: f64) -> String {
    if whole > 0.0 && part > 0.0 {
        format!("{:.1}x", part / whole)
    } else {
        "n/a".into()
    }
}

/// The README's traffic section.
pub fn section(s: &mut String, t: &TrafficResult) {
    let _ = writeln!(
        s,
        "\nReal traffic through a veth (`--only traffic`): {} destinations ({} blocked: the world's {} IPv4 prefixes, every region blocked; {} in 127/8 or 224/4, which the gateway never forwards), {}-byte UDP frames sent by BPF_PROG_TEST_RUN in live-frames mode and redirected into a veth whose far end is a gateway namespace that forwards what passes; GRO off; median of {} interleaved runs, (a) spread over {:.0} ns between them. Receiving ns/frame = softirq time, per frame offered, of the CPU the generator is pinned to (the gateway's veth polls there); above nothing = against (a) in the same run. (f) is (b) without host counting, which here sees a new destination on almost every frame (its worst case). A filter that drops half the frames also saves the gateway their forwarding, so (g) to (i) drop nothing: each lookup still made and counted, they show the filters' own cost:\n",
        t.destinations,
        t.blocked_destinations,
        t.prefixes_v4,
        t.unrouted_destinations,
        t.frame_bytes,
        t.runs,
        t.noise_ns
    );
    s.push_str("| gateway | offered Mpps | dropped | passed | lost | unaccounted | forwarded | receiving ns/frame | above nothing | total / regionwall's |\n|---|---|---|---|---|---|---|---|---|---|\n");
    let rw = t.case(Case::Regionwall).map_or(f64::NAN, |c| c.softirq_ns);
    for c in &t.cases {
        if let Some(why) = &c.skipped {
            let _ = writeln!(s, "| {} | skipped: {why} | | | | | | | | |", c.case);
            continue;
        }
        let sum = |f: fn(&Sample) -> u64| c.samples.iter().map(f).sum::<u64>();
        let unaccounted: i64 = c.samples.iter().map(|x| x.unaccounted).sum();
        let _ = writeln!(
            s,
            "| {} | {:.2} | {} | {} | {} | {unaccounted} | {} | {:.0} | {:+.0} | {} |",
            c.case,
            c.offered_pps / 1e6,
            sum(|x| x.dropped),
            sum(|x| x.passed),
            sum(|x| x.lost),
            sum(|x| x.forwarded),
            c.softirq_ns,
            c.above_nothing_ns,
            times(c.softirq_ns, rw),
        );
    }
}

/// The targets: regionwall at least 3x less CPU per frame than nft ingress
/// and 5x less than nft forward, above nothing (with its defaults and
/// without host counting), and every frame accounted.
pub fn targets(t: &TrafficResult) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    for (rw_case, case, want) in [
        (Case::Regionwall, Case::NftIngress, 3.0),
        (Case::Regionwall, Case::NftForward, 5.0),
        (Case::RegionwallNoHosts, Case::NftIngress, 3.0),
        (Case::RegionwallNoHosts, Case::NftForward, 5.0),
        (Case::RegionwallAllow, Case::NftIngressCount, 3.0),
        (Case::RegionwallAllow, Case::NftForwardCount, 5.0),
    ] {
        let (Some(rw), Some(c)) = (t.case(rw_case), t.case(case)) else {
            continue;
        };
        let (a, b) = (c.above_nothing_ns, rw.above_nothing_ns);
        // Below the noise, regionwall's cost is at most the noise.
        let ok = a >= want * b.max(t.noise_ns);
        let how = if b < t.noise_ns {
            format!(
                "regionwall within this run's noise ({:.0} ns) of nothing (what it drops never becomes an skb), nft {} that",
                t.noise_ns,
                times(a, t.noise_ns)
            )
        } else {
            format!("{} less", times(a, b))
        };
        out.push((
            ok,
            format!(
                "real traffic: {} {b:+.0} ns per frame above nothing, {} {a:+.0} ns: {how} (target >= {want:.0}x less)",
                rw_case.name(),
                case.name()
            ),
        ));
    }
    let unaccounted: i64 = t
        .cases
        .iter()
        .flat_map(|c| &c.samples)
        .map(|s| s.unaccounted.abs())
        .sum();
    out.push((
        unaccounted == 0,
        format!(
            "real traffic: {unaccounted} frames unaccounted (offered = dropped + passed + lost)"
        ),
    ));
    out
}
