//! Where the controller prints events (stdout): a failing output (a closed
//! pipe, a full disk) is logged once and counted, and never stops
//! enforcement.

use std::io::Write;

/// Buffered event output; one write per burst, flushed when the queue
/// runs empty.
pub struct EventOutput<W: Write> {
    out: std::io::BufWriter<W>,
    failed: bool,
    /// Events that could not be written.
    pub not_written: u64,
    /// Events written.
    pub written: u64,
}

impl<W: Write> EventOutput<W> {
    pub fn new(out: W) -> Self {
        Self {
            out: std::io::BufWriter::with_capacity(1 << 16, out),
            failed: false,
            not_written: 0,
            written: 0,
        }
    }

    /// Writes one line; `flush` when no more events are queued. After the
    /// first failure nothing more is written (the buffer would only grow):
    /// every later event is counted as not written.
    pub fn line(&mut self, text: &str, flush: bool) {
        if self.failed {
            self.not_written += 1;
            return;
        }
        let result = writeln!(self.out, "{text}")
            .and_then(|()| if flush { self.out.flush() } else { Ok(()) });
        match result {
            Ok(()) => self.written += 1,
            Err(e) => {
                self.failed = true;
                // What the buffer held is lost with this one.
                self.not_written += 1;
                log::error!(
                    "writing events to the output failed ({e}); enforcement continues, \
                     events are no longer printed (counted as not written; \
                     `regionwall events` and `regionwall stats` still work)"
                );
            }
        }
    }

    pub fn flush(&mut self) {
        if !self.failed && self.out.flush().is_err() {
            self.failed = true;
        }
    }
}
