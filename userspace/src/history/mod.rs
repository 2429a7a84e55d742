//! History that survives restarts: events and per-minute counter rollups in an embedded SQLite file.
//!
//! - [`store`]: the file (refused when corrupt or foreign), its schema,
//!   event writes.
//! - [`rollup`]: counters into minute rollups (hosts bounded per device),
//!   minutes older than two days compacted into hours.
//! - `retention`: compaction, then age and size bounds.
//! - [`writer`]: the writer thread behind a bounded queue, batching
//!   commits and counting what it could not write.
//! - [`query`]: the queries `regionwall history` and `events --since` run.
//! - `lock`: one writer per file.

mod lock;
pub mod query;
mod retention;
pub mod rollup;
pub mod store;
pub mod writer;

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub use store::Store;

/// The database's file name inside the state directory.
pub const FILE: &str = "history.db";

/// Where state directories live by default (one per interface).
pub const STATE_ROOT: &str = "/var/lib/regionwall";

/// The default state directory of `iface`.
#[must_use]
pub fn default_state_dir(iface: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(iface)
}

/// Why the history could not be opened, written or read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(
        "{path} is not a SQLite database (corrupt, or another program's file); it is left untouched: move it away to start a new history"
    )]
    NotSqlite { path: PathBuf },
    #[error(
        "{path} is a SQLite database of another program (application id {application_id:#x}, tables {tables}); it is left untouched: move it away or choose another --state-dir"
    )]
    Foreign {
        path: PathBuf,
        application_id: i64,
        tables: String,
    },
    #[error(
        "{path} has history schema version {found}, newer than this regionwall reads ({supported}); it is left untouched"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("{path}: {what}: {source}")]
    Sqlite {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("no history at {path} (was `run` started with --no-history, or another --state-dir?)")]
    Missing { path: PathBuf },
    #[error(
        "{path} is not a regular file (a FIFO, a device, a directory); it is left untouched: move it away or choose another --state-dir"
    )]
    NotAFile { path: PathBuf },
    #[error(
        "{path} is being recorded into by another controller (same --state-dir); this one records nothing: give each interface its own --state-dir"
    )]
    Busy { path: PathBuf },
    #[error(
        "{path} is a regionwall history without its tables ({missing} missing); it is left untouched: move it away to start a new history"
    )]
    Incomplete { path: PathBuf, missing: String },
}

/// Microseconds since the Unix epoch (0 before it).
#[must_use]
pub fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The time `us` microseconds after the Unix epoch.
#[must_use]
pub fn from_micros(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

/// A size such as `512M`, `1G`, `64k` or `1000000` (bytes; binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = t
        .find(|c: char| !c.is_ascii_digit())
        .map_or((t, ""), |i| t.split_at(i));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (expected e.g. 512M, 1G, 64k)"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "{s:?}: unknown size unit {unit:?} (expected k, M, G or T)"
            ));
        }
    };
    n.checked_mul(mult)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("{s:?} is not a usable size (zero or too large)"))
}

/// The smallest `--max-db-size`: the empty schema takes 32 KiB and the
/// log is checkpointed at 64 KiB at the least, so a smaller bound could
/// not be held.
pub const MIN_DB_SIZE: u64 = 256 << 10;

/// A `--max-db-size`: a size of at least [`MIN_DB_SIZE`].
pub fn parse_db_size(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if n < MIN_DB_SIZE {
        return Err(format!(
            "{s:?} is below the smallest history bound, 256K (the schema and the log's checkpoint need that room)"
        ));
    }
    Ok(n)
}

/// An age such as `30d`, `12h` or `90min`.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} is not an age (expected e.g. 30d, 12h, 90min)"))
}

