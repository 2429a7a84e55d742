//! The staged candidate policy as the control socket reports it: the
//! disagreements with the live policy since staging, named, and the
//! summary `regionwall diff` prints ("would newly block ...").

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::verdict::Verdict;

/// One disagreement: packets the live policy gave `live` and the
/// candidate would have given `candidate`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiffRow {
    pub device: String,
    /// The candidate's region for the destination ("-": none).
    pub region: String,
    /// ISO code of the destination's country ("-": none).
    pub country: String,
    /// The candidate's rule that decided ("-": its default pass).
    pub rule: String,
    pub live: Verdict,
    pub candidate: Verdict,
    pub packets: u64,
    pub bytes: u64,
}

/// The staged candidate and what it would have changed.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// Whether a candidate is staged (the rest is empty when not).
    pub staged: bool,
    pub path: String,
    /// Unix seconds of staging.
    pub staged_at: u64,
    /// Whether the kernel evaluates it now; false when the live policy
    /// changed since staging (promote then needs `--force`).
    pub evaluated: bool,
    /// Disagreements not counted because the counter table was full.
    pub lost: u64,
    /// Candidate events the kernel reported, suppressed by the candidate's
    /// own rate limit, and lost to a full candidate ring (counted since
    /// the program was loaded; none of them touch the live events).
    #[serde(default)]
    pub events: CandidateEvents,
    pub rows: Vec<DiffRow>,
    /// Why it is paused when that is not a change of the live policy
    /// (empty otherwise).
    #[serde(default)]
    pub paused: String,
}

/// The candidate's own event counters (see [`Status::events`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateEvents {
    pub reported: u64,
    pub suppressed: u64,
    pub lost: u64,
    /// Reported, but dropped from the controller's candidate queue or
    /// not printed (the output was behind or failing).
    #[serde(default)]
    pub not_printed: u64,
}

/// What a disagreement means for the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Passed (or audited) now, dropped or rejected by the candidate.
    NewlyBlock,
    /// Dropped or rejected now, passed (or audited) by the candidate.
    NewlyAllow,
    /// Blocked either way, or passed either way, but differently (drop
    /// and reject, pass and audit).
    Other,
}

const fn blocks(v: Verdict) -> bool {
    matches!(v, Verdict::Drop | Verdict::Reject)
}

impl DiffRow {
    #[must_use]
    pub const fn change(&self) -> Change {
        match (blocks(self.live), blocks(self.candidate)) {
            (false, true) => Change::NewlyBlock,
            (true, false) => Change::NewlyAllow,
            _ => Change::Other,
        }
    }
}

/// Totals of one kind of change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Total {
    pub packets: u64,
    pub bytes: u64,
    pub devices: BTreeSet<String>,
    /// Countries, or regions where the destination has no country.
    pub places: BTreeSet<String>,
    pub rules: BTreeSet<String>,
}

impl Status {
    /// The rows of one kind of change, summed.
    #[must_use]
    pub fn total(&self, change: Change) -> Total {
        let mut t = Total::default();
        for r in self.rows.iter().filter(|r| r.change() == change) {
            t.packets += r.packets;
            t.bytes += r.bytes;
            t.devices.insert(r.device.clone());
            let place = if r.country == "-" {
                &r.region
            } else {
                &r.country
            };
            t.places.insert(place.clone());
            t.rules.insert(r.rule.clone());
        }
        t
    }

    /// The summary `regionwall diff` prints.
    #[must_use]
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        if !self.staged {
            return "no candidate staged\n".into();
        }
        let mut out = format!("candidate {}", self.path);
        if !self.evaluated {
            if self.paused.is_empty() {
                out.push_str(
                    " (paused: the live policy changed since staging; promote needs --force)",
                );
            } else {
                let _ = write!(out, " (paused: {})", self.paused);
            }
        }
        out.push('\n');
        if self.lost > 0 {
            let _ = writeln!(
                out,
                "{} more disagreements were not counted by row (the counter table is full): the totals below leave them out",
                thousands(self.lost)
            );
        }
        if !self.evaluated && self.rows.is_empty() && !self.paused.is_empty() {
            // Not adopted: its counts are held in the kernel, unnamed.
            return out;
        }
        for (change, verb) in [
            (Change::NewlyBlock, "would newly block"),
            (Change::NewlyAllow, "would newly allow"),
            (Change::Other, "would change"),
        ] {
            let t = self.total(change);
            if t.packets == 0 {
                let _ = writeln!(out, "{verb} nothing");
                continue;
            }
            let join = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(", ");
            let _ = writeln!(
                out,
                "{verb} {} packets / {} from {} to {} (rule {})",
                thousands(t.packets),
                human_bytes(t.bytes),
                join(&t.devices),
                join(&t.places),
                join(&t.rules)
            );
        }
        let e = self.events;
        if e.reported + e.suppressed + e.lost > 0 {
            let _ = writeln!(
                out,
                "candidate events: {} reported, {} suppressed (rate limit), {} lost (ring full), {} not printed",
                thousands(e.reported),
                thousands(e.suppressed),
                thousands(e.lost),
                thousands(e.not_printed)
            );
        }
        for r in &self.rows {
            let _ = writeln!(
                out,
                "  {} -> {} ({}/{}): {} -> {}: {} packets, {} bytes",
                r.device,
                r.region,
                r.country,
                r.rule,
                r.live.as_str(),
                r.candidate.as_str(),
                r.packets,
                r.bytes
            );
        }
        out
    }
}

/// 1240 -> "1,240".
#[must_use]
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// 3_100_000 -> "3.1 MB" (decimal units).
#[must_use]
pub fn human_bytes(n: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "shown with one decimal")]
    let f = n as f64;
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", f / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", f / 1e6),
        _ => format!("{:.1} GB", f / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_the_issue() {
        assert_eq!(thousands(1240), "1,240");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(human_bytes(3_100_000), "3.1 MB");
        assert_eq!(human_bytes(512), "512 B");
    }

    #[test]
    fn changes_are_classified() {
        let row = |live, candidate| DiffRow {
            device: "tv".into(),
            region: "cn".into(),
            country: "CN".into(),
            rule: "r".into(),
            live,
            candidate,
            packets: 2,
            bytes: 100,
        };
        assert_eq!(
            row(Verdict::Pass, Verdict::Drop).change(),
            Change::NewlyBlock
        );
        assert_eq!(
            row(Verdict::Audit, Verdict::Reject).change(),
            Change::NewlyBlock
        );
        assert_eq!(
            row(Verdict::Drop, Verdict::Pass).change(),
            Change::NewlyAllow
        );
        assert_eq!(row(Verdict::Drop, Verdict::Reject).change(), Change::Other);
        let status = Status {
            staged: true,
            evaluated: true,
            rows: vec![
                row(Verdict::Pass, Verdict::Drop),
                row(Verdict::Drop, Verdict::Pass),
            ],
            ..Status::default()
        };
        let text = status.render();
        assert!(
            text.contains("would newly block 2 packets / 100 B from tv to CN (rule r)"),
            "{text}"
        );
        assert!(text.contains("would newly allow 2 packets"), "{text}");
    }
}
