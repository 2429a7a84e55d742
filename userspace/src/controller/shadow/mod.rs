//! Shadow policies: a candidate staged beside the live policy, evaluated
//! by the kernel on every packet and never enforced. Its decision table is
//! built in the live table's index space (so the kernel reads one more
//! cell and walks no second lookup), re-staged after every publish while
//! the live policy is the one it was staged against, adopted after a
//! restart, promoted atomically or discarded.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use regionwall_common::{CANDIDATE_PATH_BYTES, CandidateMeta, Event};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Controller, Prepared, prepare::finish};
use crate::{
    compile::{Compiled, Refine, compile_refined},
    events::Record,
    policy::Policy,
    verdict::Verdict,
};

/// Why a candidate could not be staged, promoted or discarded.
#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    #[error(
        "candidate {} refused: {why}; a candidate must keep the live policy's devices and port qualifiers (its rules, regions and countries may change freely) so the kernel shares the live lookup; change those in the live policy first",
        crate::shown::Shown(path)
    )]
    Incompatible { path: PathBuf, why: String },
    #[error("no candidate is staged")]
    NotStaged,
    #[error(
        "the pinned candidate was not adopted (its file changed or could not be read since it was staged): stage it again, or discard it"
    )]
    NotAdopted,
    #[error("the live policy's names are not known yet; try again")]
    NoLivePolicy,
    #[error(
        "the live policy changed since the candidate was staged (it is paused); stage it again, or promote --force"
    )]
    LiveChanged,
    #[error("the candidate path is longer than {CANDIDATE_PATH_BYTES} bytes or not UTF-8")]
    Path,
    #[error(
        "promote of {} refused: {why} (the live policy stays; the candidate stays staged)",
        crate::shown::Shown(path)
    )]
    Widens { path: PathBuf, why: String },
    #[error(
        "a reload of the live policy is being prepared; promote again once it is applied (it would otherwise replace the promoted policy)"
    )]
    ReloadPending,
    #[error(transparent)]
    Prepare(#[from] super::PrepareError),
    #[error("{context}: {source}")]
    Datapath {
        context: &'static str,
        #[source]
        source: Box<crate::DatapathError>,
    },
    #[error(transparent)]
    Controller(#[from] Box<super::ControllerError>),
}

fn dp_err(context: &'static str) -> impl FnOnce(crate::DatapathError) -> ShadowError {
    move |source| ShadowError::Datapath {
        context,
        source: Box::new(source),
    }
}

/// The staged candidate, as the controller keeps it.
#[expect(
    clippy::struct_field_names,
    reason = "staged_at is the record's own name for it (CandidateMeta)"
)]
pub struct Staged {
    path: PathBuf,
    policy: Arc<Policy>,
    /// As compiled (policy order): names the candidate's regions and rules.
    compiled: Arc<Compiled>,
    /// The compiled lookup, kept for an atomic promote.
    fib: Option<crate::fib::Fib>,
    live_digest: u32,
    /// The live digest before refinement for this candidate (0: none).
    plain_digest: u32,
    staged_at: u64,
}

/// A candidate event ("would drop", "would pass"): the event named like a
/// live one, with the candidate's region and rule, and what the live
/// policy did. Streamed by `events --candidate` and printed; never part
/// of the live event stream (history, metrics, the dashboard).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CandidateRecord {
    #[serde(flatten)]
    pub record: Record,
    /// Always true: marks the line as a candidate event.
    pub candidate: bool,
    /// The verdict the live policy enforced.
    pub live_verdict: Verdict,
}

impl CandidateRecord {
    /// As printed: the candidate's verdict, and the live one.
    #[must_use]
    pub fn line(&self) -> String {
        format!(
            "candidate would {} (live {}): {}",
            self.record.verdict.as_str(),
            self.live_verdict.as_str(),
            self.record.line()
        )
    }
}

