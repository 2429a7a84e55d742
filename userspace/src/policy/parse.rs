//! Parse: the serde shapes of a policy file, every value with its span.
//!
//! ```toml
//! mode = "enforce"                      # default for rules: enforce | audit
//! allow_empty = false                   # true: reloading to fewer rules is intended
//! regions_dir = "/var/lib/regionwall/country-ip-blocks"  # for `countries`
//!
//! [sources.apnic]                       # other country data (optional)
//! format = "rir"                        # rir | geolite2-csv | mmdb | range-csv | country-dir
//! path = "data/delegated-apnic-extended-latest"
//!
//! [regions.cn]
//! countries = ["CN", "HK"]              # from regions_dir, or `from = [...]`
//! cidrs = ["198.51.100.0/24"]
//! file = "lists/extra.txt"              # one CIDR per line, '#' comments
//! except = ["198.51.100.128/25"]        # CIDRs or other regions carved out
//!
//! [devices.phone]
//! mac = ["02:00:5e:00:53:01"]
//! ip = ["192.0.2.10", "2001:db8:1::/64"]
//!
//! [groups]
//! phones = ["phone"]
//!
//! [[rules]]
//! name = "phones-no-cn"
//! devices = ["phones"]                  # devices, groups, or "default"
//! block = ["cn"]
//! allow = ["198.51.100.77", "other-region"]
//! ports = ["tcp/443"]                   # optional protocol/port qualifiers
//! mode = "audit"
//! ```

use std::{collections::BTreeMap, path::Path};

use serde::Deserialize;
use toml::Spanned;

use super::{Diagnostic, Diagnostics};

/// The policy text read from `path` in its serde shape, or every
/// structural error (syntax, unknown keys, wrong types) found in it.
pub(super) fn parse(source: &str, path: &Path) -> Result<RawPolicy, Diagnostics> {
    let problems = super::schema::check(source);
    if !problems.is_empty() {
        return Err(Diagnostics(
            problems
                .into_iter()
                .map(|p| Diagnostic::at(path, source, p.span, p.message))
                .collect(),
        ));
    }
    toml::from_str(source).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim().to_string();
        Diagnostics(vec![Diagnostic::at(path, source, span, message)])
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    #[serde(default)]
    pub(super) mode: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) allow_empty: Option<bool>,
    #[serde(default)]
    pub(super) regions_dir: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) sources: BTreeMap<Spanned<String>, Spanned<RawSource>>,
    #[serde(default)]
    pub(super) regions: BTreeMap<Spanned<String>, Spanned<RawRegion>>,
    #[serde(default)]
    pub(super) devices: BTreeMap<Spanned<String>, Spanned<RawDevice>>,
    #[serde(default)]
    pub(super) groups: BTreeMap<Spanned<String>, Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub(super) rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) format: Spanned<String>,
    pub(super) path: Spanned<String>,
    /// GeoLite2 only: "located" (default) or "registered".
    #[serde(default)]
    pub(super) country: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegion {
    #[serde(default)]
    pub(super) cidrs: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) file: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) countries: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) from: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub(super) except: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDevice {
    #[serde(default)]
    pub(super) mac: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) ip: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    #[serde(default)]
    pub(super) name: Option<Spanned<String>>,
    pub(super) devices: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) block: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) allow: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) ports: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub(super) mode: Option<Spanned<String>>,
}
