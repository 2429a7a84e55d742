//! Where the controller prints events (stdout), on a thread of its own
//! behind a bounded queue: a reader that stops reading (a paused pager, a
//! stuck log shipper), a closed pipe or a full disk costs events, counted
//! as not written and logged once, and never stalls or stops enforcement.
//! A staged candidate's lines share the writer but never the live lines'
//! room or counts: they take at most half the queue and are counted apart.

use std::{
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    time::Duration,
};

use super::Tally;

/// Lines queued for the output before further events are counted as not
/// written.
pub const QUEUE: usize = 8192;

/// A queued line; `candidate`: a staged candidate's event.
struct Line {
    text: String,
    candidate: bool,
}

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
    tx: Option<SyncSender<Line>>,
    done: Receiver<()>,
    tally: Arc<Tally>,
    behind: AtomicBool,
    queued: Arc<Queued>,
}

impl EventOutput {
    /// Starts the writer thread on `out`; counts go to `tally`.
    pub fn start<W: Write + Send + 'static>(out: W, tally: Arc<Tally>) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Line>(QUEUE);
        let (done_tx, done) = sync_channel(1);
        let counts = Arc::clone(&tally);
        let queued = Arc::new(Queued::default());
        let in_queue = Arc::clone(&queued);
        std::thread::Builder::new()
            .name("regionwall-output".into())
            .spawn(move || {
                write_all(out, &rx, &counts, &in_queue);
                let _ = done_tx.send(());
            })?;
        Ok(Self {
            tx: Some(tx),
            done,
            tally,
            behind: AtomicBool::new(false),
            queued,
        })
    }

    /// Queues one line; when the queue is full (the reader is not keeping
    /// up) the line is counted as not written.
    pub fn line(&self, text: String) {
        self.queue(Line {
            text,
            candidate: false,
        });
    }

    /// Queues a candidate event's line while the queue is less than half
    /// full (else it is counted in `candidate_not_written`, never in the
    /// live counts), so candidate lines never cost a live line its place.
    pub fn candidate_line(&self, text: String) {
        if self.queued.live.load(Ordering::Relaxed) + self.queued.candidate.load(Ordering::Relaxed)
            >= (QUEUE / 2) as u64
        {
            self.tally
                .candidate_not_written
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.queue(Line {
            text,
            candidate: true,
        });
    }

    fn queue(&self, line: Line) {
        let candidate = line.candidate;
        let Some(tx) = &self.tx else { return };
        let queued = self.queued.of(candidate);
        // Counted before it is sent: the writer may take it at once.
        queued.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(line) {
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
        self.tx = None;
        if self.done.recv_timeout(wait).is_err() {
            for candidate in [false, true] {
                let left = self.queued.of(candidate).swap(0, Ordering::Relaxed);
                self.tally.lost_line(candidate, left);
            }
        }
    }
}

/// The writer thread: one write per burst, a flush when the queue runs
/// empty; after the first failure every line is counted, none written.
fn write_all<W: Write>(out: W, rx: &Receiver<Line>, tally: &Tally, queued: &Queued) {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    let mut failed = false;
    loop {
        let line = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut burst = vec![line];
        while let Ok(more) = rx.try_recv() {
            burst.push(more);
            if burst.len() >= 1024 {
                break;
            }
        }
        let candidate_lines = burst.iter().filter(|l| l.candidate).count() as u64;
        let live_lines = burst.len() as u64 - candidate_lines;
        if failed {
            tally.lost_line(false, live_lines);
            tally.lost_line(true, candidate_lines);
            queued.live.fetch_sub(live_lines, Ordering::Relaxed);
            queued
                .candidate
                .fetch_sub(candidate_lines, Ordering::Relaxed);
            continue;
        }
        let result = burst
            .iter()
            .try_for_each(|l| writeln!(out, "{}", l.text))
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
