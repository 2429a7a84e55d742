//! `regionwall demo`: the sandbox demo in throwaway network namespaces.

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::Context as _;
use signal_hook::consts::{SIGINT, SIGTERM};

/// Show regionwall at work in a sandbox (the default command).
///
/// Builds network namespaces phone -> gateway -> internet with veth pairs,
/// runs `regionwall run` on the gateway's phone-facing veth, sends bounded
/// traffic to a blocked and an allowed documentation range (IPv4 and IPv6),
/// prints the drop events and a summary, then removes everything. Needs root.
#[derive(clap::Args, Default)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Policy to enforce on the phone's traffic.
    #[arg(long, default_value = "policies/demo.toml")]
    pub policy: Option<PathBuf>,
}

pub fn main(args: &Args) -> anyhow::Result<ExitCode> {
    let policy = args
        .policy
        .clone()
        .unwrap_or_else(|| PathBuf::from("policies/demo.toml"));
    let policy = std::fs::canonicalize(&policy).with_context(|| {
        format!(
            "demo policy {} not found (run from the repository root)",
            policy.display()
        )
    })?;
    let exe = std::env::current_exe().context("locating the regionwall binary")?;
    let _signals = SignalGuard::install()?;
    let results = crate::demo::run(&exe, &policy, &mut std::io::stdout())
        .context("running the demo (it needs root: network namespaces and XDP)")?;
    let blocked_ok = results
        .iter()
        .filter(|d| d.label.starts_with("blocked"))
        .all(|d| d.udp_delivered == 0 && !d.tcp_upload);
    let allowed_ok = results
        .iter()
        .filter(|d| d.label.starts_with("allowed"))
        .all(|d| d.udp_delivered == d.udp_sent && d.tcp_upload);
    if blocked_ok && allowed_ok {
        println!("demo ok: blocked ranges dropped, allowed ranges delivered");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("demo FAILED: see the summary above");
        Ok(ExitCode::FAILURE)
    }
}

/// While the demo runs, SIGINT/SIGTERM only set a flag, so Ctrl-C cannot
/// leave namespaces behind; the bounded demo finishes and cleans up.
/// (A handler, unlike SIG_IGN, is reset to the default in exec'd children.)
struct SignalGuard {
    interrupted: Arc<AtomicBool>,
    ids: Vec<signal_hook::SigId>,
}

impl SignalGuard {
    fn install() -> anyhow::Result<Self> {
        let interrupted = Arc::new(AtomicBool::new(false));
        let ids = [SIGINT, SIGTERM]
            .into_iter()
            .map(|sig| signal_hook::flag::register(sig, Arc::clone(&interrupted)))
            .collect::<Result<_, _>>()
            .context("installing the SIGINT/SIGTERM handlers")?;
        Ok(Self { interrupted, ids })
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        if self.interrupted.load(Ordering::Relaxed) {
            eprintln!("regionwall demo: interrupted; namespaces were removed");
        }
    }
}
