//! `regionwall run`: load, publish, attach, stream events, reload, detach.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use std::io::Write as _;

use anyhow::Context as _;
use aya::programs::XdpMode;
use regionwall::{
    compile::Compiled,
    control::{self, Ack, Filter, Lagged, Request, Stats, Userspace},
    datapath::Readings as _,
    datapath::{Datapath, LoadOptions},
    events::{self, BootClock, Names, Record},
    fib::{Capacity, Fib},
    netns,
    pin::{self, LinkFacts, PinDir},
};
use regionwall_common::{Counter, LAYOUT_VERSION, Lookup, UnparsedAction};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    signal::unix::{SignalKind, signal},
    sync::broadcast,
};

/// Enforce a policy on an interface and stream drop/audit events.
///
/// Attach to the LAN-facing interface of the gateway: the program sees what
/// devices send out. Events go to stdout, one per line (or JSON with
/// --json); logs go to stderr. SIGHUP, or saving the policy file, reloads
/// it (a rejected policy leaves the old one enforcing).
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
    /// Do not reload when the policy file changes (SIGHUP still reloads).
    #[arg(long)]
    pub no_watch: bool,
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

/// The lookup chosen, with the compiled lookup's room raised to 1.5 times
/// what `compiled` needs; the lookup built for that, to publish.
fn load_options(
    args: &Args,
    compiled: &regionwall::compile::Compiled,
) -> anyhow::Result<(LoadOptions, Option<Fib>)> {
    let mut options = LoadOptions {
        lookup: match args.lookup {
            LookupArg::Compiled => Lookup::Compiled,
            LookupArg::Lpm => Lookup::Lpm,
        },
        ..LoadOptions::default()
    };
    options.fib.slots = args.fib_slots as usize;
    options.fib.ranges = args.fib_ranges as usize;
    options.fib.long = args.fib_long as usize;
    if options.lookup == Lookup::Compiled {
        // Room for 1.5 times what this policy needs, so reloads can grow.
        let unlimited = Capacity {
            slots: usize::MAX,
            ranges: usize::MAX,
            long: usize::MAX,
        };
        let fib = Fib::build(&compiled.v4, &compiled.v6, unlimited)
            .context("building the compiled lookup (try --lookup lpm)")?;
        let room = |n: usize| n + n / 2;
        options.fib.slots = options.fib.slots.max(room(fib.slots.len()));
        options.fib.ranges = options.fib.ranges.max(room(fib.ranges.len()));
        options.fib.long = options.fib.long.max(room(fib.long.len()));
        return Ok((options, Some(fib)));
    }
    Ok((options, None))
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

fn options(args: &Args) -> regionwall::policy::Options {
    regionwall::policy::Options {
        regions_dir: args.regions_dir.clone(),
    }
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(run(args))
}

/// How the controller came to enforce.
enum Start {
    /// Nothing was pinned.
    Fresh,
    /// Pinned state of this layout: same maps, program swapped on the link.
    Adopted { epoch: u32, digest: u32 },
    /// Pinned state it could not adopt, replaced without a gap.
    Replaced { reason: String },
}

const fn xdp_mode(mode: Mode) -> XdpMode {
    match mode {
        Mode::Native => XdpMode::Driver,
        Mode::Generic => XdpMode::Skb,
        Mode::Auto => XdpMode::Default,
    }
}

fn set_controls(args: &Args, dp: &mut Datapath) -> anyhow::Result<()> {
    dp.set_unparsed(match args.unparsed {
        Unparsed::Pass => UnparsedAction::Pass,
        Unparsed::Drop => UnparsedAction::Drop,
    })?;
    dp.set_event_limit(args.event_rate, args.event_burst)?;
    Ok(())
}

/// Puts this controller's program in charge of the interface: adopts the
/// pinned state when it can, else loads fresh maps, publishes the policy
/// into them, and only then swaps the program onto the pinned link (or
/// attaches a new one). Every path pins the result.
fn establish(
    args: &Args,
    compiled: &Compiled,
    pins: &PinDir,
    ifindex: u32,
) -> anyhow::Result<(Datapath, Start, LinkFacts)> {
    let (options, fib) = load_options(args, compiled)?;
    let mode = xdp_mode(args.xdp_mode);
    let found = pins
        .inspect()
        .with_context(|| format!("reading pinned state in {}", pins.path().display()))?;
    let mut reason = None;
    if let Some(found) = &found {
        match found.refusal(LAYOUT_VERSION, options.lookup as u32) {
            None => {
                let mut dp =
                    Datapath::adopt(options, pins).context("loading on the pinned maps")?;
                let fits = fib
                    .as_ref()
                    .is_none_or(|f| f.fits(dp.options().fib).is_ok());
                if fits {
                    let meta = dp.live_meta()?;
                    set_controls(args, &mut dp)?;
                    let facts = go_live(&mut dp, pins, ifindex, mode, &args.iface)?;
                    let epoch = meta.epoch + 1;
                    publish(&mut dp, compiled, fib.as_ref(), epoch, &args.policy)?;
                    return Ok((
                        dp,
                        Start::Adopted {
                            epoch: meta.epoch,
                            digest: meta.names_digest,
                        },
                        facts,
                    ));
                }
                reason = Some("the policy needs more room than the pinned tables have".into());
            }
            Some(why) => reason = Some(why),
        }
    }
    // Fresh maps: the policy is fully published before the program goes live.
    let mut dp = Datapath::load_with(options)
        .context("loading the XDP program (are you root? is the kernel >= 5.9?)")?;
    set_controls(args, &mut dp)?;
    publish(&mut dp, compiled, fib.as_ref(), 1, &args.policy)?;
    let facts = go_live(&mut dp, pins, ifindex, mode, &args.iface)?;
    let start = match reason {
        Some(reason) => Start::Replaced { reason },
        None => Start::Fresh,
    };
    Ok((dp, start, facts))
}

/// Puts `dp`'s program on the interface: swapped onto the pinned link when
/// that link is attached here (no gap), else on a new pinned link; then
/// pins the maps and program.
fn go_live(
    dp: &mut Datapath,
    pins: &PinDir,
    ifindex: u32,
    mode: XdpMode,
    iface: &str,
) -> anyhow::Result<LinkFacts> {
    let live = pins.link_facts()?.is_some_and(|f| f.ifindex == ifindex);
    let facts = if live {
        dp.take_over(pins)
            .context("swapping the program on the pinned link")?
    } else {
        dp.attach_pinned(ifindex, mode, pins)
            .with_context(|| attach_hint(iface))?
    };
    dp.pin(pins).context("pinning")?;
    Ok(facts)
}

fn attach_hint(iface: &str) -> String {
    format!("attaching to {iface} (try --xdp-mode generic if the driver lacks XDP)")
}

fn publish(
    dp: &mut Datapath,
    compiled: &Compiled,
    fib: Option<&Fib>,
    epoch: u32,
    policy: &Path,
) -> anyhow::Result<()> {
    let report = dp
        .publish_with(compiled, fib, epoch)
        .context("publishing the policy")?;
    log::info!(
        "published policy {} (epoch {epoch}): {} IPv4 + {} IPv6 prefixes, {} classes, {} compiled ranges ({} KiB), in {:?}",
        policy.display(),
        report.v4_prefixes,
        report.v6_prefixes,
        compiled.classes.len(),
        report.fib_ranges,
        report.fib_bytes / 1024,
        report.write_time
    );
    Ok(())
}

/// Binds the control socket: 0700 directory, 0600 socket. A socket some
/// other controller still answers on is an error; a stale one is replaced.
fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another controller is running on this interface (it answers on {})",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    // Created with mode 0600 from the start: no window where others may connect.
    // SAFETY: umask has no preconditions; restored right after bind.
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = listener.with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(listener)
}

