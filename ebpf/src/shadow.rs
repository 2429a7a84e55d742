//! The staged candidate policy, evaluated beside the live one and never
//! enforced: one read of the generation's `CANDIDATE_DECISIONS_*` at the
//! live decision's index (the candidate shares the live destination,
//! device and port lookups), and on a disagreement a per-CPU count and a
//! rate-limited candidate event on the candidate's own ring.

use aya_ebpf::programs::XdpContext;
use regionwall_common::{
    CandidateKey, Control, Counter, Decision, MAX_DECISIONS, Reason, TrafficCounter,
};

use crate::{
    counters::count,
    maps::{CANDIDATE_EVENTS, CANDIDATE_RATE_LIMIT, CANDIDATE_TRAFFIC, Generation},
    parse::Packet,
    report::{Shadow, write_event},
};

/// Evaluates the candidate for a packet the live policy decided with
/// `live` at `index` (called only with a candidate staged for the live
/// generation, see `candidate_live`). A missing cell (a table shorter than
/// the live one, which the controller never writes) counts nothing.
#[inline(always)]
pub fn evaluate<const G: u32>(
    ctx: &XdpContext,
    control: &Control,
    pkt: &Packet,
    device: u32,
    live: &Decision,
    index: u32,
    epoch: u32,
) {
    if index >= MAX_DECISIONS {
        return;
    }
    let Some(cell) = Generation::<G>::candidate_decisions().get(index) else {
        return;
    };
    let candidate = *cell;
    if candidate.verdict == live.verdict {
        return;
    }
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let key = CandidateKey {
        device: device as u16,
        region: candidate.region,
        country: candidate.country,
        rule: candidate.rule,
        live: live.verdict,
        candidate: candidate.verdict,
        _pad: [0; 2],
    };
    if let Some(p) = CANDIDATE_TRAFFIC.get_ptr_mut(&key) {
        // SAFETY: per-CPU value, only this CPU writes it while we run.
        unsafe {
            (*p).packets += 1;
            (*p).bytes += bytes;
        }
    } else {
        let value = TrafficCounter { packets: 1, bytes };
        if CANDIDATE_TRAFFIC.insert(&key, &value, 0).is_err() {
            count(Counter::CandidateLost);
        }
    }
    let shadow = Shadow {
        buckets: &CANDIDATE_RATE_LIMIT,
        ring: &CANDIDATE_EVENTS,
        sent: Counter::CandidateEventsSent,
        suppressed: Counter::CandidateEventsSuppressed,
        lost: Counter::CandidateEventsLost,
        candidate: 1,
        live_verdict: live.verdict,
    };
    write_event(
        ctx,
        control,
        pkt,
        &candidate,
        Reason::Policy,
        epoch,
        device,
        &shadow,
    );
}
