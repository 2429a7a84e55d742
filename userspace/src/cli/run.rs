//! `regionwall run`: load, publish, attach, stream events, reload, detach.

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use aya::programs::XdpMode;
use regionwall::{
    control,
    controller::{
        Config, Controller, kept, metrics, recorder, release_freed_memory,
        reload::{Reloads, spawn_prepare},
        report::{self, NotLogged},
        socket::{self, Access, RemoveOnDrop, Shared},
        stream::EventStream,
        supervise::{self, Step},
        web,
    },
    fib::Capacity,
    pin,
};
use regionwall_common::{Lookup, UnparsedAction};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

/// Enforce a policy on an interface and stream drop/reject/audit events
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
// Independent on/off command-line flags, not a state machine.
#[allow(clippy::struct_excessive_bools)]
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
    /// Regions the traffic counters have room for, at least; raised to 1.5
    /// times what the policy at startup has (at most 4095). Each costs
    /// 16 KiB of counters and 6 KiB of rate limiter per CPU; a reload that
    /// needs more is refused until the controller restarts.
    #[arg(long, default_value_t = regionwall_common::REGION_ROOM_DEFAULT,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(regionwall_common::MAX_REGIONS)))]
    pub region_room: u32,
    /// Do not count traffic per (device, destination address): saves one
    /// hash update per packet, and `stats --by host` has nothing to show.
    #[arg(long)]
    pub no_host_counters: bool,
    /// Do not copy DNS answers on the interface's egress (no TC program
    /// is attached; destinations are not named by the names devices
    /// looked up).
    #[arg(long)]
    pub no_dns: bool,
    /// (device, address) pairs the DNS name cache holds (least recently
    /// used give way; ~240 bytes each).
    #[arg(long, default_value_t = 65_536,
          value_parser = clap::value_parser!(u32).range(1..=1 << 22))]
    pub name_cache: u32,
    /// Events per second each (device, region) may report, per CPU; drops
    /// over it are still enforced and counted (see `regionwall stats`).
    /// 0: report every drop.
    #[arg(long, default_value_t = regionwall_common::EVENT_RATE_DEFAULT)]
    pub event_rate: u32,
    /// Events a (device, region) may report at once after a quiet spell.
    #[arg(long, default_value_t = regionwall_common::EVENT_BURST_DEFAULT)]
    pub event_burst: u32,
    /// TCP RSTs and ICMP errors per second each device may be answered
    /// with for `mode = "reject"` rules, per CPU; rejected packets over it
    /// are dropped unanswered (counted). 0: answer every one.
    #[arg(long, default_value_t = regionwall_common::REJECT_RATE_DEFAULT)]
    pub reject_rate: u32,
    /// Answers a device may get at once after a quiet spell.
    #[arg(long, default_value_t = regionwall_common::REJECT_BURST_DEFAULT)]
    pub reject_burst: u32,
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
    /// Fail at once when the interface does not exist, instead of waiting
    /// for it to appear (a PPPoE, VLAN or USB interface made late).
    #[arg(long)]
    pub no_wait: bool,
    /// Group (name or number) whose members may use the read-only
    /// commands (`events`, `stats`) through the control socket; the socket
    /// is then 0660 in a 0750 directory. Only root may `detach`.
    #[arg(long)]
    pub socket_group: Option<String>,
    #[command(flatten)]
    pub input: super::input::InputArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub history: super::history::RecordArgs,
    #[command(flatten)]
    pub web: WebArgs,
    #[command(flatten)]
    pub shadow: super::candidate::RunArgs,
}

/// The read-only web dashboard (off unless --web is given).
#[derive(clap::Args)]
pub struct WebArgs {
    /// Serve a read-only dashboard at http://<ADDR>/, e.g. 127.0.0.1:8080
    /// (status, traffic over time, top countries, devices and hosts, the
    /// live drop tail, explain). Only loopback addresses, unless
    /// --web-token-file.
    #[arg(long, value_name = "ADDR")]
    pub web: Option<std::net::SocketAddr>,
    /// File holding a token (one line, at least 16 characters) every
    /// request must carry: `Authorization: Bearer TOKEN`, or open
    /// http://<ADDR>/?token=TOKEN once (it sets a cookie). Required for a
    /// non-loopback --web.
    #[arg(long, value_name = "FILE", requires = "web")]
    pub web_token_file: Option<PathBuf>,
}

