//! The control socket's handle on the candidate: prepares it (and the
//! live policy refined for it) off the event loop, then hands the loop a
//! [`Job`].

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::sync::{mpsc, oneshot};

use super::{ShadowError, same_region_data};
use crate::{
    candidate::Status,
    compile::{Refine, compile_refined},
    control::Ack as Outcome,
    controller::{Config, PrepareError, Prepared, prepare, prepare::finish},
    policy::Policy,
};

/// What the control socket asks the loop to do.
pub enum Job {
    Stage(
        Box<Prepared>,
        Option<Box<Refined>>,
        PathBuf,
        oneshot::Sender<Outcome>,
    ),
    Status(oneshot::Sender<Status>),
    Promote(bool, oneshot::Sender<Outcome>),
    Discard(oneshot::Sender<Outcome>),
}

/// The socket's handle: prepares a candidate off the loop, then hands it
/// to the loop with a [`Job`].
#[derive(Clone)]
pub struct Client {
    pub(super) tx: mpsc::Sender<Job>,
    pub(super) config: Config,
    pub(super) live: tokio::sync::watch::Receiver<Arc<Policy>>,
    /// Held from reading a candidate to its staging: stages apply in the
    /// order they were asked for (a slow one never lands after a later
    /// one and silently replaces it).
    pub(super) staging: Arc<tokio::sync::Mutex<()>>,
}

/// The live policy compiled over a common refinement with a candidate,
/// prepared off the loop; used if `live` is still the live policy.
pub struct Refined {
    pub(super) live: Arc<Policy>,
    pub(super) prepared: Prepared,
}

/// The candidate, and the live policy refined for it when its region data
/// differs from `live`'s (the slow part of staging it, off the loop).
fn prepare_both(
    path: &Path,
    c: &Config,
    live: Arc<Policy>,
) -> Result<(Prepared, Option<Box<Refined>>), ShadowError> {
    let candidate = prepare(path, &c.options, c.limits, c.lookup, None)?;
    if same_region_data(&live, &candidate.policy) {
        return Ok((candidate, None));
    }
    let refine = Refine::of(&candidate.policy, &candidate.compiled);
    let compiled = compile_refined(&live, &refine).map_err(|source| PrepareError::Compile {
        path: c.policy.clone(),
        source,
    })?;
    let prepared = finish(Arc::clone(&live), compiled, c.lookup, &c.policy)?;
    Ok((candidate, Some(Box::new(Refined { live, prepared }))))
}

/// A staged candidate the live table was refined for: a reload compiles
/// the live policy over the same refinement (off the loop), so the publish
/// carries the candidate over instead of pausing it.
pub struct Refinement {
    pub(super) policy: Arc<Policy>,
    pub(super) compiled: Arc<crate::compile::Compiled>,
}

impl Refinement {
    /// `prepared` compiled again over the candidate's refinement.
    pub fn refine(
        &self,
        prepared: Prepared,
        lookup: regionwall_common::Lookup,
        path: &Path,
    ) -> Result<Prepared, PrepareError> {
        let refine = Refine::of(&self.policy, &self.compiled);
        let compiled =
            compile_refined(&prepared.policy, &refine).map_err(|source| PrepareError::Compile {
                path: path.to_path_buf(),
                source,
            })?;
        finish(prepared.policy, compiled, lookup, path)
    }
}

pub(super) fn outcome(result: Result<String, ShadowError>) -> Outcome {
    match result {
        Ok(message) => Outcome { ok: true, message },
        Err(e) => Outcome {
            ok: false,
            message: e.to_string(),
        },
    }
}

impl Client {
    /// Reads and compiles `path` on a blocking thread (with the live
    /// policy refined for it when needed), then stages it.
    pub async fn stage(&self, path: PathBuf) -> Outcome {
        let _turn = self.staging.lock().await;
        let c = self.config.clone();
        let p = path.clone();
        let live = Arc::clone(&self.live.borrow());
        let prepared = tokio::task::spawn_blocking(move || prepare_both(&p, &c, live)).await;
        let (prepared, refined) = match prepared {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return outcome(Err(e)),
            Err(e) => {
                return Outcome {
                    ok: false,
                    message: format!("the policy loader panicked: {e}"),
                };
            }
        };
        self.ask(|tx| Job::Stage(Box::new(prepared), refined, path, tx))
            .await
    }

    pub async fn status(&self) -> Option<Status> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Job::Status(tx)).await.ok()?;
        rx.await.ok()
    }

    pub async fn promote(&self, force: bool) -> Outcome {
        self.ask(|tx| Job::Promote(force, tx)).await
    }

    pub async fn discard(&self) -> Outcome {
        self.ask(Job::Discard).await
    }

    async fn ask(&self, job: impl FnOnce(oneshot::Sender<Outcome>) -> Job) -> Outcome {
        let (tx, rx) = oneshot::channel();
        let gone = Outcome {
            ok: false,
            message: "the controller is stopping".into(),
        };
        if self.tx.send(job(tx)).await.is_err() {
            return gone;
        }
        rx.await.unwrap_or(gone)
    }
}
