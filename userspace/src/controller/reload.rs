//! When and how the policy is re-read: SIGHUP and file changes request a
//! reload, changes are debounced until the files stop changing, the policy
//! is prepared on a blocking thread (one at a time; a request meanwhile
//! runs once more after it), then published by the controller.

use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
};

use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::Instant,
};

use super::{
    Config, Controller, PrepareError, Prepared, prepare,
    watch::{DEBOUNCE, Watch},
};
use crate::{control::Ack, policy::Policy};

type Loading = JoinHandle<Result<Prepared, PrepareError>>;

/// What [`Reloads::next`] saw.
pub enum Trigger {
    /// A watched file changed: wait for quiet.
    Changed(PathBuf),
    /// The files have been quiet for [`DEBOUNCE`]: reload.
    Quiet,
    /// A preparation ended.
    Prepared(Box<Result<Result<Prepared, PrepareError>, tokio::task::JoinError>>),
}

/// The reload state of one controller.
pub struct Reloads {
    watching: bool,
    watch: Option<Watch>,
    changes_tx: mpsc::Sender<PathBuf>,
    changes: mpsc::Receiver<PathBuf>,
    quiet_at: Option<Instant>,
    loading: Option<(Loading, &'static str)>,
    again: Option<&'static str>,
    /// Who asked (`reload` on the socket) for the running preparation, and
    /// for the one after it: each told how it ended.
    waiting: Vec<oneshot::Sender<Ack>>,
    waiting_again: Vec<oneshot::Sender<Ack>>,
}

/// Prepares the configured policy on a blocking thread; with `live`, a
/// policy that would widen what passes is refused. With `refine` (a
/// staged candidate the live table was refined for), it is compiled over
/// the same refinement, so the publish can carry the candidate over.
#[must_use]
pub fn spawn_prepare(
    config: &Config,
    live: Option<Arc<Policy>>,
    refine: Option<super::shadow::Refinement>,
) -> Loading {
    let (path, options, limits, lookup) = (
        config.policy.clone(),
        config.options.clone(),
        config.limits,
        config.lookup,
    );
    tokio::task::spawn_blocking(move || {
        let prepared = prepare(&path, &options, limits, lookup, live.as_deref())?;
        match refine {
            Some(r) => r.refine(prepared, lookup, &path),
            None => Ok(prepared),
        }
    })
}

impl Reloads {
    /// Starts watching `policy` (before it is first read, so a save while
    /// loading is not lost) unless `watching` is false.
    #[must_use]
    pub fn new(watching: bool, policy: &std::path::Path) -> Self {
        let (changes_tx, changes) = mpsc::channel(64);
        let mut reloads = Self {
            watching,
            watch: None,
            changes_tx,
            changes,
            quiet_at: None,
            loading: None,
            again: None,
            waiting: Vec::new(),
            waiting_again: Vec::new(),
        };
        reloads.watch(&[policy.to_path_buf()]);
        reloads
    }

    /// Watches `inputs` (every file and directory the live policy read),
    /// replacing the previous watch; a failure keeps the previous one.
    pub fn watch(&mut self, inputs: &[PathBuf]) {
        if !self.watching {
            return;
        }
        // Re-arming drops the old watch and whatever it had queued but not
        // read: only when the files to watch changed.
        if self.watch.as_ref().is_some_and(|w| w.watches(inputs)) {
            return;
        }
        match Watch::start(inputs, self.changes_tx.clone()) {
            Ok(w) => self.watch = Some(w),
            Err(e) => log::warn!("not watching the policy's files ({e}); SIGHUP reloads"),
        }
    }

    /// Does what the control socket asked of the candidate. A promote
    /// while a reload is being prepared is refused (the reload, read from
    /// the old file, would replace the promoted policy when it lands); a
    /// promote that went through moves the file watch to the promoted
    /// policy's files.
    pub fn shadow(&mut self, ctl: &mut Controller, job: super::shadow::Job) {
        let job = match job {
            super::shadow::Job::Promote(_, reply) if self.loading.is_some() => {
                let _ = reply.send(Ack {
                    ok: false,
                    message: super::shadow::ShadowError::ReloadPending.to_string(),
                });
                return;
            }
            job => job,
        };
        let before = ctl.live_policy();
        ctl.shadow(job);
        let after = ctl.live_policy();
        if !Arc::ptr_eq(&before, &after) {
            self.watch(&after.inputs);
        }
    }

