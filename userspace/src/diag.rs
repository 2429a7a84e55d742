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

/// Where a file stops being UTF-8: a diagnostic at the line and column of
/// the first byte that is not, naming it. `what` says what the file should
/// hold ("a policy", "a CIDR list").
#[must_use]
pub fn not_utf8(
    file: impl Into<PathBuf>,
    bytes: &[u8],
    valid_up_to: usize,
    what: &str,
) -> Diagnostic {
    let good = &bytes[..valid_up_to.min(bytes.len())];
    let line = good.split(|b| *b == b'\n').count();
    let line_start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let line_end = bytes[line_start..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(bytes.len(), |i| line_start + i);
    let before = String::from_utf8_lossy(&good[line_start..]);
    let byte = bytes.get(valid_up_to).copied().unwrap_or(0);
    Diagnostic::at_line(
        file,
        line,
        before.chars().count() + 1,
        &String::from_utf8_lossy(&bytes[line_start..line_end]),
        "",
        format!(
            "byte 0x{byte:02x} is not UTF-8; expected UTF-8 text ({what}): is this a binary file, or saved in another encoding?"
        ),
    )
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

/// Characters of a source line shown around the column.
const EXCERPT: usize = 100;
/// Characters of an offending value shown (a 50 MB value is not printed).
const SNIPPET: usize = 60;
/// Characters of a message shown.
const MESSAGE: usize = 400;

/// `text` with control characters escaped, cut to `max` characters with
/// the number left out.
fn shortened(text: &str, max: usize) -> String {
    let escaped = crate::shown::escaped(text);
    let n = escaped.chars().count();
    if n <= max {
        escaped.into_owned()
    } else {
        let kept: String = escaped.chars().take(max).collect();
        format!("{kept}… ({} more characters)", n - max)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            // Not in a file (a command-line option): no position.
            return write!(
                f,
                "{}: {}",
                crate::shown::Shown(&self.file),
                shortened(&self.message, MESSAGE)
            );
        }
        write!(
            f,
            "{}:{}:{}: {}",
            crate::shown::Shown(&self.file),
            self.line,
            self.column,
            shortened(&self.message, MESSAGE)
        )?;
        if !self.snippet.is_empty() && !self.message.contains(self.snippet.trim_matches('"')) {
            write!(f, " (found `{}`)", shortened(&self.snippet, SNIPPET))?;
        }
        if !self.source_line.is_empty() {
            // A window of the line around the column, control characters
            // escaped; the caret counts the escaped characters before it.
            let chars: Vec<char> = self.source_line.chars().collect();
            let col = self.column.saturating_sub(1).min(chars.len());
            let start = col.saturating_sub(EXCERPT / 2);
            let end = (start + EXCERPT).min(chars.len());
            let piece = |from: usize, to: usize| {
                crate::shown::escaped(&chars[from..to].iter().collect::<String>()).into_owned()
            };
            let lead = if start > 0 { "…" } else { "" };
            let tail = if end < chars.len() { "…" } else { "" };
            let before = piece(start, col.max(start));
            let width = crate::shown::escaped(&self.snippet)
                .chars()
                .count()
                .clamp(1, EXCERPT);
            write!(
                f,
                "\n    | {lead}{}{tail}\n    | {}{}",
                piece(start, end),
                " ".repeat(lead.chars().count() + before.chars().count()),
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
