//! The dashboard's state: the latest snapshot (read from the pins off the event loop, shared), the per-minute ring it feeds, and the recent drops.
//!
//! A snapshot is read on a blocking thread from the pinned maps (named by
//! their slot table, hosts by the controller's name cache), never by the
//! event loop: with 255 devices a read takes a second or more, and the
//! loop must keep serving events, reloads and the interface. Requests
//! share the latest snapshot while it is fresh: a second, or five times
//! as long as the last read took, so reading costs at most about a fifth
//! of one core however many browsers look.
//!
//! Each snapshot's growth goes to a 24-hour ring of minutes (kept by the
//! [`super::reader::Reader`]): the series without history (a restart
//! starts it empty), and with history the minutes not yet rolled up. Counters that go backwards (pins removed, a new controller)
//! count from zero again instead of producing negative minutes.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{broadcast, watch};

use crate::{
    control::{Stats, Userspace},
    events::Record,
    explain::Index,
    pin::{PinDir, PinnedMaps},
    policy::Policy,
    views::{self, Dim},
};

use super::{
    super::{Tally, hostnames::HostNames},
    ring::{Minute, unix_now},
};

/// A snapshot younger than this is served as is (at least).
const FRESH: Duration = Duration::from_secs(1);

/// A snapshot is fresh for this many times as long as reading it took.
const FRESH_FACTOR: u32 = 5;

/// Recent drops, rejects and audits kept for the device pages.
pub const RECENT: usize = 1000;

/// A statistics snapshot with its top-level views, computed once on the
/// reading thread (thousands of host rows are summed once per snapshot,
/// not once per request).
#[derive(Debug, Default)]
pub struct Snapshot {
    pub stats: Stats,
    pub devices: Vec<(String, views::Totals)>,
    pub countries: Vec<(String, views::Totals)>,
    pub hosts: Vec<(String, views::Totals)>,
}

impl Snapshot {
    #[must_use]
    pub fn new(stats: Stats) -> Self {
        let by = |d: Dim| lines(&stats, &[d], d);
        Self {
            devices: by(Dim::Device),
            countries: by(Dim::Country),
            hosts: by(Dim::Host),
            stats,
        }
    }

    /// The lines of the view by `dim` (region: none).
    #[must_use]
    pub fn by(&self, dim: Dim) -> &[(String, views::Totals)] {
        match dim {
            Dim::Device => &self.devices,
            Dim::Country => &self.countries,
            Dim::Host => &self.hosts,
            Dim::Region => &[],
        }
    }
}

impl std::ops::Deref for Snapshot {
    type Target = Stats;
    fn deref(&self) -> &Stats {
        &self.stats
    }
}

struct Cache {
    stats: Arc<Snapshot>,
    at: Option<Instant>,
    /// How long the snapshot is shared.
    fresh: Duration,
    /// How long the last read took.
    took: Duration,
    last: Option<Minute>,
}

/// Everything the dashboard's handlers read; shared by every request.
pub struct Shared {
    pub iface: String,
    pub pins: PinDir,
    pub tally: Arc<Tally>,
    pub hosts: Option<HostNames>,
    pub policy: watch::Receiver<Arc<Policy>>,
    pub feed: broadcast::Sender<Arc<Record>>,
    /// The history (and the ring): series, device charts, ranged lists.
    pub reader: Arc<super::reader::Reader>,
    /// The history recorder's counts (what it could not write).
    pub history: Option<Arc<crate::history::writer::Counts>>,
    cache: tokio::sync::Mutex<Cache>,
    recent: Mutex<VecDeque<Arc<Record>>>,
    index: Mutex<Option<(Arc<Policy>, Arc<Index>)>>,
    /// Live-tail events a slow browser missed.
    pub lagged: AtomicU64,
    /// Snapshots that could not be read (the last one is served).
    pub stale: AtomicU64,
}

impl Shared {
    #[must_use]
    pub fn new(ctl: &super::super::Controller) -> Self {
        Self {
            iface: ctl.config().iface.clone(),
            pins: ctl.pins().clone(),
            tally: Arc::clone(ctl.tally()),
            hosts: ctl.hosts().cloned(),
            policy: ctl.watch_policy(),
            feed: ctl.feed(),
            reader: Arc::new(super::reader::Reader::new(ctl.history_path())),
            history: ctl.history.clone(),
            cache: tokio::sync::Mutex::new(Cache {
                stats: Arc::new(Snapshot::default()),
                at: None,
                fresh: FRESH,
                took: Duration::ZERO,
                last: None,
            }),
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            index: Mutex::new(None),
            lagged: AtomicU64::new(0),
            stale: AtomicU64::new(0),
        }
    }

