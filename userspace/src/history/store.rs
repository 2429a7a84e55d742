//! The history file: opened only when it is ours, its schema, event and rollup writes; retention in `retention`.

use std::{
    collections::BTreeMap,
    io::Read as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};

use super::{HistoryError, micros};
use crate::events::Record;

mod retention;
pub use retention::{TRIM_AT, TRIM_TO};

/// `PRAGMA application_id` of a regionwall history ("RWH1"): a SQLite file
/// without it that has tables is another program's, and is never written.
pub const APPLICATION_ID: i64 = 0x5257_4831;

/// Schema version (`PRAGMA user_version`) this build writes and reads.
pub const VERSION: i64 = 1;

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
-- 'country' by ISO code ('-' for none).
CREATE TABLE rollups (
    minute INTEGER NOT NULL,        -- seconds since the Unix epoch, a multiple of 60
    kind TEXT NOT NULL,
    device TEXT NOT NULL,
    key TEXT NOT NULL,
    verdict TEXT NOT NULL,
    packets INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (minute, kind, device, key, verdict)
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
}

impl Kind {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Region => "region",
            Self::Country => "country",
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
}

fn sql<'a>(
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
    pub fn open_read_only(path: &Path) -> Result<Self, HistoryError> {
        if !check_header(path)? {
            return Err(HistoryError::Missing {
                path: path.to_path_buf(),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql(path, "opening read-only"))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(sql(path, "setting the busy timeout"))?;
        let store = Self {
            conn,
            path: path.to_path_buf(),
            _lock: None,
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
                "PRAGMA auto_vacuum = INCREMENTAL; BEGIN; {SCHEMA} PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {VERSION}; COMMIT;"
            );
            return self
                .conn
                .execute_batch(&init)
                .map_err(sql(p, "creating the schema"));
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
        // Version 1 is the first schema: later versions migrate here, in
        // one transaction each, before anything is written.
        Ok(())
    }

    #[must_use]
    pub const fn conn(&self) -> &Connection {
        &self.conn
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

    /// Adds the counters' growth since the last rollup to the minute of
    /// `at`, and keeps the values as the next base, in one transaction (a
    /// failed write leaves the base as it was, so the next one counts it:
    /// nothing is lost or counted twice). A counter lower than its base
    /// was reset (pins removed and made again) and counts from zero.
    pub fn record_counters(
        &mut self,
        at: SystemTime,
        rows: &[Counted],
        origin: Origin,
    ) -> Result<u64, HistoryError> {
        let minute = micros(at) / 1_000_000 / 60 * 60;
        // One value per key (a name can appear twice when indices share it).
        let mut summed: BTreeMap<(Kind, &str, &str, &str), (u64, u64)> = BTreeMap::new();
        for r in rows {
            let e = summed
                .entry((r.kind, &r.device, &r.key, &r.verdict))
                .or_default();
            e.0 += r.packets;
            e.1 += r.bytes;
        }
        let p = self.path.clone();
        let tx = self
            .conn
            .transaction()
            .map_err(sql(&p, "starting a write"))?;
        if origin == Origin::Zero {
            tx.execute("DELETE FROM counter_base", [])
                .map_err(sql(&p, "resetting counter bases"))?;
        }
        let baselined = origin == Origin::Zero
            || tx
                .query_row(
                    "SELECT 1 FROM meta WHERE name = 'baselined'",
                    [],
                    |_| Ok(()),
                )
                .optional()
                .map_err(sql(&p, "reading meta"))?
                .is_some();
        let mut written = 0;
        {
            let mut base = tx
                .prepare(
                    "SELECT packets, bytes FROM counter_base WHERE kind = ?1 AND device = ?2 AND key = ?3 AND verdict = ?4",
                )
                .map_err(sql(&p, "preparing"))?;
            let mut set_base = tx
                .prepare(
                    "INSERT INTO counter_base VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT DO UPDATE SET packets = excluded.packets, bytes = excluded.bytes",
                )
                .map_err(sql(&p, "preparing"))?;
            let mut add = tx
                .prepare(
                    "INSERT INTO rollups VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT DO UPDATE SET packets = packets + excluded.packets, bytes = bytes + excluded.bytes",
                )
                .map_err(sql(&p, "preparing"))?;
            for ((kind, device, key, verdict), (packets, bytes)) in summed {
                let old: Option<(i64, i64)> = base
                    .query_row(params![kind.name(), device, key, verdict], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()
                    .map_err(sql(&p, "reading counter bases"))?;
                let now = (to_i64(packets), to_i64(bytes));
                let delta = match old {
                    Some((bp, bb)) if now.0 >= bp && now.1 >= bb => (now.0 - bp, now.1 - bb),
                    Some(_) => now,
                    None if baselined => now,
                    // The first snapshot ever, of counters adopted from
                    // pins: what they hold belongs to no known minute.
                    None => (0, 0),
                };
                if delta != (0, 0) {
                    add.execute(params![
                        minute,
                        kind.name(),
                        device,
                        key,
                        verdict,
                        delta.0,
                        delta.1
                    ])
                    .map_err(sql(&p, "writing rollups"))?;
                    written += 1;
                }
                set_base
                    .execute(params![kind.name(), device, key, verdict, now.0, now.1])
                    .map_err(sql(&p, "writing counter bases"))?;
            }
        }
        tx.execute("INSERT OR IGNORE INTO meta VALUES ('baselined', '1')", [])
            .map_err(sql(&p, "writing meta"))?;
        tx.commit().map_err(sql(&p, "committing rollups"))?;
        Ok(written)
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

fn wal_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
