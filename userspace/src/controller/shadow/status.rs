//! What `diff` shows of the staged candidate: its disagreements named by
//! the live policy's devices and countries and the candidate's own
//! regions and rules, its event counts, and why it is paused.

use regionwall_common::{CANDIDATE_PATH_BYTES, Counter};

use super::Controller;
use crate::{
    candidate::{DiffRow, Status},
    verdict::Verdict,
};

impl Controller {
    /// The staged candidate and its disagreements, named.
    #[must_use]
    pub fn candidate_status(&self) -> Status {
        let Some(staged) = &self.candidate else {
            // Pinned, but not adopted (its file changed or is gone): paused.
            return match self.dp.candidate_meta() {
                Ok(m) if m.staged == 1 => {
                    let len = (m.path_len as usize).min(CANDIDATE_PATH_BYTES);
                    Status {
                        staged: true,
                        path: String::from_utf8_lossy(&m.path[..len]).into_owned(),
                        staged_at: m.staged_at,
                        paused: "its file changed or could not be read since it was staged, so it was not adopted; stage it again or discard it".into(),
                        ..Status::default()
                    }
                }
                _ => Status::default(),
            };
        };
        let live = self.names.get(self.epoch);
        let rows = self.dp.candidate_rows().unwrap_or_else(|e| {
            log::warn!("reading the candidate's counters: {e}");
            Vec::new()
        });
        let counters = self.counters();
        let c = |k: Counter| counters.as_ref().map_or(0, |c| c[k as usize]);
        let lost = c(Counter::CandidateLost);
        let events = crate::candidate::CandidateEvents {
            reported: c(Counter::CandidateEventsSent),
            suppressed: c(Counter::CandidateEventsSuppressed),
            lost: c(Counter::CandidateEventsLost),
            not_printed: self
                .tally
                .candidate_queue_dropped
                .load(std::sync::atomic::Ordering::Relaxed)
                + self
                    .tally
                    .candidate_not_written
                    .load(std::sync::atomic::Ordering::Relaxed),
        };
        let evaluated = self.dp.candidate_evaluated();
        Status {
            staged: true,
            path: staged.path.display().to_string(),
            staged_at: staged.staged_at,
            evaluated,
            lost,
            events,
            paused: if evaluated {
                String::new()
            } else {
                "the live policy changed since staging; promote needs --force".into()
            },
            rows: rows
                .iter()
                .filter_map(|r| {
                    let k = r.key;
                    Some(DiffRow {
                        device: live.map_or_else(
                            || format!("#{}", k.device),
                            |c| c.device_name(k.device).to_string(),
                        ),
                        region: staged.compiled.region_name(k.region).to_string(),
                        country: live.map_or_else(
                            || format!("#{}", k.country),
                            |c| c.country_name(k.country).to_string(),
                        ),
                        rule: staged.compiled.rule_name(k.rule).to_string(),
                        live: Verdict::from_kernel(u32::from(k.live))?,
                        candidate: Verdict::from_kernel(u32::from(k.candidate))?,
                        packets: r.packets,
                        bytes: r.bytes,
                    })
                })
                .collect(),
        }
    }
}
