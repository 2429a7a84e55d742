//! The running enforcement of one interface: owns the pin directory (an
//! exclusive lock), the loaded program and its maps, the live policy and
//! the names of recent epochs. `regionwall run` drives it from one event
//! loop; new subsystems hang off the decoded event stream ([`Record`]s on
//! a broadcast channel) and [`Controller::snapshot`].
//!
//! - [`prepare`]: read, check and compile a policy (off the event loop).
//! - [`establish`]: fresh, adopt or replace pinned state without a gap.
//! - [`lock`]: one controller per pin directory.
//! - [`socket`]: the control socket server and its access checks.
//! - [`supervise`]: netlink link notifications, re-attach, outages.
//! - [`watch`]: every input file watched, debounced.
//! - [`output`]: event printing that never stops enforcement.
//! - [`reload`]: SIGHUP and file changes, debounced, prepared off the loop.
//! - [`stream`]: the decoded event stream and its fan-out.
//! - [`hostnames`]: DNS answers from the TC ring into the name cache.
//! - [`http`]: the capped listener `--metrics` and `--web` serve on.
//! - [`recorder`]: events and counter rollups into the history database.
//! - [`report`]: start, periodic and exit messages.
//! - [`shadow`]: a candidate policy evaluated beside the live one.
//! - [`metrics`]: the Prometheus endpoint (`run --metrics`), read by
//!   [`scrape`] from the pinned maps at scrape time; [`carry`] keeps its
//!   series monotonic, [`kept`] keeps the controller's own counters (and
//!   the carry) in the state directory across restarts.

pub mod carry;
pub mod establish;
pub mod hostnames;
pub mod http;
pub mod kept;
mod known;
pub mod lock;
pub mod metrics;
pub mod output;
pub mod prepare;
pub mod reading;
pub mod recorder;
pub mod reload;
pub mod report;
pub mod scrape;
pub mod scrape_candidate;
pub mod shadow;
pub mod socket;
pub mod stream;
pub mod supervise;
mod tally;
pub mod watch;
pub mod web;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
};

use aya::programs::XdpMode;
use regionwall_common::{Event, Lookup, UnparsedAction};

pub use establish::Start;
pub use known::Known;
pub use prepare::{PrepareError, Prepared, prepare};
pub use tally::Tally;

use crate::{
    DatapathError,
    compile::Compiled,
    control::{Stats, Userspace},
    datapath::Datapath,
    events::{BootClock, Names, Record},
    fib::Capacity,
    pin::{LinkFacts, PinDir, PinError},
    policy::{self, Policy},
};

/// Everything a controller is told at start.
#[derive(Clone, Debug)]
pub struct Config {
    pub iface: String,
    pub policy: PathBuf,
    pub options: policy::Options,
    /// Bounds on reading the policy's files (`--max-file-size`).
    pub limits: crate::input::Limits,
    pub xdp_mode: XdpMode,
    pub unparsed: UnparsedAction,
    pub lookup: Lookup,
    /// Minimum room of the compiled lookup (raised to 1.5x the policy's).
    pub fib_room: Capacity,
    /// Minimum region room of the counter maps (raised to 1.5x the
    /// policy's regions, at most `MAX_REGIONS`).
    pub region_room: u32,
    /// Count traffic per (device, destination address) for the views by
    /// host (one hash update per packet).
    pub host_counters: bool,
    /// Attach the DNS copier to the interface's egress (TCX); its failure
    /// is a warning, never a reason not to enforce.
    pub dns: bool,
    /// (device, address) pairs the DNS name cache holds.
    pub name_cache: usize,
    pub event_rate: u32,
    pub event_burst: u32,
    /// Reject answers per second per device and CPU (0: no limit), burst.
    pub reject_rate: u32,
    pub reject_burst: u32,
    pub pin_root: PathBuf,
    pub socket: PathBuf,
    pub access: socket::Access,
}

