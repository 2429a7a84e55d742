//! What the controller tells its operator: how it started, what it could
//! not log every interval, and the summary when it exits.

use regionwall_common::Counter;

use super::{Controller, Started, establish::Start};
use crate::{control::Stats, shown::Shown, verdict::Verdict};

/// Logs how the controller came to enforce and prints the `enforcing` line.
pub fn started(ctl: &Controller, started: &Started) {
    let pins = Shown(ctl.pins().path());
    let facts = &started.facts;
    match &started.start {
        Start::Fresh => {}
        Start::Adopted { epoch, .. } => log::info!(
            "adopted the pinned state in {pins} (policy epoch {epoch}, link {}, program now {}): no gap",
            facts.id,
            facts.prog_id
        ),
        Start::Replaced { reason } => log::warn!(
            "replaced the pinned state in {pins} ({reason}); the new policy was published before the program swap (link {}, program {})",
            facts.id,
            facts.prog_id
        ),
    }
    let config = ctl.config();
    let mode = super::supervise::attached_mode(ctl.supervisor.ifindex()).unwrap_or("unknown");
    let picked = if matches!(config.xdp_mode, aya::programs::XdpMode::Default) {
        " (chosen by the kernel for --xdp-mode auto)"
    } else {
        ""
    };
    eprintln!(
        "regionwall: enforcing {} on {} (ifindex {}, XDP {mode}{picked}, link {}, pinned in {pins}, control socket {})",
        Shown(&config.policy),
        config.iface,
        ctl.supervisor.ifindex(),
        facts.id,
        Shown(&config.socket)
    );
}

/// What had not been logged at the last report.
#[derive(Default)]
pub struct NotLogged {
    lost: u64,
    suppressed: u64,
    queue_dropped: u64,
    not_written: u64,
}

impl NotLogged {
    /// Logs drops, rejects and audits that did not become printed events
    /// since the last call.
    pub fn report(&mut self, ctl: &Controller) {
        let Some(c) = ctl.counters() else { return };
        let stats = ctl.snapshot();
        let now = Self {
            lost: c[Counter::EventsLost as usize],
            suppressed: c[Counter::EventsSuppressed as usize],
            queue_dropped: stats.not_logged.queue_dropped,
            not_written: stats.not_logged.not_written,
        };
        if now.lost > self.lost
            || now.suppressed > self.suppressed
            || now.queue_dropped > self.queue_dropped
            || now.not_written > self.not_written
        {
            log::warn!(
                "not logged in the last interval (verdicts were enforced): {} over the event rate limit, {} lost in the kernel ring buffer, {} dropped from a full queue, {} not written to the output; `regionwall stats` shows which devices and regions",
                now.suppressed.saturating_sub(self.suppressed),
                now.lost.saturating_sub(self.lost),
                now.queue_dropped.saturating_sub(self.queue_dropped),
                now.not_written.saturating_sub(self.not_written),
            );
        }
        *self = now;
    }
}

/// The exit summary: `message`, then the counters.
#[must_use]
pub fn summary(message: &str, stats: &Stats) -> String {
    let c = |k: &str| stats.counters.get(k).copied().unwrap_or(0);
    let n = stats.not_logged;
    format!(
        "regionwall: {message}. frames {}, non-IP {}, unparsed passed {} / dropped {}, \
         dropped {}, rejected {} (answered {}, over the reject limit {}, unanswerable {}), audited {}, events logged {} (over the rate limit {}, lost in kernel {}, dropped in queue {}, not written {})",
        c("frames"),
        c("non_ip"),
        c("unparsed_passed"),
        c("unparsed_dropped"),
        stats.packets(Verdict::Drop) + c("unparsed_dropped"),
        stats.packets(Verdict::Reject),
        c("rejects_sent"),
        c("rejects_suppressed"),
        c("rejects_unanswerable"),
        stats.packets(Verdict::Audit),
        stats.events_logged,
        n.suppressed,
        n.ring_lost,
        n.queue_dropped,
        n.not_written,
    )
}
