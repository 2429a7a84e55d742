//! Retention: rows older than the age bound go, and the oldest rows go
//! whenever the database nears its size bound (checked after every commit
//! by the writer), so it never overshoots by more than a commit.

use std::time::{Duration, SystemTime};

use super::{Removed, Store, count, micros, sql};
use crate::history::HistoryError;

/// Past this percentage of `--max-db-size` after a commit, the writer
/// trims at once ([`Store::trim`]).
pub const TRIM_AT: u64 = 95;

/// What a trim brings the size down to (percent of the bound): room for
/// several commits before the next trim.
pub const TRIM_TO: u64 = 85;

impl Store {
    /// Removes events and rollups older than `max_age`, then the oldest
    /// events (and, with none left, the oldest rollups) until the file is
    /// under `max_bytes`, and hands the freed pages back to the disk.
    pub fn enforce_retention(
        &mut self,
        now: SystemTime,
        max_age: Duration,
        max_bytes: u64,
    ) -> Result<Removed, HistoryError> {
        let p = self.path.clone();
        let cutoff = now.checked_sub(max_age).map_or(0, micros);
        let mut removed = Removed {
            events: count(
                self.conn
                    .execute("DELETE FROM events WHERE ts < ?1", [cutoff])
                    .map_err(sql(&p, "removing old events"))?,
            ),
            rollups: count(
                self.conn
                    .execute(
                        "DELETE FROM rollups WHERE minute < ?1",
                        [cutoff / 1_000_000],
                    )
                    .map_err(sql(&p, "removing old rollups"))?,
            ),
        };
        if removed.events + removed.rollups > 0 {
            self.reclaim()?;
        }
        let trimmed = self.trim(max_bytes)?;
        removed.events += trimmed.events;
        removed.rollups += trimmed.rollups;
        Ok(removed)
    }

    /// Returns free pages to the file system and truncates the log.
    fn reclaim(&self) -> Result<(), HistoryError> {
        let p = self.path.as_path();
        // Each step of the pragma frees one page: run it to the end.
        let mut stmt = self
            .conn
            .prepare("PRAGMA incremental_vacuum")
            .map_err(sql(p, "vacuuming"))?;
        let mut rows = stmt.query([]).map_err(sql(p, "vacuuming"))?;
        while rows.next().map_err(sql(p, "vacuuming"))?.is_some() {}
        drop(rows);
        drop(stmt);
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(sql(p, "checkpointing"))
    }

    /// Removes the oldest events (and, with none left, the oldest rollups)
    /// until the database and its log are under [`TRIM_TO`] percent of
    /// `max_bytes`, and hands the freed pages back to the disk. Cheap when
    /// already under: three pragmas and a stat.
    pub fn trim(&mut self, max_bytes: u64) -> Result<Removed, HistoryError> {
        let p = self.path.clone();
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
            let events: i64 = self
                .conn
                .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
                .map_err(sql(&p, "counting events"))?;
            if events > 0 {
                let n = (events / 8).max(1);
                removed.events += count(
                    self.conn
                        .execute(
                            "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?1)",
                            [n],
                        )
                        .map_err(sql(&p, "removing the oldest events"))?,
                );
            } else {
                let gone = count(
                    self.conn
                        .execute(
                            "DELETE FROM rollups WHERE minute = (SELECT min(minute) FROM rollups)",
                            [],
                        )
                        .map_err(sql(&p, "removing the oldest rollups"))?,
                );
                if gone == 0 {
                    break;
                }
                removed.rollups += gone;
            }
        }
        Ok(removed)
    }

    /// Bounds the write-ahead log to a twentieth of `max_bytes` (between
    /// 64 KiB and 4 MiB): SQLite checkpoints it when it grows past that
    /// and truncates it back, so the log never makes up most of a small
    /// bound.
    pub fn limit_log(&self, max_bytes: u64) -> Result<(), HistoryError> {
        let p = self.path.as_path();
        let page: i64 = self
            .conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .map_err(sql(p, "reading the page size"))?;
        let bytes = (max_bytes / 20).clamp(64 << 10, 4 << 20);
        let pages = i64::try_from(bytes).unwrap_or(i64::MAX) / page.max(512);
        self.conn
            .execute_batch(&format!(
                "PRAGMA wal_autocheckpoint = {pages}; PRAGMA journal_size_limit = {bytes};"
            ))
            .map_err(sql(p, "bounding the log"))
    }
}
