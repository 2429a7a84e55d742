//! The per-minute totals of the last 24 hours kept in memory (the series without history, and the minutes not yet rolled up).

use std::{collections::VecDeque, time::SystemTime};

use serde::{Deserialize, Serialize};

use crate::{control::Stats, verdict::Verdict};

/// Minutes the ring keeps (24 hours).
pub const MINUTES: usize = 24 * 60;

/// Totals of one minute (or a running total).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Minute {
    /// Start of the minute, unix seconds.
    pub t: u64,
    pub upload_bytes: u64,
    pub drop_packets: u64,
    pub drop_bytes: u64,
}

impl Minute {
    /// Running totals of a snapshot (`t` unset).
    #[must_use]
    pub fn of(stats: &Stats) -> Self {
        let mut m = Self::default();
        for row in &stats.traffic {
            m.upload_bytes += row.bytes;
            if matches!(row.verdict, Verdict::Drop | Verdict::Reject) {
                m.drop_packets += row.packets;
                m.drop_bytes += row.bytes;
            }
        }
        m
    }

    /// What `now` adds to `before`; a counter that went backwards was
    /// reset, and counts from zero.
    #[must_use]
    pub fn since(now: Self, before: Self) -> Self {
        let d = |n: u64, b: u64| if n >= b { n - b } else { n };
        Self {
            t: 0,
            upload_bytes: d(now.upload_bytes, before.upload_bytes),
            drop_packets: d(now.drop_packets, before.drop_packets),
            drop_bytes: d(now.drop_bytes, before.drop_bytes),
        }
    }
}

/// Per-minute totals of the last 24 hours.
#[derive(Debug, Default)]
pub struct Ring {
    minutes: VecDeque<Minute>,
}

impl Ring {
    /// Adds `delta` to the minute holding `now` (unix seconds).
    pub fn add(&mut self, now: u64, delta: Minute) {
        let t = now - now % 60;
        match self.minutes.back_mut() {
            Some(last) if last.t == t => {
                last.upload_bytes += delta.upload_bytes;
                last.drop_packets += delta.drop_packets;
                last.drop_bytes += delta.drop_bytes;
            }
            // A clock stepped back: keep adding to the newest minute.
            Some(last) if last.t > t => {
                last.upload_bytes += delta.upload_bytes;
                last.drop_packets += delta.drop_packets;
                last.drop_bytes += delta.drop_bytes;
            }
            _ => self.minutes.push_back(Minute { t, ..delta }),
        }
        let oldest = t.saturating_sub(60 * (MINUTES as u64 - 1));
        while self.minutes.front().is_some_and(|m| m.t < oldest) {
            self.minutes.pop_front();
        }
    }

    /// Every minute from the first recorded (at most 24 hours back) to
    /// the one holding `now`, quiet minutes as zeros.
    #[must_use]
    pub fn series(&self, now: u64) -> Vec<Minute> {
        let end = now - now % 60;
        let start = self
            .minutes
            .front()
            .map_or(end, |m| m.t)
            .max(end.saturating_sub(60 * (MINUTES as u64 - 1)));
        let mut out = Vec::with_capacity(usize::try_from((end - start) / 60 + 1).unwrap_or(0));
        let mut held = self.minutes.iter().peekable();
        let mut t = start;
        while t <= end {
            while held.peek().is_some_and(|m| m.t < t) {
                held.next();
            }
            match held.peek() {
                Some(m) if m.t == t => out.push(**m),
                _ => out.push(Minute {
                    t,
                    ..Minute::default()
                }),
            }
            t += 60;
        }
        out
    }
}

/// Unix seconds now.
#[must_use]
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::{Minute, Ring};

    fn m(upload: u64, drops: u64) -> Minute {
        Minute {
            t: 0,
            upload_bytes: upload,
            drop_packets: drops,
            drop_bytes: drops * 100,
        }
    }

    #[test]
    fn deltas_fill_minutes_and_quiet_minutes_are_zeros() {
        let mut r = Ring::default();
        r.add(600, m(10, 1));
        r.add(659, m(5, 2));
        r.add(780, m(1, 0));
        let s = r.series(800);
        assert_eq!(
            s.iter().map(|x| x.t).collect::<Vec<_>>(),
            [600, 660, 720, 780]
        );
        assert_eq!(
            s.iter().map(|x| x.upload_bytes).collect::<Vec<_>>(),
            [15, 0, 0, 1]
        );
        assert_eq!(s[0].drop_packets, 3);
    }

    #[test]
    fn the_ring_keeps_24_hours() {
        let mut r = Ring::default();
        for i in 0..(super::MINUTES as u64 + 100) {
            r.add(i * 60, m(1, 0));
        }
        let s = r.series(super::MINUTES as u64 * 60 + 99 * 60);
        assert_eq!(s.len(), super::MINUTES);
        assert!(s.iter().all(|x| x.upload_bytes == 1));
    }

    #[test]
    fn a_counter_going_backwards_counts_from_zero() {
        let d = Minute::since(m(5, 1), m(100, 10));
        assert_eq!((d.upload_bytes, d.drop_packets), (5, 1));
        let d = Minute::since(m(150, 12), m(100, 10));
        assert_eq!((d.upload_bytes, d.drop_packets), (50, 2));
    }
}