/// Watches the policy file's directory; sends on `tx` when the file is
/// written, created or renamed over.
fn watch(
    policy: &Path,
    tx: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher as _};
    let policy = std::path::absolute(policy).context("resolving the policy path")?;
    let dir = policy
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let name = policy.file_name().map(std::ffi::OsStr::to_os_string);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        let ours = event
            .paths
            .iter()
            .any(|p| p.file_name().map(std::ffi::OsStr::to_os_string) == name);
        if ours && matches!(event.kind, EventKind::Modify(_) | EventKind::Create(_)) {
            let _ = tx.try_send(());
        }
    })
    .context("starting the policy file watcher")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", dir.display()))?;
    Ok(watcher)
}

/// What the loop shares with the control socket's clients.
struct Shared {
    iface: String,
    feed: broadcast::Sender<Arc<Record>>,
    detach: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<Ack>>,
    stats: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<Stats>>,
}

async fn serve_client(stream: UnixStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let request: Request = match serde_json::from_str(line.trim()) {
        Ok(r) => r,
        Err(e) => {
            let ack = Ack {
                ok: false,
                message: format!("bad request: {e}"),
            };
            return write.write_all(json_line(&ack).as_bytes()).await;
        }
    };
    match request {
        Request::Events(filter) => stream_events(&mut write, &shared, &filter).await,
        Request::Stats => answer(&mut write, &shared.stats).await,
        Request::Detach => answer(&mut write, &shared.detach).await,
    }
}

