//! Paths and names from input as they are shown in logs and messages:
//! control characters escaped, so a file name with a newline or a terminal
//! escape cannot forge a log line or repaint the terminal.

use std::{borrow::Cow, fmt, path::Path};

/// `text` with every control character escaped (`\n`, `\u{1b}`, …).
#[must_use]
pub fn escaped(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        Cow::Owned(
            text.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

/// A path for display, control characters escaped.
pub struct Shown<'a>(pub &'a Path);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escaped(&self.0.to_string_lossy()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_forge_lines() {
        let evil = Path::new("/tmp/p\n[2099-01-01T00:00:00Z INFO  regionwall] fake\u{1b}[2J.toml");
        let shown = Shown(evil).to_string();
        assert!(
            !shown.contains('\n') && !shown.contains('\u{1b}'),
            "{shown}"
        );
        assert!(
            shown.contains("\\n[2099") && shown.contains("\\u{1b}[2J"),
            "{shown}"
        );
        assert_eq!(
            Shown(Path::new("/etc/regionwall/lan0.toml")).to_string(),
            "/etc/regionwall/lan0.toml"
        );
    }
}
