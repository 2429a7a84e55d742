//! Traffic counters and events. Traffic is counted per CPU (no atomics on
//! the hot path); events go to a ring buffer, and a full ring buffer is
//! counted, never allowed to change the verdict.

use aya_ebpf::maps::{PerCpuArray, RingBuf};
use aya_ebpf::{helpers::bpf_ktime_get_boot_ns, programs::XdpContext};
use regionwall_common::{
    Bucket, CONTROL_COUNTRIES, CONTROL_HOSTS, COUNTRY_STRIDE, Control, Counter, Decision,
    DestCounter, DestKey, Event, MAX_DEVICES, Reason, TrafficCounter, Verdict, country_slot,
    rate_slot, traffic_slot,
};

use crate::{
    counters::count,
    maps::{COUNTRY_TRAFFIC, DESTINATIONS, EVENTS, RATE_LIMIT, TRAFFIC},
    parse::{Packet, bytes16},
};

/// Counts packets and bytes per (device, region, verdict) and per (device,
/// country, verdict), passed traffic too. The country comes with the
/// decision (the destination lookup found it; counted only with
/// `CONTROL_COUNTRIES`, i.e. a policy with a country database), so this is two array
/// updates and no lookup. With `CONTROL_HOSTS`, also per (device,
/// destination address): one hash update.
#[inline(always)]
pub fn traffic(
    ctx: &XdpContext,
    control: &Control,
    pkt: &Packet,
    device: u32,
    decision: &Decision,
) {
    let region = u32::from(decision.region);
    let country = u32::from(decision.country);
    let stride = control.region_stride;
    if device >= MAX_DEVICES {
        return;
    }
    let verdict = u32::from(decision.verdict);
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    // A region beyond the room the maps were sized for is not counted
    // (the controller never publishes one); the array bounds the rest.
    if region < stride {
        add(
            &TRAFFIC,
            traffic_slot(device, region, verdict, stride),
            bytes,
        );
    }
    if control.flags & CONTROL_COUNTRIES != 0 && country < COUNTRY_STRIDE {
        add(
            &COUNTRY_TRAFFIC,
            country_slot(device, country, verdict),
            bytes,
        );
    }
    if control.flags & CONTROL_HOSTS != 0 {
        let blocked = verdict == Verdict::Drop as u32 || verdict == Verdict::Reject as u32;
        destination(pkt, device, blocked, bytes);
    }
}

/// Adds the packet to its (device, destination) entry on this CPU,
/// making the entry if there is none. A failed insert (the LRU map under
/// pressure) loses that one count, never the verdict.
#[inline(always)]
fn destination(pkt: &Packet, device: u32, blocked: bool, bytes: u64) {
    let key = DestKey {
        addr: bytes16(pkt.dst),
        mac: {
            let b = pkt.src_mac.to_ne_bytes();
            [b[0], b[1], b[2], b[3], b[4], b[5]]
        },
        device: device as u16,
        family: pkt.family,
        _pad: [0; 3],
    };
    if let Some(p) = DESTINATIONS.get_ptr_mut(&key) {
        // SAFETY: per-CPU value, only this CPU writes it while we run.
        unsafe {
            if blocked {
                (*p).blocked_packets += 1;
                (*p).blocked_bytes += bytes;
            } else {
                (*p).passed_packets += 1;
                (*p).passed_bytes += bytes;
            }
        }
        return;
    }
    let value = if blocked {
        DestCounter {
            blocked_packets: 1,
            blocked_bytes: bytes,
            ..DestCounter::default()
        }
    } else {
        DestCounter {
            passed_packets: 1,
            passed_bytes: bytes,
            ..DestCounter::default()
        }
    };
    let _ = DESTINATIONS.insert(&key, &value, 0);
}

#[inline(always)]
fn add(map: &PerCpuArray<TrafficCounter>, slot: u32, bytes: u64) {
    if let Some(p) = map.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe {
            (*p).packets += 1;
            (*p).bytes += bytes;
        }
    }
}