/// Asks the controller's loop through `loop_tx` and writes its answer.
async fn answer<T: serde::Serialize>(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    loop_tx: &tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<T>>,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if loop_tx.send(tx).await.is_err() {
        return Ok(());
    }
    if let Ok(value) = rx.await {
        write.write_all(json_line(&value).as_bytes()).await?;
    }
    Ok(())
}

async fn stream_events(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    shared: &Shared,
    filter: &Filter,
) -> std::io::Result<()> {
    let mut feed = shared.feed.subscribe();
    log::info!("events client attached ({})", shared.iface);
    loop {
        match feed.recv().await {
            Ok(record) => {
                if filter.matches(&record) {
                    write
                        .write_all(json_line(record.as_ref()).as_bytes())
                        .await?;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                write
                    .write_all(json_line(&Lagged { lagged: n }).as_bytes())
                    .await?;
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

fn json_line<T: serde::Serialize>(value: &T) -> String {
    let mut s = serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

/// Counts of what the loop printed and could not print.
#[derive(Default)]
struct Tally {
    logged: u64,
    last_lost: u64,
    last_suppressed: u64,
    last_queue_dropped: u64,
}

#[allow(
    clippy::too_many_lines,
    reason = "the controller's event loop, one select"
)]
async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Handlers first: a signal that arrives while loading must not kill
    // the process with its default action (SIGHUP would terminate it).
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    // The watcher before the first read: a save while loading is not lost
    // (it queues a reload).
    let (change_tx, mut change_rx) = tokio::sync::mpsc::channel(16);
    let _watcher = if args.no_watch {
        None
    } else {
        Some(watch(&args.policy, change_tx)?)
    };
    let (_, compiled) = super::load_policy(&args.policy, &options(&args))?;
    let socket_path = args
        .socket
        .clone()
        .unwrap_or_else(|| control::default_socket(&args.iface));
    let listener = bind_socket(&socket_path)?;
    let _socket_guard = RemoveOnDrop(socket_path.clone());
    let pins = PinDir::new(&args.pin_root, &args.iface);
    pins.create()
        .with_context(|| format!("creating the pin directory {}", pins.path().display()))?;
    let mut ifindex = netns::ifindex(&args.iface)
        .with_context(|| format!("interface {} not found", args.iface))?;

    let (mut dp, start, facts) = establish(&args, &compiled, &pins, ifindex)?;
    release_freed_memory();
    let compiled = Arc::new(compiled);
    let mut epoch = dp.epoch();
    let mut names = Names::default();
    match &start {
        Start::Fresh => {}
        Start::Adopted { epoch: old, digest } => {
            log::info!(
                "adopted the pinned state in {} (policy epoch {old}, link {}, program now {}): no gap",
                pins.path().display(),
                facts.id,
                facts.prog_id
            );
            // Events still queued from the previous controller's policy.
            if *digest == compiled.names_digest() {
                names.insert(*old, Arc::clone(&compiled));
            }
        }
        Start::Replaced { reason } => log::warn!(
            "replaced the pinned state in {} ({reason}); the new policy was published before the program swap (link {}, program {})",
            pins.path().display(),
            facts.id,
            facts.prog_id
        ),
    }
    names.insert(epoch, Arc::clone(&compiled));
    eprintln!(
        "regionwall: enforcing {} on {} (ifindex {ifindex}, link {}, pinned in {}, control socket {})",
        args.policy.display(),
        args.iface,
        facts.id,
        pins.path().display(),
        socket_path.display()
    );

    let ring = dp.take_events()?;
    let queue_dropped = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::channel(args.queue.max(1));
    let pump = tokio::spawn(events::pump(ring, tx, Arc::clone(&queue_dropped)));

    let (feed, _) = broadcast::channel(4096);
    let (detach_tx, mut detach_rx) = tokio::sync::mpsc::channel(4);
    let (stats_tx, mut stats_rx) = tokio::sync::mpsc::channel(16);
    let shared = Arc::new(Shared {
        iface: args.iface.clone(),
        feed: feed.clone(),
        detach: detach_tx,
        stats: stats_tx,
    });
    let mut reload_at: Option<tokio::time::Instant> = None;

    let clock = BootClock::now();
    let mut tick = tokio::time::interval(IFACE_POLL);
    let mut report_tick = tokio::time::interval(Duration::from_secs(10));
    let mut tally = Tally::default();
    let mut outage = Outage::default();
    let mut unpin_on_exit = !args.persist;
    let mut detach_ack = None;
    // Buffered, flushed whenever the queue runs empty: one write per burst
    // instead of one per event keeps up with floods, and a lone event still
    // appears at once.
    let mut stdout = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
    loop {
        tokio::select! {
            Some(event) = rx.recv() => {
                let record = Record::new(&event, &names, &clock, &args.iface);
                let text = if args.json { record.json() } else { record.line() };
                tally.logged += 1;
                if feed.receiver_count() > 0 {
                    let _ = feed.send(Arc::new(record));
                }
                let written = writeln!(stdout, "{text}")
                    .and_then(|()| if rx.is_empty() { stdout.flush() } else { Ok(()) });
                if written.is_err() {
                    break; // stdout closed: nobody is listening
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => reload(&args, &mut dp, &mut epoch, &mut names, "SIGHUP"),
            Some(()) = change_rx.recv() => {
                // Debounced: editors write in several steps.
                reload_at = Some(tokio::time::Instant::now() + DEBOUNCE);
            }
            () = async { if let Some(at) = reload_at { tokio::time::sleep_until(at).await } else { std::future::pending().await } } => {
                reload_at = None;
                reload(&args, &mut dp, &mut epoch, &mut names, "policy file changed");
            }
            Ok((stream, _)) = listener.accept() => {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    if let Err(e) = serve_client(stream, shared).await {
                        log::debug!("control client: {e}");
                    }
                });
            }
            Some(reply) = stats_rx.recv() => {
                let stats = snapshot(&dp, &args.iface, &names, queue_dropped.load(Ordering::Relaxed), tally.logged);
                let _ = reply.send(stats);
            }
            Some(reply) = detach_rx.recv() => {
                unpin_on_exit = true;
                detach_ack = Some(reply);
                break;
            }
            _ = tick.tick() => {
                let state = check_link(&args.iface, &pins, ifindex);
                let back = match state {
                    LinkState::Fine => None,
                    LinkState::Gone => {
                        if !outage.announced {
                            log::warn!("interface {} is gone; enforcement resumes when it is back", args.iface);
                            outage.announced = true;
                        }
                        outage.since.get_or_insert_with(Instant::now);
                        None
                    }
                    LinkState::Back(index) => Some(index),
                    // The link lost its interface but the name still has the
                    // same index: the interface is being deleted (seen for a
                    // moment), or someone detached the link (bpftool link
                    // detach). Re-attach once it has lasted UNLINKED_GRACE.
                    LinkState::Unlinked(index) => {
                        let since = *outage.since.get_or_insert_with(Instant::now);
                        (since.elapsed() >= UNLINKED_GRACE).then_some(index)
                    }
                    LinkState::Detached => {
                        log::warn!("the link pin of {} was removed (regionwall detach?); exiting", args.iface);
                        unpin_on_exit = true;
                        break;
                    }
                };
                if let Some(index) = back {
                    match dp.attach_pinned(index, xdp_mode(args.xdp_mode), &pins) {
                        Ok(facts) => {
                            ifindex = index;
                            let gap = outage.since.map_or_else(
                                || format!("under {} ms (re-created between checks)", IFACE_POLL.as_millis()),
                                |t| format!("{} ms", t.elapsed().as_millis()),
                            );
                            log::warn!(
                                "re-attached to {} (ifindex {index}, link {}); unenforced gap: {gap}",
                                args.iface, facts.id
                            );
                            outage = Outage::default();
                        }
                        Err(e) => log::error!("re-attaching to {}: {e}", args.iface),
                    }
                }
            }
            _ = report_tick.tick() => report_not_logged(&dp, &mut tally, queue_dropped.load(Ordering::Relaxed)),
        }
    }
    let _ = stdout.flush();
    pump.abort();
    let stats = snapshot(
        &dp,
        &args.iface,
        &names,
        queue_dropped.load(Ordering::Relaxed),
        tally.logged,
    );
    // Pins first: closing the last fd of an unpinned link detaches.
    let removed = if unpin_on_exit {
        Some(pins.remove_all().context("removing the pins")?)
    } else {
        None
    };
    dp.release_link();
    let message = if let Some(removed) = removed {
        format!(
            "detached from {} and removed {} pins from {}",
            args.iface,
            removed.len(),
            pins.path().display()
        )
    } else {
        format!(
            "exited; {} stays enforcing epoch {epoch} through the pins in {} (`regionwall detach --iface {}` removes them)",
            args.iface,
            pins.path().display(),
            args.iface
        )
    };
    if let Some(reply) = detach_ack {
        let _ = reply.send(Ack {
            ok: true,
            message: message.clone(),
        });
        // Let the client read its answer before the runtime stops.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    print_summary(&message, &stats);
    Ok(ExitCode::SUCCESS)
}

/// Removes the control socket however `run` ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// How often the interface and the link are checked.
const IFACE_POLL: Duration = Duration::from_millis(100);
/// Quiet time after the last policy file change before reloading.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Since when the program has not been on the interface, and whether that
/// was logged.
#[derive(Default)]
struct Outage {
    since: Option<Instant>,
    announced: bool,
}

/// How long a link without interface, on an interface that still answers
/// to its index, is waited out before re-attaching.
const UNLINKED_GRACE: Duration = Duration::from_millis(300);

enum LinkState {
    Fine,
    /// The interface does not exist.
    Gone,
    /// The interface exists (again) under another index, without our program.
    Back(u32),
    /// The interface has the index we attached to, but the link has none.
    Unlinked(u32),
    /// The link pin was removed.
    Detached,
}

fn check_link(iface: &str, pins: &PinDir, attached: u32) -> LinkState {
    let Ok(now) = netns::ifindex(iface) else {
        return LinkState::Gone;
    };
    match pins.link_facts() {
        Ok(Some(f)) if f.ifindex == now => LinkState::Fine,
        Ok(Some(f)) if f.ifindex == 0 && now == attached => LinkState::Unlinked(now),
        Ok(None) => LinkState::Detached,
        Ok(Some(_)) => LinkState::Back(now),
        Err(e) => {
            log::debug!("reading the pinned link: {e}");
            LinkState::Fine
        }
    }
}

fn snapshot(dp: &Datapath, iface: &str, names: &Names, queue_dropped: u64, logged: u64) -> Stats {
    let user = Userspace {
        queue_dropped,
        events_logged: logged,
    };
    Stats::read(dp, iface, names.get(dp.epoch()), user).unwrap_or_else(|e| {
        log::warn!("reading the statistics: {e}");
        Stats::default()
    })
}

/// Logs drops and audits that did not become events since the last report.
fn report_not_logged(dp: &Datapath, tally: &mut Tally, queue_dropped: u64) {
    let Ok(c) = dp.counters() else { return };
    let lost = c[Counter::EventsLost as usize];
    let suppressed = c[Counter::EventsSuppressed as usize];
    if lost > tally.last_lost
        || suppressed > tally.last_suppressed
        || queue_dropped > tally.last_queue_dropped
    {
        log::warn!(
            "not logged in the last interval (verdicts were enforced): {} over the event rate limit, {} lost in the kernel ring buffer, {} dropped from a full queue; `regionwall stats` shows which devices and regions",
            suppressed - tally.last_suppressed,
            lost - tally.last_lost,
            queue_dropped - tally.last_queue_dropped
        );
    }
    tally.last_lost = lost;
    tally.last_suppressed = suppressed;
    tally.last_queue_dropped = queue_dropped;
}

/// Re-reads, compiles and publishes the policy; on any error the previous
/// policy stays live and the error is logged with its positions.
fn reload(args: &Args, dp: &mut Datapath, epoch: &mut u32, names: &mut Names, why: &str) {
    match super::load_policy(&args.policy, &options(args)) {
        Ok((_, compiled)) => {
            let next = *epoch + 1;
            match dp.publish(&compiled, next) {
                Ok(r) => {
                    *epoch = next;
                    names.insert(next, Arc::new(compiled));
                    release_freed_memory();
                    log::info!(
                        "reloaded policy ({why}; epoch {next}) in {:?}",
                        r.write_time
                    );
                }
                Err(e) => log::error!(
                    "reload ({why}) failed, previous policy (epoch {epoch}) still enforcing: {e}"
                ),
            }
        }
        Err(e) => log::error!(
            "reload ({why}) rejected, previous policy (epoch {epoch}) still enforcing: {e:#}"
        ),
    }
}

fn print_summary(message: &str, stats: &Stats) {
    let c = |k: &str| stats.counters.get(k).copied().unwrap_or(0);
    let n = stats.not_logged;
    eprintln!(
        "regionwall: {message}. frames {}, non-IP {}, unparsed passed {} / dropped {}, \
         dropped {}, audited {}, events logged {} (over the rate limit {}, lost in kernel {}, dropped in queue {})",
        c("frames"),
        c("non_ip"),
        c("unparsed_passed"),
        c("unparsed_dropped"),
        stats.packets("drop") + c("unparsed_dropped"),
        stats.packets("audit"),
        stats.events_logged,
        n.suppressed,
        n.ring_lost,
        n.queue_dropped,
    );
}
