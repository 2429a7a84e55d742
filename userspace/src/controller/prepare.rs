//! Reading, checking and compiling a policy: the slow part of a (re)load,
//! run on a blocking thread so the controller keeps serving its socket,
//! signals and interface meanwhile. A policy that would silently widen what
//! passes is refused here, before anything reaches the kernel.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use regionwall_common::Lookup;

use crate::{
    CompileError, FibError, PolicyError,
    compile::{self, Compiled},
    fib::{Capacity, Fib},
    input::Limits,
    policy::{self, Policy},
};

/// A policy ready to publish.
pub struct Prepared {
    pub policy: Arc<Policy>,
    /// As compiled: [`crate::datapath::Datapath::publish_stable`] renumbers
    /// it onto the stable counter slots when it is published.
    pub compiled: Compiled,
    /// The compiled lookup (`None` with `--lookup lpm`).
    pub fib: Option<Fib>,
}

/// Why a policy was not prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("policy {} rejected:\n{diags}", crate::shown::Shown(path))]
    Invalid {
        path: PathBuf,
        diags: policy::Diagnostics,
    },
    #[error("loading policy {}: {source}", crate::shown::Shown(path))]
    Load {
        path: PathBuf,
        #[source]
        source: PolicyError,
    },
    #[error("compiling policy {}: {source}", crate::shown::Shown(path))]
    Compile {
        path: PathBuf,
        #[source]
        source: CompileError,
    },
    #[error(
        "building the compiled lookup of {} (try --lookup lpm): {source}",
        crate::shown::Shown(path)
    )]
    Fib {
        path: PathBuf,
        #[source]
        source: FibError,
    },
    #[error("policy {} refused: {why}", crate::shown::Shown(path))]
    Widens { path: PathBuf, why: String },
}

/// Reads, checks and compiles `path`. With `live` (a reload), a policy
/// that would widen what passes to everything is refused unless it says
/// `allow_empty = true`.
pub fn prepare(
    path: &Path,
    options: &policy::Options,
    limits: Limits,
    lookup: Lookup,
    live: Option<&Policy>,
) -> Result<Prepared, PrepareError> {
    let parsed = match policy::parse_file_limited(path, options, limits) {
        Ok(p) => p,
        Err(PolicyError::Invalid(diags)) => {
            return Err(PrepareError::Invalid {
                path: path.to_path_buf(),
                diags,
            });
        }
        Err(source) => {
            return Err(PrepareError::Load {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if let Some(live) = live
        && let Some(why) = policy::widening(live, &parsed)
    {
        return Err(PrepareError::Widens {
            path: path.to_path_buf(),
            why: why.to_string(),
        });
    }
    for w in &parsed.warnings {
        log::warn!("{w}");
    }
    let compiled = compile::compile(&parsed).map_err(|source| PrepareError::Compile {
        path: path.to_path_buf(),
        source,
    })?;
    finish(Arc::new(parsed), compiled, lookup, path)
}

/// Whether the chosen lookup needs the compiled tables.
#[must_use]
pub const fn builds_fib(lookup: Lookup) -> bool {
    matches!(lookup, Lookup::Compiled)
}

/// Builds the compiled lookup of `compiled` (when `lookup` uses one).
pub fn finish(
    policy: Arc<Policy>,
    compiled: Compiled,
    lookup: Lookup,
    path: &Path,
) -> Result<Prepared, PrepareError> {
    if matches!(lookup, Lookup::Lpm) {
        compile::lpm_fits(&compiled).map_err(|source| PrepareError::Compile {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let fib = if builds_fib(lookup) {
        let unlimited = Capacity {
            slots: usize::MAX,
            ranges: usize::MAX,
            long: usize::MAX,
        };
        Some(
            Fib::build(&compiled.v4, &compiled.v6, unlimited).map_err(|source| {
                PrepareError::Fib {
                    path: path.to_path_buf(),
                    source,
                }
            })?,
        )
    } else {
        None
    };
    Ok(Prepared {
        policy,
        compiled,
        fib,
    })
}