/// Token bucket of (device, region) on this CPU in `buckets` (live or
/// candidate events): whether an event at `now` may be sent. A slot
/// outside the table is not limited.
#[inline(always)]
fn admit(
    buckets: &PerCpuArray<Bucket>,
    control: &Control,
    device: u32,
    region: u32,
    now: u64,
) -> bool {
    let cost = u64::from(control.event_cost_ns);
    let stride = control.region_stride;
    if cost == 0 || device >= MAX_DEVICES || region >= stride {
        return true;
    }
    let Some(b) = buckets.get_ptr_mut(rate_slot(device, region, stride)) else {
        return true;
    };
    // SAFETY: per-CPU slot, only this CPU writes it while we run.
    spend(unsafe { &mut *b }, cost, control.event_burst, now)
}

/// One token bucket step (events and rejects): credit grows by the time
/// elapsed, capped at `burst` spends' worth; a spend costs `cost`. Counts
/// in `suppressed` what it refused.
#[inline(always)]
pub fn spend(b: &mut Bucket, cost: u64, burst: u32, now: u64) -> bool {
    let cap = cost * u64::from(burst.max(1));
    let elapsed = now.wrapping_sub(b.last_ns);
    let credit = b.credit_ns.saturating_add(elapsed).min(cap);
    b.last_ns = now;
    if credit >= cost {
        b.credit_ns = credit - cost;
        true
    } else {
        b.credit_ns = credit;
        b.suppressed += 1;
        false
    }
}

/// Reports a drop, reject or audit: rate limited per (device, region), then written
/// to the ring buffer. Every event is counted as sent, suppressed or lost.
#[inline(always)]
pub fn emit(
    ctx: &XdpContext,
    control: &Control,
    pkt: &Packet,
    decision: &Decision,
    reason: Reason,
    epoch: u32,
    device: u32,
) {
    let live = Shadow {
        buckets: &RATE_LIMIT,
        ring: &EVENTS,
        sent: Counter::EventsSent,
        suppressed: Counter::EventsSuppressed,
        lost: Counter::EventsLost,
        candidate: 0,
        live_verdict: decision.verdict,
    };
    write_event(ctx, control, pkt, decision, reason, epoch, device, &live);
}

/// Whose event [`write_event`] writes: the live policy's, or the staged
/// candidate's (its own rate-limit buckets, ring and counters, marked,
/// with the live verdict), so neither takes the other's room.
pub struct Shadow {
    pub buckets: &'static PerCpuArray<Bucket>,
    pub ring: &'static RingBuf,
    pub sent: Counter,
    pub suppressed: Counter,
    pub lost: Counter,
    pub candidate: u8,
    pub live_verdict: u8,
}

/// [`emit`] for live and candidate events alike.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "one call per event kind; a struct would be built and taken apart on the hot path"
)]
pub fn write_event(
    ctx: &XdpContext,
    control: &Control,
    pkt: &Packet,
    decision: &Decision,
    reason: Reason,
    epoch: u32,
    device: u32,
    shadow: &Shadow,
) {
    // SAFETY: helper without preconditions.
    let ts_ns = unsafe { bpf_ktime_get_boot_ns() };
    if !admit(
        shadow.buckets,
        control,
        device,
        u32::from(decision.region),
        ts_ns,
    ) {
        count(shadow.suppressed);
        return;
    }
    let Some(mut entry) = shadow.ring.reserve::<Event>(0) else {
        count(shadow.lost);
        return;
    };
    entry.write(Event {
        ts_ns,
        src_addr: bytes16(pkt.src),
        dst_addr: bytes16(pkt.dst),
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
        country: decision.country,
        candidate: shadow.candidate,
        live_verdict: shadow.live_verdict,
        _pad: [0; 4],
    });
    entry.submit(0);
    count(shadow.sent);
}
