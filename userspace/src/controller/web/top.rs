//! Top-N lists: the biggest rows blocked and allowed, the rest summed as "other (k more)", so a page stays small however many devices or hosts there are.

use serde::Serialize;

use crate::views::Totals;

/// Rows a top-N view shows by default, and at most.
pub const TOP_DEFAULT: usize = 10;
pub const TOP_MAX: usize = 100;

/// One row of a top-N list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
}

/// The biggest `n` blocked and allowed, each with the rest summed.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Top {
    pub blocked: Vec<Entry>,
    pub blocked_other: Option<Entry>,
    pub allowed: Vec<Entry>,
    pub allowed_other: Option<Entry>,
}

/// Keeps the biggest `n` of `rows` (by bytes, then name), the rest summed
/// as "other (k more)"; rows without packets are left out.
fn biggest(mut rows: Vec<Entry>, n: usize) -> (Vec<Entry>, Option<Entry>) {
    rows.retain(|e| e.packets > 0);
    rows.sort_unstable_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    if rows.len() <= n {
        return (rows, None);
    }
    let rest = rows.split_off(n);
    let mut other = Entry {
        name: format!("other ({} more)", rest.len()),
        ..Entry::default()
    };
    for e in rest {
        other.packets += e.packets;
        other.bytes += e.bytes;
    }
    (rows, Some(other))
}

/// The top-N of `lines` keyed by `dim`.
#[must_use]
pub fn top(lines: &[(String, Totals)], n: usize) -> Top {
    let pick = |f: fn(&Totals) -> (u64, u64)| {
        lines
            .iter()
            .map(|(name, t)| {
                let (packets, bytes) = f(t);
                Entry {
                    name: name.clone(),
                    packets,
                    bytes,
                }
            })
            .collect::<Vec<_>>()
    };
    let (blocked, blocked_other) = biggest(pick(|t| (t.blocked_packets, t.blocked_bytes)), n);
    let (allowed, allowed_other) = biggest(
        pick(|t| {
            (
                t.passed_packets + t.audited_packets,
                t.passed_bytes + t.audited_bytes,
            )
        }),
        n,
    );
    Top {
        blocked,
        blocked_other,
        allowed,
        allowed_other,
    }
}

#[cfg(test)]
mod tests {
    use super::{Entry, top};
    use crate::views::Totals;

    #[test]
    fn top_keeps_the_biggest_and_sums_the_rest_as_other() {
        let lines: Vec<(String, Totals)> = (0..1000u64)
            .map(|i| {
                (
                    format!("d{i}"),
                    Totals {
                        blocked_packets: i % 2,
                        blocked_bytes: (i % 2) * i,
                        passed_packets: 1,
                        passed_bytes: i,
                        ..Totals::default()
                    },
                )
            })
            .collect();
        let t = top(&lines, 3);
        let names = |v: &[Entry]| v.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&t.blocked), ["d999", "d997", "d995"]);
        assert_eq!(names(&t.allowed), ["d999", "d998", "d997"]);
        let other = t.allowed_other.expect("other");
        assert_eq!(other.name, "other (997 more)");
        assert_eq!(other.packets, 997);
        assert_eq!(t.blocked_other.expect("other").packets, 497);
    }
}
