//! regionwall's XDP program, as a library shared by the production object
//! (`main.rs`) and the benchmark object (`bench.rs`).
//!
//! Attached to the LAN-facing interface of a gateway, it sees every frame a
//! device sends out. Per frame: parse L2/L3/L4 (`parse`), find the region
//! class of the destination and the device (`policy`), read the decision the
//! controller compiled for (device, class), count it per CPU (`counters`,
//! `report`), and report drops, rejects and audits through a ring buffer (`report`);
//! rejects are answered in place (`reject`).
//!
//! The TC egress DNS copier (`dns`) shares the parser and runs beside it.
#![no_std]

pub mod counters;
pub mod dns;
pub mod fib;
pub mod maps;
pub mod parse;
pub mod policy;
pub mod reject;
pub mod report;
pub mod shadow;

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use regionwall_common::{Counter, Lookup, Reason, UnparsedAction, Verdict, candidate_live};

use crate::parse::Parsed;

/// The whole per-frame path. `lookup` is a constant at every call site, so
/// only one destination lookup is compiled into each program. Every path
/// returns a deliberate action; there is no implicit fallback.
#[inline(always)]
pub fn filter(ctx: &XdpContext, lookup: Lookup) -> u32 {
    counters::count(Counter::Frames);
    let control = policy::control();
    match parse::parse(ctx) {
        Parsed::NonIp => {
            counters::count(Counter::NonIp);
            xdp_action::XDP_PASS
        }
        Parsed::Unparsed(cause, pkt) => {
            counters::count(cause);
            if control.unparsed == UnparsedAction::Drop as u32 {
                counters::count(Counter::UnparsedDropped);
                let epoch = policy::epoch(control.active & 1);
                report::emit(
                    ctx,
                    &control,
                    &pkt,
                    &policy::unparsed_decision(),
                    Reason::Unparsed,
                    epoch,
                    regionwall_common::DEFAULT_DEVICE,
                );
                xdp_action::XDP_DROP
            } else {
                counters::count(Counter::UnparsedPassed);
                xdp_action::XDP_PASS
            }
        }
        Parsed::Ip(pkt) => {
            // The packet's generation picks its tables here, once.
            let (decision, device, epoch, index) = if control.active & 1 == 0 {
                policy::decide::<0>(lookup, &pkt)
            } else {
                policy::decide::<1>(lookup, &pkt)
            };
            report::traffic(ctx, &control, &pkt, device, &decision);
            // One test of the control value already read: ~0 without a
            // candidate. The candidate only counts and reports.
            if candidate_live(&control) {
                if control.active & 1 == 0 {
                    shadow::evaluate::<0>(ctx, &control, &pkt, device, &decision, index, epoch);
                } else {
                    shadow::evaluate::<1>(ctx, &control, &pkt, device, &decision, index, epoch);
                }
            }
            if decision.verdict == Verdict::Pass as u8 {
                return xdp_action::XDP_PASS;
            }
            report::emit(
                ctx,
                &control,
                &pkt,
                &decision,
                Reason::Policy,
                epoch,
                device,
            );
            if decision.verdict == Verdict::Drop as u8 {
                xdp_action::XDP_DROP
            } else if decision.verdict == Verdict::Reject as u8 {
                // Answered with a RST or an ICMP error (XDP_TX), or dropped.
                reject::answer(ctx, &control, device)
            } else {
                // Audit: reported above, passed here.
                xdp_action::XDP_PASS
            }
        }
    }
}
