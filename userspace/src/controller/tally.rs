//! What the controller itself counts (the kernel counts the rest): events
//! it could not queue or print, reloads by result, when the live policy
//! was loaded and from which files.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

/// What the controller itself counts (the kernel counts the rest):
/// shared with the event pump and the output.
#[derive(Debug, Default)]
pub struct Tally {
    /// Events dropped from a full queue (`--queue`).
    pub queue_dropped: Arc<AtomicU64>,
    /// Candidate events dropped from their own full queue, and candidate
    /// lines the output did not write (never in the live counts).
    pub candidate_queue_dropped: Arc<AtomicU64>,
    pub candidate_not_written: AtomicU64,
    /// Events printed.
    pub events_logged: AtomicU64,
    /// Events the output could not take.
    pub not_written: AtomicU64,
    /// Reloads put in force, refused (the policy did not load or check),
    /// and failed (publishing failed, or the loader panicked).
    pub reloads_ok: AtomicU64,
    pub reloads_rejected: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// When a policy was last put in force (unix seconds).
    pub loaded_at: AtomicU64,
    /// Every file the live policy read (for the data age metric).
    pub inputs: std::sync::RwLock<Vec<PathBuf>>,
}

impl Tally {
    /// Counts `n` lines the output did not write: live events, or a
    /// candidate's.
    pub fn lost_line(&self, candidate: bool, n: u64) {
        let counter = if candidate {
            &self.candidate_not_written
        } else {
            &self.not_written
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Notes `inputs` as the live policy's, put in force now.
    pub fn loaded(&self, inputs: &[PathBuf]) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.loaded_at.store(now, Ordering::Relaxed);
        if let Ok(mut held) = self.inputs.write() {
            held.clone_from(&inputs.to_vec());
        }
    }
}
