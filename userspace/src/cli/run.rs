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

use std::io::Write as _;

use anyhow::Context as _;
use aya::programs::XdpMode;
use regionwall::{
    datapath::{Datapath, LoadOptions},
    events::{self, BootClock, Names, Record},
    fib::{Capacity, Fib},
    netns,
};
use regionwall_common::{COUNTERS, Counter, Lookup, UnparsedAction};
use tokio::signal::unix::{SignalKind, signal};

/// Enforce a policy on an interface and stream drop/audit events.
///
/// Attach to the LAN-facing interface of the gateway: the program sees what
/// devices send out. Events go to stdout, one per line (or JSON with
/// --json); logs go to stderr. SIGHUP reloads the policy (a rejected policy
/// leaves the old one enforcing). Ctrl-C or SIGTERM detaches and exits.
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

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Handlers first: a signal that arrives while loading must not kill
    // the process with its default action (SIGHUP would terminate it).
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let (_, compiled) = super::load_policy(&args.policy, &options(&args))?;
    let (options, fib) = load_options(&args, &compiled)?;
    let mut dp = Datapath::load_with(options)
        .context("loading the XDP program (are you root? is the kernel >= 5.8?)")?;
    dp.set_unparsed(match args.unparsed {
        Unparsed::Pass => UnparsedAction::Pass,
        Unparsed::Drop => UnparsedAction::Drop,
    })?;
    let mut epoch = 1;
    let report = dp
        .publish_with(&compiled, fib.as_ref(), epoch)
        .context("publishing the policy")?;
    drop(fib);
    release_freed_memory();
    log::info!(
        "published policy {} (epoch {epoch}): {} IPv4 + {} IPv6 prefixes, {} classes, {} compiled ranges ({} KiB), in {:?}",
        args.policy.display(),
        report.v4_prefixes,
        report.v6_prefixes,
        compiled.classes.len(),
        report.fib_ranges,
        report.fib_bytes / 1024,
        report.write_time
    );
    let mut names = Names::default();
    names.insert(epoch, Arc::new(compiled));

    let ifindex = netns::ifindex(&args.iface)
        .with_context(|| format!("interface {} not found", args.iface))?;
    let mode = match args.xdp_mode {
        Mode::Native => XdpMode::Driver,
        Mode::Generic => XdpMode::Skb,
        Mode::Auto => XdpMode::Default,
    };
    let link = dp.attach(ifindex, mode).with_context(|| {
        format!(
            "attaching to {} (try --xdp-mode generic if the driver lacks XDP)",
            args.iface
        )
    })?;
    eprintln!(
        "regionwall: enforcing {} on {} (ifindex {ifindex})",
        args.policy.display(),
        args.iface
    );

    let ring = dp.take_events()?;
    let queue_dropped = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::channel(args.queue.max(1));
    let pump = tokio::spawn(events::pump(ring, tx, Arc::clone(&queue_dropped)));

    let clock = BootClock::now();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut last_lost = 0;
    let mut last_queue_dropped = 0;
    // Buffered, flushed whenever the queue runs empty: one write per burst
    // instead of one per event keeps up with floods, and a lone event still
    // appears at once.
    let mut stdout = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
    loop {
        tokio::select! {
            Some(event) = rx.recv() => {
                let record = Record::new(&event, &names, &clock, &args.iface);
                let text = if args.json { record.json() } else { record.line() };
                let written = writeln!(stdout, "{text}")
                    .and_then(|()| if rx.is_empty() { stdout.flush() } else { Ok(()) });
                if written.is_err() {
                    break; // stdout closed: nobody is listening
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => reload(&args, &mut dp, &mut epoch, &mut names),
            _ = tick.tick() => {
                let lost = dp.counters().map_or(last_lost, |c| c[Counter::EventsLost as usize]);
                let qd = queue_dropped.load(Ordering::Relaxed);
                if lost > last_lost || qd > last_queue_dropped {
                    log::warn!("events not logged: {} lost in the kernel ring buffer, {} dropped from a full queue (drops themselves were enforced)", lost - last_lost, qd - last_queue_dropped);
                }
                last_lost = lost;
                last_queue_dropped = qd;
            }
        }
    }
    pump.abort();
    dp.detach(link).context("detaching")?;
    print_summary(&args.iface, &dp, queue_dropped.load(Ordering::Relaxed));
    Ok(ExitCode::SUCCESS)
}

/// Re-reads, compiles and publishes the policy; on any error the previous
/// policy stays live and the error is logged with its positions.
fn reload(args: &Args, dp: &mut Datapath, epoch: &mut u32, names: &mut Names) {
    match super::load_policy(&args.policy, &options(args)) {
        Ok((_, compiled)) => {
            let next = *epoch + 1;
            match dp.publish(&compiled, next) {
                Ok(r) => {
                    *epoch = next;
                    names.insert(next, Arc::new(compiled));
                    release_freed_memory();
                    log::info!("reloaded policy (epoch {next}) in {:?}", r.write_time);
                }
                Err(e) => log::error!("reload failed, previous policy still enforcing: {e}"),
            }
        }
        Err(e) => log::error!("reload rejected, previous policy still enforcing: {e:#}"),
    }
}

fn print_summary(iface: &str, dp: &Datapath, queue_dropped: u64) {
    let counters = dp.counters().unwrap_or([0; COUNTERS as usize]);
    let c = |k: Counter| counters[k as usize];
    eprintln!(
        "regionwall: detached from {iface}. frames {}, non-IP {}, unparsed passed {} / dropped {}, \
         events {} (lost in kernel {}, dropped in queue {queue_dropped})",
        c(Counter::Frames),
        c(Counter::NonIp),
        c(Counter::UnparsedPassed),
        c(Counter::UnparsedDropped),
        c(Counter::EventsSent),
        c(Counter::EventsLost),
    );
}
