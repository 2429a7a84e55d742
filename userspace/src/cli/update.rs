//! `regionwall update`: fetch, verify and switch a policy's region data,
//! then have the running controllers reload it (undone if one refuses).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use regionwall::{
    PolicyError,
    control::{Ack, Request},
    policy,
    update::{self, Outcome, Report, verify::Change},
};

/// Fetch fresh region data for a policy, verify it, and switch to it
///
/// Reads the policy's `[update]` table and every source with `url` (or
/// MaxMind `edition`), asks each at most once per `interval` (ETag,
/// If-Modified-Since or the published checksum: an unchanged source
/// downloads nothing), verifies the data with the loaders, the share and
/// churn limits and the canaries, writes a new version beside the old
/// ones, checks that the policy loads with it, and switches the `current`
/// link to it with one rename. Every running controller is then told to
/// reload through its control socket; if one rejects the reload, the
/// previous version is made current again, the new one deleted, and the
/// command fails. Prints per country the prefixes and addresses added and
/// removed. Exits non-zero on any failure.
///
/// Example:
///   regionwall update /etc/regionwall/policy.toml
///   regionwall update --rollback /etc/regionwall/policy.toml
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Policy file (TOML) with an `[update]` table.
    pub policy: PathBuf,
    /// Go back one version (the one left is deleted), then reload.
    #[arg(long)]
    pub rollback: bool,
    /// Control sockets of the controllers to reload [default: every
    /// socket in /run/regionwall].
    #[arg(long)]
    pub socket: Vec<PathBuf>,
    /// Ask every source now, even within its `interval` (not one backed
    /// off after HTTP 429).
    #[arg(long)]
    pub force: bool,
    /// Tell no controller (none runs yet, e.g. the first download).
    #[arg(long, conflicts_with = "socket")]
    pub no_reload: bool,
    /// The time to act as of, in Unix seconds (tests).
    #[arg(long, hide = true)]
    pub now: Option<u64>,
}

pub fn main(args: &Args) -> anyhow::Result<ExitCode> {
    let mut plan = match policy::update_plan(&args.policy) {
        Ok(p) => p,
        Err(PolicyError::Invalid(diags)) => {
            anyhow::bail!("policy {} rejected:\n{diags}", args.policy.display())
        }
        Err(e) => {
            return Err(e).with_context(|| format!("reading policy {}", args.policy.display()));
        }
    };
    if args.force {
        plan.interval = Duration::ZERO;
    }
    let sockets = if args.no_reload {
        Vec::new()
    } else {
        sockets(&args.socket)
    };
    if args.rollback {
        let (left, live) = update::rollback(&plan.dir)
            .with_context(|| format!("rolling back in {}", plan.dir.display()))?;
        println!("rolled back from version {left} to version {live}");
        let refused = reload_all(&sockets);
        if let Some(why) = refused.first() {
            anyhow::bail!("version {live} is current, but {why}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let now = args.now.map_or_else(SystemTime::now, |s| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let pending = runtime
        .block_on(update::start(&plan, now))
        .context("update failed; the current data stays live")?;
    for w in &pending.report.warnings {
        eprintln!("warning: {w}");
    }
    let Some(version) = pending.report.version else {
        print_report(&pending.report);
        if let Some(e) = pending.accept().problem {
            return Err(e).context("nothing changed, but the status was not recorded");
        }
        println!("nothing changed");
        return Ok(ExitCode::SUCCESS);
    };
    let refused = reload_all(&sockets);
    if let Some(why) = refused.first() {
        let why = why.clone();
        let done = pending.reject(&why);
        // Controllers that took the new data go back to the old, whether
        // or not the status could be written.
        let _ = reload_all(&sockets);
        print_report(&done.report);
        if let Some(e) = done.problem {
            if done.report.version.is_some() {
                anyhow::bail!(
                    "{why}; switching back failed, version {version} IS still current: {e}"
                );
            }
            anyhow::bail!(
                "{why}; version {version} was removed and the previous data stays live, but {e}"
            );
        }
        anyhow::bail!("{why}; version {version} was removed and the previous data stays live");
    }
    let done = pending.accept();
    print_report(&done.report);
    if let Some(e) = done.problem {
        anyhow::bail!("version {version} IS current and live, but {e}");
    }
    println!(
        "version {version} is current ({} controller(s) reloaded)",
        sockets.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// The sockets given, or every `*.sock` in /run/regionwall.
fn sockets(given: &[PathBuf]) -> Vec<PathBuf> {
    if !given.is_empty() {
        return given.to_vec();
    }
    let dir = Path::new(regionwall::control::SOCKET_DIR);
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .collect();
    found.sort();
    found
}

/// Asks every controller to reload; the refusals, each with its socket.
fn reload_all(sockets: &[PathBuf]) -> Vec<String> {
    sockets
        .iter()
        .filter_map(|s| match reload(s) {
            Ok(None) => {
                println!(
                    "{}: no controller listens (a stale socket), skipped",
                    s.display()
                );
                None
            }
            Ok(Some(ack)) if ack.ok => {
                println!("{}: {}", s.display(), ack.message);
                None
            }
            Ok(Some(ack)) => Some(format!(
                "the controller on {} refused: {}",
                s.display(),
                ack.message
            )),
            Err(e) => Some(format!(
                "the controller on {} could not be asked: {}",
                s.display(),
                super::error_text(&e)
            )),
        })
        .collect()
}

/// Asks the controller on `socket` to reload; `None` if nothing listens
/// there (a controller killed without removing its socket: it enforces
/// nothing new until it starts again, and then reads `current`).
fn reload(socket: &Path) -> anyhow::Result<Option<Ack>> {
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(None),
        Err(e) => return Err(e).context("connecting"),
    };
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut line = serde_json::to_string(&Request::Reload)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    serde_json::from_str(&answer)
        .map(Some)
        .with_context(|| format!("bad answer: {answer:?}"))
}

fn print_report(report: &Report) {
    for (name, c) in &report.regions {
        if c.added.prefixes + c.removed.prefixes > 0 {
            println!(
                "region {name}: +{} prefixes (+{} addresses), -{} prefixes (-{} addresses); now {} prefixes",
                c.added.prefixes,
                c.added.addresses,
                c.removed.prefixes,
                c.removed.addresses,
                c.after.prefixes
            );
        }
    }
    for (name, outcome) in &report.sources {
        match outcome {
            Outcome::Unchanged(why) => println!("{name}: unchanged ({why})"),
            Outcome::Skipped(why) => println!("{name}: not asked ({why})"),
            Outcome::Fetched(by_country) => {
                let changed: Vec<(&String, &Change)> = by_country
                    .iter()
                    .filter(|(_, c)| c.added.prefixes + c.removed.prefixes > 0)
                    .collect();
                println!(
                    "{name}: fetched, {} of {} countries changed",
                    changed.len(),
                    by_country.len()
                );
                for (cc, c) in changed {
                    println!(
                        "  {cc}: +{} prefixes (+{} addresses), -{} prefixes (-{} addresses)",
                        c.added.prefixes,
                        c.added.addresses,
                        c.removed.prefixes,
                        c.removed.addresses
                    );
                }
            }
        }
    }
}
