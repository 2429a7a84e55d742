//! `regionwall update`: fetch a policy's region data (conditionally, within
//! limits), verify it with the loaders and the share/churn/canary checks,
//! and make it live with one rename, reversibly.
//!
//! [`start`] fetches and verifies into a new version and switches
//! `current` to it, returning a [`Pending`] update the caller confirms
//! (the policy still loads, the running controllers reloaded) with
//! [`Pending::accept`] or undoes with [`Pending::reject`]: a rejected
//! version never stays current and is deleted. `fetch` downloads,
//! `source` decides per source whether and how to ask, `verify` judges, `store` keeps versions, `status` records, `maxmind` and
//! `archive` speak their formats.

pub mod archive;
pub mod fetch;
pub mod maxmind;
mod source;
pub mod status;
pub mod store;
pub mod verify;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::SystemTime,
};

use fetch::{Client, FetchError};
use status::{SourceStatus, Status};
use store::{Staging, Store, StoreError};
use verify::{Change, VerifyError};

use crate::{
    input::{Inputs, Limits},
    policy::{Fetch, Plan},
    sources::{self, ByCountry, LoadError},
};

/// Why an update failed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{url}: checksum mismatch: expected {expected}, the download has {got}")]
    Checksum {
        url: String,
        expected: String,
        got: String,
    },
    #[error("{url}: no md5 or sha256 digest for {name} in the checksum file")]
    NoDigest { url: String, name: String },
    #[error("{url}: {why}")]
    Protocol { url: String, why: String },
    #[error("license key {}: {why}", path.display())]
    Key { path: PathBuf, why: String },
    #[error("{url}: {why}")]
    Archive { url: String, why: String },
    #[error("the new data does not load: {0}")]
    Load(String),
    #[error("the policy does not load with the new data: {0}")]
    Policy(String),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("backed off after HTTP 429 until {until} (Unix seconds); not asking before then")]
    BackedOff { until: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("source {name}: {error}")]
    Source {
        name: String,
        #[source]
        error: Box<UpdateError>,
    },
}

impl UpdateError {
    fn of(name: &str) -> impl FnOnce(UpdateError) -> UpdateError + '_ {
        move |error| UpdateError::Source {
            name: name.to_string(),
            error: Box::new(error),
        }
    }
}

