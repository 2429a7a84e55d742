//! `regionwall run`: load, publish, attach, stream events, reload, detach.

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use aya::programs::XdpMode;
use regionwall::{
    control::{self, Stats, Userspace},
    controller::{
        Config, Controller, PrepareError, Prepared, Start,
        output::EventOutput,
        prepare,
        socket::{self, Access, RemoveOnDrop, Shared},
        supervise::{self, Step},
        watch::{DEBOUNCE, Watch},
    },
    events,
    fib::Capacity,
    pin,
};
use regionwall_common::{Counter, Lookup, UnparsedAction};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{broadcast, mpsc},
    task::JoinHandle,
};

/// Enforce a policy on an interface and stream drop/audit events.
///
/// Attach to the LAN-facing interface of the gateway: the program sees what
/// devices send out. Events go to stdout, one per line (or JSON with
/// --json); logs go to stderr. SIGHUP, or saving the policy file, reloads
/// it (a rejected policy leaves the old one enforcing, and so does a
/// reload that would pass everything unless the policy says
/// `allow_empty = true`).
///
/// The program, its link and its maps are pinned under
/// <pin-root>/<iface>/: if the controller dies, the last policy keeps
/// enforcing, and the next `run` adopts it without a gap. Ctrl-C or SIGTERM
/// detaches and removes the pins, unless --persist; `regionwall detach`
/// removes them too.
///
/// Example:
///   regionwall run --iface lan0 --policy policies/home.toml --json
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// LAN-facing interface to attach to.
    #[arg(long)]
    pub iface: String,
    /// Policy file (TOML).
    #[arg(long)]
    pub policy: PathBuf,
    /// Country database directory (overrides the policy's `regions_dir`).
    #[arg(long)]
    pub regions_dir: Option<PathBuf>,
    /// XDP attach mode: native (driver), generic (skb), or auto (kernel's choice).
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub xdp_mode: Mode,
    /// What to do with frames the parser cannot read (more VLAN tags or IPv6
    /// extension headers than it walks, PPPoE sessions, malformed IP).
    /// Always counted; `drop` also reports them as events.
    #[arg(long, value_enum, default_value_t = Unparsed::Pass)]
    pub unparsed: Unparsed,
    /// Print events as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Capacity of the userspace event queue; events beyond it are counted
    /// as dropped, never block the reader.
    #[arg(long, default_value_t = 65_536)]
    pub queue: usize,
    /// Destination lookup: `compiled` (direct-indexed range tables, the
    /// default) or `lpm` (the kernel's LPM tries, the reference).
    #[arg(long, value_enum, default_value_t = LookupArg::Compiled)]
    pub lookup: LookupArg,
    /// Slots the compiled lookup has room for, per table set (preallocated
    /// at 8 bytes each), at least; raised to 1.5 times what the policy at
    /// startup needs. `regionwall check` prints what a policy needs (the
    /// world table: about 400k).
    #[arg(long, default_value_t = regionwall_common::FIB_SLOTS_DEFAULT)]
    pub fib_slots: u32,
    /// Range entries the compiled lookup has room for, per table set
    /// (8 bytes each), at least; raised like --fib-slots (the world table
    /// needs about 200k).
    #[arg(long, default_value_t = regionwall_common::FIB_RANGES_DEFAULT)]
    pub fib_ranges: u32,
    /// Long ranges (IPv6 prefixes longer than /64) the compiled lookup has
    /// room for, at least; raised like --fib-slots.
    #[arg(long, default_value_t = regionwall_common::FIB_LONG_DEFAULT)]
    pub fib_long: u32,
    /// Events per second each (device, region) may report, per CPU; drops
    /// over it are still enforced and counted (see `regionwall stats`).
    /// 0: report every drop.
    #[arg(long, default_value_t = regionwall_common::EVENT_RATE_DEFAULT)]
    pub event_rate: u32,
    /// Events a (device, region) may report at once after a quiet spell.
    #[arg(long, default_value_t = regionwall_common::EVENT_BURST_DEFAULT)]
    pub event_burst: u32,
    /// Where the program, link and maps are pinned (a directory per
    /// interface below it, on a bpf filesystem).
    #[arg(long, default_value = pin::DEFAULT_ROOT)]
    pub pin_root: PathBuf,
    /// Control socket for `regionwall events/stats/detach`
    /// [default: /run/regionwall/<iface>.sock]
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// On Ctrl-C/SIGTERM, leave the program attached and pinned (the last
    /// policy keeps enforcing; the next `run` adopts it).
    #[arg(long)]
    pub persist: bool,
    /// Do not reload when the policy or a file it reads changes (SIGHUP
    /// still reloads).
    #[arg(long)]
    pub no_watch: bool,
    /// Group (name or number) whose members may use the read-only
    /// commands (`events`, `stats`) through the control socket; the socket
    /// is then 0660 in a 0750 directory. Only root may `detach`.
    #[arg(long)]
    pub socket_group: Option<String>,
    #[command(flatten)]
    pub input: super::input::InputArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LookupArg {
    Compiled,
    Lpm,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Mode {
    Native,
    Generic,
    Auto,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Unparsed {
    Pass,
    Drop,
}

impl Args {
    fn config(&self) -> anyhow::Result<Config> {
        let access = Access {
            read_group: self.socket_group.as_deref().map(group_id).transpose()?,
        };
        Ok(Config {
            iface: self.iface.clone(),
            policy: self.policy.clone(),
            options: regionwall::policy::Options {
                regions_dir: self.regions_dir.clone(),
            },
            limits: self.input.limits(),
            xdp_mode: match self.xdp_mode {
                Mode::Native => XdpMode::Driver,
                Mode::Generic => XdpMode::Skb,
                Mode::Auto => XdpMode::Default,
            },
            unparsed: match self.unparsed {
                Unparsed::Pass => UnparsedAction::Pass,
                Unparsed::Drop => UnparsedAction::Drop,
            },
            lookup: match self.lookup {
                LookupArg::Compiled => Lookup::Compiled,
                LookupArg::Lpm => Lookup::Lpm,
            },
            fib_room: Capacity {
                slots: self.fib_slots as usize,
                ranges: self.fib_ranges as usize,
                long: self.fib_long as usize,
            },
            event_rate: self.event_rate,
            event_burst: self.event_burst,
            pin_root: self.pin_root.clone(),
            socket: self
                .socket
                .clone()
                .unwrap_or_else(|| control::default_socket(&self.iface)),
            access,
        })
    }
}

/// A group name or number.
fn group_id(name: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = name.parse() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group").context("reading /etc/group")?;
    groups
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(name)).then(|| f.nth(1).and_then(|g| g.parse().ok()))?
        })
        .with_context(|| format!("--socket-group: no group named {name:?}"))
}

