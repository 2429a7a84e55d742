//! Where `regionwall update` fetches a policy's data: the `url`,
//! `checksum_url`, MaxMind and `[update]` settings, read from the policy's
//! structure alone (the data itself may not exist yet), every error at its
//! line and column.

use std::{
    net::IpAddr,
    path::{Component, Path, PathBuf},
    time::Duration,
};

use toml::Spanned;

use super::{
    Diagnostic, Diagnostics, PolicyError,
    parse::{RawPolicy, RawSource, RawUpdate},
};
use crate::input::{Inputs, Limits};

/// Everything `regionwall update` needs to know from a policy.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The policy this plan was read from.
    pub policy: PathBuf,
    /// The data store: `versions/` and the `current` link.
    pub dir: PathBuf,
    /// At most one fetch per source within this time.
    pub interval: Duration,
    /// Per-country and total counts may not fall below this share (%).
    pub min_share: u32,
    /// Prefixes added plus removed may not exceed this share (%) of before.
    pub max_churn: u32,
    /// Good versions kept.
    pub keep: u32,
    /// Largest body accepted, enforced while streaming.
    pub max_size: u64,
    /// Whole-request time limit.
    pub timeout: Duration,
    /// Time limit to connect.
    pub connect_timeout: Duration,
    /// PEM certificates trusted for https besides the built-in web roots.
    pub ca_file: Option<PathBuf>,
    /// Addresses and the country each must still map to.
    pub canaries: Vec<(IpAddr, String)>,
    /// What to fetch.
    pub sources: Vec<Fetch>,
}

/// One thing fetched into each new version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetch {
    /// `[sources.<name>]`, or `regions_dir`.
    pub name: String,
    /// Where it lives inside a version (the policy reads it through `current`).
    pub target: PathBuf,
    /// The loader that verifies it: "rir", "mmdb", "range-csv", "country-dir".
    pub format: String,
    pub how: How,
}

/// How a source is fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum How {
    /// A single file (or, for "country-dir", a tar.gz of one), optionally
    /// with the published md5/sha256 of it.
    Url {
        url: String,
        checksum_url: Option<String>,
    },
    /// geoipupdate's protocol against `endpoint` (https://updates.maxmind.com).
    MaxMind {
        endpoint: String,
        edition: String,
        account_id: String,
        license_key_file: PathBuf,
    },
}

/// The MaxMind update server geoipupdate talks to.
pub const MAXMIND_ENDPOINT: &str = "https://updates.maxmind.com";

/// Reads the update settings of the policy at `path`.
pub fn update_plan(path: &Path) -> Result<Plan, PolicyError> {
    let mut inputs = Inputs::new(Limits::default());
    let bytes = inputs.read(path)?;
    let source = String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        PolicyError::Invalid(Diagnostics(vec![crate::diag::not_utf8(
            path,
            e.as_bytes(),
            valid,
            "a policy",
        )]))
    })?;
    plan_text(&source, path)
}

/// [`update_plan`] of policy text read from `path`.
fn plan_text(source: &str, path: &Path) -> Result<Plan, PolicyError> {
    let raw = super::parse::parse(source, path).map_err(PolicyError::Invalid)?;
    let mut p = Planner {
        path,
        source,
        base: path.parent().map_or_else(PathBuf::new, Path::to_path_buf),
        errors: Vec::new(),
        targets: Vec::new(),
    };
    let plan = p.plan(&raw);
    if p.errors.is_empty() {
        plan.ok_or_else(|| PolicyError::Invalid(Diagnostics(Vec::new())))
    } else {
        Err(PolicyError::Invalid(Diagnostics(p.errors)))
    }
}

struct Planner<'a> {
    path: &'a Path,
    source: &'a str,
    base: PathBuf,
    errors: Vec<Diagnostic>,
    /// Every fetched target so far and where the policy names it.
    targets: Vec<(PathBuf, std::ops::Range<usize>)>,
}

