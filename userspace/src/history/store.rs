//! The history file: opened only when it is ours, its schema, event and rollup writes (retention and compaction are in `retention`).

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    time::Duration,
};

use rusqlite::{Connection, OpenFlags, params};

use super::{HistoryError, micros};
use crate::events::Record;

/// `PRAGMA application_id` of a regionwall history ("RWH1"): a SQLite file
/// without it that has tables is another program's, and is never written.
pub const APPLICATION_ID: i64 = 0x5257_4831;

/// Schema version (`PRAGMA user_version`) this build writes and reads
/// (2 added `rollups_hourly`, keyed rollups by kind and device first, and
/// added the `total` rows; a version-1 file is upgraded by the writer and
/// read as it is by readers).
pub const VERSION: i64 = 2;

/// Minute rollups older than this are compacted into hourly rows.
pub const MINUTES_KEPT: Duration = Duration::from_hours(48);

/// Version 1's rollups keyed anew (kind and device first), with their
/// totals.
const TO_V2: &str = "
CREATE TABLE rollups_v2 (
    minute INTEGER NOT NULL, kind TEXT NOT NULL, device TEXT NOT NULL, key TEXT NOT NULL,
    verdict TEXT NOT NULL, packets INTEGER NOT NULL, bytes INTEGER NOT NULL,
    PRIMARY KEY (kind, device, minute, key, verdict)
) WITHOUT ROWID;
INSERT INTO rollups_v2 SELECT minute, kind, device, key, verdict, packets, bytes FROM rollups;
INSERT INTO rollups_v2 SELECT minute, 'total', '*', '*', verdict, sum(packets), sum(bytes)
    FROM rollups WHERE kind = 'region' GROUP BY minute, verdict;
DROP TABLE rollups;
ALTER TABLE rollups_v2 RENAME TO rollups;
";

/// The hourly table (version 2).
const HOURLY: &str = "
-- Minute rollups older than 48 hours, summed per hour (the same keys).
CREATE TABLE IF NOT EXISTS rollups_hourly (
    hour INTEGER NOT NULL,          -- seconds since the Unix epoch, a multiple of 3600
    kind TEXT NOT NULL,
    device TEXT NOT NULL,
    key TEXT NOT NULL,
    verdict TEXT NOT NULL,
    packets INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (kind, device, hour, key, verdict)
) WITHOUT ROWID;
";

const SCHEMA: &str = "
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,            -- microseconds since the Unix epoch
    interface TEXT NOT NULL,
    device TEXT NOT NULL,
    mac TEXT NOT NULL,
    src_ip TEXT,
    dst_ip TEXT,
    proto TEXT NOT NULL,
    src_port INTEGER,
    dst_port INTEGER,
    country TEXT NOT NULL,
    host TEXT,
    canonical TEXT,
    resolved INTEGER,               -- NULL: DNS answers not watched
    region TEXT NOT NULL,
    rule TEXT NOT NULL,
    verdict TEXT NOT NULL,
    reason TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    policy_epoch INTEGER NOT NULL
);
CREATE INDEX events_ts ON events (ts);
-- Per-minute deltas of the kernel counters: kind 'region' keys by region,
-- 'country' by ISO code ('-' for none), 'host' by host name (the biggest
-- hosts of each device in the minute, the rest as '(other)'; verdict
-- 'pass' for passed and audited, 'drop' for dropped and rejected), 'total'
-- (device and key '*') sums the region rows of the minute per verdict.
-- Keyed by kind and device first: a device's rows, and the totals, are
-- one range each.
CREATE TABLE rollups (
    minute INTEGER NOT NULL,        -- seconds since the Unix epoch, a multiple of 60
    kind TEXT NOT NULL,
    device TEXT NOT NULL,
    key TEXT NOT NULL,
    verdict TEXT NOT NULL,
    packets INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (kind, device, minute, key, verdict)
) WITHOUT ROWID;
-- The counter values the last rollup was taken against.
CREATE TABLE counter_base (
    kind TEXT NOT NULL,
    device TEXT NOT NULL,
    key TEXT NOT NULL,
    verdict TEXT NOT NULL,
    packets INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (kind, device, key, verdict)
) WITHOUT ROWID;
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
";

/// Which counter family a row is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Region,
    Country,
    Host,
    /// Every device's region rows summed (device and key `*`).
    Total,
}

impl Kind {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Region => "region",
            Self::Country => "country",
            Self::Host => "host",
            Self::Total => "total",
        }
    }
}

/// One kernel counter as read: cumulative packets and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counted {
    pub kind: Kind,
    pub device: String,
    /// Region name or country code.
    pub key: String,
    pub verdict: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Where the counters of a snapshot started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The pins were made by this controller: counters began at zero, so
    /// every count is new (bases of earlier pins no longer apply).
    Zero,
    /// The counters go on from before (adopted pins, or a later snapshot
    /// of this controller): counted against the stored bases.
    Continued,
}