/// A point in time: an age back from `now` (`24h`, `7d`), a date
/// (`2026-11-30`, midnight UTC) or an RFC 3339 time
/// (`2026-11-30T08:00:00Z`).
pub fn parse_time(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    let t = s.trim();
    if let Ok(age) = humantime::parse_duration(t) {
        return now
            .checked_sub(age)
            .ok_or_else(|| format!("{s:?} reaches before the Unix epoch"));
    }
    if t.len() == 10
        && let Ok(day) = humantime::parse_rfc3339(&format!("{t}T00:00:00Z"))
    {
        return Ok(day);
    }
    humantime::parse_rfc3339_weak(t).map_err(|_| {
        format!("{s:?} is not a time (expected an age like 24h, a date like 2026-11-30, or 2026-11-30T08:00:00Z)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("12Q").unwrap_err().contains("\"12Q\""));
        assert!(parse_size("0").is_err());
        assert!(parse_size("M").is_err());
        assert_eq!(parse_db_size("256K"), Ok(256 << 10));
        assert!(
            parse_db_size("1K")
                .unwrap_err()
                .contains("smallest history bound")
        );
        assert!(parse_db_size("255K").is_err());
    }

    #[test]
    fn ages_and_times() {
        assert_eq!(parse_age("30d"), Ok(Duration::from_hours(30 * 24)));
        assert!(parse_age("soon").unwrap_err().contains("\"soon\""));
        let now = from_micros(2_000_000_000_000_000);
        assert_eq!(parse_time("24h", now), Ok(now - Duration::from_hours(24)));
        let day = parse_time("2026-11-30", now).expect("date");
        assert_eq!(micros(day) % 86_400_000_000, 0);
        assert!(parse_time("2026-11-30T08:00:00Z", now).is_ok());
        assert!(
            parse_time("yesterday", now)
                .unwrap_err()
                .contains("\"yesterday\"")
        );
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rw-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn a_fifo_or_a_directory_is_refused_at_once() {
        let d = scratch("fifo");
        let fifo = d.join(FILE);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        // Would block forever in open() if the FIFO were opened.
        assert!(matches!(
            Store::open(&fifo),
            Err(HistoryError::NotAFile { .. })
        ));
        assert!(matches!(
            Store::open_read_only(&fifo),
            Err(HistoryError::NotAFile { .. })
        ));
        let dir = d.join("dir.db");
        std::fs::create_dir(&dir).expect("mkdir");
        assert!(matches!(
            Store::open(&dir),
            Err(HistoryError::NotAFile { .. })
        ));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn our_id_without_our_tables_is_refused() {
        let d = scratch("notables");
        let db = d.join(FILE);
        let conn = rusqlite::Connection::open(&db).expect("sqlite");
        conn.execute_batch(&format!(
            "PRAGMA application_id = {}; CREATE TABLE t (x);",
            store::APPLICATION_ID
        ))
        .expect("id");
        drop(conn);
        let before = std::fs::read(&db).expect("read");
        match Store::open(&db) {
            Err(HistoryError::Incomplete { missing, .. }) => {
                assert_eq!(missing, "counter_base, events, meta, rollups");
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert_eq!(std::fs::read(&db).expect("read"), before, "left untouched");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_version_1_file_is_upgraded_with_its_rows_and_their_totals() {
        let d = scratch("v1");
        let db = d.join(FILE);
        let conn = rusqlite::Connection::open(&db).expect("sqlite");
        conn.execute_batch(&format!(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, ts INTEGER);
             CREATE TABLE rollups (minute INTEGER NOT NULL, kind TEXT NOT NULL, device TEXT NOT NULL, key TEXT NOT NULL,
                 verdict TEXT NOT NULL, packets INTEGER NOT NULL, bytes INTEGER NOT NULL,
                 PRIMARY KEY (minute, kind, device, key, verdict)) WITHOUT ROWID;
             CREATE TABLE counter_base (x);
             CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
             INSERT INTO rollups VALUES (60, 'region', 'tv', 'aa', 'drop', 3, 300),
                                        (60, 'region', 'pc', 'aa', 'drop', 2, 200),
                                        (60, 'country', 'tv', 'AA', 'drop', 3, 300);
             PRAGMA application_id = {}; PRAGMA user_version = 1;",
            store::APPLICATION_ID
        ))
        .expect("a version-1 file");
        drop(conn);
        let s = Store::open(&db).expect("upgraded");
        let q = |sql: &str| -> i64 { s.conn().query_row(sql, [], |r| r.get(0)).expect(sql) };
        assert_eq!(q("PRAGMA user_version"), store::VERSION);
        assert_eq!(q("SELECT count(*) FROM rollups WHERE kind != 'total'"), 3);
        assert_eq!(
            q(
                "SELECT packets FROM rollups WHERE kind = 'total' AND device = '*' AND verdict = 'drop'"
            ),
            5
        );
        assert_eq!(q("SELECT count(*) FROM rollups_hourly"), 0);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_second_writer_is_refused_while_the_first_holds_the_file() {
        let d = scratch("busy");
        let db = d.join(FILE);
        let first = Store::open(&db).expect("first writer");
        assert!(matches!(Store::open(&db), Err(HistoryError::Busy { .. })));
        // Readers are never refused.
        Store::open_read_only(&db).expect("reader");
        drop(first);
        Store::open(&db).expect("the lock goes with the first writer");
        let _ = std::fs::remove_dir_all(&d);
    }
}