impl Planner<'_> {
    fn error<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        self.errors.push(Diagnostic::at(
            self.path,
            self.source,
            at.span(),
            message.into(),
        ));
    }

    fn plan(&mut self, raw: &RawPolicy) -> Option<Plan> {
        let Some(update) = &raw.update else {
            self.errors.push(Diagnostic::at_line(
                self.path,
                1,
                1,
                "",
                "",
                "no [update] table: expected `[update]` with `dir = \"...\"`, the directory that holds the fetched versions",
            ));
            return None;
        };
        let u = update.get_ref();
        let dir = self.base.join(u.dir.get_ref());
        let current = dir.join("current");
        let mut plan = self.limits(u, dir);
        if let Some(url) = &u.regions_url {
            self.regions(raw, u, url, &current, &mut plan);
        }
        for (name, body) in &raw.sources {
            if let Some(f) = self.source(name.get_ref(), body.get_ref(), &current) {
                plan.sources.push(f);
            }
        }
        self.no_overlap();
        if plan.sources.is_empty() && self.errors.is_empty() {
            self.error(
                update,
                "nothing to update: expected `regions_url` here or `url`/`edition` in a [sources.*] table",
            );
        }
        Some(plan)
    }

    fn limits(&mut self, u: &RawUpdate, dir: PathBuf) -> Plan {
        let mut plan = Plan {
            policy: self.path.to_path_buf(),
            dir,
            interval: Duration::from_secs(3600),
            min_share: 90,
            max_churn: 50,
            keep: 3,
            max_size: 512 << 20,
            timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            ca_file: u.ca_file.as_ref().map(|f| self.base.join(f.get_ref())),
            canaries: Vec::new(),
            sources: Vec::new(),
        };
        for (field, slot) in [
            (&u.interval, &mut plan.interval),
            (&u.timeout, &mut plan.timeout),
            (&u.connect_timeout, &mut plan.connect_timeout),
        ] {
            if let Some(text) = field {
                match humantime::parse_duration(text.get_ref()) {
                    Ok(d) if !d.is_zero() => *slot = d,
                    _ => self.error(
                        text,
                        format!(
                            "expected a duration such as \"1h\" or \"30s\", found \"{}\"",
                            text.get_ref()
                        ),
                    ),
                }
            }
        }
        if let Some(size) = &u.max_size {
            match crate::input::parse_size(size.get_ref()) {
                Ok(n) if n > 0 => plan.max_size = n,
                Ok(_) => self.error(size, "expected a size above zero"),
                Err(e) => self.error(size, e),
            }
        }
        for (field, slot, max) in [
            (&u.min_share, &mut plan.min_share, 100),
            (&u.max_churn, &mut plan.max_churn, 1000),
        ] {
            if let Some(v) = field {
                if *v.get_ref() > max {
                    self.error(v, format!("expected a percentage from 0 to {max}"));
                } else {
                    *slot = *v.get_ref();
                }
            }
        }
        if let Some(k) = &u.keep {
            if *k.get_ref() == 0 {
                self.error(k, "expected at least 1 version kept (the current one)");
            } else {
                plan.keep = *k.get_ref();
            }
        }
        for (addr, cc) in &u.canary {
            let Ok(ip) = addr.get_ref().parse::<IpAddr>() else {
                self.error(
                    addr,
                    format!("expected an IP address, found \"{}\"", addr.get_ref()),
                );
                continue;
            };
            match crate::sources::country_code(cc.get_ref()) {
                Some(code) => plan.canaries.push((ip, code)),
                None => self.error(
                    cc,
                    format!(
                        "expected a two-letter country code such as \"CN\", found \"{}\"",
                        cc.get_ref()
                    ),
                ),
            }
        }
        plan
    }

    fn regions(
        &mut self,
        raw: &RawPolicy,
        u: &RawUpdate,
        url: &Spanned<String>,
        current: &Path,
        plan: &mut Plan,
    ) {
        let Some(dir) = &raw.regions_dir else {
            self.error(
                url,
                "`regions_url` without `regions_dir`: expected `regions_dir = \"<dir>/current/...\"` at the top of the policy",
            );
            return;
        };
        let Some(target) = self.target(dir, current) else {
            return;
        };
        if !self.url_ok(url)
            || !u
                .regions_checksum_url
                .as_ref()
                .is_none_or(|c| self.url_ok(c))
        {
            return;
        }
        plan.sources.push(Fetch {
            name: "regions_dir".into(),
            target,
            format: "country-dir".into(),
            how: How::Url {
                url: url.get_ref().clone(),
                checksum_url: u.regions_checksum_url.as_ref().map(|c| c.get_ref().clone()),
            },
        });
    }

    fn source(&mut self, name: &str, b: &RawSource, current: &Path) -> Option<Fetch> {
        if b.url.is_none() && b.edition.is_none() {
            for extra in [&b.checksum_url, &b.account_id, &b.license_key_file]
                .into_iter()
                .flatten()
            {
                self.error(
                    extra,
                    "this needs `url` (or `edition` for MaxMind) beside it",
                );
            }
            return None;
        }
        let target = self.target(&b.path, current)?;
        let format = b.format.get_ref().clone();
        let how = if let Some(edition) = &b.edition {
            self.maxmind(b, edition)?
        } else {
            let url = b.url.as_ref()?;
            if !matches!(
                format.as_str(),
                "rir" | "range-csv" | "mmdb" | "country-dir"
            ) {
                self.error(
                    &b.format,
                    format!(
                        "`url` fetches formats \"rir\", \"range-csv\", \"mmdb\" and \"country-dir\" (a tar.gz), not \"{format}\""
                    ),
                );
                return None;
            }
            if !self.url_ok(url) || !b.checksum_url.as_ref().is_none_or(|c| self.url_ok(c)) {
                return None;
            }
            How::Url {
                url: url.get_ref().clone(),
                checksum_url: b.checksum_url.as_ref().map(|c| c.get_ref().clone()),
            }
        };
        Some(Fetch {
            name: name.to_string(),
            target,
            format,
            how,
        })
    }

    fn maxmind(&mut self, b: &RawSource, edition: &Spanned<String>) -> Option<How> {
        if b.format.get_ref() != "mmdb" {
            self.error(edition, "`edition` applies to format \"mmdb\" only");
            return None;
        }
        if let Some(c) = &b.checksum_url {
            self.error(
                c,
                "MaxMind sends the md5 itself: expected no `checksum_url`",
            );
            return None;
        }
        let (Some(account), Some(key)) = (&b.account_id, &b.license_key_file) else {
            self.error(
                edition,
                "`edition` needs `account_id` and `license_key_file` (MaxMind's credentials)",
            );
            return None;
        };
        if account.get_ref().is_empty() || !account.get_ref().bytes().all(|c| c.is_ascii_digit()) {
            self.error(
                account,
                format!(
                    "expected a MaxMind account id (digits), found \"{}\"",
                    account.get_ref()
                ),
            );
            return None;
        }
        let endpoint = match &b.url {
            Some(u) if self.url_ok(u) => u.get_ref().trim_end_matches('/').to_string(),
            Some(_) => return None,
            None => MAXMIND_ENDPOINT.to_string(),
        };
        Some(How::MaxMind {
            endpoint,
            edition: edition.get_ref().clone(),
            account_id: account.get_ref().clone(),
            license_key_file: self.base.join(key.get_ref()),
        })
    }

    fn url_ok(&mut self, url: &Spanned<String>) -> bool {
        let u = url.get_ref();
        if u.starts_with("file://") && !u.starts_with("file:///") {
            self.error(
                url,
                format!("a file:// URL needs an absolute path (file:///...), found \"{u}\""),
            );
            return false;
        }
        if ["http://", "https://", "file://"]
            .iter()
            .any(|s| u.starts_with(s) && u.len() > s.len())
        {
            true
        } else {
            self.error(
                url,
                format!("expected an http://, https:// or file:// URL, found \"{u}\""),
            );
            false
        }
    }

    /// Each fetched source owns its path: one inside another (a file
    /// under `regions_dir`) or two sharing one would make one download
    /// overwrite or hide the other, so both are refused at the later one.
    fn no_overlap(&mut self) {
        let targets = std::mem::take(&mut self.targets);
        for (i, (later, span)) in targets.iter().enumerate() {
            if let Some((earlier, first)) = targets[..i]
                .iter()
                .find(|(t, _)| t.starts_with(later) || later.starts_with(t))
            {
                let line = self.source[..first.start].matches('\n').count() + 1;
                self.errors.push(Diagnostic::at(
                    self.path,
                    self.source,
                    span.clone(),
                    format!(
                        "this path overlaps the fetched path on line {line} (current/{} and current/{}): each fetched source needs a path of its own, neither inside the other",
                        earlier.display(),
                        later.display()
                    ),
                ));
            }
        }
    }

    /// The path inside a version of a data path that must read through
    /// `<dir>/current/`.
    fn target(&mut self, at: &Spanned<String>, current: &Path) -> Option<PathBuf> {
        let full = self.base.join(at.get_ref());
        let rel = full.strip_prefix(current).ok().map(Path::to_path_buf);
        match rel {
            Some(rel)
                if rel.components().next().is_some()
                    && rel.components().all(|c| matches!(c, Component::Normal(_))) =>
            {
                self.targets.push((rel.clone(), at.span()));
                Some(rel)
            }
            _ => {
                self.error(
                    at,
                    format!(
                        "a fetched file must be read through the update directory's current link: expected a path under {}",
                        current.display()
                    ),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Result<Plan, Vec<String>> {
        plan_text(text, Path::new("/etc/p.toml")).map_err(|e| match e {
            PolicyError::Invalid(d) => {
                d.0.iter()
                    .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
                    .collect()
            }
            other => vec![other.to_string()],
        })
    }

    #[test]
    fn reads_sources_maxmind_and_limits() {
        let p = plan(
            r#"regions_dir = "data/current/countries"
[update]
dir = "data"
regions_url = "https://example.org/c.tar.gz"
interval = "6h"
min_share = 80
keep = 5
max_size = "64M"
canary = { "1.0.1.1" = "cn" }
[sources.apnic]
format = "rir"
path = "data/current/apnic"
url = "file:///srv/mirror/apnic"
checksum_url = "https://example.org/apnic.md5"
[sources.mm]
format = "mmdb"
path = "data/current/GeoLite2-Country.mmdb"
edition = "GeoLite2-Country"
account_id = "42"
license_key_file = "mm.key"
[sources.local]
format = "rir"
path = "local/file"
"#,
        )
        .expect("plan");
        assert_eq!(p.dir, Path::new("/etc/data"));
        assert_eq!(p.interval, Duration::from_hours(6));
        assert_eq!((p.min_share, p.max_churn, p.keep), (80, 50, 5));
        assert_eq!(p.max_size, 64 << 20);
        assert_eq!(p.canaries, [("1.0.1.1".parse().expect("ip"), "CN".into())]);
        let names: Vec<&str> = p.sources.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["regions_dir", "apnic", "mm"],
            "local is not fetched"
        );
        assert_eq!(p.sources[0].target, Path::new("countries"));
        assert_eq!(p.sources[0].format, "country-dir");
        assert_eq!(
            p.sources[2].how,
            How::MaxMind {
                endpoint: MAXMIND_ENDPOINT.into(),
                edition: "GeoLite2-Country".into(),
                account_id: "42".into(),
                license_key_file: "/etc/mm.key".into(),
            }
        );
    }

    #[test]
    fn every_mistake_at_its_line_and_column() {
        let errors = plan(
            r#"[update]
dir = "data"
interval = "soon"
min_share = 120
keep = 0
canary = { "1.0.1" = "CN", "1.0.1.1" = "China" }
[sources.a]
format = "rir"
path = "elsewhere/a"
url = "https://example.org/a"
[sources.b]
format = "geolite2-csv"
path = "data/current/b"
url = "https://example.org/b"
[sources.c]
format = "rir"
path = "data/current/c"
url = "ftp://example.org/c"
[sources.d]
format = "mmdb"
path = "data/current/d"
edition = "GeoLite2-Country"
account_id = "x1"
license_key_file = "k"
[sources.e]
format = "rir"
path = "data/current/e"
checksum_url = "https://example.org/e.md5"
[sources.f]
format = "rir"
path = "data/current/f"
url = "file://mirror/f"
"#,
        )
        .expect_err("errors");
        assert_eq!(
            errors,
            [
                "3:12: expected a duration such as \"1h\" or \"30s\", found \"soon\"",
                "4:13: expected a percentage from 0 to 100",
                "5:8: expected at least 1 version kept (the current one)",
                "6:12: expected an IP address, found \"1.0.1\"",
                "6:40: expected a two-letter country code such as \"CN\", found \"China\"",
                "9:8: a fetched file must be read through the update directory's current link: expected a path under /etc/data/current",
                "12:10: `url` fetches formats \"rir\", \"range-csv\", \"mmdb\" and \"country-dir\" (a tar.gz), not \"geolite2-csv\"",
                "18:7: expected an http://, https:// or file:// URL, found \"ftp://example.org/c\"",
                "23:14: expected a MaxMind account id (digits), found \"x1\"",
                "28:16: this needs `url` (or `edition` for MaxMind) beside it",
                "32:7: a file:// URL needs an absolute path (file:///...), found \"file://mirror/f\"",
            ]
        );
        assert_eq!(
            plan(
                r#"regions_dir = "data/current/db"
[update]
dir = "data"
regions_url = "https://example.org/db.tar.gz"
[sources.apnic]
format = "rir"
path = "data/current/db/apnic.txt"
url = "https://example.org/apnic"
[sources.again]
format = "rir"
path = "data/current/db/apnic.txt"
url = "https://example.org/again"
"#
            )
            .expect_err("overlapping targets"),
            [
                // [sources.*] in name order: `again` before `apnic`.
                "11:8: this path overlaps the fetched path on line 1 (current/db and current/db/apnic.txt): each fetched source needs a path of its own, neither inside the other",
                "7:8: this path overlaps the fetched path on line 1 (current/db and current/db/apnic.txt): each fetched source needs a path of its own, neither inside the other",
            ]
        );
        assert_eq!(
            plan("mode = \"enforce\"\n").expect_err("no [update]"),
            [
                "1:1: no [update] table: expected `[update]` with `dir = \"...\"`, the directory that holds the fetched versions"
            ]
        );
    }
}