/// What retention removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub events: u64,
    pub rollups: u64,
}

/// An open history database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The writer's lock (`None` when read-only).
    _lock: Option<std::os::fd::OwnedFd>,
    /// The hour the rollups were last compacted and aged up to (the
    /// passes scan the minute table: once an hour is enough).
    pub(super) rollups_passed: Option<i64>,
}

pub(super) fn sql<'a>(
    path: &'a Path,
    what: &'static str,
) -> impl FnOnce(rusqlite::Error) -> HistoryError + 'a {
    move |source| match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
            HistoryError::NotSqlite {
                path: path.to_path_buf(),
            }
        }
        _ => HistoryError::Sqlite {
            path: path.to_path_buf(),
            what,
            source,
        },
    }
}

/// Refuses a non-empty file that does not start with SQLite's header
/// (before SQLite sees it: it would treat some files as empty databases).
fn check_header(path: &Path) -> Result<bool, HistoryError> {
    let io = |what, source| HistoryError::Io {
        path: path.to_path_buf(),
        what,
        source,
    };
    // Opening a FIFO would wait for a writer forever, and a device may
    // do anything: only a regular file (through any symlinks) is read.
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => {
            return Err(HistoryError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io("inspecting", e)),
    }
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io("opening", e)),
    };
    let mut head = Vec::with_capacity(16);
    file.by_ref()
        .take(16)
        .read_to_end(&mut head)
        .map_err(|e| io("reading", e))?;
    if head.is_empty() {
        return Ok(false);
    }
    if head != b"SQLite format 3\0" {
        return Err(HistoryError::NotSqlite {
            path: path.to_path_buf(),
        });
    }
    Ok(true)
}

