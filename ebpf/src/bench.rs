//! Benchmark and test object (never attached by the controller): the
//! production path split into stages, each behind a driver that rewrites the
//! frame's destination from a key pool before every run, so that one
//! `BPF_PROG_TEST_RUN` with `repeat` walks many distinct destinations
//! instead of one cached address.
//!
//! * `bench_floor`: returns at once (the cost of running any program).
//! * `bench_keys`: the key driver only.
//! * `bench_parse`: driver + parser (every parsed field is used).
//! * `bench_class_lpm`, `bench_class_compiled`: driver + parser + one
//!   destination lookup.
//! * `bench_lpm`, `bench_compiled`: driver + the whole production path with
//!   the LPM-trie or the compiled lookup.
//! * `bench_syn`, `bench_syn_drop`, `bench_syn_reject`: a driver that
//!   writes a whole TCP SYN over the frame before every run (a 54-byte
//!   IPv4 or 74-byte IPv6 frame; the answer a reject leaves is the same
//!   length), alone, then with the production path (compiled lookup) to a
//!   destination in a dropped region (`*.d0d` / 203.0.113.7) or a rejected
//!   one (`*.bad` / 198.51.100.7): the reject path's cost beside the drop
//!   path's.
//! * `bench_classify`: no driver; writes the class each lookup finds for the
//!   frame's destination over its first 8 bytes (LPM then compiled, u32
//!   big-endian), for exactness tests.
//! * `bench_redirect`: a traffic generator for the live-frames mode of
//!   `BPF_PROG_TEST_RUN` (`BPF_F_TEST_XDP_LIVE_FRAMES`): restores the UDP
//!   frame of `BENCH_GEN_TEMPLATE` (the receiver may have forwarded the
//!   recycled page, rewriting its MACs and TTL), writes the next pool key as
//!   its IPv4 destination, recomputes the header checksum and redirects the
//!   frame out of the interface in `BENCH_GEN_IFINDEX`.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_redirect,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use regionwall_common::{BENCH_GEN_FRAME, BENCH_KEYS, Lookup};
use regionwall_ebpf::{filter, parse, policy};

/// Destinations the driver cycles through (IPv4 in the first 4 bytes).
#[map]
static BENCH_KEY_POOL: Array<[u8; 16]> = Array::with_max_entries(BENCH_KEYS, 0);
#[map]
static BENCH_CURSOR: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

const ETH_HLEN: usize = 14;
const V4_DST: usize = ETH_HLEN + 16;
const V6_DST: usize = ETH_HLEN + 24;

/// Writes the next pool key over the destination of an untagged IPv4 or
/// IPv6 frame.
#[inline(always)]
fn next_key(ctx: &XdpContext) {
    let Some(cursor) = BENCH_CURSOR.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot, only this CPU touches it while we run.
    let i = unsafe {
        let i = *cursor;
        *cursor = i.wrapping_add(1);
        i
    };
    let Some(key) = BENCH_KEY_POOL.get(i & (BENCH_KEYS - 1)) else {
        return;
    };
    let data = ctx.data();
    let end = ctx.data_end();
    if data + V6_DST + 16 <= end {
        // SAFETY: bounds checked above.
        let ethertype = unsafe { *((data + 12) as *const [u8; 2]) };
        if ethertype == [0x86, 0xdd] {
            // Word by word: a 16-byte copy becomes a byte loop in BPF.
            let mut i = 0;
            while i < 4 {
                let w = [key[4 * i], key[4 * i + 1], key[4 * i + 2], key[4 * i + 3]];
                // SAFETY: bounds checked above; the writes are unaligned.
                unsafe { ((data + V6_DST + 4 * i) as *mut [u8; 4]).write_unaligned(w) };
                i += 1;
            }
            return;
        }
    }
    if data + V4_DST + 4 <= end {
        // SAFETY: bounds checked above.
        unsafe {
            ((data + V4_DST) as *mut [u8; 4]).write_unaligned([key[0], key[1], key[2], key[3]]);
        }
    }
}

#[xdp]
pub fn bench_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub fn bench_keys(ctx: XdpContext) -> u32 {
    next_key(&ctx);
    xdp_action::XDP_PASS
}

