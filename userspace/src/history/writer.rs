//! The history writer: one thread behind a bounded queue, committing in batches and counting what it could not write.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use super::{
    retention::TRIM_AT,
    store::{Counted, Origin, Store},
};
use crate::{control::HistoryStats, events::Record};

/// Work for the writer thread.
pub enum Job {
    Event(Arc<Record>),
    /// A counter snapshot, taken at `at`.
    Counters {
        at: SystemTime,
        rows: Vec<Counted>,
        origin: Origin,
    },
}

/// How the writer batches and bounds the history.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Jobs the queue holds; events beyond it are counted, never waited for.
    pub queue: usize,
    /// Events are committed at least this often (the most a `kill -9`
    /// loses of what reached the writer).
    pub commit_every: Duration,
    /// Rows older than this are removed.
    pub retention: Duration,
    /// The file (and its log) is kept under this many bytes.
    pub max_bytes: u64,
    /// How often retention by age runs (the size is checked after every
    /// commit).
    pub retention_every: Duration,
}

/// Events committed at once at most (a burst is split).
const MAX_BATCH: usize = 4096;

/// What an event takes in the database, about (row and indices), to size
/// commits against the bound.
const EVENT_BYTES: u64 = 256;

/// Events per commit: at most [`MAX_BATCH`], and at most a twentieth of
/// `max_bytes`, so one commit never carries the database far past the
/// point where [`keep_under`] trims it.
fn batch(max_bytes: u64) -> usize {
    usize::try_from(max_bytes / 20 / EVENT_BYTES)
        .unwrap_or(MAX_BATCH)
        .clamp(64, MAX_BATCH)
}

/// What the writer did and could not do (shown by `stats`).
#[derive(Debug, Default)]
pub struct Counts {
    pub path: String,
    pub recording: AtomicBool,
    pub events_written: AtomicU64,
    pub rollups_written: AtomicU64,
    /// Events the full queue could not take.
    pub queue_full: AtomicU64,
    /// Events the subscriber missed (it fell behind the broadcast).
    pub lagged: AtomicU64,
    /// Events whose commit failed (a full disk, an I/O error).
    pub write_failed: AtomicU64,
    pub db_bytes: AtomicU64,
    pub error: Mutex<Option<String>>,
}

impl Counts {
    #[must_use]
    pub fn new(path: &std::path::Path) -> Self {
        Self {
            path: path.display().to_string(),
            ..Self::default()
        }
    }

    /// Remembers the last error, logging it when it changes.
    pub fn fail(&self, error: String) {
        if let Ok(mut last) = self.error.lock()
            && last.as_deref() != Some(error.as_str())
        {
            log::error!(
                "history: {error} (what could not be written is counted in `regionwall stats`; enforcement goes on)"
            );
            *last = Some(error);
        }
    }

    fn recovered(&self) {
        if let Ok(mut last) = self.error.lock()
            && last.take().is_some()
        {
            log::info!("history: writing again");
        }
    }

    #[must_use]
    pub fn stats(&self) -> HistoryStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let queue_full = get(&self.queue_full);
        let lagged = get(&self.lagged);
        let write_failed = get(&self.write_failed);
        HistoryStats {
            path: self.path.clone(),
            recording: self.recording.load(Ordering::Relaxed),
            error: self.error.lock().ok().and_then(|e| e.clone()),
            events_written: get(&self.events_written),
            rollups_written: get(&self.rollups_written),
            not_written: queue_full + lagged + write_failed,
            queue_full,
            lagged,
            write_failed,
            db_bytes: get(&self.db_bytes),
        }
    }
}

/// The writer thread and its queue; dropping it commits what is queued.
pub struct Writer {
    tx: Mutex<Option<SyncSender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    counts: Arc<Counts>,
}

impl Writer {
    pub fn start(store: Store, settings: Settings, counts: Arc<Counts>) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(settings.queue.max(1));
        let shared = Arc::clone(&counts);
        counts.recording.store(true, Ordering::Relaxed);
        let thread = std::thread::Builder::new()
            .name("history".into())
            .spawn(move || run(store, &rx, settings, &shared))?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            counts,
        })
    }

    /// Queues `job` without waiting; a full queue counts an event as not
    /// written (a counter snapshot missed is caught up by the next).
    /// Whether it was queued.
    pub fn offer(&self, job: Job) -> bool {
        let Ok(guard) = self.tx.lock() else {
            return false;
        };
        let Some(tx) = guard.as_ref() else {
            return false;
        };
        match tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(Job::Event(_)) | TrySendError::Disconnected(Job::Event(_))) => {
                self.counts.queue_full.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(_) => false,
        }
    }

    /// Commits what is queued and ends the thread; later offers are
    /// ignored.
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            drop(tx.take());
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
        self.counts.recording.store(false, Ordering::Relaxed);
    }

    #[must_use]
    pub const fn counts(&self) -> &Arc<Counts> {
        &self.counts
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.close();
    }
}

