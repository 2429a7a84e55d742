//! The compiled lookup is exact: in the kernel, on the same published
//! tables, it finds the same region class as the LPM trie for every address
//! tried — every boundary of every table entry (first, last, and the
//! addresses just outside) and random addresses — and both equal the
//! same search run in userspace over the built tables (`Fib::class_v4`/
//! `class_v6`, the code of `regionwall_common::fib` that the kernel runs).
//!
//! The benchmark object's `bench_classify` program runs both lookups on one
//! frame and writes the two classes over the frame's first 8 bytes.

mod common;

use regionwall_testkit::xdp::{XDP_DROP, XDP_PASS};
use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use common::{
    Rng,
    frames::{ethernet, ipv4, ipv6, udp},
};
use regionwall::{
    compile::{self, Compiled},
    datapath::{Datapath, LoadOptions},
    fib::Fib,
    policy::{
        V4, V6,
        net::{Bits, host_mask},
    },
};

const MAC: [u8; 6] = [0x02, 0, 0x5e, 0, 0x53, 0x01];

/// A UDP frame from a documentation source to `dst`.
fn frame(dst: IpAddr) -> Vec<u8> {
    let src4 = Ipv4Addr::new(192, 0, 2, 10);
    let src6: Ipv6Addr = "2001:db8:ffff::10".parse().expect("address");
    match dst {
        IpAddr::V4(d) => ethernet(MAC, &[], 0x0800, &ipv4(src4, d, 17, 0, 0, &udp(5, 7, b""))),
        IpAddr::V6(d) => ethernet(MAC, &[], 0x86dd, &ipv6(src6, d, &[], 17, &udp(5, 7, b""))),
    }
}

struct Classifier {
    dp: Datapath,
    fib: Fib,
    compiled: Compiled,
}

impl Classifier {
    fn new(policy_text: &str) -> Self {
        let policy = common::policy(policy_text);
        let compiled = compile::compile(&policy).expect("compile");
        let options = LoadOptions {
            both_tables: true,
            ..LoadOptions::default()
        };
        let mut dp = Datapath::load_bench(options).expect("load the benchmark object");
        dp.publish(&compiled, 1).expect("publish");
        let fib = Fib::build(&compiled.v4, &compiled.v6, dp.options().fib).expect("fib");
        Self { dp, fib, compiled }
    }

    /// (LPM class, compiled class) found by the kernel.
    fn kernel(&self, dst: IpAddr) -> (u32, u32) {
        let frame = frame(dst);
        let mut out = vec![0u8; frame.len()];
        let ret = common::prog::run_into(
            self.dp
                .program_named("bench_classify")
                .expect("classify program"),
            &frame,
            &mut out,
        );
        assert_eq!(ret, XDP_PASS, "classify passes the frame ({dst})");
        let word = |i: usize| u32::from_be_bytes([out[i], out[i + 1], out[i + 2], out[i + 3]]);
        (word(0), word(4))
    }

    fn model(&self, dst: IpAddr) -> Option<u32> {
        match dst {
            IpAddr::V4(a) => self.fib.class_v4(u32::from(a)),
            IpAddr::V6(a) => self.fib.class_v6(u128::from(a)),
        }
    }

    /// Every LPM entry's boundaries, both families.
    fn boundaries(&self) -> Vec<IpAddr> {
        let mut addrs = boundaries(&self.compiled.v4, v4_addr);
        addrs.extend(boundaries(&self.compiled.v6, v6_addr));
        addrs
    }

    /// The tables' sizes, for the test output.
    fn describe(&self) -> String {
        format!(
            "{} + {} LPM entries, {} classes -> {} split blocks, {} ranges, {} long /64s, {} KiB",
            self.compiled.v4.len(),
            self.compiled.v6.len(),
            self.compiled.classes.len(),
            self.fib.splits,
            self.fib.ranges.len(),
            self.fib.long_slots,
            self.fib.bytes() / 1024
        )
    }

    /// Checks every address; returns (addresses, addresses in some class).
    fn check(&self, addrs: &[IpAddr]) -> (usize, usize) {
        let mut classed = 0;
        for &a in addrs {
            let (lpm, compiled) = self.kernel(a);
            assert_eq!(
                lpm, compiled,
                "{a}: LPM trie says class {lpm}, compiled lookup {compiled}"
            );
            assert_eq!(self.model(a), Some(lpm), "{a}: userspace model");
            classed += usize::from(lpm != 0);
        }
        (addrs.len(), classed)
    }
}

