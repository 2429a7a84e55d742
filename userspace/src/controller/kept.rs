//! The controller's own counters (reloads by result, events dropped from
//! its queue or not written, DNS answers decoded) and the metrics' carry,
//! kept in the state directory so no counter goes backwards when the
//! controller restarts.
//!
//! The kernel's counters live in the pinned maps and outlive the
//! controller by themselves; these do not. They are written to
//! `<state dir>/counters.json` by atomic replace (a temporary file,
//! fsync, rename, fsync of the directory) whenever they changed: before a
//! `/metrics` scrape is answered (so what a scraper saw is on disk), every
//! [`SAVE_EVERY`], and at a clean stop. At start they become the base
//! `/metrics` adds to the new controller's counts (`stats` and the
//! dashboard still count from this controller's start). A
//! `kill -9` loses at most what changed since the last save, and never
//! anything a scrape showed.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::{
    Tally,
    carry::{Carry, Key, Lift},
};

/// The file in the state directory.
pub const FILE: &str = "counters.json";

/// How often changed counters are written besides scrapes and the stop.
pub const SAVE_EVERY: Duration = Duration::from_secs(5);

/// The counters file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeptError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a regionwall counters file ({source}); move it away")]
    Foreign {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// What the file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Saved {
    pub reloads_ok: u64,
    pub reloads_rejected: u64,
    pub reloads_failed: u64,
    pub queue_dropped: u64,
    pub not_written: u64,
    pub dns_answers: u64,
    /// Events the history recorder could not write (full queue, missed,
    /// failed commits); absent in files of earlier versions.
    #[serde(default)]
    pub history_not_written: u64,
    /// See [`Carry::kept`].
    pub carry: Vec<(Key, Lift)>,
}

/// The counters file of a running controller.
pub struct Kept {
    path: PathBuf,
    tally: Arc<Tally>,
    carry: Arc<Mutex<Carry>>,
    /// What earlier controllers counted: `/metrics` adds it to this one's
    /// counts (`stats` and the dashboard count from this start).
    pub base: Saved,
    dns_now: Box<dyn Fn() -> u64 + Send + Sync>,
    history_now: Box<dyn Fn() -> u64 + Send + Sync>,
    written: Mutex<Saved>,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeptError + '_ {
    move |source| KeptError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the counters file in `dir` (`Saved::default()` when none).
pub fn load(dir: &Path) -> Result<Saved, KeptError> {
    use std::io::Read as _;
    let path = dir.join(FILE);
    // Bounded: a counters file of a controller is a few hundred KiB at
    // most (the carried series are capped like the scrape's devices).
    let read = std::fs::File::open(&path).and_then(|f| {
        let mut bytes = Vec::new();
        f.take(MAX_FILE + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_FILE {
            return Err(std::io::Error::other(format!(
                "over {} MiB: not a counters file of ours",
                MAX_FILE >> 20
            )));
        }
        Ok(bytes)
    });
    match read {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|source| KeptError::Foreign { path, source })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::default()),
        Err(e) => Err(io(&path)(e)),
    }
}

/// The largest counters file read.
const MAX_FILE: u64 = 8 << 20;

