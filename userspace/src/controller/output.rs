//! Where the controller prints events (stdout), on a thread of its own
//! behind a bounded queue: a reader that stops reading (a paused pager, a
//! stuck log shipper), a closed pipe or a full disk costs events, counted
//! as not written and logged once, and never stalls or stops enforcement.
//! A staged candidate's lines have a smaller queue of their own, written
//! only when no live line waits, and are counted apart: they never take a
//! live line's room.

use std::{
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel},
    },
    time::Duration,
};

use super::Tally;

/// Lines queued for the output before further events are counted as not
/// written.
pub const QUEUE: usize = 8192;

/// Candidate lines queued before further ones are counted apart.
pub const CANDIDATE_QUEUE: usize = 1024;

/// Lines written in one burst at most.
const BURST: usize = 1024;

/// How long the writer waits for a live line before it looks at the
/// candidate's queue.
const TICK: Duration = Duration::from_millis(20);

/// Lines queued and not yet written or counted by the writer: live, and
/// the candidate's.
#[derive(Default)]
struct Queued {
    live: AtomicU64,
    candidate: AtomicU64,
}

impl Queued {
    fn of(&self, candidate: bool) -> &AtomicU64 {
        if candidate {
            &self.candidate
        } else {
            &self.live
        }
    }
}

/// The event output: [`EventOutput::line`] never blocks.
pub struct EventOutput {
    live: Option<SyncSender<String>>,
    candidate: Option<SyncSender<String>>,
    done: Receiver<()>,
    tally: Arc<Tally>,
    behind: AtomicBool,
    queued: Arc<Queued>,
}

impl EventOutput {
    /// Starts the writer thread on `out`; counts go to `tally`.
    pub fn start<W: Write + Send + 'static>(out: W, tally: Arc<Tally>) -> std::io::Result<Self> {
        let (live, live_rx) = sync_channel::<String>(QUEUE);
        let (candidate, candidate_rx) = sync_channel::<String>(CANDIDATE_QUEUE);
        let (done_tx, done) = sync_channel(1);
        let counts = Arc::clone(&tally);
        let queued = Arc::new(Queued::default());
        let in_queue = Arc::clone(&queued);
        std::thread::Builder::new()
            .name("regionwall-output".into())
            .spawn(move || {
                write_all(out, &live_rx, &candidate_rx, &counts, &in_queue);
                let _ = done_tx.send(());
            })?;
        Ok(Self {
            live: Some(live),
            candidate: Some(candidate),
            done,
            tally,
            behind: AtomicBool::new(false),
            queued,
        })
    }

    /// Queues one line; when the queue is full (the reader is not keeping
    /// up) the line is counted as not written.
    pub fn line(&self, text: String) {
        self.queue(text, false);
    }

    /// Queues a candidate event's line on its own queue (counted in
    /// `candidate_not_written` when full, never in the live counts).
    pub fn candidate_line(&self, text: String) {
        self.queue(text, true);
    }

    fn queue(&self, text: String, candidate: bool) {
        let tx = if candidate {
            &self.candidate
        } else {
            &self.live
        };
        let Some(tx) = tx else { return };
        let queued = self.queued.of(candidate);
        // Counted before it is sent: the writer may take it at once.
        queued.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(text) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                queued.fetch_sub(1, Ordering::Relaxed);
                self.tally.lost_line(candidate, 1);
                if !candidate && !self.behind.swap(true, Ordering::Relaxed) {
                    log::error!(
                        "the event output is not keeping up (a slow or stopped reader): events past {QUEUE} queued lines are counted as not written; enforcement continues"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                queued.fetch_sub(1, Ordering::Relaxed);
                self.tally.lost_line(candidate, 1);
            }
        }
    }

    /// Lets the writer finish what is queued, waiting at most `wait` (a
    /// reader that stopped reading must not hold up the exit); what it
    /// could not write by then is counted as not written.
    pub fn close(mut self, wait: Duration) {
        self.live = None;
        self.candidate = None;
        if self.done.recv_timeout(wait).is_err() {
            for candidate in [false, true] {
                let left = self.queued.of(candidate).swap(0, Ordering::Relaxed);
                self.tally.lost_line(candidate, left);
            }
        }
    }
}

/// The next burst: live lines first (waiting up to [`TICK`] for one), then
/// candidate lines if room is left. `None` once both queues are closed
/// and empty.
fn burst(live: &Receiver<String>, candidate: &Receiver<String>) -> Option<(Vec<String>, usize)> {
    let mut out = Vec::new();
    let mut live_open = true;
    match live.recv_timeout(TICK) {
        Ok(text) => out.push(text),
        Err(RecvTimeoutError::Timeout) => {}
        Err(RecvTimeoutError::Disconnected) => live_open = false,
    }
    while out.len() < BURST {
        match live.try_recv() {
            Ok(text) => out.push(text),
            Err(_) => break,
        }
    }
    let live_lines = out.len();
    let mut candidate_open = true;
    while out.len() < BURST {
        match candidate.try_recv() {
            Ok(text) => out.push(text),
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Disconnected) => {
                candidate_open = false;
                break;
            }
        }
    }
    if out.is_empty() && !live_open && !candidate_open {
        return None;
    }
    Some((out, live_lines))
}