    /// The latest snapshot: read anew when the shared one is no longer
    /// fresh (requests in between share it), and added to the ring.
    pub async fn stats(&self) -> Arc<Snapshot> {
        let mut cache = self.cache.lock().await;
        if cache.at.is_some_and(|at| at.elapsed() < cache.fresh) {
            return Arc::clone(&cache.stats);
        }
        let (pins, iface, tally, hosts) = (
            self.pins.clone(),
            self.iface.clone(),
            Arc::clone(&self.tally),
            self.hosts.clone(),
        );
        let started = Instant::now();
        let read = tokio::task::spawn_blocking(move || {
            read(&pins, &iface, &tally, hosts.as_ref()).map(Snapshot::new)
        })
        .await;
        match read {
            Ok(Ok(stats)) => {
                let now = Minute::of(&stats);
                let delta = cache
                    .last
                    .map_or(Minute::default(), |b| Minute::since(now, b));
                self.reader.add(unix_now(), delta);
                cache.last = Some(now);
                cache.stats = Arc::new(stats);
            }
            Ok(Err(e)) => {
                self.stale.fetch_add(1, Ordering::Relaxed);
                log::debug!("web: reading the statistics: {e}");
            }
            Err(e) => {
                self.stale.fetch_add(1, Ordering::Relaxed);
                log::debug!("web: the statistics reader failed: {e}");
            }
        }
        cache.took = started.elapsed();
        cache.fresh = FRESH.max(cache.took * FRESH_FACTOR);
        cache.at = Some(Instant::now());
        Arc::clone(&cache.stats)
    }

    /// How long the last snapshot took to read.
    pub async fn took(&self) -> Duration {
        self.cache.lock().await.took
    }

    /// Keeps `record` for the device pages (the newest [`RECENT`]).
    pub fn remember(&self, record: Arc<Record>) {
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(record);
        }
    }

    /// The newest `n` kept events of `device`, newest first.
    #[must_use]
    pub fn recent(&self, device: &str, n: usize) -> Vec<Arc<Record>> {
        self.recent.lock().map_or_else(
            |_| Vec::new(),
            |r| {
                r.iter()
                    .rev()
                    .filter(|e| e.device == device)
                    .take(n)
                    .cloned()
                    .collect()
            },
        )
    }

    /// The live policy and its explain index (built once per policy, on
    /// a blocking thread: a country database makes it large).
    pub async fn explainer(&self) -> Option<(Arc<Policy>, Arc<Index>)> {
        let policy = Arc::clone(&self.policy.borrow());
        if let Ok(held) = self.index.lock()
            && let Some((p, i)) = held.as_ref()
            && Arc::ptr_eq(p, &policy)
        {
            return Some((Arc::clone(p), Arc::clone(i)));
        }
        let p = Arc::clone(&policy);
        let index = Arc::new(
            tokio::task::spawn_blocking(move || Index::new(&p))
                .await
                .ok()?,
        );
        if let Ok(mut held) = self.index.lock() {
            *held = Some((Arc::clone(&policy), Arc::clone(&index)));
        }
        Some((policy, index))
    }
}

/// A snapshot from the pinned maps: what `Controller::snapshot` reads,
/// without the controller's event loop.
fn read(
    pins: &PinDir,
    iface: &str,
    tally: &Tally,
    hosts: Option<&HostNames>,
) -> Result<Stats, String> {
    let maps = PinnedMaps::open(pins).map_err(|e| e.to_string())?;
    let user = Userspace {
        queue_dropped: tally.queue_dropped.load(Ordering::Relaxed),
        events_logged: tally.events_logged.load(Ordering::Relaxed),
        not_written: tally.not_written.load(Ordering::Relaxed),
    };
    let unresolved = |_: &[u8; 6], _: std::net::IpAddr| crate::control::HostName::Unresolved;
    let resolve: &dyn Fn(&[u8; 6], std::net::IpAddr) -> crate::control::HostName = match hosts {
        Some(h) => &|mac, addr| h.name(mac, addr),
        None => &unresolved,
    };
    let mut stats =
        Stats::read_resolving(&maps, iface, None, user, resolve).map_err(|e| e.to_string())?;
    stats.dns = hosts.map(HostNames::stats);
    Ok(stats)
}

/// The lines of the view of `stats` by `dims`, keyed by `key`'s value.
#[must_use]
pub fn lines(
    stats: &crate::control::Stats,
    dims: &[Dim],
    key: Dim,
) -> Vec<(String, crate::views::Totals)> {
    crate::views::view(stats, dims).map_or_else(
        |_| Vec::new(),
        |v| {
            v.lines
                .into_iter()
                .map(|l| (l.key.get(&key).cloned().unwrap_or_default(), l.totals))
                .collect()
        },
    )
}