impl Store {
    /// Opens (or creates) the history at `path` for writing. A file that
    /// is not a regionwall history is refused and left as it is.
    pub fn open(path: &Path) -> Result<Self, HistoryError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| HistoryError::Io {
                path: dir.to_path_buf(),
                what: "creating the state directory",
                source,
            })?;
        }
        check_header(path)?;
        let lock = super::lock::writer(path)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql(path, "opening"))?;
        let store = Self {
            conn,
            path: path.to_path_buf(),
            _lock: Some(lock),
            rollups_passed: None,
        };
        store.identify(true)?;
        let p = path;
        store
            .conn
            .busy_timeout(Duration::from_secs(5))
            .map_err(sql(p, "setting the busy timeout"))?;
        // WAL: readers (`regionwall history`) never block the writer, and a
        // crash loses at most the transactions not yet committed.
        store
            .conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
            .map_err(sql(p, "turning on WAL"))?;
        store
            .conn
            .execute_batch("PRAGMA synchronous = NORMAL; PRAGMA journal_size_limit = 4194304;")
            .map_err(sql(p, "setting pragmas"))?;
        Ok(store)
    }

    /// Opens an existing history read-only (works beside a running writer).
    /// Where the reader may not write the log's shared-memory file (a
    /// read-only mount, another user), it reads the file alone as
    /// immutable: what the log still holds, the last seconds, is missing.
    pub fn open_read_only(path: &Path) -> Result<Self, HistoryError> {
        if !check_header(path)? {
            return Err(HistoryError::Missing {
                path: path.to_path_buf(),
            });
        }
        match Self::read_only_with(path, false) {
            Ok(store) => Ok(store),
            Err(e) => {
                let store = Self::read_only_with(path, true).map_err(|_| e)?;
                log::warn!(
                    "{}: read without its write-ahead log (this user may not write beside it): the newest events may be missing",
                    path.display()
                );
                Ok(store)
            }
        }
    }

    fn read_only_with(path: &Path, immutable: bool) -> Result<Self, HistoryError> {
        let conn = if immutable {
            let uri = format!("file:{}?immutable=1", uri_path(path));
            Connection::open_with_flags(
                uri,
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_URI
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
        } else {
            Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
        }
        .map_err(sql(path, "opening read-only"))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(sql(path, "setting the busy timeout"))?;
        let store = Self {
            conn,
            path: path.to_path_buf(),
            _lock: None,
            rollups_passed: None,
        };
        store.identify(false)?;
        Ok(store)
    }

    /// Checks that the file is ours and of a version this build reads;
    /// with `create`, makes the schema in an empty database.
    fn identify(&self, create: bool) -> Result<(), HistoryError> {
        let p = self.path.as_path();
        let app: i64 = self
            .conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(sql(p, "reading the application id"))?;
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql(p, "reading the schema version"))?;
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .map_err(sql(p, "reading the schema"))?;
        let tables: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .and_then(Iterator::collect)
            .map_err(sql(p, "reading the schema"))?;
        drop(stmt);
        if app == 0 && tables.is_empty() {
            if !create {
                return Err(HistoryError::Missing {
                    path: self.path.clone(),
                });
            }
            // auto_vacuum must be chosen before the first table exists:
            // incremental lets retention hand freed pages back to the disk.
            let init = format!(
                "PRAGMA auto_vacuum = INCREMENTAL; BEGIN; {SCHEMA} {HOURLY} PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {VERSION}; COMMIT;"
            );
            self.conn
                .execute_batch(&init)
                .map_err(sql(p, "creating the schema"))?;
            return self.view();
        }
        if app != APPLICATION_ID {
            return Err(HistoryError::Foreign {
                path: self.path.clone(),
                application_id: app,
                tables: if tables.is_empty() {
                    "none".into()
                } else {
                    tables.join(", ")
                },
            });
        }
        if version > VERSION {
            return Err(HistoryError::TooNew {
                path: self.path.clone(),
                found: version,
                supported: VERSION,
            });
        }
        let missing: Vec<&str> = ["counter_base", "events", "meta", "rollups"]
            .into_iter()
            .filter(|t| !tables.iter().any(|have| have == t))
            .collect();
        if !missing.is_empty() {
            return Err(HistoryError::Incomplete {
                path: self.path.clone(),
                missing: missing.join(", "),
            });
        }
        // Later versions migrate here, in one transaction each, before
        // anything is written; readers read an older file as it is.
        if version < 2 && create {
            self.conn
                .execute_batch(&format!(
                    "BEGIN; {HOURLY} {TO_V2} PRAGMA user_version = 2; COMMIT;"
                ))
                .map_err(sql(p, "upgrading the rollups to version 2"))?;
        }
        self.view()
    }

    /// `all_rollups`, a view of this connection only (`TEMP`: read-only
    /// connections may make it): minute rows and hourly rows as one table
    /// (`minute` is the hour's first second for hourly rows).
    fn view(&self) -> Result<(), HistoryError> {
        let p = self.path.as_path();
        let hourly: bool = self
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'rollups_hourly'",
                [],
                |r| r.get::<_, i64>(0).map(|n| n > 0),
            )
            .map_err(sql(p, "reading the schema"))?;
        let cols = "kind, device, key, verdict, packets, bytes";
        let union = if hourly {
            format!(" UNION ALL SELECT hour, {cols} FROM main.rollups_hourly")
        } else {
            String::new()
        };
        self.conn
            .execute_batch(&format!(
                "CREATE TEMP VIEW IF NOT EXISTS all_rollups AS SELECT minute, {cols} FROM main.rollups{union};"
            ))
            .map_err(sql(p, "making the rollups view"))
    }

    #[must_use]
    pub const fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The connection, to write through (`rollup`, `retention`).
    pub(super) const fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `records` in one transaction.
    pub fn insert_events(
        &mut self,
        records: &[std::sync::Arc<Record>],
    ) -> Result<(), HistoryError> {
        let p = self.path.clone();
        let tx = self
            .conn
            .transaction()
            .map_err(sql(&p, "starting a write"))?;
        {
            let mut stmt = tx
                .prepare(
                    "INSERT INTO events (ts, interface, device, mac, src_ip, dst_ip, proto, src_port, dst_port, country, host, canonical, resolved, region, rule, verdict, reason, bytes, policy_epoch)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
                )
                .map_err(sql(&p, "preparing the event insert"))?;
            for r in records {
                let ts = humantime::parse_rfc3339(&r.timestamp).map_or(0, micros);
                stmt.execute(params![
                    ts,
                    r.interface,
                    r.device,
                    r.src_mac,
                    r.src_ip.map(|a| a.to_string()),
                    r.dst_ip.map(|a| a.to_string()),
                    r.protocol,
                    r.src_port,
                    r.dst_port,
                    r.country,
                    r.host,
                    r.canonical,
                    r.resolved,
                    r.region,
                    r.rule,
                    r.verdict.to_string(),
                    r.reason,
                    r.bytes,
                    r.policy_epoch,
                ])
                .map_err(sql(&p, "writing events"))?;
            }
        }
        tx.commit().map_err(sql(&p, "committing events"))
    }

    /// Bytes the database holds in use (pages not on the free list) plus
    /// its write-ahead log.
    pub fn size(&self) -> Result<u64, HistoryError> {
        let p = self.path.as_path();
        let q = |name: &str| -> Result<i64, HistoryError> {
            self.conn
                .pragma_query_value(None, name, |r| r.get(0))
                .map_err(sql(p, "reading the size"))
        };
        let used = (q("page_count")? - q("freelist_count")?) * q("page_size")?;
        let wal = std::fs::metadata(wal_path(p)).map_or(0, |m| m.len());
        Ok(u64::try_from(used).unwrap_or(0) + wal)
    }
}

/// `path` escaped for a SQLite `file:` URI (`%`, `?` and `#` have meanings
/// there).
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn wal_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

pub(super) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