/// Writes `saved` to `dir` by atomic replace.
pub fn store(dir: &Path, saved: &Saved) -> Result<(), KeptError> {
    let path = dir.join(FILE);
    let tmp = dir.join(format!(".{FILE}.tmp"));
    let bytes = serde_json::to_vec(saved).map_err(|e| io(&path)(std::io::Error::other(e)))?;
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

impl Kept {
    /// Opens the counters in `dir` (made if missing) as the base `/metrics`
    /// adds to `tally`'s; the carry is restored only when the kernel's counters
    /// were adopted (`adopted`): fresh pins start every kernel series
    /// again (a documented reset).
    pub fn open(
        dir: &Path,
        tally: Arc<Tally>,
        carry: Arc<Mutex<Carry>>,
        adopted: bool,
        dns_now: Box<dyn Fn() -> u64 + Send + Sync>,
        history_now: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> Result<Self, KeptError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let saved = load(dir)?;
        if adopted && let Ok(mut c) = carry.lock() {
            c.restore(saved.carry.clone());
        }
        Ok(Self {
            path: dir.to_path_buf(),
            tally,
            carry,
            base: Saved {
                carry: Vec::new(),
                ..saved.clone()
            },
            dns_now,
            history_now,
            written: Mutex::new(saved),
        })
    }

    /// The counters as they are now: the base plus this controller's.
    fn now(&self) -> Saved {
        let (t, b) = (&self.tally, &self.base);
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Saved {
            reloads_ok: b.reloads_ok + load(&t.reloads_ok),
            reloads_rejected: b.reloads_rejected + load(&t.reloads_rejected),
            reloads_failed: b.reloads_failed + load(&t.reloads_failed),
            queue_dropped: b.queue_dropped + load(&t.queue_dropped),
            not_written: b.not_written + load(&t.not_written),
            dns_answers: b.dns_answers + (self.dns_now)(),
            history_not_written: b.history_not_written + (self.history_now)(),
            carry: self.carry.lock().map(|c| c.kept()).unwrap_or_default(),
        }
    }

    /// Writes the counters if they changed since the last write.
    pub fn save(&self) -> Result<(), KeptError> {
        let now = self.now();
        let Ok(mut written) = self.written.lock() else {
            return Ok(());
        };
        if *written == now {
            return Ok(());
        }
        store(&self.path, &now)?;
        *written = now;
        Ok(())
    }
}

/// Saves every [`SAVE_EVERY`] until dropped, and once more then.
pub struct Saver {
    kept: Arc<Kept>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Saver {
    fn drop(&mut self) {
        self.task.abort();
        if let Err(e) = self.kept.save() {
            log::warn!("counters: {e}");
        }
    }
}

/// Keeps `ctl`'s counters in `dir` (`None`: no state directory, nothing
/// kept): restores them now, hands them to `/metrics`, saves them on a
/// task of their own. A file that cannot be read is reported and left
/// alone (the counters then start at 0), never overwritten.
pub fn start(ctl: &mut super::Controller, dir: Option<&Path>) -> Option<Saver> {
    let dir = dir?;
    let hosts = ctl.hosts().cloned();
    let dns_now = Box::new(move || hosts.as_ref().map_or(0, |h| h.stats().answers));
    let history = ctl.history.clone();
    let history_now = Box::new(move || history.as_ref().map_or(0, |h| h.stats().not_written));
    let kept = match Kept::open(
        dir,
        Arc::clone(ctl.tally()),
        Arc::clone(&ctl.carry),
        !ctl.counters_fresh(),
        dns_now,
        history_now,
    ) {
        Ok(k) => Arc::new(k),
        Err(e) => {
            log::error!("counters are NOT kept across restarts: {e}");
            return None;
        }
    };
    ctl.kept = Some(Arc::clone(&kept));
    let task = {
        let kept = Arc::clone(&kept);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAVE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let k = Arc::clone(&kept);
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || k.save()).await {
                    log::warn!("counters: {e}");
                }
            }
        })
    };
    Some(Saver { kept, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rw-kept-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn saved_counters_read_back_and_none_is_zero() {
        let d = dir("roundtrip");
        assert_eq!(load(&d).expect("no file"), Saved::default());
        let saved = Saved {
            reloads_ok: 3,
            queue_dropped: 7,
            ..Saved::default()
        };
        store(&d, &saved).expect("store");
        assert_eq!(load(&d).expect("load"), saved);
        assert!(!d.join(format!(".{FILE}.tmp")).exists());
        std::fs::remove_dir_all(&d).expect("clean up");
    }

    #[test]
    fn an_oversized_file_is_refused_unread() {
        let d = dir("huge");
        let huge = vec![b' '; usize::try_from(MAX_FILE).expect("small") + 1];
        std::fs::write(d.join(FILE), &huge).expect("write");
        let err = load(&d).expect_err("refused");
        assert!(err.to_string().contains("over 8 MiB"), "{err}");
        std::fs::remove_dir_all(&d).expect("clean up");
    }

    #[test]
    fn a_foreign_file_is_refused_and_left_alone() {
        let d = dir("foreign");
        std::fs::write(d.join(FILE), "not ours").expect("write");
        assert!(matches!(load(&d), Err(KeptError::Foreign { .. })));
        assert_eq!(
            std::fs::read_to_string(d.join(FILE)).expect("read"),
            "not ours"
        );
        std::fs::remove_dir_all(&d).expect("clean up");
    }
}