/// The writer thread: one write per burst, a flush when the queue runs
/// empty; after the first failure every line is counted, none written.
fn write_all<W: Write>(
    out: W,
    live: &Receiver<String>,
    candidate: &Receiver<String>,
    tally: &Tally,
    queued: &Queued,
) {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    let mut failed = false;
    while let Some((lines, live_lines)) = burst(live, candidate) {
        if lines.is_empty() {
            continue;
        }
        let live_lines = live_lines as u64;
        let candidate_lines = lines.len() as u64 - live_lines;
        if failed {
            tally.lost_line(false, live_lines);
            tally.lost_line(true, candidate_lines);
            queued.live.fetch_sub(live_lines, Ordering::Relaxed);
            queued
                .candidate
                .fetch_sub(candidate_lines, Ordering::Relaxed);
            continue;
        }
        let result = lines
            .iter()
            .try_for_each(|l| writeln!(out, "{l}"))
            .and_then(|()| out.flush());
        match result {
            Ok(()) => {
                tally.events_logged.fetch_add(live_lines, Ordering::Relaxed);
            }
            Err(e) => {
                failed = true;
                tally.lost_line(false, live_lines);
                tally.lost_line(true, candidate_lines);
                log::error!(
                    "writing events to the output failed ({e}); enforcement continues, \
                     events are no longer printed (counted as not written; \
                     `regionwall events` and `regionwall stats` still work)"
                );
            }
        }
        // Counted as written or not: off the queue (a burst stuck in a
        // write stays queued, and is counted as not written at close).
        queued.live.fetch_sub(live_lines, Ordering::Relaxed);
        queued
            .candidate
            .fetch_sub(candidate_lines, Ordering::Relaxed);
    }
    if !failed {
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that blocks until told, like a pipe nobody reads.
    struct Stuck(std::sync::mpsc::Receiver<()>);

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_reader_costs_events_never_time() {
        let tally = Arc::new(Tally::default());
        let (_release, stuck) = std::sync::mpsc::channel();
        let out = EventOutput::start(Stuck(stuck), Arc::clone(&tally)).expect("thread");
        let start = std::time::Instant::now();
        let n = QUEUE * 3;
        for i in 0..n {
            out.line(format!("event {i} {}", "x".repeat(100)));
        }
        assert!(start.elapsed() < Duration::from_secs(2), "never blocks");
        let not_written = tally.not_written.load(Ordering::Relaxed);
        assert!(
            not_written >= (n - QUEUE - 1024 - 1) as u64,
            "{not_written}"
        );
        out.close(Duration::from_millis(50));
        // At exit every line is accounted: written, or counted as not.
        let accounted =
            tally.events_logged.load(Ordering::Relaxed) + tally.not_written.load(Ordering::Relaxed);
        assert_eq!(accounted, n as u64);
    }

    /// With the reader stuck, a flood of candidate lines leaves the live
    /// queue's whole room to live lines, and both are counted apart.
    #[test]
    fn candidate_lines_never_take_a_live_lines_room() {
        let tally = Arc::new(Tally::default());
        let (_release, stuck) = std::sync::mpsc::channel();
        let out = EventOutput::start(Stuck(stuck), Arc::clone(&tally)).expect("thread");
        let flood = QUEUE * 2;
        for i in 0..flood {
            out.candidate_line(format!("candidate {i}"));
        }
        for i in 0..QUEUE {
            out.line(format!("live {i}"));
        }
        assert_eq!(
            tally.not_written.load(Ordering::Relaxed),
            0,
            "every live line queued"
        );
        let dropped = tally.candidate_not_written.load(Ordering::Relaxed);
        assert!(
            dropped >= (flood - CANDIDATE_QUEUE - BURST) as u64,
            "{dropped}"
        );
        out.close(Duration::from_millis(50));
        let live =
            tally.events_logged.load(Ordering::Relaxed) + tally.not_written.load(Ordering::Relaxed);
        assert_eq!(live, QUEUE as u64, "every live line accounted at exit");
        assert_eq!(
            tally.candidate_not_written.load(Ordering::Relaxed),
            flood as u64,
            "no candidate line written to a stuck reader"
        );
    }

    #[test]
    fn a_failing_output_counts_every_line() {
        let tally = Arc::new(Tally::default());
        let out = EventOutput::start(
            std::fs::File::create("/dev/full").expect("/dev/full"),
            Arc::clone(&tally),
        )
        .expect("thread");
        for i in 0..100 {
            out.line(format!("event {i}"));
        }
        out.close(Duration::from_secs(2));
        assert_eq!(tally.events_logged.load(Ordering::Relaxed), 0);
        assert_eq!(tally.not_written.load(Ordering::Relaxed), 100);
    }
}
