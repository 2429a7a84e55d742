//! `regionwall events`, `stats` and `detach`: clients of a running
//! controller's control socket, or readers of the pinned maps when no
//! controller runs.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use regionwall::{
    control::{self, Ack, Filter, Lagged, Request, Stats},
    controller::lock::PinLock,
    datapath::Readings as _,
    events::{self, BootClock, Names, Record},
    pin::{self, PinDir, PinnedMaps},
    verdict::Verdict,
};

/// Where to find the controller of an interface.
#[derive(clap::Args, Clone)]
pub struct Target {
    /// The interface the controller enforces on.
    #[arg(long)]
    pub iface: String,
    /// Its control socket [default: /run/regionwall/<iface>.sock].
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Its pin root (`stats` and `events` read it directly when no
    /// controller answers; the candidate commands need the controller).
    #[arg(long, default_value = pin::DEFAULT_ROOT)]
    pub pin_root: PathBuf,
    /// The policy file, to name rules when reading pinned maps without a
    /// controller (used only if it is the policy that was published;
    /// devices and regions are named from the pins).
    #[arg(long)]
    pub policy: Option<PathBuf>,
}

impl Target {
    fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| control::default_socket(&self.iface))
    }

    fn pins(&self) -> anyhow::Result<PinDir> {
        if let Some(why) = pin::invalid_iface_name(&self.iface) {
            anyhow::bail!("{:?} is not an interface name: {why}", self.iface);
        }
        Ok(PinDir::new(&self.pin_root, &self.iface))
    }

    /// The names devices looked up for `addr`, from the running controller
    /// (`None` when none listens).
    pub fn hosts(&self, addr: std::net::IpAddr) -> anyhow::Result<Option<control::HostsAnswer>> {
        let Some(mut reader) = self.ask(&Request::Hosts { addr })? else {
            return Ok(None);
        };
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .with_context(|| format!("reading from {}", self.socket().display()))?;
        let answer = serde_json::from_str(&line).with_context(|| {
            format!(
                "the controller on {} answered {:?} (an older version?)",
                self.iface,
                line.trim()
            )
        })?;
        Ok(Some(answer))
    }

    /// Connects and sends `request`; `None` when no controller listens.
    pub fn ask(&self, request: &Request) -> anyhow::Result<Option<BufReader<UnixStream>>> {
        let path = self.socket();
        let mut stream = match UnixStream::connect(&path) {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to {}", path.display())),
        };
        let mut line = serde_json::to_string(request)?;
        line.push('\n');
        stream
            .write_all(line.as_bytes())
            .with_context(|| format!("writing to {}", path.display()))?;
        Ok(Some(BufReader::new(stream)))
    }

    /// The names of the pinned live policy, if `--policy` compiles to it
    /// (numbered on the pinned counter slots, as the controller did).
    fn names(&self, maps: &PinnedMaps) -> Option<regionwall::compile::Compiled> {
        let path = self.policy.as_deref()?;
        let digest = maps.live_meta().ok()?.names_digest;
        let slots = maps.read_slots().ok()?;
        let room = maps.control().ok()?.region_stride.saturating_sub(1);
        let compiled = super::load_policy(path, &regionwall::policy::Options::default())
            .map_err(|e| log::warn!("{e:#}"))
            .ok()?
            .1;
        let compiled = regionwall::slots::stabilize(compiled, &slots, room)
            .map_err(|e| log::warn!("{e}"))
            .ok()?
            .compiled;
        if compiled.names_digest() == digest {
            Some(compiled)
        } else {
            log::warn!(
                "{} is not the policy that was published; showing indices",
                path.display()
            );
            None
        }
    }
}

/// The verdicts events carry.
fn event_verdict(s: &str) -> Result<Verdict, String> {
    match s.parse() {
        Ok(v @ (Verdict::Drop | Verdict::Audit | Verdict::Reject)) => Ok(v),
        _ => Err("expected drop, reject or audit".into()),
    }
}

