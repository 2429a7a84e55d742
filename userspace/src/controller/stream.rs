//! The decoded event stream: events pumped from the kernel ring into a
//! bounded queue, named with their epoch's policy, then fanned out — to
//! the broadcast every subscriber (control socket clients, and later
//! metrics, history, dashboard) reads, and to the controller's output.
//! A staged candidate's events come from a ring and queue of their own,
//! read after the live ones, so they never cost a live event.

use std::{sync::Arc, time::Duration};

use regionwall_common::Event;
use tokio::{sync::mpsc, task::JoinHandle};

use super::{Controller, ControllerError, output::EventOutput};

/// Candidate events queued for naming (their own queue: a flood of them
/// never takes the live queue's room).
const CANDIDATE_QUEUE: usize = 4096;

/// Events from the ring to their readers.
pub struct EventStream {
    rx: mpsc::Receiver<Event>,
    candidate_rx: mpsc::Receiver<Event>,
    pump: JoinHandle<std::io::Result<()>>,
    candidate_pump: JoinHandle<std::io::Result<()>>,
    output: EventOutput,
    json: bool,
}

impl EventStream {
    /// Starts pumping the controller's event ring into a queue of
    /// `queue` events (overflow counted, never blocking the pump).
    pub fn start(ctl: &mut Controller, queue: usize, json: bool) -> Result<Self, ControllerError> {
        let ring = ctl.take_events()?;
        let candidate_ring = ctl.take_candidate_events()?;
        let (tx, rx) = mpsc::channel(queue.max(1));
        let (candidate_tx, candidate_rx) = mpsc::channel(CANDIDATE_QUEUE);
        let pump = tokio::spawn(crate::events::pump(
            ring,
            tx,
            Arc::clone(&ctl.tally().queue_dropped),
        ));
        let candidate_pump = tokio::spawn(crate::events::pump(
            candidate_ring,
            candidate_tx,
            Arc::clone(&ctl.tally().candidate_queue_dropped),
        ));
        Ok(Self {
            rx,
            candidate_rx,
            pump,
            candidate_pump,
            output: EventOutput::start(std::io::stdout(), Arc::clone(ctl.tally()))
                .map_err(|source| ControllerError::Output { source })?,
            json,
        })
    }

    /// The next event, live ones first (cancel-safe). `None` once the
    /// live pump has stopped.
    pub async fn next(&mut self) -> Option<Event> {
        tokio::select! {
            biased;
            ev = self.rx.recv() => ev,
            Some(ev) = self.candidate_rx.recv() => Some(ev),
        }
    }

    /// Names `event`, broadcasts it, queues it for the output.
    pub fn deliver(&mut self, ctl: &Controller, event: &Event) {
        if event.candidate != 0 {
            // A staged candidate's "would drop"/"would pass": printed and
            // streamed on its own feed, never mixed into the live stream.
            if let Some(record) = ctl.candidate_record(event) {
                let text = if self.json {
                    serde_json::to_string(&record)
                        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
                } else {
                    record.line()
                };
                ctl.broadcast_candidate(record);
                self.output.candidate_line(text);
            }
            return;
        }
        let Some(record) = ctl.record(event) else {
            return;
        };
        let text = if self.json {
            record.json()
        } else {
            record.line()
        };
        ctl.broadcast(record);
        self.output.line(text);
    }

    /// Stops the pump and lets the output write what is queued (at most
    /// a second: a stopped reader must not hold up the exit).
    pub fn stop(self) {
        self.pump.abort();
        self.candidate_pump.abort();
        self.output.close(Duration::from_secs(1));
    }
}
