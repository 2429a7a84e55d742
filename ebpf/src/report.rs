//! Counters and events. Counters are per-CPU (no atomics on the hot path);
//! events go to a ring buffer, and a full ring buffer is counted, never
//! allowed to change the verdict.

use aya_ebpf::{helpers::bpf_ktime_get_boot_ns, programs::XdpContext};
use regionwall_common::{Counter, Decision, Event, MAX_DEVICES, MAX_REGIONS, Reason, traffic_slot};

use crate::{
    maps::{COUNTERS_MAP, EVENTS, TRAFFIC},
    parse::Packet,
};

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(p) = COUNTERS_MAP.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *p += 1 };
    }
}

/// Counts packets and bytes per (device, region, verdict), passed traffic too.
#[inline(always)]
pub fn traffic(ctx: &XdpContext, device: u32, decision: &Decision) {
    let region = u32::from(decision.region);
    if device >= MAX_DEVICES || region > MAX_REGIONS {
        return;
    }
    let slot = traffic_slot(device, region, u32::from(decision.verdict));
    if let Some(p) = TRAFFIC.get_ptr_mut(slot) {
        let bytes = (ctx.data_end() - ctx.data()) as u64;
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe {
            (*p).packets += 1;
            (*p).bytes += bytes;
        }
    }
}

#[inline(always)]
pub fn emit(
    ctx: &XdpContext,
    pkt: &Packet,
    decision: &Decision,
    reason: Reason,
    epoch: u32,
    device: u32,
) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count(Counter::EventsLost);
        return;
    };
    // SAFETY: helper without preconditions.
    let ts_ns = unsafe { bpf_ktime_get_boot_ns() };
    entry.write(Event {
        ts_ns,
        src_addr: crate::policy::bytes16(pkt.src),
        dst_addr: crate::policy::bytes16(pkt.dst),
        src_mac: {
            let b = pkt.src_mac.to_ne_bytes();
            [b[0], b[1], b[2], b[3], b[4], b[5]]
        },
        family: pkt.family,
        proto: pkt.proto,
        src_port: pkt.src_port,
        dst_port: pkt.dst_port,
        device: device as u16,
        region: decision.region,
        rule: decision.rule,
        verdict: decision.verdict,
        reason: reason as u8,
        ifindex: ctx.ingress_ifindex() as u32,
        len: (ctx.data_end() - ctx.data()) as u32,
        epoch,
    });
    entry.submit(0);
    count(Counter::EventsSent);
}
