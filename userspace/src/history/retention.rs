//! Retention: minute rollups compacted into hours, rows removed by age and, near the size bound, oldest first (after every commit).
//!
//! Each pass by age (every minute, on the writer thread):
//! 1. once an hour (the step scans the minute table, keyed by kind and
//!    device first): minute rollups older than 48 hours are summed into
//!    `rollups_hourly` and removed (`Store::compact`), then minute and
//!    hourly rollups older than the retention are removed (an hour once
//!    its first second is);
//! 2. events older than the retention are removed;
//! 3. the size trim below.
//!
//! The size trim ([`Store::trim`]) runs after every commit too, once the
//! file and its log pass [`TRIM_AT`] percent of the bound: until they are
//! under [`TRIM_TO`] percent, the oldest eighth of the events go, or with
//! none left the oldest hour of hourly rollups, or with none left the
//! oldest minute of minute rollups; freed pages go back to the disk and the
//! log is truncated. Commits and the log are bounded to a twentieth of the
//! bound ([`Store::limit_log`]), so the file passes it by at most a commit.

use std::time::{Duration, SystemTime};

use super::{
    HistoryError, micros,
    store::{Removed, Store, count, sql},
};

/// Past this percentage of `--max-db-size` after a commit, the writer
/// trims at once ([`Store::trim`]).
pub const TRIM_AT: u64 = 95;

/// What a trim brings the size down to (percent of the bound): room for
/// several commits before the next trim.
pub const TRIM_TO: u64 = 85;

impl Store {
    /// Compacts, then removes events and rollups older than `max_age`,
    /// then the oldest rows until the file is under `max_bytes`, and hands
    /// the freed pages back to the disk (the steps are in the module's
    /// documentation).
    pub fn enforce_retention(
        &mut self,
        now: SystemTime,
        max_age: Duration,
        max_bytes: u64,
    ) -> Result<Removed, HistoryError> {
        // The rollup steps scan the minute table: once an hour.
        let hour = micros(now) / 1_000_000 / 3600;
        let rollups_due = self.rollups_passed != Some(hour);
        if rollups_due {
            self.compact(now)?;
            self.rollups_passed = Some(hour);
        }
        let p = self.path().to_path_buf();
        let cutoff = now.checked_sub(max_age).map_or(0, micros);
        let conn = self.conn();
        let delete = |sql_text: &str, at: i64, what: &'static str| {
            conn.execute(sql_text, [at])
                .map(count)
                .map_err(sql(&p, what))
        };
        let mut removed = Removed {
            events: delete(
                "DELETE FROM events WHERE ts < ?1",
                cutoff,
                "removing old events",
            )?,
            rollups: 0,
        };
        if rollups_due {
            removed.rollups = delete(
                "DELETE FROM rollups WHERE minute < ?1",
                cutoff / 1_000_000,
                "removing old rollups",
            )? + delete(
                "DELETE FROM rollups_hourly WHERE hour < ?1",
                cutoff / 1_000_000,
                "removing old hourly rollups",
            )?;
        }
        if removed.events + removed.rollups > 0 {
            self.reclaim()?;
        }
        let trimmed = self.trim(max_bytes)?;
        removed.events += trimmed.events;
        removed.rollups += trimmed.rollups;
        Ok(removed)
    }

    /// Removes the oldest rows (the steps are in the module's
    /// documentation) until the database and its log are under [`TRIM_TO`]
    /// percent of `max_bytes`, and hands the freed pages back to the disk.
    /// Cheap when already under: three pragmas and a stat.
    pub fn trim(&mut self, max_bytes: u64) -> Result<Removed, HistoryError> {
        let p = self.path().to_path_buf();
        let mut removed = Removed::default();
        let target = max_bytes / 100 * TRIM_TO;
        if self.size()? <= target {
            return Ok(removed);
        }
        for _ in 0..64 {
            self.reclaim()?;
            if self.size()? <= target {
                break;
            }
            let conn = self.conn();
            let events: i64 = conn
                .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
                .map_err(sql(&p, "counting events"))?;
            if events > 0 {
                let n = (events / 8).max(1);
                removed.events += conn
                    .execute(
                        "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?1)",
                        [n],
                    )
                    .map(count)
                    .map_err(sql(&p, "removing the oldest events"))?;
                continue;
            }
            let mut gone = 0;
            for oldest in [
                "DELETE FROM rollups_hourly WHERE hour = (SELECT min(hour) FROM rollups_hourly)",
                "DELETE FROM rollups WHERE minute = (SELECT min(minute) FROM rollups)",
            ] {
                gone = conn
                    .execute(oldest, [])
                    .map(count)
                    .map_err(sql(&p, "removing the oldest rollups"))?;
                if gone > 0 {
                    break;
                }
            }
            if gone == 0 {
                break;
            }
            removed.rollups += gone;
        }
        Ok(removed)
    }

    /// Returns free pages to the file system and truncates the log.
    fn reclaim(&self) -> Result<(), HistoryError> {
        let p = self.path();
        // Each step of the pragma frees one page: run it to the end.
        let mut stmt = self
            .conn()
            .prepare("PRAGMA incremental_vacuum")
            .map_err(sql(p, "vacuuming"))?;
        let mut rows = stmt.query([]).map_err(sql(p, "vacuuming"))?;
        while rows.next().map_err(sql(p, "vacuuming"))?.is_some() {}
        drop(rows);
        drop(stmt);
        self.conn()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(sql(p, "checkpointing"))
    }

    /// Bounds the write-ahead log to a twentieth of `max_bytes` (between
    /// 64 KiB and 4 MiB): SQLite checkpoints it when it grows past that
    /// and truncates it back, so the log never makes up most of a small
    /// bound.
    pub fn limit_log(&self, max_bytes: u64) -> Result<(), HistoryError> {
        let p = self.path();
        let page: i64 = self
            .conn()
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .map_err(sql(p, "reading the page size"))?;
        let bytes = (max_bytes / 20).clamp(64 << 10, 4 << 20);
        let pages = i64::try_from(bytes).unwrap_or(i64::MAX) / page.max(512);
        self.conn()
            .execute_batch(&format!(
                "PRAGMA wal_autocheckpoint = {pages}; PRAGMA journal_size_limit = {bytes};"
            ))
            .map_err(sql(p, "bounding the log"))
    }
}