/// A mismatch as the refusal says it.
fn reason(m: Mismatch) -> String {
    match m {
        Mismatch::Classes => {
            "its destinations resolve to region classes the live table does not refine".into()
        }
        Mismatch::Refused(why) => why,
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn meta_of(
    path: &Path,
    live_digest: u32,
    candidate_digest: u32,
    plain_digest: u32,
    staged_at: u64,
) -> Result<CandidateMeta, ShadowError> {
    let text = path.to_str().ok_or(ShadowError::Path)?;
    if text.len() > CANDIDATE_PATH_BYTES {
        return Err(ShadowError::Path);
    }
    let mut meta = CandidateMeta {
        staged: 1,
        live_digest,
        candidate_digest,
        plain_digest,
        staged_at,
        path_len: u32::try_from(text.len()).map_err(|_| ShadowError::Path)?,
        ..CandidateMeta::default()
    };
    meta.path[..text.len()].copy_from_slice(text.as_bytes());
    Ok(meta)
}

impl Controller {
    /// The socket's handle on the candidate; jobs arrive on `tx`'s receiver.
    #[must_use]
    pub fn shadow_client(&self, tx: mpsc::Sender<Job>) -> Client {
        Client {
            tx,
            config: self.config.clone(),
            live: self.live_feed.subscribe(),
            staging: Arc::default(),
        }
    }

    /// Does what the socket asked (on the loop: it writes the maps).
    pub fn shadow(&mut self, job: Job) {
        match job {
            Job::Stage(prepared, refined, path, reply) => {
                let refined =
                    refined.and_then(|r| Arc::ptr_eq(&r.live, &self.live).then_some(r.prepared));
                let _ = reply.send(outcome(self.stage(*prepared, refined, &path)));
            }
            Job::Status(reply) => {
                let _ = reply.send(self.candidate_status());
            }
            Job::Promote(force, reply) => {
                let _ = reply.send(outcome(self.promote(force)));
            }
            Job::Discard(reply) => {
                let _ = reply.send(outcome(self.discard()));
            }
        }
    }

    /// Stages `prepared` (read from `path`) as the candidate, its counts
    /// from zero; a candidate staged before is replaced. `refined`: the
    /// live policy already compiled over the refinement for it (else it is
    /// compiled here, if needed).
    pub fn stage(
        &mut self,
        prepared: Prepared,
        refined: Option<Prepared>,
        path: &Path,
    ) -> Result<String, ShadowError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let live = self
            .names
            .get(self.epoch)
            .ok_or(ShadowError::NoLivePolicy)?;
        let refuse = |m: Mismatch| ShadowError::Incompatible {
            path: path.clone(),
            why: reason(m),
        };
        // A live table refined for an earlier candidate is refined again
        // for this one: its refining tags name the other's regions.
        let mut plain_digest = 0;
        let decisions = match table(live, &self.live, &prepared.compiled, &prepared.policy) {
            Ok(d) if live.refined.is_empty() => d,
            Err(m @ Mismatch::Refused(_)) => return Err(refuse(m)),
            Ok(_) | Err(Mismatch::Classes) => {
                // The candidate being replaced, if any, is dropped first so
                // the publishes do not restage it.
                let previous = self.candidate.take();
                if let Err(e) = self.unrefine_live() {
                    self.candidate = previous;
                    return Err(e);
                }
                plain_digest = self.names.get(self.epoch).map_or(0, live_digest);
                if let Err(e) = self.refine_live(&prepared.policy, &prepared.compiled, refined) {
                    self.candidate = previous;
                    self.restage();
                    return Err(e);
                }
                let live = self
                    .names
                    .get(self.epoch)
                    .ok_or(ShadowError::NoLivePolicy)?;
                table(live, &self.live, &prepared.compiled, &prepared.policy).map_err(refuse)?
            }
        };
        let live = self
            .names
            .get(self.epoch)
            .ok_or(ShadowError::NoLivePolicy)?;
        let digest = live_digest(live);
        let staged_at = now_secs();
        let meta = meta_of(
            &path,
            digest,
            candidate_digest(&prepared.compiled),
            plain_digest,
            staged_at,
        )?;
        self.dp
            .stage_candidate(&decisions, &meta, true)
            .map_err(dp_err("staging the candidate"))?;
        log::info!(
            "staged candidate {} beside epoch {} (evaluated, not enforced)",
            crate::shown::Shown(&path),
            self.epoch
        );
        self.candidate = Some(Staged {
            path: path.clone(),
            policy: prepared.policy,
            compiled: Arc::new(prepared.compiled),
            fib: prepared.fib,
            live_digest: digest,
            plain_digest,
            staged_at,
        });
        Ok(format!(
            "staged {} on {} (counting disagreements from now)",
            path.display(),
            self.config.iface
        ))
    }

    /// Republishes the live policy over a common refinement of its own and
    /// the candidate's destination classes (an ordinary atomic flip: the
    /// same decisions, counters and names for every address), so the
    /// candidate's table can be laid over it.
    /// `ready`: that table, already prepared off the loop.
    fn refine_live(
        &mut self,
        policy: &Policy,
        compiled: &Compiled,
        ready: Option<Prepared>,
    ) -> Result<(), ShadowError> {
        let whence = if let Some(prepared) = ready {
            self.apply(prepared)
                .map_err(|e| ShadowError::from(Box::new(e)))?;
            "compiled off the event loop"
        } else {
            self.republish_live(&Refine::of(policy, compiled))?;
            "compiled on the event loop"
        };
        log::info!(
            "republished the live policy over {} destination classes to evaluate the candidate beside it ({whence})",
            self.names.get(self.epoch).map_or(0, |c| c.classes.len())
        );
        Ok(())
    }

    /// Republishes the live policy over its own classes if it was refined
    /// for a candidate (the same decisions, fewer classes).
    fn unrefine_live(&mut self) -> Result<(), ShadowError> {
        if self
            .names
            .get(self.epoch)
            .is_some_and(|l| !l.refined.is_empty())
        {
            self.republish_live(&Refine::default())?;
        }
        Ok(())
    }

    fn republish_live(&mut self, refine: &Refine) -> Result<(), ShadowError> {
        let path = self.config.policy.clone();
        let compiled =
            compile_refined(&self.live, refine).map_err(|source| super::PrepareError::Compile {
                path: path.clone(),
                source,
            })?;
        let prepared = finish(Arc::clone(&self.live), compiled, self.config.lookup, &path)?;
        self.apply(prepared)
            .map_err(|e| Box::new(e).into())
            .map(|_| ())
    }

    /// [`Self::restage`] after a publish; a candidate that was paused
    /// (`was_counting` false) and counts again says so, with the gap.
    pub(super) fn restage_after(&mut self, was_counting: bool) {
        self.restage();
        if let Some(staged) = &self.candidate
            && !was_counting
            && self.dp.candidate_evaluated()
        {
            log::warn!(
                "candidate {} counts again: the live policy is again the one it was staged against (what passed while it was paused is not in its counts)",
                crate::shown::Shown(&staged.path)
            );
        }
    }

    /// After a publish (a reload, a restart): stages the candidate again
    /// against the new table set if the live policy is the one it was
    /// staged against (counts go on); otherwise it stays paused.
    pub(super) fn restage(&mut self) {
        self.restage_refining(true);
    }

    /// [`Self::restage`]; with `refine`, the live policy the candidate was
    /// staged against, published plain (a reload of the same file, a
    /// restart), is republished over the refinement first.
    fn restage_refining(&mut self, refine: bool) {
        let Some(staged) = &self.candidate else {
            return;
        };
        if self.dp.candidate_evaluated() {
            // Carried over by the publish's own flip.
            return;
        }
        let Some(live) = self.names.get(self.epoch) else {
            return;
        };
        let digest = live_digest(live);
        if refine && staged.plain_digest != 0 && digest == staged.plain_digest {
            let Some(staged) = self.candidate.take() else {
                return;
            };
            let refined = self.refine_live(&staged.policy, &staged.compiled, None);
            self.candidate = Some(staged);
            match refined {
                Ok(()) => self.restage_refining(false),
                Err(e) => log::warn!("candidate paused: {e}"),
            }
            return;
        }
        if digest != staged.live_digest {
            log::warn!(
                "the live policy changed: candidate {} is paused (its counts are kept; stage it again, or promote --force)",
                crate::shown::Shown(&staged.path)
            );
            return;
        }
        let restaged = table(live, &self.live, &staged.compiled, &staged.policy)
            .map_err(|m| ShadowError::Incompatible {
                path: staged.path.clone(),
                why: reason(m),
            })
            .and_then(|decisions| {
                let meta = meta_of(
                    &staged.path,
                    staged.live_digest,
                    candidate_digest(&staged.compiled),
                    staged.plain_digest,
                    staged.staged_at,
                )?;
                self.dp
                    .stage_candidate(&decisions, &meta, false)
                    .map_err(dp_err("staging the candidate again"))
            });
        if let Err(e) = restaged {
            log::warn!("candidate paused: {e}");
        }
    }

    /// Makes the candidate live with one flip (a publish like a reload:
    /// every packet sees the old policy or the new one in full), then
    /// drops it. Refused when the live policy changed since staging,
    /// unless `force`.
    pub fn promote(&mut self, force: bool) -> Result<String, ShadowError> {
        let Some(staged) = self.candidate.as_ref() else {
            return Err(match self.dp.candidate_meta() {
                Ok(m) if m.staged == 1 => ShadowError::NotAdopted,
                _ => ShadowError::NotStaged,
            });
        };
        if !force && !self.dp.candidate_evaluated() {
            return Err(ShadowError::LiveChanged);
        }
        // The same guard as a reload: a candidate that would pass
        // everything (no rules, an emptied region) needs allow_empty.
        if let Some(why) = crate::policy::widening(&self.live, &staged.policy) {
            return Err(ShadowError::Widens {
                path: staged.path.clone(),
                why: why.to_string(),
            });
        }
        let prepared = Prepared {
            policy: Arc::clone(&staged.policy),
            compiled: (*staged.compiled).clone(),
            fib: staged.fib.clone(),
        };
        // Taken first, so the publish does not stage it against itself.
        let Some(staged) = self.candidate.take() else {
            return Err(ShadowError::NotStaged);
        };
        // The promoted file is the policy from here on (the publish names
        // it); put back if the publish fails.
        let before = std::mem::replace(&mut self.config.policy, staged.path.clone());
        let epoch = match self.apply(prepared) {
            Ok(epoch) => epoch,
            Err(e) => {
                // The old policy stays live: so does the candidate.
                self.config.policy = before;
                self.candidate = Some(staged);
                self.restage();
                return Err(Box::new(e).into());
            }
        };
        self.dp
            .discard_candidate()
            .map_err(dp_err("clearing the promoted candidate"))?;
        log::info!(
            "promoted candidate {} (epoch {epoch}); reloads now read it",
            crate::shown::Shown(&staged.path)
        );
        Ok(format!(
            "promoted {} on {} (epoch {epoch}); this controller now reloads from it (point the service's --policy at it too)",
            staged.path.display(),
            self.config.iface
        ))
    }

    /// Drops the candidate and its counts; a live table refined for it is
    /// republished over the live policy's own classes (same decisions).
    pub fn discard(&mut self) -> Result<String, ShadowError> {
        let Some(staged) = self.candidate.take() else {
            // Pinned by an earlier controller, its file unreadable since:
            // paused, and still discardable.
            if matches!(self.dp.candidate_meta(), Ok(m) if m.staged == 1) {
                self.dp
                    .discard_candidate()
                    .map_err(dp_err("discarding the candidate"))?;
                log::info!("discarded the pinned candidate (its file could not be read again)");
                return Ok(
                    "discarded the pinned candidate (its file could not be read again)".into(),
                );
            }
            return Err(ShadowError::NotStaged);
        };
        self.dp
            .discard_candidate()
            .map_err(dp_err("discarding the candidate"))?;
        if let Err(e) = self.unrefine_live() {
            log::warn!(
                "the live table stays refined for the discarded candidate (same verdicts): {e}"
            );
        }
        log::info!("discarded candidate {}", crate::shown::Shown(&staged.path));
        Ok(format!("discarded {}", staged.path.display()))
    }

    /// Names a candidate event (`None`: not one, or no candidate known).
    #[must_use]
    pub fn candidate_record(&self, event: &Event) -> Option<CandidateRecord> {
        let staged = self.candidate.as_ref()?;
        let live_verdict = Verdict::from_kernel(u32::from(event.live_verdict))?;
        let mut record = self.record(event)?;
        record.region = staged.compiled.region_name(event.region).to_string();
        record.rule = staged.compiled.rule_name(event.rule).to_string();
        Some(CandidateRecord {
            record,
            candidate: true,
            live_verdict,
        })
    }

    /// What a reload must compile the live policy over so the staged
    /// candidate carries over (`None`: none staged, or its live table was
    /// not refined).
    #[must_use]
    pub fn candidate_refinement(&self) -> Option<Refinement> {
        let staged = self.candidate.as_ref()?;
        (staged.plain_digest != 0).then(|| Refinement {
            policy: Arc::clone(&staged.policy),
            compiled: Arc::clone(&staged.compiled),
        })
    }

    /// Sends a candidate event to the clients streaming them.
    pub fn broadcast_candidate(&self, record: CandidateRecord) {
        if self.candidate_feed.receiver_count() > 0 {
            let _ = self.candidate_feed.send(Arc::new(record));
        }
    }

    /// The candidate events' stream (for the control socket).
    #[must_use]
    pub fn candidate_feed(&self) -> tokio::sync::broadcast::Sender<Arc<CandidateRecord>> {
        self.candidate_feed.clone()
    }
}

mod adopt;
mod client;
mod status;
mod table;
#[cfg(test)]
mod tests;

pub use adopt::read_pinned;
use client::outcome;
pub use client::{Client, Job, Refined, Refinement};
pub use table::{Mismatch, candidate_digest, live_digest, same_region_data, table};