/// After a commit: past [`TRIM_AT`] percent of the bound, the oldest rows
/// go now rather than at the next retention pass, so the database passes
/// `--max-db-size` by at most what one commit adds beyond that (commits
/// are a twentieth of the bound at most: [`batch`]).
fn keep_under(store: &mut Store, max_bytes: u64, counts: &Counts) {
    match store.size() {
        Ok(size) if size > max_bytes / 100 * TRIM_AT => match store.trim(max_bytes) {
            Ok(removed) => log::debug!(
                "history: {size} bytes; removed the oldest {} events and {} rollup rows",
                removed.events,
                removed.rollups
            ),
            Err(e) => counts.fail(format!("keeping the history under its size: {e}")),
        },
        Ok(_) => {}
        Err(e) => counts.fail(format!("reading the history's size: {e}")),
    }
    if let Ok(size) = store.size() {
        counts.db_bytes.store(size, Ordering::Relaxed);
    }
}

fn run(mut store: Store, rx: &Receiver<Job>, settings: Settings, counts: &Counts) {
    if let Err(e) = store.limit_log(settings.max_bytes) {
        counts.fail(e.to_string());
    }
    let batch = batch(settings.max_bytes);
    let mut pending: Vec<Arc<Record>> = Vec::new();
    let mut oldest: Option<Instant> = None;
    let mut last_retention: Option<Instant> = None;
    let flush = |store: &mut Store, pending: &mut Vec<Arc<Record>>| {
        if pending.is_empty() {
            return;
        }
        let n = u64::try_from(pending.len()).unwrap_or(u64::MAX);
        match store.insert_events(pending) {
            Ok(()) => {
                counts.events_written.fetch_add(n, Ordering::Relaxed);
                counts.recovered();
            }
            Err(e) => {
                counts.write_failed.fetch_add(n, Ordering::Relaxed);
                counts.fail(format!("writing {n} events: {e}"));
            }
        }
        pending.clear();
    };
    loop {
        let due = oldest.map_or(settings.commit_every, |t| {
            settings.commit_every.saturating_sub(t.elapsed())
        });
        match rx.recv_timeout(due) {
            Ok(Job::Event(r)) => {
                pending.push(r);
                oldest.get_or_insert_with(Instant::now);
                if pending.len() >= batch {
                    flush(&mut store, &mut pending);
                    oldest = None;
                    keep_under(&mut store, settings.max_bytes, counts);
                }
            }
            Ok(Job::Counters { at, rows, origin }) => {
                flush(&mut store, &mut pending);
                oldest = None;
                match store.record_counters(at, &rows, origin) {
                    Ok(n) => {
                        counts.rollups_written.fetch_add(n, Ordering::Relaxed);
                        counts.recovered();
                    }
                    // The bases stay as they were: the next snapshot
                    // counts this one's growth too.
                    Err(e) => counts.fail(format!("writing counter rollups: {e}")),
                }
                keep_under(&mut store, settings.max_bytes, counts);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                flush(&mut store, &mut pending);
                return;
            }
        }
        if oldest.is_some_and(|t| t.elapsed() >= settings.commit_every) {
            flush(&mut store, &mut pending);
            oldest = None;
            keep_under(&mut store, settings.max_bytes, counts);
        }
        if last_retention.is_none_or(|t| t.elapsed() >= settings.retention_every) {
            last_retention = Some(Instant::now());
            match store.enforce_retention(SystemTime::now(), settings.retention, settings.max_bytes)
            {
                Ok(removed) if removed.events + removed.rollups > 0 => log::info!(
                    "history: retention removed {} events and {} rollup rows",
                    removed.events,
                    removed.rollups
                ),
                Ok(_) => {}
                Err(e) => counts.fail(format!("enforcing retention: {e}")),
            }
            if let Ok(size) = store.size() {
                counts.db_bytes.store(size, Ordering::Relaxed);
            }
        }
    }
}