/// What became of one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Downloaded, verified, in the new version; its changes by country.
    Fetched(BTreeMap<String, Change>),
    /// Asked, and the copy we have is current (why: "304", "same checksum").
    Unchanged(&'static str),
    /// Not asked: fetched less than `interval` ago, or backed off.
    Skipped(&'static str),
}

/// What an update did, per source.
#[derive(Debug, Default)]
pub struct Report {
    pub sources: Vec<(String, Outcome)>,
    /// The version that was live before.
    pub previous: Option<u64>,
    /// The version made live (None: nothing changed).
    pub version: Option<u64>,
    /// Each named region of the policy: what the new data changes in it
    /// (empty when nothing changed or there was no data before).
    pub regions: BTreeMap<String, Change>,
    /// What the run found wrong and repaired (a corrupt status file moved
    /// aside, a status that disagreed with `current`).
    pub warnings: Vec<String>,
}

/// What accepting or rejecting a switched-in update did: the report, and
/// what failed after the switch, if anything (status not written, ...).
pub struct Finished {
    pub report: Report,
    pub problem: Option<UpdateError>,
}

/// An update switched in, waiting for the caller's confirmation.
pub struct Pending {
    store: Store,
    status: Status,
    /// The status before this run: the validators of the live copies.
    before: Status,
    now: u64,
    keep: u32,
    pub report: Report,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The next midnight (UTC) after `now`.
#[must_use]
pub fn next_day(now: u64) -> u64 {
    (now / 86_400 + 1) * 86_400
}

/// Fetches and verifies every source of `plan` as of `now`; if anything
/// changed, the new version is live when this returns. On error nothing
/// was switched and the status file says why.
pub async fn start(plan: &Plan, now: SystemTime) -> Result<Pending, UpdateError> {
    let store = Store::open(&plan.dir)?;
    let now = secs(now);
    let mut warnings = Vec::new();
    let mut before = match status::load(&plan.dir, now) {
        Ok(s) => s.unwrap_or_default(),
        Err(why) => {
            warnings.push(why);
            Status::default()
        }
    };
    // A run killed between the switch and the status write: the link is
    // the truth.
    if before.version != store.current() {
        warnings.push(format!(
            "the status file said version {}, but version {} is current: corrected",
            before
                .version
                .map_or_else(|| "none".into(), |v| v.to_string()),
            store
                .current()
                .map_or_else(|| "none".into(), |v| v.to_string()),
        ));
        before.version = store.current();
    }
    let mut status = before.clone();
    status.last_attempt = Some(now);
    let result = run(plan, &store, &mut status, now).await;
    match result {
        Ok(mut report) => {
            report.warnings = warnings;
            Ok(Pending {
                store,
                status,
                before,
                now,
                keep: plan.keep,
                report,
            })
        }
        Err(e) => {
            for w in &warnings {
                log::warn!("{w}");
            }
            status.error = Some(e.to_string());
            keep_validators(&mut status, &before);
            let _ = status::write(store.dir(), &status);
            Err(e)
        }
    }
}

/// The validators (ETag, Last-Modified, checksum) describe the live copy:
/// after a failed or rejected run they go back to what they were, so the
/// next run does not call a refused download "unchanged".
fn keep_validators(status: &mut Status, before: &Status) {
    for (name, st) in &mut status.sources {
        let old = before.sources.get(name).cloned().unwrap_or_default();
        st.etag = old.etag;
        st.last_modified = old.last_modified;
        st.checksum = old.checksum;
        st.sha256 = old.sha256;
    }
}

async fn run(
    plan: &Plan,
    store: &Store,
    status: &mut Status,
    now: u64,
) -> Result<Report, UpdateError> {
    let client = Client::new(fetch::Limits {
        connect_timeout: plan.connect_timeout,
        timeout: plan.timeout,
        max_size: plan.max_size,
        ca_file: plan.ca_file.clone(),
    })?;
    let current = store.current_dir();
    let staging = store.stage()?;
    let mut report = Report {
        previous: store.current(),
        ..Report::default()
    };
    let mut fetched = Vec::new();
    for f in &plan.sources {
        let st = status.sources.entry(f.name.clone()).or_default();
        let have = current
            .as_ref()
            .map(|c| c.join(&f.target))
            .filter(|p| p.exists());
        let outcome = source::one(&client, plan, f, have.as_deref(), &staging, st, now)
            .await
            .map_err(UpdateError::of(&f.name));
        match outcome {
            Ok(Some(why)) => {
                if let Some(have) = &have {
                    store::link_tree(have, &staging.path().join(&f.target))?;
                }
                report.sources.push((f.name.clone(), why));
            }
            Ok(None) => fetched.push(f),
            Err(e) => {
                st.error = Some(e.to_string());
                return Err(e);
            }
        }
    }
    if fetched.is_empty() {
        return Ok(report);
    }
    verify_all(plan, current.as_deref(), &staging, &fetched, &mut report).inspect_err(|e| {
        if let UpdateError::Source { name, .. } = e
            && let Some(st) = status.sources.get_mut(name)
        {
            st.error = Some(e.to_string());
        }
    })?;
    let new = check_policy(plan, &staging)?;
    if current.is_some()
        && let Ok(old) = crate::policy::parse_file_limited(
            &plan.policy,
            &crate::policy::Options::default(),
            limits(plan),
        )
    {
        report.regions = verify::region_changes(&old, &new);
    }
    let n = store.commit(staging)?;
    store.switch(n)?;
    report.version = Some(n);
    Ok(report)
}

/// Loads every fetched source (the loaders are the first check), compares
/// it with the current copy, and checks the canaries against the whole
/// new version.
fn verify_all(
    plan: &Plan,
    current: Option<&Path>,
    staging: &Staging,
    fetched: &[&Fetch],
    report: &mut Report,
) -> Result<(), UpdateError> {
    let limits = verify::Limits {
        min_share: plan.min_share,
        max_churn: plan.max_churn,
    };
    // Errors name the file as `<new>/…`: the staging directory is gone
    // by the time anyone reads them.
    let staged = staging.path().display().to_string();
    let named = |e: UpdateError| match e {
        UpdateError::Load(text) => UpdateError::Load(text.replace(&staged, "<new>")),
        other => other,
    };
    for f in fetched {
        let new = load(&f.format, &staging.path().join(&f.target), plan.max_size)
            .map_err(named)
            .map_err(UpdateError::of(&f.name))?;
        let old = match current.map(|c| c.join(&f.target)).filter(|p| p.exists()) {
            Some(p) => load(&f.format, &p, plan.max_size).unwrap_or_default(),
            None => ByCountry::default(),
        };
        let changes = verify::changes(&old, &new);
        verify::check(&changes, limits).map_err(|e| UpdateError::of(&f.name)(e.into()))?;
        report
            .sources
            .push((f.name.clone(), Outcome::Fetched(changes)));
    }
    if !plan.canaries.is_empty() {
        let all: Vec<ByCountry> = plan
            .sources
            .iter()
            .map(|f| load(&f.format, &staging.path().join(&f.target), plan.max_size))
            .collect::<Result<_, _>>()?;
        let refs: Vec<&ByCountry> = all.iter().collect();
        verify::canaries(&plan.canaries, &refs)?;
    }
    Ok(())
}

/// The policy itself must load with the staged version (read in place
/// of `current`), before anything is switched.
fn check_policy(plan: &Plan, staging: &Staging) -> Result<crate::policy::Policy, UpdateError> {
    let options = crate::policy::Options {
        staged: Some((plan.dir.join("current"), staging.path().to_path_buf())),
        ..crate::policy::Options::default()
    };
    crate::policy::parse_file_limited(&plan.policy, &options, limits(plan)).map_err(|e| {
        UpdateError::Policy(
            e.to_string()
                .replace(&staging.path().display().to_string(), "<new>"),
        )
    })
}

/// Data files are read within `max_size` (and never below the default).
fn limits(plan: &Plan) -> Limits {
    Limits {
        max_file_size: plan.max_size.max(Limits::default().max_file_size),
    }
}

/// The data at `path` through the loader of `format`.
pub fn load(format: &str, path: &Path, max_size: u64) -> Result<ByCountry, UpdateError> {
    let mut inputs = Inputs::new(Limits {
        max_file_size: max_size,
    });
    let field = sources::geolite2::CountryField::Located;
    let result = match format {
        "rir" => sources::rir::load(path, &mut inputs).map(|(d, _)| d),
        "mmdb" => sources::mmdb::load(path, field, &mut inputs),
        "range-csv" => sources::range_csv::load(path, &mut inputs),
        "geolite2-csv" => sources::geolite2::load(path, field, &mut inputs),
        _ => {
            let mut d = ByCountry::default();
            for code in sources::country_dir::codes(path) {
                let list = sources::country_dir::load(path, &code, &mut inputs)
                    .map_err(|e| UpdateError::Load(load_text(&e)))?;
                d.countries.insert(code, list);
            }
            Ok(d)
        }
    };
    result.map_err(|e| UpdateError::Load(load_text(&e)))
}

fn load_text(e: &LoadError) -> String {
    use std::fmt::Write as _;
    match e {
        LoadError::Invalid(diags) => {
            let shown: Vec<String> = diags.iter().take(3).map(ToString::to_string).collect();
            let more = diags.len().saturating_sub(3);
            let mut s = shown.join("; ");
            if more > 0 {
                let _ = write!(s, " (and {more} more)");
            }
            s
        }
        other => other.to_string(),
    }
}

impl Pending {
    /// Keeps the new version (if any): older versions beyond `keep` are
    /// pruned and the status records the success. The report comes back
    /// even when that fails, with the failure beside it: the version is
    /// live either way.
    #[must_use]
    pub fn accept(mut self) -> Finished {
        let pruned = self.store.prune(self.keep);
        // Only sources asked, and only now that everything is verified
        // and live, count as a success; a run that asked nobody leaves
        // the last success and error as they were.
        let mut asked = false;
        for (name, outcome) in &self.report.sources {
            if !matches!(outcome, Outcome::Skipped(_))
                && let Some(st) = self.status.sources.get_mut(name)
            {
                asked = true;
                st.last_success = Some(self.now);
                st.error = None;
            }
        }
        if asked {
            self.status.error = None;
            self.status.last_success = Some(self.now);
        }
        self.status.version = self.store.current();
        let written = self.write_status();
        Finished {
            problem: pruned.err().map(UpdateError::from).or(written.err()),
            report: self.report,
        }
    }

    /// The new version is undone: the previous one is live again and the
    /// new one deleted; `why` is recorded. If switching back fails, the
    /// report still names the new version (it is live).
    #[must_use]
    pub fn reject(mut self, why: &str) -> Finished {
        if let Some(new) = self.report.version {
            let back = match self.report.previous {
                Some(old) => self.store.switch(old),
                None => std::fs::remove_file(self.store.dir().join("current")).map_err(|e| {
                    StoreError::Io {
                        what: "removing",
                        path: self.store.dir().join("current"),
                        source: e,
                    }
                }),
            };
            if let Err(e) = back {
                return Finished {
                    report: self.report,
                    problem: Some(e.into()),
                };
            }
            self.report.version = None;
            if let Err(e) = self.store.remove(new) {
                log::warn!("{e}");
            }
        }
        for (name, outcome) in &self.report.sources {
            if matches!(outcome, Outcome::Fetched(_))
                && let Some(st) = self.status.sources.get_mut(name)
            {
                st.error = Some(why.to_string());
            }
        }
        keep_validators(&mut self.status, &self.before);
        self.status.error = Some(why.to_string());
        self.status.version = self.store.current();
        Finished {
            problem: self.write_status().err(),
            report: self.report,
        }
    }

    fn write_status(&self) -> Result<(), UpdateError> {
        status::write(self.store.dir(), &self.status).map_err(|source| {
            StoreError::Io {
                what: "writing status in",
                path: self.store.dir().to_path_buf(),
                source,
            }
            .into()
        })
    }
}

/// Makes the version before the live one live again (the caller tells
/// the controllers); returns (left, now live).
pub fn rollback(dir: &Path) -> Result<(u64, u64), UpdateError> {
    let store = Store::open(dir)?;
    let r = store.rollback()?;
    // A corrupt status is moved aside here too, not carried on.
    let mut status = status::load(dir, secs(SystemTime::now()))
        .ok()
        .flatten()
        .unwrap_or_default();
    status.version = Some(r.1);
    // The rolled-back sources are asked again next time.
    for st in status.sources.values_mut() {
        *st = SourceStatus {
            backoff_until: st.backoff_until,
            ..SourceStatus::default()
        };
    }
    let _ = status::write(dir, &status);
    Ok(r)
}
