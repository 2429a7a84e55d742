//! The decoded event stream: events pumped from the kernel ring into a
//! bounded queue, named with their epoch's policy, then fanned out — to
//! the broadcast every subscriber (control socket clients, and later
//! metrics, history, dashboard) reads, and to the controller's output.

use std::sync::{Arc, atomic::Ordering};

use regionwall_common::Event;
use tokio::{sync::mpsc, task::JoinHandle};

use super::{Controller, ControllerError, output::EventOutput};

/// Events from the ring to their readers.
pub struct EventStream {
    rx: mpsc::Receiver<Event>,
    pump: JoinHandle<std::io::Result<()>>,
    output: EventOutput<std::io::Stdout>,
    json: bool,
}

impl EventStream {
    /// Starts pumping the controller's event ring into a queue of
    /// `queue` events (overflow counted, never blocking the pump).
    pub fn start(ctl: &mut Controller, queue: usize, json: bool) -> Result<Self, ControllerError> {
        let ring = ctl.take_events()?;
        let (tx, rx) = mpsc::channel(queue.max(1));
        let pump = tokio::spawn(crate::events::pump(
            ring,
            tx,
            Arc::clone(&ctl.tally().queue_dropped),
        ));
        Ok(Self {
            rx,
            pump,
            output: EventOutput::new(std::io::stdout()),
            json,
        })
    }

    /// The next event (cancel-safe).
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// Names `event`, broadcasts it, prints it (one write per burst).
    pub fn deliver(&mut self, ctl: &Controller, event: &Event) {
        let Some(record) = ctl.record(event) else {
            return;
        };
        let text = if self.json {
            record.json()
        } else {
            record.line()
        };
        ctl.broadcast(record);
        let before = (self.output.written, self.output.not_written);
        self.output.line(&text, self.rx.is_empty());
        let tally = ctl.tally();
        tally
            .events_logged
            .fetch_add(self.output.written - before.0, Ordering::Relaxed);
        tally
            .not_written
            .fetch_add(self.output.not_written - before.1, Ordering::Relaxed);
    }

    /// Flushes the output and stops the pump.
    pub fn stop(mut self) {
        self.output.flush();
        self.pump.abort();
    }
}
