//! The dashboard's device page: a device's traffic by country and host, the rules that apply to it, and its recent drops (from the history when there is one).

use axum::{
    Json,
    extract::{Query, State},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use super::{
    api::Ctx,
    state::Shared,
    top::{Top, top},
};
use crate::{
    events::Record,
    views::{self, Dim, Totals},
};

#[derive(Deserialize)]
pub struct DeviceQuery {
    name: String,
}

/// A device's traffic by country and host, and its recent events.
#[derive(Serialize)]
pub struct DevicePage {
    pub device: String,
    pub known: bool,
    pub total: Totals,
    pub countries: Top,
    pub hosts: Top,
    pub drops: Vec<Record>,
    /// The live policy's rules that name the device (directly, through a
    /// group, or as `default`), in the policy's order.
    pub rules: Vec<RuleView>,
}

/// A rule as the device page shows it.
#[derive(Serialize)]
pub struct RuleView {
    pub name: String,
    /// "device", "group NAME" or "default".
    pub via: String,
    /// "enforce", "audit" or "reject".
    pub mode: &'static str,
    pub block: Vec<String>,
    pub allow: Vec<String>,
    /// Line in the policy file.
    pub line: usize,
}

/// The rules of `policy` that apply to the device named `name`.
fn rules_for(policy: &crate::policy::Policy, name: &str) -> Vec<RuleView> {
    use crate::policy::Mode;
    let Some(device) = policy.devices.iter().position(|d| d.name == name) else {
        return Vec::new();
    };
    let regions = |ids: &[usize]| -> Vec<String> {
        ids.iter()
            .filter_map(|&i| policy.regions.get(i).map(|r| r.name.clone()))
            .collect()
    };
    policy
        .rules
        .iter()
        .filter_map(|r| {
            let via = if r.devices.contains(&device) {
                if device == 0 {
                    "default".to_string()
                } else {
                    "device".to_string()
                }
            } else if let Some(g) = r
                .groups
                .iter()
                .filter_map(|&g| policy.groups.get(g))
                .find(|g| g.members.contains(&device))
            {
                format!("group {}", g.name)
            } else if r.devices.contains(&0) {
                // Rules for `default` apply to devices no rule names.
                "default".to_string()
            } else {
                return None;
            };
            Some(RuleView {
                name: r.name.clone(),
                via,
                mode: match r.mode {
                    Mode::Enforce => "enforce",
                    Mode::Audit => "audit",
                    Mode::Reject => "reject",
                },
                block: regions(&r.block),
                allow: regions(&r.allow),
                line: r.line,
            })
        })
        .collect()
}

pub async fn device(State(s): Ctx, Query(q): Query<DeviceQuery>) -> Response {
    let stats = s.stats().await;
    let (known, rules) = {
        let policy = s.policy.borrow();
        (
            policy.devices.iter().any(|d| d.name == q.name),
            rules_for(&policy, &q.name),
        )
    };
    let of_device = |dims: &[Dim], key: Dim| -> Vec<(String, Totals)> {
        views::view(&stats, dims).map_or_else(
            |_| Vec::new(),
            |v| {
                v.lines
                    .into_iter()
                    .filter(|l| l.key.get(&Dim::Device) == Some(&q.name))
                    .map(|l| (l.key.get(&key).cloned().unwrap_or_default(), l.totals))
                    .collect()
            },
        )
    };
    let total = stats
        .by(Dim::Device)
        .iter()
        .find(|(n, _)| *n == q.name)
        .map(|(_, t)| *t)
        .unwrap_or_default();
    Json(DevicePage {
        known,
        total,
        countries: top(&of_device(&[Dim::Device, Dim::Country], Dim::Country), 20),
        hosts: top(&of_device(&[Dim::Device, Dim::Host], Dim::Host), 20),
        drops: recent_drops(&s, &q.name).await,
        rules,
        device: q.name,
    })
    .into_response()
}

/// Recent drops a device page lists.
pub const RECENT_DROPS: usize = 50;

/// A device's newest [`RECENT_DROPS`] events, newest first: with history,
/// from its `events` table (they survive a restart) and, newer than its
/// newest row, the ones not written yet from the memory tail; without
/// history (or when it cannot be read), the memory tail alone.
async fn recent_drops(s: &Shared, device: &str) -> Vec<Record> {
    let tail: Vec<Record> = s
        .recent(device, RECENT_DROPS)
        .iter()
        .map(|r| (**r).clone())
        .collect();
    if !s.reader.has_history() {
        return tail;
    }
    match super::reader::recent(&s.reader, device, RECENT_DROPS).await {
        Ok(written) => merge_newest(tail, written, RECENT_DROPS),
        Err(_) => tail,
    }
}

/// `written` (newest first) after the events of `tail` (newest first)
/// newer than its newest, at most `n`. Timestamps are RFC 3339 with
/// microseconds in UTC, so they compare as strings.
fn merge_newest(tail: Vec<Record>, written: Vec<Record>, n: usize) -> Vec<Record> {
    let newest = written.first().map(|r| r.timestamp.clone());
    let mut out: Vec<Record> = tail
        .into_iter()
        .filter(|r| newest.as_ref().is_none_or(|t| r.timestamp > *t))
        .collect();
    out.extend(written);
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::merge_newest;
    use crate::{events::Record, verdict::Verdict};

    fn rec(ts: &str) -> Record {
        Record {
            timestamp: ts.into(),
            interface: "lan".into(),
            device: "phone".into(),
            src_mac: String::new(),
            src_ip: None,
            dst_ip: None,
            protocol: "udp".into(),
            src_port: None,
            dst_port: None,
            country: "-".into(),
            host: None,
            canonical: None,
            resolved: None,
            region: "-".into(),
            rule: "-".into(),
            verdict: Verdict::Drop,
            reason: String::new(),
            bytes: 0,
            policy_epoch: 1,
        }
    }

    #[test]
    fn the_tail_adds_only_what_is_newer_than_the_history() {
        let t = |s: &str| format!("2026-12-02T17:00:{s}Z");
        let tail = vec![
            rec(&t("03.000000")),
            rec(&t("02.000000")),
            rec(&t("01.000000")),
        ];
        let written = vec![
            rec(&t("02.000000")),
            rec(&t("01.000000")),
            rec(&t("00.000000")),
        ];
        let ts = |v: Vec<Record>| v.into_iter().map(|r| r.timestamp).collect::<Vec<_>>();
        assert_eq!(
            ts(merge_newest(tail.clone(), written.clone(), 10)),
            [
                t("03.000000"),
                t("02.000000"),
                t("01.000000"),
                t("00.000000")
            ]
        );
        assert_eq!(
            ts(merge_newest(tail.clone(), written, 2)),
            [t("03.000000"), t("02.000000")]
        );
        assert_eq!(
            ts(merge_newest(tail, Vec::new(), 2)),
            [t("03.000000"), t("02.000000")]
        );
    }
}