/// Hands memory freed after loading (parsed data files, build buffers,
/// the compiler's worker-thread arenas) back to the system, so the
/// long-running controller's RSS is what it keeps, not its peak.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    // Multi-threaded: compiling a policy runs on a blocking thread while
    // the loop keeps serving signals, the socket and the interface.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = rt.block_on(run(args));
    // A loader still blocked (a FIFO nobody writes) must not hold up exit.
    rt.shutdown_background();
    result
}

/// Prepares the policy on a blocking thread.
fn spawn_prepare(
    config: &Config,
    live: Option<Arc<regionwall::policy::Policy>>,
) -> JoinHandle<Result<Prepared, PrepareError>> {
    let (path, options, limits, lookup) = (
        config.policy.clone(),
        config.options.clone(),
        config.limits,
        config.lookup,
    );
    tokio::task::spawn_blocking(move || prepare(&path, &options, limits, lookup, live.as_deref()))
}

/// Counts of what the loop could not log, as of the last report.
#[derive(Default)]
struct Tally {
    lost: u64,
    suppressed: u64,
    queue_dropped: u64,
    not_written: u64,
}

/// The watcher over everything `prepared` read.
fn rewatch(args: &Args, inputs: &[PathBuf], tx: &mpsc::Sender<PathBuf>) -> Option<Watch> {
    if args.no_watch {
        return None;
    }
    match Watch::start(inputs, tx.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            log::warn!("not watching the policy's files ({e}); SIGHUP reloads");
            None
        }
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "the controller's event loop: one select whose branches call the controller"
)]
async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Handlers first: a signal that arrives while loading must not kill
    // the process with its default action (SIGHUP would terminate it).
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let config = args.config()?;
    // The watcher before the first read: a save while loading is not lost
    // (it queues a reload).
    let (change_tx, mut change_rx) = mpsc::channel(64);
    let mut watch = rewatch(&args, std::slice::from_ref(&config.policy), &change_tx);
    let prepared = spawn_prepare(&config, None)
        .await
        .context("the policy loader panicked")??;
    if prepared.policy.rules.is_empty() {
        log::warn!("the policy has no rules: every packet passes (observe only)");
    }
    let listener = socket::bind(&config.socket, config.access)?;
    let _socket_guard = RemoveOnDrop(config.socket.clone());
    let socket_path = config.socket.clone();
    let (mut ctl, started) = Controller::start(config, &prepared)?;
    watch = rewatch(&args, &prepared.policy.inputs, &change_tx).or(watch);
    drop(prepared);
    release_freed_memory();
    let pins = ctl.pins().clone();
    match &started.start {
        Start::Fresh => {}
        Start::Adopted { epoch, .. } => log::info!(
            "adopted the pinned state in {} (policy epoch {epoch}, link {}, program now {}): no gap",
            pins.path().display(),
            started.facts.id,
            started.facts.prog_id
        ),
        Start::Replaced { reason } => log::warn!(
            "replaced the pinned state in {} ({reason}); the new policy was published before the program swap (link {}, program {})",
            pins.path().display(),
            started.facts.id,
            started.facts.prog_id
        ),
    }
    eprintln!(
        "regionwall: enforcing {} on {} (ifindex {}, link {}, pinned in {}, control socket {})",
        args.policy.display(),
        args.iface,
        ctl.supervisor.ifindex(),
        started.facts.id,
        pins.path().display(),
        socket_path.display()
    );

    let ring = ctl.take_events()?;
    let queue_dropped = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = mpsc::channel(args.queue.max(1));
    let pump = tokio::spawn(events::pump(ring, tx, Arc::clone(&queue_dropped)));

    let (feed, _) = broadcast::channel(4096);
    let (detach_tx, mut detach_rx) = mpsc::channel(4);
    let (stats_tx, mut stats_rx) = mpsc::channel(16);
    let shared = Arc::new(Shared {
        iface: args.iface.clone(),
        access: ctl.config().access,
        feed: feed.clone(),
        detach: detach_tx,
        stats: stats_tx,
    });
    let server = tokio::spawn(socket::serve(listener, shared));
    let mut link_notes = match supervise::netlink_notes() {
        Ok(rx) => Some(rx),
        Err(e) => {
            log::warn!(
                "no netlink link notifications ({e}); polling the interface every {} ms",
                supervise::POLL.as_millis()
            );
            None
        }
    };

    let mut reload_at: Option<tokio::time::Instant> = None;
    let mut inflight: Option<(JoinHandle<Result<Prepared, PrepareError>>, &'static str)> = None;
    let mut again: Option<&'static str> = None;
    let mut poll = tokio::time::interval(supervise::POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report_tick = tokio::time::interval(Duration::from_secs(10));
    let mut tally = Tally::default();
    let mut unpin_on_exit = !args.persist;
    let mut detach_ack = None;
    let mut output = EventOutput::new(std::io::stdout());
    loop {
        tokio::select! {
            Some(event) = rx.recv() => {
                let Some(record) = ctl.record(&event) else { continue };
                let text = if args.json { record.json() } else { record.line() };
                if feed.receiver_count() > 0 {
                    let _ = feed.send(Arc::new(record));
                }
                output.line(&text, rx.is_empty());
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => {
                if inflight.is_some() { again = Some("SIGHUP"); } else {
                    inflight = Some((spawn_prepare(ctl.config(), Some(ctl.live_policy())), "SIGHUP"));
                }
            }
            Some(path) = change_rx.recv() => {
                // Debounced until the files stop changing: every change
                // restarts the wait.
                log::debug!("{} changed", path.display());
                reload_at = Some(tokio::time::Instant::now() + DEBOUNCE);
            }
            () = async { if let Some(at) = reload_at { tokio::time::sleep_until(at).await } else { std::future::pending().await } } => {
                reload_at = None;
                if inflight.is_some() { again = Some("policy file changed"); } else {
                    inflight = Some((spawn_prepare(ctl.config(), Some(ctl.live_policy())), "policy file changed"));
                }
            }
            done = async { match inflight.as_mut() { Some((h, _)) => h.await, None => std::future::pending().await } } => {
                let why = inflight.take().map_or("reload", |(_, w)| w);
                let old = ctl.epoch();
                match done {
                    Ok(Ok(prepared)) => {
                        let inputs = prepared.policy.inputs.clone();
                        match ctl.apply(prepared) {
                        Ok(epoch) => {
                            log::info!("reloaded policy ({why}; epoch {epoch})");
                            watch = rewatch(&args, &inputs, &change_tx).or(watch);
                            release_freed_memory();
                        }
                        Err(e) => log::error!("reload ({why}) failed, previous policy (epoch {old}) still enforcing: {e}"),
                    }},
                    Ok(Err(e)) => log::error!("reload ({why}) rejected, previous policy (epoch {old}) still enforcing: {e}"),
                    Err(e) => log::error!("reload ({why}) failed, previous policy (epoch {old}) still enforcing: the loader panicked: {e}"),
                }
                if let Some(why) = again.take() {
                    inflight = Some((spawn_prepare(ctl.config(), Some(ctl.live_policy())), why));
                }
            }
            Some(reply) = stats_rx.recv() => {
                let _ = reply.send(snapshot(&ctl, &queue_dropped, &output));
            }
            Some(reply) = detach_rx.recv() => {
                unpin_on_exit = true;
                detach_ack = Some(reply);
                break;
            }
            Some(note) = async { match link_notes.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                if ctl.supervisor.concerns(&note) && ctl.supervise() == Step::Detached {
                    log::warn!("the link pin of {} was removed; exiting", args.iface);
                    unpin_on_exit = true;
                    break;
                }
            }
            _ = poll.tick() => {
                if ctl.supervise() == Step::Detached {
                    log::warn!("the link pin of {} was removed; exiting", args.iface);
                    unpin_on_exit = true;
                    break;
                }
            }
            _ = report_tick.tick() => report_not_logged(&ctl, &mut tally, queue_dropped.load(Ordering::Relaxed), output.not_written),
        }
    }
    output.flush();
    pump.abort();
    server.abort();
    drop(watch);
    let stats = snapshot(&ctl, &queue_dropped, &output);
    let message = match ctl.shutdown(unpin_on_exit) {
        Ok(m) => m,
        Err(e) => format!("exiting, but the pins could not all be removed: {e}"),
    };
    if let Some(reply) = detach_ack {
        let _ = reply.send(control::Ack {
            ok: true,
            message: message.clone(),
        });
        // Let the client read its answer before the runtime stops.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    print_summary(&message, &stats);
    Ok(ExitCode::SUCCESS)
}

fn snapshot(
    ctl: &Controller,
    queue_dropped: &AtomicU64,
    output: &EventOutput<std::io::Stdout>,
) -> Stats {
    ctl.snapshot(Userspace {
        queue_dropped: queue_dropped.load(Ordering::Relaxed),
        events_logged: output.written,
        not_written: output.not_written,
    })
}

/// Logs drops and audits that did not become events since the last report.
fn report_not_logged(ctl: &Controller, tally: &mut Tally, queue_dropped: u64, not_written: u64) {
    let Some(c) = ctl.counters() else { return };
    let lost = c[Counter::EventsLost as usize];
    let suppressed = c[Counter::EventsSuppressed as usize];
    if lost > tally.lost
        || suppressed > tally.suppressed
        || queue_dropped > tally.queue_dropped
        || not_written > tally.not_written
    {
        log::warn!(
            "not logged in the last interval (verdicts were enforced): {} over the event rate limit, {} lost in the kernel ring buffer, {} dropped from a full queue, {} not written to the output; `regionwall stats` shows which devices and regions",
            suppressed - tally.suppressed,
            lost - tally.lost,
            queue_dropped - tally.queue_dropped,
            not_written - tally.not_written,
        );
    }
    tally.lost = lost;
    tally.suppressed = suppressed;
    tally.queue_dropped = queue_dropped;
    tally.not_written = not_written;
}

fn print_summary(message: &str, stats: &Stats) {
    let c = |k: &str| stats.counters.get(k).copied().unwrap_or(0);
    let n = stats.not_logged;
    eprintln!(
        "regionwall: {message}. frames {}, non-IP {}, unparsed passed {} / dropped {}, \
         dropped {}, audited {}, events logged {} (over the rate limit {}, lost in kernel {}, dropped in queue {}, not written {})",
        c("frames"),
        c("non_ip"),
        c("unparsed_passed"),
        c("unparsed_dropped"),
        stats.packets(regionwall::verdict::Verdict::Drop) + c("unparsed_dropped"),
        stats.packets(regionwall::verdict::Verdict::Audit),
        stats.events_logged,
        n.suppressed,
        n.ring_lost,
        n.queue_dropped,
        n.not_written,
    );
}
