//! The update status file (`<dir>/status.json`): last attempt and success,
//! overall and per source, the validators sent next time, 429 back-off;
//! [`read`] is the cheap call `stats`, metrics and the dashboard use.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// Name of the status file inside the data directory.
pub const FILE: &str = "status.json";

/// What the last updates did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// Unix seconds of the last run (`regionwall update`).
    pub last_attempt: Option<u64>,
    /// Unix seconds of the last run that ended without error.
    pub last_success: Option<u64>,
    /// Why the last run failed (None: it did not).
    pub error: Option<String>,
    /// The live version.
    pub version: Option<u64>,
    #[serde(default)]
    pub sources: BTreeMap<String, SourceStatus>,
}

/// One source's state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceStatus {
    pub last_attempt: Option<u64>,
    /// Last time the source was asked (a 304 or a failure counts): the
    /// interval runs from here.
    pub last_fetch: Option<u64>,
    /// Last time it was fetched and verified (changed or not).
    pub last_success: Option<u64>,
    pub error: Option<String>,
    /// Validators of the live copy.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// The published checksum (or MaxMind md5) of the live copy.
    pub checksum: Option<String>,
    /// sha256 of the body the live copy came from (a file:// mirror or a
    /// server without validators still downloads nothing new).
    #[serde(default)]
    pub sha256: Option<String>,
    /// After HTTP 429: not asked again before this (Unix seconds).
    pub backoff_until: Option<u64>,
}

impl Status {
    /// For `stats`: the last attempt and success, and each source's error.
    #[must_use]
    pub fn lines(&self) -> String {
        use std::fmt::Write as _;
        let when = |t: Option<u64>| {
            t.map_or_else(
                || "never".to_string(),
                |s| {
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
                    )
                    .to_string()
                },
            )
        };
        let mut out = format!(
            "data update: last attempt {}, last success {}, version {}\n",
            when(self.last_attempt),
            when(self.last_success),
            self.version.map_or_else(|| "-".into(), |v| v.to_string())
        );
        if let Some(e) = &self.error {
            let _ = writeln!(out, "  update error: {e}");
        }
        for (name, s) in &self.sources {
            let _ = writeln!(
                out,
                "  source {name}: last fetch {}, last success {}{}",
                when(s.last_fetch),
                when(s.last_success),
                s.error
                    .as_ref()
                    .map(|e| format!(", error: {e}"))
                    .unwrap_or_default()
            );
        }
        out
    }
}

/// Reads the status of the data directory `dir`; a missing or unreadable
/// file is `None` (never an error: the callers only show it). A file that
/// does not parse is shown as a status whose error says so (the next
/// `update` moves it aside), not as "never updated".
#[must_use]
pub fn read(dir: &Path) -> Option<Status> {
    let bytes = crate::input::read(
        &dir.join(FILE),
        crate::input::Limits {
            max_file_size: 1 << 20,
        },
    )
    .ok()?;
    Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| Status {
        error: Some(format!(
            "{FILE} is corrupt ({e}); the next update moves it aside and starts afresh"
        )),
        ..Status::default()
    }))
}

/// Reads the status for an update run at `now`: `Ok(None)` when there is
/// none; a file that does not parse is moved aside (`status.json.bad-<now>`)
/// and `Err` says so, since its back-offs and history are lost.
pub fn load(dir: &Path, now: u64) -> Result<Option<Status>, String> {
    let path = dir.join(FILE);
    let bytes = match crate::input::read(
        &path,
        crate::input::Limits {
            max_file_size: 1 << 20,
        },
    ) {
        Ok(b) => b,
        Err(crate::input::InputError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(None);
        }
        Err(e) => return Err(format!("status file unreadable ({e}); starting afresh")),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        let aside = dir.join(format!("{FILE}.bad-{now}"));
        let moved = std::fs::rename(&path, &aside).map_or_else(
            |r| format!("not moved: {r}"),
            |()| format!("moved to {}", aside.display()),
        );
        format!(
            "{} is corrupt ({e}; {moved}); its back-offs and history are lost, starting afresh",
            path.display()
        )
    })
}

/// Writes `status` atomically (temporary file, fsync, rename); the
/// temporary file is removed on failure.
pub fn write(dir: &Path, status: &Status) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp: PathBuf = dir.join(".status.tmp");
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(FILE))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_shows_errors() {
        let dir = std::env::temp_dir().join(format!("rwupd-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        assert_eq!(read(&dir), None, "no file: nothing to show");
        let mut s = Status {
            last_attempt: Some(1_800_000_000),
            version: Some(3),
            error: Some("source apnic: HTTP 404".into()),
            ..Status::default()
        };
        s.sources.insert(
            "apnic".into(),
            SourceStatus {
                last_fetch: Some(1_800_000_000),
                error: Some("HTTP 404".into()),
                ..SourceStatus::default()
            },
        );
        write(&dir, &s).expect("write");
        assert_eq!(read(&dir).as_ref(), Some(&s));
        assert_eq!(
            s.lines(),
            "data update: last attempt 2027-01-15T08:00:00Z, last success never, version 3\n  \
             update error: source apnic: HTTP 404\n  \
             source apnic: last fetch 2027-01-15T08:00:00Z, last success never, error: HTTP 404\n"
        );
        std::fs::write(dir.join(FILE), b"{\"version\": ").expect("corrupt");
        let shown = read(&dir).expect("a corrupt file is shown").lines();
        assert!(
            shown.contains("update error: status.json is corrupt ("),
            "{shown}"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
