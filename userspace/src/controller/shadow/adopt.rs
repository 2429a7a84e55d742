//! Taking over the candidate a previous controller pinned: read again
//! from its file (refused if it no longer compiles to what was staged),
//! then carried into the starting controller's first publish, so it goes
//! on counting through the restart.

use std::{path::PathBuf, sync::Arc};

use regionwall_common::{CANDIDATE_PATH_BYTES, CandidateMeta};

use super::{Controller, Refinement, Staged, candidate_digest};
use crate::{
    controller::{Config, Prepared, prepare},
    datapath::Datapath,
};

/// The candidate pinned in `dp`'s maps, read again from its file (`None`:
/// none pinned, or its file changed or is unreadable: logged, and it
/// stays paused until staged again or discarded).
#[must_use]
pub fn read_pinned(dp: &Datapath, config: &Config) -> Option<Staged> {
    let meta = match dp.candidate_meta() {
        Ok(m) if m.staged == 1 => m,
        Ok(_) => return None,
        Err(e) => {
            log::warn!("reading the pinned candidate: {e}");
            return None;
        }
    };
    let text = pinned_path(&meta)?;
    let path = PathBuf::from(&text);
    let c = config;
    match prepare(&path, &c.options, c.limits, c.lookup, None) {
        Ok(prepared)
            if meta.candidate_digest != 0
                && candidate_digest(&prepared.compiled) != meta.candidate_digest =>
        {
            log::warn!(
                "the candidate {text} changed since it was staged: not adopted, so its counts are not put under other rules' names; it stays paused (stage it again, or discard it)"
            );
            None
        }
        Ok(prepared) => Some(Staged {
            path,
            policy: prepared.policy,
            compiled: Arc::new(prepared.compiled),
            fib: prepared.fib,
            live_digest: meta.live_digest,
            plain_digest: meta.plain_digest,
            staged_at: meta.staged_at,
        }),
        Err(e) => {
            log::warn!(
                "the pinned candidate {text} could not be read again ({e}); it stays paused until staged or discarded"
            );
            None
        }
    }
}

fn pinned_path(meta: &CandidateMeta) -> Option<String> {
    let len = (meta.path_len as usize).min(CANDIDATE_PATH_BYTES);
    std::str::from_utf8(&meta.path[..len])
        .ok()
        .map(str::to_string)
}

impl Staged {
    /// The live policy `live` as it must be published for this candidate
    /// to carry over: compiled over its refinement when the live table was
    /// refined for it (`None`: as prepared; or the refinement failed,
    /// logged, and the candidate is staged again once running).
    #[must_use]
    pub fn live_for(&self, live: &Prepared, config: &Config) -> Option<Prepared> {
        if self.plain_digest == 0 {
            return None;
        }
        let r = Refinement {
            policy: Arc::clone(&self.policy),
            compiled: Arc::clone(&self.compiled),
        };
        let plain = Prepared {
            policy: Arc::clone(&live.policy),
            compiled: live.compiled.clone(),
            fib: None,
        };
        r.refine(plain, config.lookup, &config.policy)
            .inspect_err(|e| log::warn!("refining the live policy for the pinned candidate: {e}"))
            .ok()
    }
}

impl Controller {
    /// On start: takes over `carried` (read by [`read_pinned`] before the
    /// first publish, which armed it if it applied) or, without it, the
    /// candidate pinned by the previous controller, read again now.
    pub(in crate::controller) fn adopt_candidate(&mut self, carried: Option<Staged>) {
        let staged = match carried {
            Some(s) => s,
            None => match read_pinned(&self.dp, &self.config) {
                Some(s) => s,
                None => return,
            },
        };
        let armed = self.dp.candidate_evaluated();
        let path = staged.path.display().to_string();
        self.candidate = Some(staged);
        self.restage();
        if armed {
            log::info!(
                "adopted the staged candidate {path} with its counts (counting through the restart)"
            );
        } else {
            log::info!("adopted the staged candidate {path} with its counts");
        }
    }
}
