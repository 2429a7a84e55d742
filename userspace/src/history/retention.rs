//! Retention: minute rollups compacted into hours, then rows removed by age and, over the size bound, oldest first.
//!
//! Each pass (every minute, on the writer thread):
//! 1. once an hour (the step scans the minute table, keyed by kind and
//!    device first): minute rollups older than 48 hours are summed into
//!    `rollups_hourly` and removed (`Store::compact`), then minute and
//!    hourly rollups older than the retention are removed (an hour once
//!    its first second is);
//! 2. events older than the retention are removed;
//! 3. while the file is over 90 % of its size bound: the oldest eighth of
//!    the events, or with none left the oldest hour of hourly rollups, or
//!    with none left the oldest minute of minute rollups;
//! 4. freed pages go back to the disk and the log is truncated.

use std::time::{Duration, SystemTime};

use super::{
    HistoryError, micros,
    store::{Removed, Store, count, sql},
};

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
        // Room for a minute's writes below the bound.
        let target = max_bytes / 10 * 9;
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
}
