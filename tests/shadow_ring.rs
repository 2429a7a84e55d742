//! A staged candidate's events in the kernel (BPF_PROG_TEST_RUN): they go
//! to a ring and counters of their own, so a flood of "would pass" events
//! never costs a live drop event its place, and every event of either kind
//! is counted as sent, suppressed or lost.

mod common;

use aya::maps::{MapData, RingBuf};
use common::udp4_frame;
use regionwall::{datapath::Readings as _, events};
use regionwall_common::{CandidateMeta, Counter, Decision};
use regionwall_testkit::xdp::XDP_DROP;

const POLICY: &str = r#"
[regions.blocked]
cidrs = ["198.51.100.0/24"]

[devices.phone]
ip = ["192.0.2.10"]

[[rules]]
name = "no-blocked"
devices = ["phone"]
block = ["blocked"]
"#;

/// Events in `ring` now: (live, candidate).
fn drain(ring: &mut RingBuf<MapData>) -> (u64, u64) {
    let (mut live, mut candidate) = (0, 0);
    while let Some(item) = ring.next() {
        let ev = events::decode(&item).expect("event record of full size");
        if ev.candidate == 0 {
            live += 1;
        } else {
            candidate += 1;
        }
    }
    (live, candidate)
}

#[test]
fn candidate_events_never_take_the_live_rings_room() {
    let (mut dp, compiled) = common::datapath_with(POLICY);
    let mut live_ring = dp.take_events().expect("event ring");
    let mut candidate_ring = dp.take_candidate_events().expect("candidate ring");
    // The candidate passes everything the live policy drops: every
    // blocked datagram is a live drop event and a candidate event.
    let decisions: Vec<Decision> = compiled
        .decisions
        .iter()
        .map(|d| Decision { verdict: 0, ..*d })
        .collect();
    dp.stage_candidate(
        &decisions,
        &CandidateMeta {
            staged: 1,
            ..CandidateMeta::default()
        },
        true,
    )
    .expect("stage");
    assert!(dp.candidate_evaluated());

    // 40,000 runs: more than the candidate's 1 MiB ring holds (~13k
    // events), fewer than the live 4 MiB ring holds (~52k). Sharing one
    // ring, 80,000 events would have lost ~28,000 live ones.
    let runs = 40_000u32;
    let frame = udp4_frame(
        "192.0.2.10".parse().unwrap(),
        "198.51.100.7".parse().unwrap(),
        9,
    );
    let before = dp.counters().expect("counters");
    let ret = common::prog::run(dp.program().expect("program"), &frame, runs).return_value;
    assert_eq!(ret, XDP_DROP, "the live policy enforces");
    let after = dp.counters().expect("counters");
    let d = |c: Counter| after[c as usize] - before[c as usize];
    println!(
        "live: {} sent, {} lost; candidate: {} sent, {} lost",
        d(Counter::EventsSent),
        d(Counter::EventsLost),
        d(Counter::CandidateEventsSent),
        d(Counter::CandidateEventsLost)
    );
    let runs = u64::from(runs);
    assert_eq!(d(Counter::EventsSent), runs, "every live drop reported");
    assert_eq!(d(Counter::EventsLost), 0);
    assert_eq!(d(Counter::EventsSuppressed), 0);
    assert!(
        d(Counter::CandidateEventsLost) > 0,
        "the candidate ring filled"
    );
    assert_eq!(
        d(Counter::CandidateEventsSent) + d(Counter::CandidateEventsLost),
        runs,
        "every candidate event sent or counted lost"
    );
    // Each ring holds only its own kind, as counted.
    assert_eq!(drain(&mut live_ring), (runs, 0));
    assert_eq!(
        drain(&mut candidate_ring),
        (0, d(Counter::CandidateEventsSent))
    );
    // The disagreements themselves are all counted.
    let rows = dp.candidate_rows().expect("candidate rows");
    assert_eq!(rows.iter().map(|r| r.packets).sum::<u64>(), runs);
}

/// A publish given the candidate's table for the new generation arms it
/// with the flip itself: the candidate counts the first packet after it.
#[test]
fn a_publish_carries_the_candidate_into_the_new_generation() {
    let (mut dp, compiled) = common::datapath_with(POLICY);
    let pass_all = |c: &regionwall::compile::Compiled| -> Vec<Decision> {
        c.decisions
            .iter()
            .map(|d| Decision { verdict: 0, ..*d })
            .collect()
    };
    dp.stage_candidate(&pass_all(&compiled), &CandidateMeta::default(), true)
        .expect("stage");
    let frame = udp4_frame(
        "192.0.2.10".parse().unwrap(),
        "198.51.100.7".parse().unwrap(),
        9,
    );
    for epoch in 2..6 {
        dp.publish_stable_with(compiled.clone(), None, epoch, |stable| {
            Some(pass_all(stable))
        })
        .expect("publish");
        assert!(
            dp.candidate_evaluated(),
            "armed by the flip (epoch {epoch})"
        );
        common::prog::run(dp.program().expect("program"), &frame, 1);
    }
    let rows = dp.candidate_rows().expect("candidate rows");
    assert_eq!(rows.iter().map(|r| r.packets).sum::<u64>(), 4);
    // Without a table for the new generation the flip turns it off.
    dp.publish_stable(compiled, None, 6).expect("publish");
    assert!(!dp.candidate_evaluated());
    common::prog::run(dp.program().expect("program"), &frame, 1);
    let rows = dp.candidate_rows().expect("candidate rows");
    assert_eq!(rows.iter().map(|r| r.packets).sum::<u64>(), 4);
}
