//! Real traffic: the benchmark object's generator sends frames to 65,536
//! destinations (half blocked) through a veth into a gateway that does
//! nothing, runs regionwall or an nftables chain; CPU per packet on the
//! receiving side, from softirq time, against doing nothing in the same run.
//!
//! The generator is `bench_redirect` run by BPF_PROG_TEST_RUN in live-frames
//! mode (BPF_F_TEST_XDP_LIVE_FRAMES, as xdp-trafficgen does): frames are born
//! as xdp_frames and redirected into the veth, so the receiving veth runs
//! XDP on them in its NAPI poll without converting an skb (veth needs an XDP
//! program on the receiving end for that: the cases without regionwall
//! attach an empty XDP_PASS one). The program varies the destination itself
//! (a per-CPU cursor over the key pool), so one run walks all 65,536. The
//! gateway's veth has GRO off; the gateway forwards what passes to a sink.
//! The generator's thread is pinned to one CPU, where the veth's NAPI poll
//! runs too (as softirq at the end of each batch): that CPU's softirq time
//! is the receiving side's, its system time the generator's.

mod case;
mod gateway;
mod report;
mod sys;

pub use self::report::{section, targets};

use std::{
    os::fd::{AsFd as _, BorrowedFd},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use regionwall::{
    compile,
    datapath::{Datapath, LoadOptions},
    fib::Fib,
    policy::{self, Prefix},
};
use regionwall_common::{BENCH_GEN_FRAME, BENCH_KEYS, Lookup};
use regionwall_testkit::rng::Rng;
use serde::Serialize;

use self::{
    case::Case,
    gateway::{GW_IFACE, Topology},
};
use super::{controller::Controller, cost, median, tables::Table};

/// Interleaved runs of every case (the median is reported).
const RUNS: usize = 3;
/// Seconds of traffic per case and run (at most [`MAX_CALLS`] test runs).
const SECONDS: f64 = 3.0;
/// Frames per test run, and test runs per case at most: a bound on the
/// frames sent.
const REPEAT: u32 = 1 << 18;
const MAX_CALLS: u32 = 64;
/// Frames per batch (the kernel's default): the receiving NAPI poll runs
/// after each batch, well inside the veth's 256-frame ring.
const BATCH: u32 = 64;

/// One case in one run.
#[derive(Serialize, Default, Clone)]
pub struct Sample {
    /// Frames the generator sent.
    pub offered: u64,
    /// Frames lost before the filter: redirects into a full veth ring.
    pub lost: u64,
    /// Dropped by the filter.
    pub dropped: u64,
    /// Passed by the filter.
    pub passed: u64,
    /// offered - lost - dropped - passed (must be 0).
    pub unaccounted: i64,
    /// What the filter itself counted (regionwall's traffic counters, the
    /// nft rules' counters; the forward hook never sees what the gateway
    /// does not route: martian destinations such as 0/8, 127/8, 224/3).
    pub filter_seen: u64,
    /// Passed packets the gateway forwarded (to the ifb sink).
    pub forwarded: u64,
    /// What the gateway's IP layer counted (/proc/net/snmp `Ip:`, the
    /// counters that moved).
    pub ip: std::collections::BTreeMap<String, u64>,
    pub seconds: f64,
    pub offered_pps: f64,
    /// Receiving side: the generator CPU's softirq time per offered frame.
    pub softirq_ns: f64,
    /// Sending side: its system time per offered frame.
    pub system_ns: f64,
}

#[derive(Serialize, Default)]
pub struct CaseResult {
    pub case: String,
    pub skipped: Option<String>,
    pub samples: Vec<Sample>,
    /// Medians over the runs.
    pub softirq_ns: f64,
    pub offered_pps: f64,
    /// Median over the runs of (this case - nothing, in the same run).
    pub above_nothing_ns: f64,
}

#[derive(Serialize, Default)]
pub struct TrafficResult {
    pub prefixes_v4: usize,
    pub destinations: usize,
    pub blocked_destinations: usize,
    /// Destinations in 127/8 and 224/4 (all outside the table, so passed):
    /// the gateway never forwards them.
    pub unrouted_destinations: usize,
    pub frame_bytes: usize,
    pub runs: usize,
    pub cpu: usize,
    pub gro_was_on: bool,
    /// The run-to-run spread (max - min) of case (a), ns per frame.
    pub noise_ns: f64,
    pub cases: Vec<CaseResult>,
}

impl TrafficResult {
    fn case(&self, case: Case) -> Option<&CaseResult> {
        self.cases
            .iter()
            .find(|c| c.case == case.name() && c.skipped.is_none())
    }
}

/// What the gateway runs during one case.
enum Filter {
    /// An empty XDP program (and maybe an nft chain).
    Pass(
        #[expect(dead_code, reason = "held: closing the link detaches the program")]
        std::os::fd::OwnedFd,
    ),
    Regionwall(Controller),
}

struct Bench<'a> {
    topology: Topology,
    generator: &'a Datapath,
    frame: [u8; BENCH_GEN_FRAME],
    binary: std::path::PathBuf,
    policy: std::path::PathBuf,
    policy_allow: std::path::PathBuf,
    state: std::path::PathBuf,
    cpu: usize,
}

