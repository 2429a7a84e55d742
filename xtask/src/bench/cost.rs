//! Per-packet cost through BPF_PROG_TEST_RUN: the destination pool (half
//! inside the table), the frame the driver rewrites, and the medians of
//! every stage of the benchmark object.

use anyhow::Context as _;
use aya::programs::{TestRun as _, TestRunOptions};
use regionwall::{compile, datapath::Datapath, fib::Fib, policy::net::Bits as _};
use regionwall_common::BENCH_KEYS;
use regionwall_testkit::rng::Rng;

use super::{Args, PacketCost, median};

/// [`BENCH_KEYS`] distinct destinations of one family, in random order:
/// half inside the table (a random address of a random entry), half
/// outside (next to an entry, or anywhere), checked with the kernel's
/// search run over the built tables. Returns the keys and how many are
/// inside.
pub fn destinations(
    compiled: &compile::Compiled,
    fib: &Fib,
    v4: bool,
    rng: &mut Rng,
) -> (Vec<[u8; 16]>, usize) {
    let want = BENCH_KEYS as usize;
    let mut seen = std::collections::HashSet::with_capacity(want);
    let mut keys = Vec::with_capacity(want);
    let entries: Vec<(u128, u128)> = if v4 {
        compiled
            .v4
            .iter()
            .map(|(p, _)| (u128::from(p.addr), p.last()))
            .collect()
    } else {
        compiled
            .v6
            .iter()
            .map(|(p, _)| (p.addr, p.last()))
            .collect()
    };
    let class = |a: u128| -> u32 {
        if v4 {
            fib.class_v4(u32::try_from(a).unwrap_or(0)).unwrap_or(0)
        } else {
            fib.class_v6(a).unwrap_or(0)
        }
    };
    let random = |rng: &mut Rng| -> u128 {
        let wide = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
        if v4 {
            wide & 0xffff_ffff
        } else {
            (0x2u128 << 124) | (wide >> 3)
        }
    };
    let mut inside = 0;
    let mut attempts = 0u64;
    while keys.len() < want && attempts < 200 * want as u64 {
        attempts += 1;
        let want_inside = keys.len() % 2 == 0;
        let addr = if entries.is_empty() {
            random(rng)
        } else {
            let (first, last) =
                entries[usize::try_from(rng.below(entries.len() as u64)).unwrap_or(0)];
            let span = last - first;
            let offset = (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()))
                % span.saturating_add(1).max(1);
            match (want_inside, rng.below(2)) {
                (true, _) => first + offset,
                (false, 0) => last.saturating_add(1).saturating_add(offset),
                (false, _) => random(rng),
            }
        };
        let addr = if v4 { addr & 0xffff_ffff } else { addr };
        let is_inside = class(addr) != 0;
        if is_inside != want_inside || !seen.insert(addr) {
            continue;
        }
        inside += usize::from(is_inside);
        let mut key = [0u8; 16];
        if v4 {
            key[..4].copy_from_slice(&u32::try_from(addr).unwrap_or(0).to_be_bytes());
        } else {
            key = addr.to_be_bytes();
        }
        keys.push(key);
    }
    rng.shuffle(&mut keys);
    (keys, inside)
}

/// A UDP frame of the family; the driver overwrites its destination.
pub fn frame(v4: bool) -> Vec<u8> {
    use regionwall_testkit::frames::{
        ETH_P_IP, ETH_P_IPV6, IPPROTO_UDP, ethernet, ipv4, ipv6, udp,
    };
    let udp = udp(12345, 443, b"");
    if v4 {
        let (src, dst) = ([192, 0, 2, 10].into(), [198, 51, 100, 7].into());
        ethernet(
            BENCH_MAC,
            &[],
            ETH_P_IP,
            &ipv4(src, dst, IPPROTO_UDP, 0, 0, &udp),
        )
    } else {
        let src = 0x2001_0db8_0000_0000_0000_0000_0000_0010_u128.into();
        let dst = 0x2001_0db8_0000_0000_0000_0000_0000_0020_u128.into();
        ethernet(
            BENCH_MAC,
            &[],
            ETH_P_IPV6,
            &ipv6(src, dst, &[], IPPROTO_UDP, &udp),
        )
    }
}

/// Source MAC of the benchmark frames (a documentation address).
const BENCH_MAC: [u8; 6] = [0x02, 0, 0x5e, 0, 0x53, 0x01];

/// The median ns per run of `name` on `frame` over the samples; with
/// `want`, every run must return that action.
pub fn median_ns(
    dp: &Datapath,
    name: &'static str,
    frame: &[u8],
    want: Option<u32>,
    args: &Args,
) -> anyhow::Result<f64> {
    let program = dp.program_named(name)?;
    let mut samples = Vec::with_capacity(args.samples);
    for _ in 0..args.samples.max(1) {
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: args.repeat.max(1),
                ..TestRunOptions::default()
            })
            .with_context(|| format!("test_run {name}"))?;
        if let Some(want) = want
            && result.return_value != want
        {
            anyhow::bail!("{name} returned {}, not {want}", result.return_value);
        }
        samples.push(result.duration.as_nanos() as f64);
    }
    Ok(median(&mut samples))
}

pub fn packet_cost(dp: &Datapath, v4: bool, args: &Args) -> anyhow::Result<PacketCost> {
    let frame = frame(v4);
    let run = |name: &'static str| median_ns(dp, name, &frame, None, args);
    Ok(PacketCost {
        floor: run("bench_floor")?,
        keys: run("bench_keys")?,
        parse: run("bench_parse")?,
        class_lpm: run("bench_class_lpm")?,
        class_compiled: run("bench_class_compiled")?,
        lpm: run("bench_lpm")?,
        compiled: run("bench_compiled")?,
    })
}