#[xdp]
pub fn bench_parse(ctx: XdpContext) -> u32 {
    next_key(&ctx);
    // Every field is used, so the parser cannot be optimised away in part.
    match parse::parse(&ctx) {
        parse::Parsed::Ip(pkt) => {
            let mut x = (pkt.src_mac as u32) ^ ((pkt.src_mac >> 32) as u32);
            let mut i = 0;
            while i < 4 {
                x ^= pkt.src[i] ^ pkt.dst[i];
                i += 1;
            }
            x ^= u32::from(pkt.src_port) << 16 | u32::from(pkt.dst_port);
            x ^= u32::from(pkt.proto) << 8 | u32::from(pkt.family) | u32::from(pkt.has_ports) << 24;
            if x == 0x5eed_f00d {
                xdp_action::XDP_DROP
            } else {
                xdp_action::XDP_PASS
            }
        }
        _ => xdp_action::XDP_PASS,
    }
}

/// Driver + parser + one destination lookup, nothing else.
#[inline(always)]
fn class_only(ctx: &XdpContext, lookup: Lookup) -> u32 {
    next_key(ctx);
    let parse::Parsed::Ip(pkt) = parse::parse(ctx) else {
        return xdp_action::XDP_ABORTED;
    };
    let class = if policy::control().active & 1 == 0 {
        policy::region_class::<0>(lookup, &pkt)
    } else {
        policy::region_class::<1>(lookup, &pkt)
    };
    if class == u32::MAX {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

#[xdp]
pub fn bench_class_lpm(ctx: XdpContext) -> u32 {
    class_only(&ctx, Lookup::Lpm)
}

#[xdp]
pub fn bench_class_compiled(ctx: XdpContext) -> u32 {
    class_only(&ctx, Lookup::Compiled)
}

#[xdp]
pub fn bench_lpm(ctx: XdpContext) -> u32 {
    next_key(&ctx);
    filter(&ctx, Lookup::Lpm)
}

#[xdp]
pub fn bench_compiled(ctx: XdpContext) -> u32 {
    next_key(&ctx);
    filter(&ctx, Lookup::Compiled)
}

/// The SYN frames of the `bench_syn*` drivers, destination left 0.
const SYN_V4: [u8; 54] = [
    2, 0, 0, 0, 0, 0xfe, 2, 0, 0x5e, 0, 0x53, 1, 0x08, 0x00, // Ethernet
    0x45, 0, 0, 40, 0x12, 0x34, 0, 0, 64, 6, 0, 0, 192, 0, 2, 10, 0, 0, 0, 0, // IPv4
    0x30, 0x39, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0, // TCP
];
const SYN_V6: [u8; 74] = [
    2, 0, 0, 0, 0, 0xfe, 2, 0, 0x5e, 0, 0x53, 1, 0x86, 0xdd, // Ethernet
    0x60, 0, 0, 0, 0, 20, 6, 64, // IPv6
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, // source
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // destination
    0x30, 0x39, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0, // TCP
];

/// Writes `tpl` over the first `N` bytes of the frame, word by word.
#[inline(always)]
fn fill<const N: usize>(ctx: &XdpContext, tpl: &[u8; N]) -> bool {
    let data = ctx.data();
    if data + N > ctx.data_end() {
        return false;
    }
    let mut i = 0;
    while i + 4 <= N {
        let w = [tpl[i], tpl[i + 1], tpl[i + 2], tpl[i + 3]];
        // SAFETY: bounds checked above; the writes are unaligned.
        unsafe { ((data + i) as *mut [u8; 4]).write_unaligned(w) };
        i += 4;
    }
    if i + 2 <= N {
        // SAFETY: bounds checked above.
        unsafe { ((data + i) as *mut [u8; 2]).write_unaligned([tpl[i], tpl[i + 1]]) };
    }
    true
}

/// Restores the SYN of the frame's length with destination `v6` (a frame
/// of at least 74 bytes) or `v4` (54 to 73 bytes). Dispatched on bounds
/// checks, not on the length: LLVM would drop a bounds check implied by
/// `len == 54`, which the verifier cannot follow.
#[inline(always)]
fn syn(ctx: &XdpContext, v4: [u8; 4], v6: [u8; 16]) {
    let data = ctx.data();
    if fill(ctx, &SYN_V6) {
        let mut i = 0;
        while i < 4 {
            let w = [v6[4 * i], v6[4 * i + 1], v6[4 * i + 2], v6[4 * i + 3]];
            // SAFETY: fill checked the 74 bytes.
            unsafe { ((data + V6_DST + 4 * i) as *mut [u8; 4]).write_unaligned(w) };
            i += 1;
        }
    } else if fill(ctx, &SYN_V4) {
        // SAFETY: fill checked the 54 bytes.
        unsafe { ((data + V4_DST) as *mut [u8; 4]).write_unaligned(v4) };
    }
}

const REJECTED_V4: [u8; 4] = [198, 51, 100, 7];
const REJECTED_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0x0b, 0xad, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7,
];
const DROPPED_V4: [u8; 4] = [203, 0, 113, 7];
const DROPPED_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0x0d, 0x0d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7,
];

