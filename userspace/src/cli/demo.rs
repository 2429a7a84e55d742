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

/// Show regionwall at work in a sandbox
///
/// Builds network namespaces phone -> gateway -> internet with veth pairs,
/// runs `regionwall run` on the gateway's phone-facing veth, sends bounded
/// traffic to a blocked and an allowed documentation range (IPv4 and IPv6),
/// prints the drop events and a summary, then removes everything. Needs root.
/// Works from any directory: the demo policy is built in.
#[derive(clap::Args, Default)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Policy to enforce on the phone's traffic [default: the built-in
    /// copy of policies/demo.toml].
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Tag in the names of the demo's namespaces, pins and socket
    /// (`rw-<tag>-...`), so a test can tell its own apart.
    #[arg(long, default_value = "demo", hide = true)]
    pub tag: String,
}

/// policies/demo.toml, built in: `regionwall demo` runs from any directory.
const DEMO_POLICY: &str = include_str!("../../../policies/demo.toml");

pub fn main(args: &Args) -> anyhow::Result<ExitCode> {
    if let Some(why) = regionwall::pin::invalid_iface_name(&args.tag) {
        anyhow::bail!("--tag {:?}: {why}", args.tag);
    }
    // The controller child reads the policy by path: the built-in one is
    // written to a private directory first, removed when the demo ends.
    let builtin;
    let policy = if let Some(p) = &args.policy {
        std::fs::canonicalize(p)
            .with_context(|| format!("demo policy {} not found", p.display()))?
    } else {
        builtin = BuiltinPolicy::write()?;
        builtin.path()
    };
    let exe = std::env::current_exe().context("locating the regionwall binary")?;
    let _signals = SignalGuard::install()?;
    // The built-in policy is named as the repository's file, not as its
    // temporary copy, which is gone when the reader tries the commands.
    let shown = args
        .policy
        .clone()
        .unwrap_or_else(|| PathBuf::from("policies/demo.toml"));
    let results = crate::demo::run(&exe, &policy, &shown, &args.tag, &mut std::io::stdout())
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

/// The built-in demo policy in a fresh private directory
/// (`$TMPDIR/regionwall-demo-<pid>`, mode 0700), removed on drop.
struct BuiltinPolicy(PathBuf);

impl BuiltinPolicy {
    fn write() -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        let dir = std::env::temp_dir().join(format!("regionwall-demo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let this = Self(dir);
        std::fs::write(this.path(), DEMO_POLICY)
            .with_context(|| format!("writing {}", this.path().display()))?;
        Ok(this)
    }

    fn path(&self) -> PathBuf {
        self.0.join("demo.toml")
    }
}

impl Drop for BuiltinPolicy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
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