impl WebArgs {
    fn config(&self) -> Option<web::Config> {
        self.web.map(|addr| web::Config {
            addr,
            token_file: self.web_token_file.clone(),
        })
    }
}

/// Prometheus metrics (off unless --metrics is given).
#[derive(clap::Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics (OpenMetrics text) at http://<ADDR>/metrics,
    /// e.g. 127.0.0.1:9465. Only loopback addresses, unless
    /// --metrics-allow-remote: the series name every device of the policy.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Allow --metrics on a non-loopback address (put a firewall or a
    /// reverse proxy with authentication in front of it).
    #[arg(long, requires = "metrics")]
    pub metrics_allow_remote: bool,
    /// Devices with series of their own (in counter index order); the
    /// others are summed under device="other", which bounds the series
    /// to about this many times regions (or countries) times 4 verdicts.
    #[arg(long, default_value_t = metrics::MAX_DEVICES_DEFAULT, requires = "metrics")]
    pub metrics_max_devices: usize,
}

impl MetricsArgs {
    fn config(&self) -> Option<metrics::Config> {
        self.metrics.map(|addr| metrics::Config {
            addr,
            allow_remote: self.metrics_allow_remote,
            max_devices: self.metrics_max_devices,
        })
    }
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
                ..regionwall::policy::Options::default()
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
            region_room: self.region_room,
            host_counters: !self.no_host_counters,
            dns: !self.no_dns,
            name_cache: self.name_cache as usize,
            event_rate: self.event_rate,
            event_burst: self.event_burst,
            reject_rate: self.reject_rate,
            reject_burst: self.reject_burst,
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
    if let Ok(gid) = name.parse::<u32>() {
        // chown(2) reads -1 (u32::MAX) as "leave the group unchanged".
        anyhow::ensure!(gid != u32::MAX, "--socket-group: {gid} is not a group id");
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

/// A signal while waiting for the interface: nothing was attached or
/// pinned, so there is nothing to undo.
fn stopped_waiting(iface: &str) -> ExitCode {
    log::info!("stopped while waiting for interface {iface}; nothing was attached");
    ExitCode::SUCCESS
}

/// Why the loop ended.
enum Exit {
    /// Ctrl-C or SIGTERM: unpin unless --persist.
    Signal,
    /// `regionwall detach` through the socket: unpin, then answer.
    Detach(tokio::sync::oneshot::Sender<control::Ack>),
    /// The link pin was removed from outside.
    Unpinned,
}

/// What the control socket's clients are served from.
fn shared(
    ctl: &Controller,
    detach: mpsc::Sender<tokio::sync::oneshot::Sender<regionwall::control::Ack>>,
    stats: mpsc::Sender<tokio::sync::oneshot::Sender<regionwall::control::Stats>>,
    reload: mpsc::Sender<tokio::sync::oneshot::Sender<regionwall::control::Ack>>,
    shadow: mpsc::Sender<regionwall::controller::shadow::Job>,
) -> Arc<Shared> {
    Arc::new(Shared {
        iface: ctl.config().iface.clone(),
        access: ctl.config().access,
        feed: ctl.feed(),
        known: ctl.known(),
        detach,
        stats,
        reload,
        hosts: ctl.hosts().cloned(),
        shadow: ctl.shadow_client(shadow),
        candidate_feed: ctl.candidate_feed(),
    })
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Handlers first: a signal that arrives while loading must not kill
    // the process with its default action (SIGHUP would terminate it).
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let config = args.config()?;
    let mut reloads = Reloads::new(!args.no_watch, &config.policy);
    let prepared = spawn_prepare(&config, None, None)
        .await
        .context("the policy loader panicked")??;
    if prepared.policy.rules.is_empty() {
        log::warn!("the policy has no rules: every packet passes (observe only)");
    }
    // A LAN interface made late (PPPoE, VLAN, USB) is waited for, so a
    // unit started before it does not end failed; a signal still ends the
    // wait, with nothing attached.
    if !args.no_wait {
        tokio::select! {
            found = supervise::wait_for_interface(&config.iface) => { found?; }
            _ = sigint.recv() => return Ok(stopped_waiting(&config.iface)),
            _ = sigterm.recv() => return Ok(stopped_waiting(&config.iface)),
        }
    }
    let listener = socket::bind(&config.socket, config.access)?;
    let _socket_guard = RemoveOnDrop(config.socket.clone());
    let exporter = metrics::Exporter::bind(args.metrics.config())?;
    let dashboard = web::Dashboard::bind(args.web.config())?;
    let (mut ctl, started) = Controller::start(config, &prepared)?;
    reloads.watch(&prepared.policy.inputs);
    drop(prepared);
    release_freed_memory();
    report::started(&ctl, &started);

    let hostnames = ctl.start_hostnames();
    let mut events = EventStream::start(&mut ctl, args.queue, args.json)?;
    let (detach_tx, mut detach_rx) = mpsc::channel(4);
    let (stats_tx, mut stats_rx) = mpsc::channel(16);
    let (reload_tx, mut reload_rx) = mpsc::channel(4);
    let _history = recorder::start(
        &mut ctl,
        &args.history.options(&args.iface),
        stats_tx.clone(),
    );
    let _counters = kept::start(&mut ctl, args.history.counters_dir(&args.iface).as_deref());
    let (shadow_tx, mut shadow_rx) = super::candidate::start(&mut ctl, &args.shadow);
    let server = tokio::spawn(socket::serve(
        listener,
        shared(&ctl, detach_tx, stats_tx, reload_tx, shadow_tx),
    ));
    let exporter = exporter.map(|e| e.serve(&ctl));
    let dashboard = dashboard.map(|d| d.serve(&ctl));
    let mut link_notes = supervise::netlink_notes()
        .map_err(|e| log::warn!("no netlink link notifications ({e}); polling only"))
        .ok();
    let mut poll = tokio::time::interval(supervise::POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report_tick = tokio::time::interval(Duration::from_secs(10));
    let mut not_logged = NotLogged::default();
    let exit = loop {
        tokio::select! {
            Some(event) = events.next() => events.deliver(&ctl, &event),
            _ = sigint.recv() => break Exit::Signal,
            _ = sigterm.recv() => break Exit::Signal,
            _ = sighup.recv() => reloads.request(&ctl, "SIGHUP"),
            trigger = reloads.next() => reloads.handle(&mut ctl, trigger),
            Some(reply) = stats_rx.recv() => { let _ = reply.send(ctl.snapshot()); }
            Some(reply) = reload_rx.recv() => reloads.request_answered(&ctl, reply),
            Some(job) = shadow_rx.recv() => reloads.shadow(&mut ctl, job),
            Some(reply) = detach_rx.recv() => break Exit::Detach(reply),
            Some(note) = async { match link_notes.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                if ctl.supervisor.concerns(&note) && ctl.supervise() == Step::Detached {
                    break Exit::Unpinned;
                }
            }
            _ = poll.tick() => if ctl.supervise() == Step::Detached { break Exit::Unpinned },
            _ = report_tick.tick() => not_logged.report(&ctl),
        }
    };
    events.stop();
    server.abort();
    for task in exporter.into_iter().chain(dashboard) {
        task.abort();
    }
    drop(hostnames);
    drop(reloads);
    finish(ctl, exit, args.persist, &args.iface).await;
    Ok(ExitCode::SUCCESS)
}

/// Stops enforcement as `exit` asks (unpinning unless persisted), answers a
/// `detach` client and prints the summary.
async fn finish(ctl: Controller, exit: Exit, persist: bool, iface: &str) {
    let stats = ctl.snapshot();
    let unpin = match &exit {
        Exit::Signal => !persist,
        Exit::Detach(_) => true,
        Exit::Unpinned => {
            log::warn!("the link pin of {iface} was removed; exiting");
            true
        }
    };
    let message = ctl
        .shutdown(unpin)
        .unwrap_or_else(|e| format!("exiting, but the pins could not all be removed: {e}"));
    if let Exit::Detach(reply) = exit {
        let _ = reply.send(control::Ack {
            ok: true,
            message: message.clone(),
        });
        // Let the client read its answer before the runtime stops.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("{}", report::summary(&message, &stats));
}