    /// Asks for a reload: started now, or once more after the running one.
    pub fn request(&mut self, ctl: &Controller, why: &'static str) {
        if self.loading.is_some() {
            self.again = Some(why);
        } else {
            self.loading = Some((
                spawn_prepare(
                    ctl.config(),
                    Some(ctl.live_policy()),
                    ctl.candidate_refinement(),
                ),
                why,
            ));
        }
    }

    /// A reload asked for through the control socket: `reply` is told
    /// whether a preparation started after this moment was applied.
    pub fn request_answered(&mut self, ctl: &Controller, reply: oneshot::Sender<Ack>) {
        if self.loading.is_some() {
            self.waiting_again.push(reply);
        } else {
            self.waiting.push(reply);
        }
        self.request(ctl, "reload requested");
    }

    fn answer(&mut self, ok: bool, message: &str) {
        for reply in self.waiting.drain(..) {
            let _ = reply.send(Ack {
                ok,
                message: message.to_string(),
            });
        }
    }

    /// The next thing that happened (cancel-safe: for `select!`).
    pub async fn next(&mut self) -> Trigger {
        let quiet = async {
            match self.quiet_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let loaded = async {
            match self.loading.as_mut() {
                Some((h, _)) => h.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(path) = self.changes.recv() => Trigger::Changed(path),
            () = quiet => Trigger::Quiet,
            done = loaded => Trigger::Prepared(Box::new(done)),
        }
    }

    /// Acts on what [`Self::next`] saw: debounces, starts, or publishes
    /// through `ctl` (the old policy stays on any error, logged).
    pub fn handle(&mut self, ctl: &mut Controller, trigger: Trigger) {
        match trigger {
            Trigger::Changed(path) => {
                log::debug!("{} changed", path.display());
                self.quiet_at = Some(Instant::now() + DEBOUNCE);
            }
            Trigger::Quiet => {
                self.quiet_at = None;
                self.request(ctl, "policy file changed");
            }
            Trigger::Prepared(done) => {
                let why = self.loading.take().map_or("reload", |(_, w)| w);
                let old = ctl.epoch();
                match *done {
                    Ok(Ok(prepared)) => {
                        let inputs = prepared.policy.inputs.clone();
                        match ctl.apply(prepared) {
                            Ok(epoch) => {
                                ctl.tally().reloads_ok.fetch_add(1, Ordering::Relaxed);
                                self.watch(&inputs);
                                log::info!("reloaded policy ({why}; epoch {epoch})");
                                self.answer(true, &format!("reloaded (epoch {epoch})"));
                                super::release_freed_memory();
                            }
                            Err(e) => {
                                ctl.tally().reloads_failed.fetch_add(1, Ordering::Relaxed);
                                log::error!(
                                    "reload ({why}) failed, previous policy (epoch {old}) still enforcing: {e}"
                                );
                                self.answer(false, &format!("reload failed, previous policy (epoch {old}) still enforcing: {e}"));
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        ctl.tally().reloads_rejected.fetch_add(1, Ordering::Relaxed);
                        log::error!(
                            "reload ({why}) rejected, previous policy (epoch {old}) still enforcing: {e}"
                        );
                        self.answer(false, &format!("reload rejected, previous policy (epoch {old}) still enforcing: {e}"));
                    }
                    Err(e) => {
                        ctl.tally().reloads_failed.fetch_add(1, Ordering::Relaxed);
                        log::error!(
                            "reload ({why}) failed, previous policy (epoch {old}) still enforcing: the loader panicked: {e}"
                        );
                        self.answer(false, &format!("reload failed, previous policy (epoch {old}) still enforcing: the loader panicked"));
                    }
                }
                self.waiting.append(&mut self.waiting_again);
                if let Some(why) = self.again.take() {
                    self.request(ctl, why);
                }
            }
        }
    }
}