/// Why the controller could not start or act.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error(transparent)]
    Socket(#[from] socket::SocketError),
    #[error("pinned state: {0}")]
    Pin(#[source] PinError),
    #[error("{context}: {source}")]
    Datapath {
        context: &'static str,
        #[source]
        source: Box<DatapathError>,
    },
    #[error("attaching to {iface}: {source}{hint}")]
    Attach {
        iface: String,
        hint: &'static str,
        #[source]
        source: Box<DatapathError>,
    },
    #[error("starting the event output: {source}")]
    Output {
        #[source]
        source: std::io::Error,
    },
    #[error("{iface:?} is not an interface name: {why}")]
    BadInterfaceName { iface: String, why: &'static str },
    #[error("interface {iface} not found")]
    NoInterface {
        iface: String,
        #[source]
        source: std::io::Error,
    },
}

/// Publishes `compiled` as `epoch` with every device and region on its
/// stable counter slot, and logs what was written. Returns the policy as
/// renumbered, which names this epoch's events and counters.
fn publish(
    dp: &mut Datapath,
    compiled: Compiled,
    fib: Option<&crate::fib::Fib>,
    epoch: u32,
    path: &Path,
    candidate: impl FnOnce(&Compiled) -> Option<Vec<regionwall_common::Decision>>,
) -> Result<Compiled, ControllerError> {
    let classes = compiled.classes.len();
    let (stable, report) = dp
        .publish_stable_with(compiled, fib, epoch, candidate)
        .map_err(|source| ControllerError::Datapath {
            context: "publishing the policy",
            source: Box::new(source),
        })?;
    log::info!(
        "published policy {} (epoch {epoch}): {} IPv4 + {} IPv6 prefixes, {} classes, {} compiled ranges ({} KiB), in {:?}",
        crate::shown::Shown(path),
        report.v4_prefixes,
        report.v6_prefixes,
        classes,
        report.fib_ranges,
        report.fib_bytes / 1024,
        report.write_time
    );
    Ok(stable)
}

/// Capacity of the decoded-event broadcast: a subscriber that falls this
/// far behind is told how many it missed.
const FEED: usize = 4096;

/// Hands memory freed after loading (parsed data files, build buffers,
/// the compiler's worker-thread arenas) back to the system, so the
/// long-running controller's RSS is what it keeps, not its peak.
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// One interface under enforcement.
pub struct Controller {
    config: Config,
    dp: Datapath,
    pins: PinDir,
    _lock: lock::PinLock,
    names: Names,
    epoch: u32,
    live: Arc<Policy>,
    /// The live policy for subsystems that read it off the event loop
    /// (the dashboard's explain form); sent on every reload.
    live_feed: tokio::sync::watch::Sender<Arc<Policy>>,
    clock: BootClock,
    tally: Arc<Tally>,
    known: Arc<std::sync::RwLock<Known>>,
    feed: tokio::sync::broadcast::Sender<Arc<Record>>,
    /// The names devices looked up (when the DNS ring is watched).
    hosts: Option<hostnames::HostNames>,
    /// The history recorder's counts, when it was asked to record.
    history: Option<Arc<crate::history::writer::Counts>>,
    /// Whether the counters began with this controller (fresh or
    /// replaced pins), rather than adopted.
    counters_fresh: bool,
    /// The staged candidate policy, if any (see [`shadow`]).
    candidate: Option<shadow::Staged>,
    /// Its events, for the clients that stream them.
    candidate_feed: tokio::sync::broadcast::Sender<Arc<shadow::CandidateRecord>>,
    /// What lifts `/metrics` series that would fall (shared with it).
    carry: Arc<std::sync::Mutex<carry::Carry>>,
    /// The counters kept in the state directory, when there is one.
    kept: Option<Arc<kept::Kept>>,
    pub supervisor: supervise::Supervisor,
}

/// What [`Controller::start`] did.
pub struct Started {
    pub start: Start,
    pub facts: LinkFacts,
}

impl Controller {
    /// Takes the pin directory (refused if another controller owns it),
    /// then puts `prepared` in force on the interface. On failure, a pin
    /// directory this call created is removed again.
    pub fn start(config: Config, prepared: &Prepared) -> Result<(Self, Started), ControllerError> {
        if let Some(why) = crate::pin::invalid_iface_name(&config.iface) {
            return Err(ControllerError::BadInterfaceName {
                iface: config.iface,
                why,
            });
        }
        let pins = PinDir::new(&config.pin_root, &config.iface);
        let created_root = !config.pin_root.exists();
        let created = !pins.path().exists();
        let root = config.pin_root.clone();
        let result = Self::start_in(config, prepared, pins.clone());
        if result.is_err() && created {
            // Only an empty directory this call made, and only while no
            // other controller holds it: two starts racing both see it
            // missing, and the loser must not remove the winner's.
            if let Ok(_lock) = lock::PinLock::acquire(pins.path(), None) {
                let _ = std::fs::remove_dir(pins.path());
            }
            if created_root {
                let _ = std::fs::remove_dir(&root);
            }
        }
        result
    }

    fn start_in(
        config: Config,
        prepared: &Prepared,
        pins: PinDir,
    ) -> Result<(Self, Started), ControllerError> {
        let owner = lock::Owner {
            pid: std::process::id(),
            socket: config.socket.clone(),
            iface: config.iface.clone(),
        };
        // A racing start that failed may remove the (still empty)
        // directory between our mkdir and our lock: make it again.
        let mut attempts = 0;
        let lock = loop {
            pins.create().map_err(ControllerError::Pin)?;
            match lock::PinLock::acquire(pins.path(), Some(&owner)) {
                Err(lock::LockError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && attempts < 3 =>
                {
                    attempts += 1;
                }
                other => break other?,
            }
        };
        let ifindex = crate::iface::ifindex(&config.iface).map_err(|source| {
            ControllerError::NoInterface {
                iface: config.iface.clone(),
                source,
            }
        })?;
        let establish::Established {
            dp,
            start,
            facts,
            stable,
            candidate: carried,
        } = establish::establish(&config, prepared, &pins, ifindex)?;
        let stable = Arc::new(stable);
        let mut names = Names::default();
        if let Start::Adopted { epoch, digest } = &start {
            // Events still queued from the previous controller's policy.
            if *digest == stable.names_digest() {
                names.insert(*epoch, Arc::clone(&stable));
            }
        }
        let epoch = dp.epoch();
        let counters_fresh = !matches!(start, Start::Adopted { .. });
        let known = Arc::new(std::sync::RwLock::new(Known::of(&stable)));
        names.insert(epoch, stable);
        let supervisor = supervise::Supervisor::new(&config.iface, ifindex, config.xdp_mode);
        let tally = Arc::new(Tally::default());
        tally.loaded(&prepared.policy.inputs);
        let mut ctl = Self {
            config,
            dp,
            pins,
            _lock: lock,
            names,
            epoch,
            live: Arc::clone(&prepared.policy),
            live_feed: tokio::sync::watch::Sender::new(Arc::clone(&prepared.policy)),
            clock: BootClock::now(),
            tally,
            known,
            feed: tokio::sync::broadcast::channel(FEED).0,
            hosts: None,
            history: None,
            counters_fresh,
            candidate: None,
            carry: Arc::default(),
            kept: None,
            candidate_feed: tokio::sync::broadcast::channel(FEED).0,
            supervisor,
        };
        if !counters_fresh {
            ctl.adopt_candidate(carried);
        }
        Ok((ctl, Started { start, facts }))
    }

    #[must_use]
    pub const fn config(&self) -> &Config {
        &self.config
    }

    #[must_use]
    pub const fn pins(&self) -> &PinDir {
        &self.pins
    }

    #[must_use]
    pub const fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The live policy (a reload is checked against it).
    #[must_use]
    pub fn live_policy(&self) -> Arc<Policy> {
        Arc::clone(&self.live)
    }

    /// Watches the live policy: the current one at once, then each
    /// policy a reload puts in force.
    #[must_use]
    pub fn watch_policy(&self) -> tokio::sync::watch::Receiver<Arc<Policy>> {
        self.live_feed.subscribe()
    }

    /// The compiled live policy.
    #[must_use]
    pub fn live_compiled(&self) -> Option<&Compiled> {
        self.names.get(self.epoch)
    }

    /// Publishes a prepared policy as the next epoch; on error the
    /// previous policy stays live untouched.
    pub fn apply(&mut self, prepared: Prepared) -> Result<u32, ControllerError> {
        let next = self.epoch + 1;
        let was_counting = self.dp.candidate_evaluated();
        // A staged candidate that applies to the new policy is written
        // beside it and armed by the same flip (no packet uncounted).
        let staged = self.candidate.as_ref();
        let live = &prepared.policy;
        let stable = publish(
            &mut self.dp,
            prepared.compiled,
            prepared.fib.as_ref(),
            next,
            &self.config.policy,
            |stable| staged.and_then(|s| s.table_for(stable, live)),
        )?;
        self.epoch = next;
        if let Ok(mut known) = self.known.write() {
            *known = Known::of(&stable);
        }
        self.names.insert(next, Arc::new(stable));
        self.tally.loaded(&prepared.policy.inputs);
        self.live_feed.send_replace(Arc::clone(&prepared.policy));
        self.live = prepared.policy;
        self.restage_after(was_counting);
        Ok(next)
    }

    /// The event ring, to be pumped by [`crate::events::pump`].
    pub fn take_events(
        &mut self,
    ) -> Result<aya::maps::RingBuf<aya::maps::MapData>, ControllerError> {
        self.dp
            .take_events()
            .map_err(|source| ControllerError::Datapath {
                context: "opening the event ring",
                source: Box::new(source),
            })
    }

    /// The staged candidate's event ring, pumped like the live one.
    pub fn take_candidate_events(
        &mut self,
    ) -> Result<aya::maps::RingBuf<aya::maps::MapData>, ControllerError> {
        self.dp
            .take_candidate_events()
            .map_err(|source| ControllerError::Datapath {
                context: "opening the candidate event ring",
                source: Box::new(source),
            })
    }

    /// Names an event with the policy of its epoch (`None` if it is not
    /// an event of this program's).
    #[must_use]
    pub fn record(&self, event: &Event) -> Option<Record> {
        let mut record = Record::new(event, &self.names, &self.clock, &self.config.iface)?;
        if let (Some(hosts), Some(dst)) = (&self.hosts, record.dst_ip) {
            record.set_host(hosts.name(&event.src_mac, dst));
        }
        Some(record)
    }

    /// Starts reading the DNS copier's ring into the name cache, when the
    /// copier is attached; its thread runs until the handle is dropped. Without it names
    /// are not known, and enforcement is the same.
    pub fn start_hostnames(&mut self) -> Option<hostnames::Drainer> {
        if !self.config.dns || !self.dp.dns_attached() {
            return None;
        }
        let started = self
            .dp
            .take_dns()
            .map_err(|e| e.to_string())
            .and_then(|ring| {
                hostnames::HostNames::new(ring, self.config.name_cache).map_err(|e| e.to_string())
            })
            .and_then(|hosts| Ok((hosts.spawn().map_err(|e| e.to_string())?, hosts)));
        match started {
            Ok((task, hosts)) => {
                self.hosts = Some(hosts);
                Some(task)
            }
            Err(e) => {
                log::warn!("destinations are not named: reading the DNS ring: {e}");
                None
            }
        }
    }

    /// The history file the recorder writes, when it records.
    #[must_use]
    pub fn history_path(&self) -> Option<std::path::PathBuf> {
        self.history
            .as_ref()
            .map(|c| std::path::PathBuf::from(&c.path))
    }

    /// The names devices looked up, when DNS answers are watched.
    #[must_use]
    pub const fn hosts(&self) -> Option<&hostnames::HostNames> {
        self.hosts.as_ref()
    }

    /// Whether the kernel counters began at zero with this controller.
    #[must_use]
    pub const fn counters_fresh(&self) -> bool {
        self.counters_fresh
    }

    /// The controller's own counts.
    #[must_use]
    pub const fn tally(&self) -> &Arc<Tally> {
        &self.tally
    }

    /// Subscribes to the decoded event stream: every event the controller
    /// names, as it names it (the seam for new subsystems).
    #[must_use]
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Record>> {
        self.feed.subscribe()
    }

    /// The names filters may use, kept current across reloads.
    #[must_use]
    pub fn known(&self) -> Arc<std::sync::RwLock<Known>> {
        Arc::clone(&self.known)
    }

    /// The sender side of the event stream (for the control socket).
    #[must_use]
    pub fn feed(&self) -> tokio::sync::broadcast::Sender<Arc<Record>> {
        self.feed.clone()
    }

    /// Sends a named event to every subscriber.
    pub fn broadcast(&self, record: Record) {
        if self.feed.receiver_count() > 0 {
            let _ = self.feed.send(Arc::new(record));
        }
    }

    /// A statistics snapshot: the kernel's counters named with the stable
    /// slot names, plus the controller's own counts.
    #[must_use]
    pub fn snapshot(&self) -> Stats {
        let user = Userspace {
            queue_dropped: self.tally.queue_dropped.load(Ordering::Relaxed),
            events_logged: self.tally.events_logged.load(Ordering::Relaxed),
            not_written: self.tally.not_written.load(Ordering::Relaxed),
        };
        let unresolved = |_: &[u8; 6], _: std::net::IpAddr| crate::control::HostName::Unresolved;
        let resolve: &dyn Fn(&[u8; 6], std::net::IpAddr) -> crate::control::HostName =
            match &self.hosts {
                Some(hosts) => &|mac, addr| hosts.cached_name(mac, addr),
                None => &unresolved,
            };
        let mut stats = Stats::read_resolving(
            &self.dp,
            &self.config.iface,
            self.names.get(self.epoch),
            user,
            resolve,
        )
        .unwrap_or_else(|e| {
            log::warn!("reading the statistics: {e}");
            Stats::default()
        });
        stats.dns = self.hosts.as_ref().map(hostnames::HostNames::stats);
        stats.history = self.history.as_ref().map(|c| c.stats());
        stats.update = self
            .live_policy()
            .update_dir
            .as_deref()
            .map(|d| crate::update::status::read(d).unwrap_or_default());
        stats
    }

    /// Kernel counters (for the periodic "not logged" report).
    #[must_use]
    pub fn counters(&self) -> Option<[u64; regionwall_common::COUNTERS as usize]> {
        use crate::datapath::Readings as _;
        self.dp.counters().ok()
    }

    /// Checks the link and re-attaches if needed.
    pub fn supervise(&mut self) -> supervise::Step {
        self.supervisor.check(&mut self.dp, &self.pins)
    }

    /// Ends this controller. With `unpin`, the pins are removed first (the
    /// program then detaches when its last fd closes); otherwise the last
    /// policy keeps enforcing through them. Returns the message to show.
    pub fn shutdown(mut self, unpin: bool) -> Result<String, ControllerError> {
        let removed = if unpin {
            Some(self.pins.remove_all().map_err(ControllerError::Pin)?)
        } else {
            None
        };
        self.dp.release_link();
        Ok(match removed {
            Some(removed) => format!(
                "detached from {} and removed {} pins from {}",
                self.config.iface,
                removed.len(),
                self.pins.path().display()
            ),
            None => format!(
                "exited; {} stays enforcing epoch {} through the pins in {} (`{}` removes them)",
                self.config.iface,
                self.epoch,
                self.pins.path().display(),
                self.detach_command()
            ),
        })
    }

    /// The `regionwall detach` command that reaches this controller's pins
    /// (non-default pin root and socket included).
    #[must_use]
    pub fn detach_command(&self) -> String {
        use std::fmt::Write as _;
        let mut cmd = format!("regionwall detach --iface {}", self.config.iface);
        if self.config.pin_root != Path::new(crate::pin::DEFAULT_ROOT) {
            let _ = write!(cmd, " --pin-root {}", self.config.pin_root.display());
        }
        if self.config.socket != crate::control::default_socket(&self.config.iface) {
            let _ = write!(cmd, " --socket {}", self.config.socket.display());
        }
        cmd
    }
}
