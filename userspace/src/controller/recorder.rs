//! The history recorder: every event from the broadcast and a counter snapshot every minute (regions, countries, hosts), into the history writer.

use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime},
};

use tokio::sync::{broadcast::error::RecvError, mpsc, oneshot};

use super::Controller;
use crate::{
    control::Stats,
    history::{
        self, Store,
        store::{Counted, Kind, Origin},
        writer::{Counts, Job, Settings, Writer},
    },
};

/// What the recorder is told at start.
#[derive(Clone, Debug)]
pub struct Options {
    /// The state directory (the database is `history.db` in it); `None`
    /// records nothing.
    pub state_dir: Option<PathBuf>,
    pub retention: Duration,
    pub max_bytes: u64,
    /// How often the counters are read into rollups.
    pub interval: Duration,
    /// Events and rollups the writer's queue holds.
    pub queue: usize,
}

/// Events are committed at least this often: a `kill -9` loses at most
/// the events of the last second (plus what was still in the queue).
pub const COMMIT_EVERY: Duration = Duration::from_secs(1);

/// The running recorder; dropping it commits what is queued.
pub struct Recorder {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    writer: Arc<Writer>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.writer.close();
    }
}

/// The kernel counters of a snapshot as rows to roll up.
#[must_use]
pub fn counted(stats: &Stats) -> Vec<Counted> {
    let traffic = stats.traffic.iter().map(|r| Counted {
        kind: Kind::Region,
        device: r.device.clone(),
        key: r.region.clone(),
        verdict: r.verdict.to_string(),
        packets: r.packets,
        bytes: r.bytes,
    });
    let countries = stats.countries.iter().map(|r| Counted {
        kind: Kind::Country,
        device: r.device.clone(),
        key: r.country.clone(),
        verdict: r.verdict.to_string(),
        packets: r.packets,
        bytes: r.bytes,
    });
    // Hosts: passed and audited as `pass`, dropped and rejected as
    // `drop` (the kernel's host counters keep just these two); the
    // store keeps each device's biggest per minute.
    let hosts = stats.hosts.iter().flat_map(|r| {
        [
            ("pass", r.passed_packets, r.passed_bytes),
            ("drop", r.blocked_packets, r.blocked_bytes),
        ]
        .into_iter()
        .filter(|(_, packets, _)| *packets > 0)
        .map(|(verdict, packets, bytes)| Counted {
            kind: Kind::Host,
            device: r.device.clone(),
            key: r.host.clone(),
            verdict: verdict.into(),
            packets,
            bytes,
        })
    });
    traffic.chain(countries).chain(hosts).collect()
}

/// Starts recording `ctl`'s events and counters (read through `stats`,
/// the loop's snapshot requests). A history that cannot be opened (a
/// corrupt or foreign file, no room) is reported loudly and shown in
/// `stats`; enforcement never waits for it. `None` when not recording.
pub fn start(
    ctl: &mut Controller,
    options: &Options,
    stats: mpsc::Sender<oneshot::Sender<Stats>>,
) -> Option<Recorder> {
    let dir = options.state_dir.as_ref()?;
    let path = dir.join(history::FILE);
    let counts = Arc::new(Counts::new(&path));
    ctl.history = Some(Arc::clone(&counts));
    let store = match Store::open(&path) {
        Ok(s) => s,
        Err(e) => {
            log::error!("history is NOT being recorded: {e}; enforcement is not affected");
            if let Ok(mut last) = counts.error.lock() {
                *last = Some(e.to_string());
            }
            return None;
        }
    };
    let settings = Settings {
        queue: options.queue,
        commit_every: COMMIT_EVERY,
        retention: options.retention,
        max_bytes: options.max_bytes,
        retention_every: options.interval.min(Duration::from_secs(60)),
    };
    let writer = match Writer::start(store, settings, Arc::clone(&counts)) {
        Ok(w) => Arc::new(w),
        Err(e) => {
            counts.fail(format!("starting the writer thread: {e}"));
            return None;
        }
    };
    log::info!("recording history in {}", path.display());
    let mut feed = ctl.subscribe();
    let events = {
        let writer = Arc::clone(&writer);
        tokio::spawn(async move {
            loop {
                match feed.recv().await {
                    Ok(record) => {
                        writer.offer(Job::Event(record));
                    }
                    Err(RecvError::Lagged(n)) => {
                        writer.counts().lagged.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        })
    };
    // Counters that began with this controller's pins start from zero;
    // adopted ones go on from the bases the last rollup stored.
    let mut origin = if ctl.counters_fresh() {
        Origin::Zero
    } else {
        Origin::Continued
    };
    let interval = options.interval;
    let snapshots = {
        let writer = Arc::clone(&writer);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let (tx, rx) = oneshot::channel();
                if stats.send(tx).await.is_err() {
                    break;
                }
                let Ok(snapshot) = rx.await else { break };
                let rows = counted(&snapshot);
                if rows.is_empty() {
                    continue;
                }
                let job = Job::Counters {
                    at: SystemTime::now(),
                    rows,
                    origin,
                };
                if writer.offer(job) {
                    origin = Origin::Continued;
                }
            }
        })
    };
    Some(Recorder {
        tasks: vec![events, snapshots],
        writer,
    })
}