/// First and last address of every entry and the addresses just outside.
fn boundaries<B: Bits>(table: &[(B, u32)], make: impl Fn(u128) -> IpAddr) -> Vec<IpAddr> {
    let max = if B::WIDTH == 128 {
        u128::MAX
    } else {
        u128::from(u32::MAX)
    };
    let mut out: Vec<u128> = Vec::with_capacity(table.len() * 4);
    for (p, _) in table {
        out.push(p.addr());
        out.push(p.last());
        if let Some(before) = p.addr().checked_sub(1) {
            out.push(before);
        }
        if p.last() < max {
            out.push(p.last() + 1);
        }
    }
    out.sort_unstable();
    out.dedup();
    out.into_iter().map(make).collect()
}

fn v4_addr(a: u128) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::try_from(a).expect("IPv4")))
}

fn v6_addr(a: u128) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(a))
}

#[test]
fn compiled_lookup_equals_lpm_trie_on_the_world() {
    let (mut text, countries) = common::world_regions(60);
    text.push_str(
        "[[rules]]\nname = \"block\"\ndevices = [\"default\"]\nblock = [\"r0\", \"r1\"]\n",
    );
    let c = Classifier::new(&text);
    let mut addrs = c.boundaries();
    let mut rng = Rng(0x0005_eed0_ff1b);
    for i in 0..100_000 {
        addrs.push(rng.destination(i % 2 == 0));
    }
    let started = std::time::Instant::now();
    let (n, classed) = c.check(&addrs);
    println!(
        "world ({countries} countries, 60 regions, {}): {n} addresses ({classed} in a region) agree in the kernel and the model, {:?}",
        c.describe(),
        started.elapsed()
    );
    assert!(n > 700_000, "every entry's boundaries were tried");
    assert!(
        classed > n / 3 && classed < n,
        "both hits and misses were tried"
    );
}

/// Deeply nested prefixes of every length in a few small areas, so IPv4 /16
/// runs get long and many IPv6 /64s need the long level (the country data
/// has nothing longer than /64).
#[test]
fn compiled_lookup_equals_lpm_trie_on_nested_and_long_prefixes() {
    let mut rng = Rng(0x00c0_ffee);
    let mut regions: Vec<Vec<String>> = vec![Vec::new(); 8];
    let mut v4s = Vec::new();
    let mut v6s = Vec::new();
    for _ in 0..3000 {
        let r = rng.next_u64();
        #[expect(clippy::cast_possible_truncation, reason = "small random numbers")]
        let (len4, len6, region) = (
            (20 + r % 13) as u8,
            (60 + (r >> 8) % 69) as u8,
            (r >> 16) as usize % 8,
        );
        // IPv4 inside 10.0.0.0/10 (never sent anywhere: test_run only); IPv6 inside four /56s of 2001:db8::/32.
        let a4 = u128::from(0x0a00_0000 | (rng.next_u64() & 0x003f_ffff));
        let a6 = (0x2001_0db8_0000_0000_u128 << 64)
            | (u128::from(rng.next_u64() % 4) << 72)
            | (((u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64())) & ((1 << 72) - 1));
        let p4 = V4::make(a4 & !host_mask(32, len4), len4);
        let p6 = V6::make(a6 & !host_mask(128, len6), len6.max(32));
        v4s.push(p4);
        v6s.push(p6);
        regions[region].push(format!("\"{p4}\""));
        regions[(region + 3) % 8].push(format!("\"{p6}\""));
    }
    let mut text = String::new();
    for (i, cidrs) in regions.iter().enumerate() {
        writeln!(text, "[regions.n{i}]\ncidrs = [{}]", cidrs.join(", ")).expect("String");
    }
    text.push_str("[[rules]]\nname = \"block\"\ndevices = [\"default\"]\nblock = [\"n0\"]\n");
    let c = Classifier::new(&text);
    assert!(
        c.fib.long_slots > 100,
        "the long level is exercised ({})",
        c.fib.long_slots
    );
    let mut addrs = c.boundaries();
    for p in v4s.iter().take(500) {
        addrs.push(v4_addr(
            p.addr() | (u128::from(rng.next_u64()) & host_mask(32, p.len)),
        ));
    }
    for p in v6s.iter().take(500) {
        addrs.push(v6_addr(
            p.addr() | (u128::from(rng.next_u64()) & host_mask(128, p.len)),
        ));
    }
    let (n, classed) = c.check(&addrs);
    println!(
        "nested ({}): {n} addresses ({classed} in a region) agree",
        c.describe()
    );
    assert!(classed > n / 2 && classed < n);
}