#[xdp]
pub fn bench_syn(ctx: XdpContext) -> u32 {
    syn(&ctx, REJECTED_V4, REJECTED_V6);
    xdp_action::XDP_PASS
}

#[xdp]
pub fn bench_syn_drop(ctx: XdpContext) -> u32 {
    syn(&ctx, DROPPED_V4, DROPPED_V6);
    filter(&ctx, Lookup::Compiled)
}

#[xdp]
pub fn bench_syn_reject(ctx: XdpContext) -> u32 {
    syn(&ctx, REJECTED_V4, REJECTED_V6);
    filter(&ctx, Lookup::Compiled)
}

#[xdp]
pub fn bench_classify(ctx: XdpContext) -> u32 {
    let parse::Parsed::Ip(pkt) = parse::parse(&ctx) else {
        return xdp_action::XDP_ABORTED;
    };
    let (lpm, compiled) = if policy::control().active & 1 == 0 {
        (
            policy::region_class::<0>(Lookup::Lpm, &pkt),
            policy::region_class::<0>(Lookup::Compiled, &pkt),
        )
    } else {
        (
            policy::region_class::<1>(Lookup::Lpm, &pkt),
            policy::region_class::<1>(Lookup::Compiled, &pkt),
        )
    };
    let data = ctx.data();
    if data + 8 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: bounds checked above; the writes are unaligned.
    unsafe {
        (data as *mut [u8; 4]).write_unaligned(lpm.to_be_bytes());
        ((data + 4) as *mut [u8; 4]).write_unaligned(compiled.to_be_bytes());
    }
    xdp_action::XDP_PASS
}

/// The frame `bench_redirect` sends (userspace builds it).
#[map]
static BENCH_GEN_TEMPLATE: Array<[u8; BENCH_GEN_FRAME]> = Array::with_max_entries(1, 0);
/// The interface `bench_redirect` sends out of.
#[map]
static BENCH_GEN_IFINDEX: Array<u32> = Array::with_max_entries(1, 0);

#[xdp]
pub fn bench_redirect(ctx: XdpContext) -> u32 {
    let (Some(template), Some(ifindex)) = (BENCH_GEN_TEMPLATE.get(0), BENCH_GEN_IFINDEX.get(0))
    else {
        return xdp_action::XDP_ABORTED;
    };
    if !fill(&ctx, template) {
        return xdp_action::XDP_ABORTED;
    }
    next_key(&ctx);
    let ip = ctx.data() + ETH_HLEN;
    if ip + 20 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // The template's IPv4 header has no options; its checksum field is
    // zeroed, summed over, then written.
    // SAFETY: bounds checked above; the accesses are unaligned.
    unsafe { ((ip + 10) as *mut [u8; 2]).write_unaligned([0, 0]) };
    let mut sum = 0u32;
    let mut i = 0;
    while i < 20 {
        // SAFETY: bounds checked above.
        let w = unsafe { ((ip + i) as *const [u8; 2]).read_unaligned() };
        sum += u32::from(u16::from_be_bytes(w));
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    let checksum = !(sum as u16);
    // SAFETY: bounds checked above.
    unsafe { ((ip + 10) as *mut [u8; 2]).write_unaligned(checksum.to_be_bytes()) };
    // SAFETY: a helper call; XDP_REDIRECT, or XDP_ABORTED for a bad index.
    unsafe { bpf_redirect(*ifindex, 0) as u32 }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
