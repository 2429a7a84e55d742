//! `regionwall stage`, `diff`, `promote` and `discard`: a candidate policy
//! evaluated beside the live one through the controller's control socket,
//! and `run --candidate`.

use std::{io::BufRead as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use regionwall::{
    candidate::Status,
    control::{Ack, Request},
    controller::{Controller, prepare, shadow::Job},
};
use tokio::sync::mpsc;

use super::client::Target;

/// `run`'s candidate option.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Stage this policy as a candidate at start: evaluated on every
    /// packet beside the live policy, never enforced (see `regionwall
    /// stage`). A candidate the previous controller staged is adopted
    /// with its counts when it is the same file.
    #[arg(long, value_name = "FILE")]
    pub candidate: Option<PathBuf>,
}

/// Stages `--candidate` (unless the adopted one is that file) and returns
/// the channel the control socket hands candidate jobs to the loop on.
/// A candidate that cannot be staged is logged; enforcement never waits
/// on it.
#[must_use]
pub fn start(ctl: &mut Controller, args: &RunArgs) -> (mpsc::Sender<Job>, mpsc::Receiver<Job>) {
    if let Some(path) = &args.candidate {
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        let adopted = ctl.candidate_status();
        if adopted.staged && std::path::Path::new(&adopted.path) == absolute {
            log::info!("keeping the adopted candidate {}", absolute.display());
        } else {
            let c = ctl.config();
            match prepare(path, &c.options, c.limits, c.lookup, None) {
                Ok(prepared) => match ctl.stage(prepared, None, path) {
                    Ok(message) => log::info!("{message}"),
                    Err(e) => log::error!("--candidate not staged: {e}"),
                },
                Err(e) => log::error!("--candidate not staged: {e}"),
            }
        }
    }
    mpsc::channel(4)
}

/// Stage a candidate policy beside the live one
///
/// The kernel computes the candidate's verdict for every packet too, and
/// counts where it differs from the live one (see `regionwall diff`); only
/// the live policy is enforced. The candidate must keep the live policy's
/// devices and port qualifiers; its rules, regions and countries may
/// change freely (other region data: the live policy is first republished
/// over classes both policies' regions split, same verdicts), so it shares
/// the live lookup and costs one table read per packet. Staging again
/// replaces the candidate and restarts its counts.
///
/// Example:
///   regionwall stage policies/stricter.toml --iface lan0
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct StageArgs {
    /// The candidate policy file (TOML).
    pub file: PathBuf,
    #[command(flatten)]
    pub target: Target,
}

/// Show what a staged candidate would have changed since staging
///
/// "would newly block 1,240 packets / 3.1 MB from phone, tv to CN, RU
/// (rule ...)", "would newly allow ...", then one line per (device,
/// region, country, rule, live verdict -> candidate verdict).
///
/// Example:
///   regionwall diff --iface lan0 --json
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct DiffArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Make the staged candidate the live policy, atomically
///
/// One flip of the table sets, as a reload: every packet sees the old
/// policy or the new one in full. Refused when the live policy changed
/// since the candidate was staged, unless --force. The controller then
/// reloads from the candidate's file.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct PromoteArgs {
    #[command(flatten)]
    pub target: Target,
    /// Promote even though the live policy changed since staging.
    #[arg(long)]
    pub force: bool,
}

/// Drop the staged candidate and its counts
#[derive(clap::Args)]
pub struct DiscardArgs {
    #[command(flatten)]
    pub target: Target,
}

/// Sends `request` and reads one JSON answer line.
fn ask<T: serde::de::DeserializeOwned>(target: &Target, request: &Request) -> anyhow::Result<T> {
    let Some(mut reader) = target.ask(request)? else {
        anyhow::bail!(
            "no controller answers for {} (is `regionwall run` running?)",
            target.iface
        );
    };
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .context("reading the controller's answer")?;
    if line.is_empty() {
        anyhow::bail!(
            "the controller closed the connection without answering (did it stop?); the request may have taken effect: see `regionwall diff` and `regionwall stats` once it runs again"
        );
    }
    if let Ok(ack) = serde_json::from_str::<Ack>(&line)
        && !ack.ok
    {
        anyhow::bail!("the controller refused: {}", ack.message);
    }
    serde_json::from_str(&line).with_context(|| {
        format!(
            "the controller answered {:?} (an older version?)",
            line.trim()
        )
    })
}

fn acked(target: &Target, request: &Request) -> anyhow::Result<ExitCode> {
    let ack: Ack = ask(target, request)?;
    println!("regionwall: {}", ack.message);
    Ok(ExitCode::SUCCESS)
}

pub fn stage(args: &StageArgs) -> anyhow::Result<ExitCode> {
    let path = std::path::absolute(&args.file)
        .with_context(|| format!("resolving {}", args.file.display()))?;
    acked(&args.target, &Request::Stage { path })
}

/// The staged candidate and its counts, from the controller.
pub fn status(target: &Target) -> anyhow::Result<Status> {
    ask(target, &Request::Diff)
}

pub fn diff(args: &DiffArgs) -> anyhow::Result<ExitCode> {
    // `diff | head` ends quietly, as the other listing commands do.
    super::default_sigpipe();
    let status = status(&args.target)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn promote(args: &PromoteArgs) -> anyhow::Result<ExitCode> {
    acked(&args.target, &Request::Promote { force: args.force })
}

pub fn discard(args: &DiscardArgs) -> anyhow::Result<ExitCode> {
    acked(&args.target, &Request::Discard)
}