/// The production program loaded with either lookup (the `LOOKUP` global;
/// each datapath fills only its own lookup's tables) gives the same verdict
/// on every frame of a world-table sweep, with real drops among them.
#[test]
fn production_program_gives_the_same_verdicts_with_either_lookup() {
    use regionwall_common::Lookup;
    let (mut text, _) = common::world_regions(60);
    let half: Vec<String> = (0..30).map(|r| format!("\"r{r}\"")).collect();
    writeln!(
        text,
        "[[rules]]\nname = \"block\"\ndevices = [\"default\"]\nblock = [{}]",
        half.join(", ")
    )
    .expect("String");
    let policy = common::policy(&text);
    let compiled = compile::compile(&policy).expect("compile");
    let load = |lookup| {
        let mut dp = Datapath::load_with(LoadOptions {
            lookup,
            ..LoadOptions::default()
        })
        .expect("load");
        dp.publish(&compiled, 1).expect("publish");
        dp
    };
    let (fast, lpm) = (load(Lookup::Compiled), load(Lookup::Lpm));
    let mut rng = Rng(0x0dd_ba11);
    let (mut drops, mut total) = (0, 0);
    for i in 0..20_000 {
        let frame = frame(rng.destination(i % 2 == 0));
        let verdict = |dp: &Datapath| common::prog::verdict_of(dp, &frame);
        let v = verdict(&fast);
        assert_eq!(v, verdict(&lpm), "frame {i}");
        drops += usize::from(v == 1);
        total += 1;
    }
    println!("either lookup: {total} frames, {drops} dropped by both");
    assert!(
        drops > total / 50 && drops < total,
        "the sweep has drops and passes"
    );
}

/// A policy too large for the room the compiled lookup was loaded with is
/// refused before the switch, with an error naming the table and the flags
/// to raise, and the previous policy keeps enforcing.
#[test]
fn too_large_for_the_compiled_lookup_keeps_the_old_policy() {
    let small = common::policy(
        "[regions.doc]\ncidrs = [\"198.51.100.0/24\"]\n[[rules]]\nname = \"block\"\ndevices = [\"default\"]\nblock = [\"doc\"]\n",
    );
    let mut cidrs = Vec::new();
    for a in 0..200u32 {
        cidrs.push(format!("\"10.{}.{}.0/24\"", a / 2, (a % 2) * 128));
    }
    let large = common::policy(&format!(
        "[regions.many]\ncidrs = [{}]\n[[rules]]\nname = \"block\"\ndevices = [\"default\"]\nblock = [\"many\"]\n",
        cidrs.join(", ")
    ));
    let mut options = LoadOptions::default();
    options.fib.ranges = 64;
    let mut dp = Datapath::load_with(options).expect("load");
    dp.publish(&compile::compile(&small).expect("compile"), 1)
        .expect("the small policy fits");
    let err = dp
        .publish(&compile::compile(&large).expect("compile"), 2)
        .expect_err("the large policy does not fit")
        .to_string();
    println!("refused: {err}");
    assert!(
        err.contains("needs 200 FIB_RANGES") && err.contains("--fib-ranges 300"),
        "{err}"
    );
    assert_eq!(dp.epoch(), 1, "the old policy is still the live one");
    let run = |dst: Ipv4Addr| common::prog::verdict_of(&dp, &frame(IpAddr::V4(dst)));
    assert_eq!(
        run(Ipv4Addr::new(198, 51, 100, 7)),
        XDP_DROP,
        "still dropped"
    );
    assert_eq!(
        run(Ipv4Addr::new(10, 0, 0, 1)),
        XDP_PASS,
        "the new policy never went live"
    );
}
