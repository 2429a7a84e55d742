//! The reject path's cost: a TCP SYN answered with a RST built in place
//! (XDP_TX) beside the same SYN dropped, through BPF_PROG_TEST_RUN in the
//! same run. The benchmark object's `bench_syn*` programs write the SYN
//! over the frame before every run (the answer overwrites it), so the
//! driver alone (`bench_syn`) is measured too.

use std::path::Path;

use anyhow::{Context as _, bail};
use regionwall::{
    compile,
    datapath::{Datapath, LoadOptions, Readings as _},
    policy,
};
use regionwall_common::{Counter, EVENT_BURST_DEFAULT, EVENT_RATE_DEFAULT};
use serde::Serialize;

use super::Args;

/// A rejected region and a dropped one, as the `bench_syn*` drivers
/// address them.
const POLICY: &str = r#"
[regions.refused]
cidrs = ["198.51.100.0/24", "2001:db8:bad::/48"]

[regions.dropped]
cidrs = ["203.0.113.0/24", "2001:db8:d0d::/48"]

[[rules]]
name = "refuse"
devices = ["default"]
block = ["refused"]
mode = "reject"

[[rules]]
name = "silent"
devices = ["default"]
block = ["dropped"]
"#;

/// ns per packet of one family.
#[derive(Serialize, Default, Clone)]
pub struct RejectCost {
    /// The SYN driver alone.
    pub syn: f64,
    /// Driver + production path, dropped.
    pub drop: f64,
    /// Driver + production path, answered with a RST.
    pub reject: f64,
}

#[derive(Serialize, Default, Clone)]
pub struct RejectResult {
    pub v4: RejectCost,
    pub v6: RejectCost,
    /// RSTs the kernel counted as sent, of `runs` rejected SYNs.
    pub answered: u64,
    pub runs: u64,
}

pub fn run(args: &Args, dir: &Path) -> anyhow::Result<RejectResult> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("policy.toml");
    std::fs::write(&path, POLICY).with_context(|| format!("writing {}", path.display()))?;
    let policy = policy::parse_file(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let compiled = compile::compile(&policy)?;
    let mut dp = Datapath::load_bench(LoadOptions::default())?;
    dp.publish(&compiled, 1)?;
    // Events as `regionwall run` limits them by default; every reject
    // answered (the answer's own cost, not the limiter's, is measured).
    dp.set_event_limit(EVENT_RATE_DEFAULT, EVENT_BURST_DEFAULT)?;
    dp.set_reject_limit(0, 1)?;
    let mut out = RejectResult::default();
    for v4 in [true, false] {
        let frame = vec![0u8; if v4 { 54 } else { 74 }];
        let run = |name: &'static str, want: u32| {
            super::cost::median_ns(&dp, name, &frame, Some(want), args)
        };
        let cost = RejectCost {
            syn: run("bench_syn", regionwall_testkit::xdp::XDP_PASS)?,
            drop: run("bench_syn_drop", regionwall_testkit::xdp::XDP_DROP)?,
            reject: run("bench_syn_reject", regionwall_testkit::xdp::XDP_TX)?,
        };
        out.runs += u64::from(args.repeat.max(1)) * args.samples.max(1) as u64;
        if v4 {
            out.v4 = cost;
        } else {
            out.v6 = cost;
        }
    }
    out.answered = dp.counters()?[Counter::RejectsSent as usize];
    if out.answered != out.runs {
        bail!(
            "{} rejected SYNs but {} answers counted",
            out.runs,
            out.answered
        );
    }
    Ok(out)
}