/// Tail drop, reject and audit events of a running controller
///
/// Connects to the controller's control socket; with no controller
/// running, reads the pinned event ring directly.
#[derive(clap::Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Only events of this device (name as printed).
    #[arg(long)]
    pub device: Option<String>,
    /// Only events of this region.
    #[arg(long)]
    pub region: Option<String>,
    /// Only this verdict: drop, reject or audit.
    #[arg(long, value_parser = event_verdict)]
    pub verdict: Option<Verdict>,
    /// Exit after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// First replay the events recorded since then (an age like 1h, a
    /// date or an RFC 3339 time) from the history database, then follow.
    #[arg(long, value_parser = |s: &str| regionwall::history::parse_time(s, std::time::SystemTime::now()))]
    pub since: Option<std::time::SystemTime>,
    /// The history's state directory, for --since
    /// [default: /var/lib/regionwall/<iface>/].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// End when the controller closes the stream, instead of waiting for
    /// it to come back (a restart) and replaying what it recorded since.
    #[arg(long)]
    pub no_reconnect: bool,
    /// Stream the staged candidate's events instead ("would drop",
    /// "would pass"; see `regionwall stage`); needs a running controller.
    #[arg(long, conflicts_with = "since")]
    pub candidate: bool,
}

/// Prints the recorded events from `since` on (after it, with `after`)
/// that `filter` passes;
/// returns the time of the last one (live events up to it were replayed)
/// and whether `print` asked to stop.
fn replay(
    args: &EventsArgs,
    filter: &Filter,
    since: std::time::SystemTime,
    after: bool,
    print: &mut dyn FnMut(&Record) -> anyhow::Result<bool>,
) -> anyhow::Result<(Option<std::time::SystemTime>, bool)> {
    let place = super::history::Place {
        iface: Some(args.target.iface.clone()),
        state_dir: args.state_dir.clone(),
    };
    let store = super::history::open(&place.db())?;
    let query = regionwall::history::query::Query {
        since: Some(since),
        device: filter.device.clone(),
        region: filter.region.clone(),
        verdict: filter.verdict.map(|v| v.to_string()),
        ..Default::default()
    };
    let mut last = None;
    for record in regionwall::history::query::records(&store, &query)? {
        let at = humantime::parse_rfc3339(&record.timestamp).ok();
        // With `after`, `since` is the last event shown before a reconnect.
        if after && at.is_some_and(|t| t <= since) {
            continue;
        }
        last = at;
        if print(&record)? {
            return Ok((last, true));
        }
    }
    Ok((last, false))
}

/// Prints the live stream until it ends (false) or `--count` is reached
/// (true); events up to `shown` (the replay's last) are skipped, and
/// `last` follows what was printed.
fn follow(
    reader: &mut BufReader<UnixStream>,
    shown: Option<std::time::SystemTime>,
    print: &mut dyn FnMut(&Record) -> anyhow::Result<bool>,
    last: &mut Option<std::time::SystemTime>,
) -> anyhow::Result<bool> {
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return Ok(false),
            Ok(_) => {}
        }
        if let Some(e) = refusal(&line) {
            return Err(e);
        }
        if let Ok(lag) = serde_json::from_str::<Lagged>(&line) {
            eprintln!(
                "regionwall: {} events missed (this client was too slow)",
                lag.lagged
            );
            continue;
        }
        let record: Record = serde_json::from_str(&line)
            .with_context(|| format!("bad event from the controller: {line}"))?;
        let at = humantime::parse_rfc3339(&record.timestamp).ok();
        if at.is_some_and(|t| shown.is_some_and(|s| t <= s)) {
            continue;
        }
        *last = at.or(*last);
        if print(&record)? {
            return Ok(true);
        }
    }
}

/// How long after a reconnect the replay waits for the history writer to
/// commit what the new controller delivered while we were away (it
/// commits at least every second).
const REPLAY_SETTLE: std::time::Duration = std::time::Duration::from_millis(1500);

/// After a reconnect, prints from the history what was recorded after
/// `last` (the last event shown), moving `last` on; `Some(true)` when
/// `--count` was reached. What the new controller delivered before we
/// were back is committed within a second (the writer's commit interval);
/// live events meanwhile wait in the socket and are deduplicated after.
fn fill_gap(
    args: &EventsArgs,
    filter: &Filter,
    last: &mut Option<std::time::SystemTime>,
    print: &mut dyn FnMut(&Record) -> anyhow::Result<bool>,
) -> Option<bool> {
    std::thread::sleep(REPLAY_SETTLE);
    let t = (*last)?;
    match replay(args, filter, t, true, print) {
        Ok((to, done)) => {
            *last = to.or(*last);
            Some(done)
        }
        Err(e) => {
            eprintln!("regionwall: events while reconnecting not replayed: {e:#}");
            None
        }
    }
}