pub fn run(prefixes: Vec<(Prefix, usize)>, root: &Path) -> anyhow::Result<TrafficResult> {
    let table = Table {
        name: "world-v4".into(),
        prefixes: prefixes
            .into_iter()
            .filter(|(p, _)| matches!(p, Prefix::V4(_)))
            .collect(),
    };
    let dir = root.join("target/bench/traffic");
    let policy_path = table.write_policy_as(&dir, "block")?;
    let policy = policy::parse_file(&policy_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let compiled = compile::compile(&policy)?;
    let fib = Fib::build(&compiled.v4, &compiled.v6, super::CAPACITY)?;
    let (keys, inside) = cost::destinations(&compiled, &fib, true, &mut Rng(0x7aff_1c00));
    if keys.len() != BENCH_KEYS as usize || inside != keys.len() / 2 {
        bail!(
            "{} destinations, {inside} blocked; wanted {BENCH_KEYS}, half blocked",
            keys.len()
        );
    }
    // A router forwards neither loopback nor multicast destinations.
    let unrouted = keys
        .iter()
        .filter(|k| k[0] == 127 || (224..240).contains(&k[0]))
        .count();
    let mut frame = cost::frame(true);
    // The driver changes the destination: no UDP checksum (0 is allowed
    // over IPv4) rather than a wrong one.
    frame[40..42].fill(0);
    let frame: [u8; BENCH_GEN_FRAME] = frame
        .try_into()
        .map_err(|f: Vec<u8>| anyhow::anyhow!("a {}-byte frame", f.len()))?;

    let v4: Vec<String> = table.prefixes.iter().map(|(p, _)| p.to_string()).collect();
    let topology = Topology::create(&v4)?;
    let mut generator = Datapath::load_bench(LoadOptions {
        lookup: Lookup::Lpm,
        ..LoadOptions::default()
    })?;
    generator.set_bench_keys(&keys)?;
    let gen_index = gateway::ifindex(&topology.generator, gateway::GEN_IFACE)?;
    generator.set_bench_generator(&frame, gen_index)?;
    let cpu = std::thread::available_parallelism().map_or(1, usize::from) - 1;
    let mut result = TrafficResult {
        prefixes_v4: table.prefixes.len(),
        destinations: keys.len(),
        blocked_destinations: inside,
        unrouted_destinations: unrouted,
        frame_bytes: frame.len(),
        runs: RUNS,
        cpu,
        gro_was_on: topology.gro_was_on,
        noise_ns: 0.0,
        cases: Case::ALL
            .iter()
            .map(|c| CaseResult {
                case: c.name().into(),
                ..CaseResult::default()
            })
            .collect(),
    };
    let bench = Bench {
        topology,
        generator: &generator,
        frame,
        binary: root.join("target/release/regionwall"),
        policy: policy_path,
        policy_allow: table.write_policy_as(&dir.join("allow"), "allow")?,
        state: dir.join("state"),
        cpu,
    };
    for (case, r) in Case::ALL.iter().zip(&mut result.cases) {
        r.skipped = bench.missing(*case);
        if let Some(why) = &r.skipped {
            eprintln!("  {}: skipped, {why}", case.name());
        }
    }
    for run in 0..RUNS {
        for (case, r) in Case::ALL.iter().zip(&mut result.cases) {
            if r.skipped.is_some() {
                continue;
            }
            let s = bench
                .measure(*case)
                .with_context(|| format!("{} (run {})", case.name(), run + 1))?;
            eprintln!(
                "  run {} {:<36} {:>5.2} Mpps offered, {} dropped + {} passed + {} lost ({:+} unaccounted), {} forwarded; receiving side {:.0} ns/frame, generator {:.0} ns/frame",
                run + 1,
                case.name(),
                s.offered_pps / 1e6,
                s.dropped,
                s.passed,
                s.lost,
                s.unaccounted,
                s.forwarded,
                s.softirq_ns,
                s.system_ns
            );
            r.samples.push(s);
        }
    }
    summarize(&mut result);
    Ok(result)
}

fn summarize(result: &mut TrafficResult) {
    let nothing: Vec<f64> = result.cases[0]
        .samples
        .iter()
        .map(|s| s.softirq_ns)
        .collect();
    result.noise_ns = nothing.iter().copied().fold(f64::MIN, f64::max)
        - nothing.iter().copied().fold(f64::MAX, f64::min);
    for r in &mut result.cases {
        let mut cost: Vec<f64> = r.samples.iter().map(|s| s.softirq_ns).collect();
        let mut pps: Vec<f64> = r.samples.iter().map(|s| s.offered_pps).collect();
        let mut above: Vec<f64> = r
            .samples
            .iter()
            .zip(&nothing)
            .map(|(s, n)| s.softirq_ns - n)
            .collect();
        r.softirq_ns = median(&mut cost);
        r.offered_pps = median(&mut pps);
        r.above_nothing_ns = median(&mut above);
    }
}

impl Bench<'_> {
    /// Why `case` cannot run here, if it cannot.
    fn missing(&self, case: Case) -> Option<String> {
        if case.regionwall().is_some() && !self.binary.exists() {
            return Some(format!("{} is not built", self.binary.display()));
        }
        case.nft().and(self.topology.nft_missing.clone())
    }

    fn program(&self, name: &'static str) -> anyhow::Result<BorrowedFd<'_>> {
        Ok(self.generator.program_named(name)?.fd()?.as_fd())
    }

    fn start(&self, case: Case) -> anyhow::Result<Filter> {
        let Some(rw) = case.regionwall() else {
            let link = self.topology.attach(self.program("bench_floor")?)?;
            if let Some(chain) = case.nft() {
                self.topology.nft_chain(chain.forward, chain.drop)?;
            }
            return Ok(Filter::Pass(link));
        };
        // A fresh state directory: no counters carried from the last start.
        let _ = std::fs::remove_dir_all(&self.state);
        let state = self.state.to_str().context("state path")?;
        let mut args = vec![
            "--lookup",
            rw.lookup,
            "--xdp-mode",
            "native",
            "--no-history",
            "--state-dir",
            state,
            "--no-watch",
        ];
        if !rw.host_counters {
            args.push("--no-host-counters");
        }
        let policy = if rw.block {
            &self.policy
        } else {
            &self.policy_allow
        };
        Ok(Filter::Regionwall(Controller::start(
            &self.topology.gateway,
            &self.binary,
            GW_IFACE,
            policy,
            &args,
        )?))
    }

    /// regionwall's (dropped, passed) packets so far.
    fn regionwall_counts(&self, controller: &Controller) -> anyhow::Result<(u64, u64)> {
        let out = self
            .topology
            .gateway
            .command(self.binary.to_str().context("binary path")?)
            .args(["stats", "--json", "--iface", GW_IFACE, "--socket"])
            .arg(controller.socket())
            .output()?;
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "regionwall stats: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
        let (mut dropped, mut passed) = (0, 0);
        for row in stats["traffic"]
            .as_array()
            .context("stats without traffic")?
        {
            let n = row["packets"].as_u64().unwrap_or(0);
            match row["verdict"].as_str() {
                Some("drop" | "reject") => dropped += n,
                _ => passed += n,
            }
        }
        Ok((dropped, passed))
    }

    fn measure(&self, case: Case) -> anyhow::Result<Sample> {
        let filter = self.start(case)?;
        let before_rw = match &filter {
            Filter::Regionwall(c) => self.regionwall_counts(c)?,
            Filter::Pass(_) => (0, 0),
        };
        std::thread::sleep(Duration::from_millis(200));
        let before = self.topology.counters()?;
        let (offered, seconds, cpu) = self.generate()?;
        let d = self.topology.counters()?.since(&before);
        let (dropped, passed, seen) = match &filter {
            Filter::Regionwall(c) => {
                let (dr, pa) = self.regionwall_counts(c)?;
                let (dr, pa) = (
                    dr.saturating_sub(before_rw.0),
                    pa.saturating_sub(before_rw.1),
                );
                (dr, pa, dr + pa)
            }
            Filter::Pass(_) if let Some(chain) = case.nft() => {
                let (matched, last) = self.topology.nft_chain_done(chain.forward)?;
                let dropped = if chain.drop { matched } else { 0 };
                // The ingress hook sees every frame; the forward hook only
                // what the gateway routes, and the rest passed it too.
                let passed = if chain.forward {
                    d.rx_packets.saturating_sub(dropped)
                } else {
                    last
                };
                (
                    dropped,
                    passed,
                    if chain.drop { matched + last } else { last },
                )
            }
            Filter::Pass(_) => (0, d.rx_packets, d.rx_packets),
        };
        drop(filter);
        let frames = offered.max(1) as f64;
        Ok(Sample {
            offered,
            lost: d.rx_dropped,
            dropped,
            passed,
            unaccounted: i64::try_from(offered).unwrap_or(i64::MAX)
                - i64::try_from(d.rx_dropped + dropped + passed).unwrap_or(i64::MAX),
            filter_seen: seen,
            forwarded: d.forwarded,
            ip: d
                .ip
                .iter()
                .filter(|(k, v)| {
                    **v > 0
                        && !k.ends_with("Octets")
                        && !matches!(k.as_str(), "Forwarding" | "DefaultTTL")
                })
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            seconds,
            offered_pps: offered as f64 / seconds,
            softirq_ns: cpu.softirq_ns / frames,
            system_ns: cpu.system_ns / frames,
        })
    }

    /// Sends frames for [`SECONDS`] from a thread in the generator's
    /// namespace pinned to `self.cpu`; returns the frames, the seconds and
    /// that CPU's times.
    fn generate(&self) -> anyhow::Result<(u64, f64, sys::CpuTimes)> {
        let prog = self.program("bench_redirect")?;
        let (frame, cpu) = (&self.frame, self.cpu);
        gateway::inside(&self.topology.generator, move || {
            sys::pin_to(cpu)?;
            std::thread::yield_now();
            let before = sys::cpu_times(cpu)?;
            let started = Instant::now();
            let mut offered = 0u64;
            let mut calls = 0;
            while calls < MAX_CALLS && started.elapsed().as_secs_f64() < SECONDS {
                sys::live_frames(prog, frame, REPEAT, BATCH)
                    .context("BPF_PROG_TEST_RUN in live-frames mode")?;
                offered += u64::from(REPEAT);
                calls += 1;
            }
            let seconds = started.elapsed().as_secs_f64();
            // Softirq work still queued, if any, runs now.
            std::thread::sleep(Duration::from_millis(50));
            let after = sys::cpu_times(cpu)?;
            Ok((
                offered,
                seconds,
                sys::CpuTimes {
                    system_ns: after.system_ns - before.system_ns,
                    softirq_ns: after.softirq_ns - before.softirq_ns,
                },
            ))
        })
    }
}
