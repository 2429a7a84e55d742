//! Diagnostics a person can act on: file, line, column, the offending text,
//! and what was expected.

use std::{fmt, path::PathBuf};

/// One problem found in a policy or a data file it reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// The offending text (may be empty, e.g. for a missing key).
    pub snippet: String,
    /// What is wrong and what was expected.
    pub message: String,
    /// The whole source line, for display.
    pub source_line: String,
}

impl Diagnostic {
    /// Builds a diagnostic from a byte span in `source`.
    #[must_use]
    pub fn at(
        file: impl Into<PathBuf>,
        source: &str,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> Self {
        Self::at_indexed(file, source, &Lines::new(source), span, message)
    }

    /// [`Diagnostic::at`] with a line index of `source` (see [`Lines`]).
    #[must_use]
    pub fn at_indexed(
        file: impl Into<PathBuf>,
        source: &str,
        lines: &Lines,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> Self {
        let start = span.start.min(source.len());
        let end = span.end.clamp(start, source.len());
        let (line, column, source_line) = lines.locate(source, start);
        let mut snippet = source.get(start..end).unwrap_or_default().to_string();
        if let Some(nl) = snippet.find('\n') {
            snippet.truncate(nl);
        }
        Self {
            file: file.into(),
            line,
            column,
            snippet,
            message: message.into(),
            source_line,
        }
    }

    /// A diagnostic at a known line and column of a line-oriented file.
    #[must_use]
    pub fn at_line(
        file: impl Into<PathBuf>,
        line: usize,
        column: usize,
        source_line: &str,
        snippet: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            line,
            column,
            snippet: snippet.to_string(),
            message: message.into(),
            source_line: source_line.to_string(),
        }
    }
}

/// Line (1-based), column (1-based, characters) and text of the line holding byte `offset`.
#[must_use]
pub fn locate(source: &str, offset: usize) -> (usize, usize, String) {
    Lines::new(source).locate(source, offset)
}

/// Where each line of a text starts, so that finding the line of an offset
/// is a binary search rather than a scan from the start (a policy with
/// 100 000 inline CIDRs looks up 100 000 lines).
#[derive(Clone, Debug)]
pub struct Lines {
    /// Byte offset of the start of each line; the first is 0.
    starts: Vec<usize>,
}

impl Lines {
    #[must_use]
    pub fn new(source: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { starts }
    }

    /// Line (1-based) of byte `offset`.
    #[must_use]
    pub fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|s| *s <= offset).max(1)
    }

    /// [`locate`] with this index of `source`.
    #[must_use]
    pub fn locate(&self, source: &str, offset: usize) -> (usize, usize, String) {
        let offset = floor_char_boundary(source, offset.min(source.len()));
        let line = self.line(offset);
        let line_start = self.starts[line - 1].min(offset);
        let column = source[line_start..offset].chars().count() + 1;
        let line_end = source[line_start..]
            .find('\n')
            .map_or(source.len(), |i| line_start + i);
        (
            line,
            column,
            source[line_start..line_end]
                .trim_end_matches('\r')
                .to_string(),
        )
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if !self.snippet.is_empty() && !self.message.contains(self.snippet.trim_matches('"')) {
            write!(f, " (found `{}`)", self.snippet)?;
        }
        if !self.source_line.is_empty() {
            let width = self.snippet.chars().count().max(1);
            write!(
                f,
                "\n    | {}\n    | {}{}",
                self.source_line,
                " ".repeat(self.column.saturating_sub(1)),
                "^".repeat(width)
            )?;
        }
        Ok(())
    }
}

/// Every error found in a policy, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {d}")?;
        }
        write!(
            f,
            "\n{} error{} found",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )
    }
}
