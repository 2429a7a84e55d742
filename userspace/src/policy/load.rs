//! Entry points: read a policy, parse, resolve and check it into a [`Policy`].
//!
//! Every error is collected rather than stopping at the first. Structural
//! errors (syntax, unknown keys, wrong types) are all collected
//! by the `schema` pass first.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use toml::Spanned;

use super::{Diagnostic, Diagnostics, Lines, Mode, Origin, Policy, parse::RawPolicy};
use crate::{
    input::{InputError, Inputs, Limits},
    sources::ByCountry,
};

/// A declared source of country data, as loaded (kept in the checker's
/// state, filled by `resolve`).
pub(super) enum SourceKind {
    Dir(PathBuf),
    Data(ByCountry),
    /// Could not be loaded; its errors are already reported.
    Failed,
}

/// A policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not a regular file, or over the size limit.
    #[error("policy {0}")]
    Input(InputError),
    #[error("{0}")]
    Invalid(Diagnostics),
}

impl From<InputError> for PolicyError {
    fn from(e: InputError) -> Self {
        match e {
            InputError::Io { path, source } => Self::Io { path, source },
            other => Self::Input(other),
        }
    }
}

/// Settings that do not come from the policy file.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Overrides the policy's `regions_dir` (`--regions-dir`).
    pub regions_dir: Option<PathBuf>,
    /// Data paths under `.0` are read under `.1` instead: `regionwall
    /// update` checks a staged version before it becomes `current`.
    pub staged: Option<(PathBuf, PathBuf)>,
}
/// Reads and validates a policy file. Data files named by regions and
/// sources are read relative to the policy's directory.
pub fn parse_file(path: &Path) -> Result<Policy, PolicyError> {
    parse_file_with(path, &Options::default())
}

/// [`parse_file`] with settings from the command line.
pub fn parse_file_with(path: &Path, options: &Options) -> Result<Policy, PolicyError> {
    parse_file_limited(path, options, Limits::default())
}

/// [`parse_file_with`], reading the policy and every file it names within
/// `limits` (`--max-file-size`).
pub fn parse_file_limited(
    path: &Path,
    options: &Options,
    limits: Limits,
) -> Result<Policy, PolicyError> {
    let mut inputs = Inputs::new(limits);
    let source = String::from_utf8(inputs.read(path)?).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        PolicyError::Invalid(Diagnostics(vec![crate::diag::not_utf8(
            path,
            e.as_bytes(),
            valid,
            "a policy",
        )]))
    })?;
    parse_text(&source, path, options, inputs)
}

/// Validates policy text that was read from `path`.
pub fn parse_str(source: &str, path: &Path) -> Result<Policy, PolicyError> {
    parse_str_with(source, path, &Options::default())
}

/// [`parse_str`] with settings from the command line.
pub fn parse_str_with(source: &str, path: &Path, options: &Options) -> Result<Policy, PolicyError> {
    let mut inputs = Inputs::new(Limits::default());
    inputs.note(path);
    parse_text(source, path, options, inputs)
}

/// Validates policy text read from `path`; data files are read through `inputs`.
fn parse_text(
    source: &str,
    path: &Path,
    options: &Options,
    inputs: Inputs,
) -> Result<Policy, PolicyError> {
    let raw = super::parse::parse(source, path).map_err(PolicyError::Invalid)?;
    let base_dir = path.parent().map_or_else(PathBuf::new, Path::to_path_buf);
    Checker {
        path,
        file: Arc::from(path),
        source,
        lines: Lines::new(source),
        base_dir,
        options,
        inputs,
        errors: Vec::new(),
        warnings: Vec::new(),
        loaded: HashMap::new(),
    }
    .run(&raw)
}
pub(super) struct Checker<'a> {
    pub(super) path: &'a Path,
    pub(super) file: Arc<Path>,
    pub(super) source: &'a str,
    /// Line index of `source`: positions of many values are looked up.
    pub(super) lines: Lines,
    pub(super) base_dir: PathBuf,
    pub(super) options: &'a Options,
    /// Every file and directory read, and the limits on reading.
    pub(super) inputs: Inputs,
    pub(super) errors: Vec<Diagnostic>,
    pub(super) warnings: Vec<Diagnostic>,
    /// Sources by name, loaded on first use.
    pub(super) loaded: HashMap<String, SourceKind>,
}
impl Checker<'_> {
    pub(super) fn diagnostic<T>(&self, at: &Spanned<T>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::at_indexed(self.path, self.source, &self.lines, at.span(), message)
    }

    pub(super) fn error<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        let d = self.diagnostic(at, message);
        self.errors.push(d);
    }

    pub(super) fn warn<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        let d = self.diagnostic(at, message);
        self.warnings.push(d);
    }

    pub(super) fn line_of<T>(&self, at: &Spanned<T>) -> usize {
        self.lines.line(at.span().start)
    }

    pub(super) fn origin<T>(&self, at: &Spanned<T>) -> Origin {
        Origin {
            file: self.file.clone(),
            line: self.line_of(at),
        }
    }

    /// Resolves and checks `raw` section by section, in the order the
    /// warnings are given; then every error, sorted by position, or the policy.
    fn run(mut self, raw: &RawPolicy) -> Result<Policy, PolicyError> {
        let default_mode = raw.mode.as_ref().map_or(Mode::Enforce, |m| self.mode(m));
        self.declare_sources(raw);
        let (mut regions, mut region_ids) = self.regions(raw);
        let (devices, device_ids) = self.devices(raw);
        let (groups, group_ids) = self.groups(raw, &device_ids);
        let named_regions = regions.len();
        let rules = self.rules(
            raw,
            default_mode,
            &mut regions,
            &mut region_ids,
            &device_ids,
            &group_ids,
        );
        let allow_empty = raw.allow_empty.unwrap_or(false);
        self.totals(&rules, &regions, allow_empty);
        let countries = self.country_db(raw);
        if !self.errors.is_empty() {
            self.errors
                .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
            return Err(PolicyError::Invalid(Diagnostics(self.errors)));
        }
        Ok(Policy {
            source: self.path.to_path_buf(),
            regions,
            named_regions,
            devices,
            groups,
            rules,
            allow_empty,
            inputs: self.inputs.into_paths(),
            warnings: self.warnings,
            countries,
            update_dir: raw
                .update
                .as_ref()
                .map(|u| self.base_dir.join(u.get_ref().dir.get_ref())),
        })
    }
}