/// Connects again, every 250 ms until a controller answers.
fn reconnect(args: &EventsArgs, filter: &Filter) -> anyhow::Result<BufReader<UnixStream>> {
    loop {
        if let Some(reader) = args.target.ask(&Request::Events(filter.clone()))? {
            return Ok(reader);
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

pub fn events(args: &EventsArgs) -> anyhow::Result<ExitCode> {
    if args.candidate {
        return candidate_events(args);
    }
    super::default_sigpipe();
    let filter = Filter {
        device: args.device.clone(),
        region: args.region.clone(),
        verdict: args.verdict,
        candidate: false,
    };
    let mut printed = 0u64;
    let mut out = std::io::stdout().lock();
    let mut print = |record: &Record| -> anyhow::Result<bool> {
        let text = if args.json {
            record.json()
        } else {
            record.line()
        };
        writeln!(out, "{text}")?;
        out.flush()?;
        printed += 1;
        Ok(args.count.is_some_and(|n| printed >= n))
    };
    // Live first, then the replay: what is recorded while replaying
    // arrives live too, and is shown once.
    let mut stream = args.target.ask(&Request::Events(filter.clone()))?;
    let mut last = None;
    if let Some(since) = args.since {
        let (to, done) = replay(args, &filter, since, false, &mut print)?;
        if done {
            return Ok(ExitCode::SUCCESS);
        }
        last = to;
    }
    let live = stream.is_some();
    while let Some(mut reader) = stream.take() {
        if follow(&mut reader, last, &mut print, &mut last)? {
            return Ok(ExitCode::SUCCESS);
        }
        // The controller went away: a restart (or an upgrade) comes back
        // on the same socket; a detach leaves nothing pinned.
        if args.no_reconnect || !args.target.pins()?.exists() {
            eprintln!("regionwall: the controller closed the stream");
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("regionwall: the controller closed the stream; reconnecting");
        stream = Some(reconnect(args, &filter)?);
        eprintln!("regionwall: reconnected");
        if fill_gap(args, &filter, &mut last, &mut print) == Some(true) {
            return Ok(ExitCode::SUCCESS);
        }
    }
    if live {
        return Ok(ExitCode::SUCCESS);
    }
    // No controller: consume the pinned ring.
    let pins = args.target.pins()?;
    let mut ring = PinnedMaps::events(&pins).with_context(|| {
        format!(
            "no controller answers on {} and nothing is pinned in {}",
            args.target.socket().display(),
            pins.path().display()
        )
    })?;
    let maps = PinnedMaps::open(&pins)?;
    let meta = maps.live_meta()?;
    let slots = maps.read_slots()?;
    if !slots.is_empty() {
        // A filter naming what was never counted would wait forever.
        let owned = |v: &[Option<regionwall::slots::Owner>]| -> Vec<String> {
            v.iter().flatten().map(|o| o.name.clone()).collect()
        };
        let mut regions = owned(&slots.regions);
        regions.push("-".into());
        let known = regionwall::controller::Known {
            devices: owned(&slots.devices),
            regions,
        };
        if let Some(why) = known.unknown(&filter) {
            anyhow::bail!("{why}");
        }
    }
    let mut names = Names::default();
    names.set_slots(slots);
    if let Some(c) = args.target.names(&maps) {
        names.insert(meta.epoch, std::sync::Arc::new(c));
    }
    eprintln!(
        "regionwall: no controller running; reading the pinned event ring in {}",
        pins.path().display()
    );
    let clock = BootClock::now();
    loop {
        while let Some(item) = ring.next() {
            let Some(ev) = events::decode(&item) else {
                continue;
            };
            let Some(record) = Record::new(&ev, &names, &clock, &args.target.iface) else {
                continue;
            };
            if filter.matches(&record) && print(&record)? {
                return Ok(ExitCode::SUCCESS);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Show packets and bytes per device × region by verdict, and what was not logged
#[derive(clap::Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Totals by device, country, region or host (repeat or comma-separate
    /// to combine, e.g. `--by device,country`), biggest uploads first,
    /// passed, audited and blocked side by side.
    #[arg(long, value_delimiter = ',')]
    pub by: Vec<regionwall::views::Dim>,
}

pub fn stats(args: &StatsArgs) -> anyhow::Result<ExitCode> {
    super::default_sigpipe();
    let stats = if let Some(mut reader) = args.target.ask(&Request::Stats)? {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if let Some(e) = refusal(&line) {
            return Err(e);
        }
        serde_json::from_str::<Stats>(&line)
            .with_context(|| format!("bad stats from the controller: {line}"))?
    } else {
        from_pins(&args.target)?
    };
    if !args.by.is_empty() {
        let view = regionwall::views::view(&stats, &args.by)?;
        if args.json {
            println!("{}", serde_json::to_string(&view)?);
        } else {
            print!("{}", view.table());
        }
    } else if args.json {
        println!("{}", serde_json::to_string(&stats)?);
    } else {
        print!("{}", stats.table());
    }
    Ok(ExitCode::SUCCESS)
}

fn from_pins(target: &Target) -> anyhow::Result<Stats> {
    let pins = target.pins()?;
    let maps = PinnedMaps::open(&pins).with_context(|| {
        format!(
            "no controller answers on {} and nothing is pinned in {}",
            target.socket().display(),
            pins.path().display()
        )
    })?;
    let names = target.names(&maps);
    Ok(Stats::read(
        &maps,
        &target.iface,
        names.as_ref(),
        control::Userspace::default(),
    )?)
}

/// Detach regionwall from an interface and remove its pins
///
/// A running controller is asked to detach and exit; otherwise the pinned
/// link is detached and every pin removed.
#[derive(clap::Args)]
pub struct DetachArgs {
    #[command(flatten)]
    pub target: Target,
}

pub fn detach(args: &DetachArgs) -> anyhow::Result<ExitCode> {
    if let Some(mut reader) = args.target.ask(&Request::Detach)? {
        let ack = read_ack(&mut reader)?;
        if !ack.ok {
            anyhow::bail!("the controller refused: {}", ack.message);
        }
        // The controller removed its pins and socket itself.
        println!("regionwall: {}", ack.message);
        return Ok(ExitCode::SUCCESS);
    }
    let pins = args.target.pins()?;
    if !pins.path().exists() {
        anyhow::bail!(
            "nothing is pinned for {} in {} and no controller answers on {}",
            args.target.iface,
            pins.path().display(),
            args.target.socket().display()
        );
    }
    // A controller that owns the pins but whose socket we could not reach
    // (another --socket) must not lose them under its feet.
    let _lock = PinLock::acquire(pins.path(), None)?;
    let detached = pins.detach_link()?;
    pins.detach_dns_link()?;
    let removed = pins.remove_all()?;
    remove_socket(&args.target.socket());
    if !detached && removed.is_empty() {
        anyhow::bail!(
            "nothing was pinned for {} in {}",
            args.target.iface,
            pins.path().display()
        );
    }
    println!(
        "regionwall: detached from {} and removed {} pins from {}",
        args.target.iface,
        removed.len(),
        pins.path().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads the controller's one-line answer, or its refusal.
fn read_ack(reader: &mut BufReader<UnixStream>) -> anyhow::Result<Ack> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    serde_json::from_str(&line).with_context(|| format!("bad answer from the controller: {line}"))
}

/// A refusal in place of the expected answer (no access, bad request).
fn refusal(line: &str) -> Option<anyhow::Error> {
    serde_json::from_str::<Ack>(line)
        .ok()
        .filter(|a| !a.ok)
        .map(|a| anyhow::anyhow!("the controller refused: {}", a.message))
}

fn remove_socket(path: &Path) {
    if UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}

/// `events --candidate`: the staged candidate's events from the running
/// controller, until it closes the stream or `--count` are printed.
fn candidate_events(args: &EventsArgs) -> anyhow::Result<ExitCode> {
    let filter = Filter {
        device: args.device.clone(),
        region: args.region.clone(),
        verdict: args.verdict,
        candidate: true,
    };
    let Some(reader) = args.target.ask(&Request::Events(filter))? else {
        anyhow::bail!(
            "no controller answers for {}: candidate events come only from a running controller",
            args.target.iface
        );
    };
    let mut out = std::io::stdout().lock();
    let mut printed = 0u64;
    for line in reader.lines() {
        let line = line.context("reading from the controller")?;
        if let Ok(lagged) = serde_json::from_str::<Lagged>(&line) {
            eprintln!(
                "regionwall: this client fell behind; {} candidate events not shown",
                lagged.lagged
            );
            continue;
        }
        if let Ok(ack) = serde_json::from_str::<Ack>(&line) {
            anyhow::ensure!(ack.ok, "the controller refused: {}", ack.message);
            continue;
        }
        let record: regionwall::controller::shadow::CandidateRecord =
            serde_json::from_str(&line)
                .with_context(|| format!("bad event from the controller: {line}"))?;
        let text = if args.json { line } else { record.line() };
        writeln!(out, "{text}")?;
        printed += 1;
        if args.count.is_some_and(|n| printed >= n) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}
