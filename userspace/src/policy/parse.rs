//! Parse: the serde shapes of a policy file, every value with its span.
//!
//! ```toml
//! mode = "enforce"                      # default for rules: enforce | audit
//! allow_empty = false                   # true: reloading to fewer rules is intended
//! regions_dir = "/var/lib/regionwall/country-ip-blocks"  # for `countries`
//! countries_from = ["regions_dir", "apnic"]  # country of every destination;
//!                                       # first listed wins; [] turns it off
//!
//! [sources.apnic]                       # other country data (optional)
//! format = "rir"                        # rir | geolite2-csv | mmdb | range-csv | country-dir
//! path = "data/delegated-apnic-extended-latest"
//! url = "https://ftp.apnic.net/stats/apnic/delegated-apnic-extended-latest"
//! checksum_url = "https://ftp.apnic.net/stats/apnic/delegated-apnic-extended-latest.md5"
//!
//! [update]                              # `regionwall update` (see update/)
//! dir = "data"                          # versions/ and the `current` link
//! regions_url = "https://example.org/country-ip-blocks.tar.gz"
//! canary = { "1.0.1.1" = "CN" }
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

use super::{
    Diagnostic, Diagnostics,
    schema::{Field, Keys, Shape},
};

/// The policy text read from `path` in its serde shape, or every
/// structural error (syntax, unknown keys, wrong types) found in it.
pub(super) fn parse(source: &str, path: &Path) -> Result<RawPolicy, Diagnostics> {
    let problems = super::schema::check(source, RawPolicy::KEYS);
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

/// Declares one table of the policy file in one place: the serde struct
/// (unknown keys denied, `= default` fields optional) and, through
/// [`Field`], the keys, shapes and required keys the `schema` pass checks
/// the text against. Adding a key is adding a line here.
macro_rules! policy_table {
    (
        $(#[$meta:meta])*
        struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident: $ty:ty $(= $default:ident)? ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct $name {
            $( $(#[$fmeta])* $(#[serde($default)])? pub(super) $field: $ty, )*
        }

        impl $name {
            /// Each key with its shape and whether it is required.
            pub(super) const KEYS: Keys = &[
                $( (stringify!($field), <$ty as Field>::SHAPE, required!($($default)?)), )*
            ];
        }

        impl Field for $name {
            const SHAPE: Shape = Shape::Table(Self::KEYS);
        }
    };
}

/// Whether a [`policy_table!`] field without `= default` must be given.
macro_rules! required {
    () => {
        true
    };
    (default) => {
        false
    };
}

policy_table! {
    /// The whole policy file.
    struct RawPolicy {
        mode: Option<Spanned<String>> = default,
        allow_empty: Option<bool> = default,
        regions_dir: Option<Spanned<String>> = default,
        countries_from: Option<Spanned<Vec<Spanned<String>>>> = default,
        sources: BTreeMap<Spanned<String>, Spanned<RawSource>> = default,
        regions: BTreeMap<Spanned<String>, Spanned<RawRegion>> = default,
        devices: BTreeMap<Spanned<String>, Spanned<RawDevice>> = default,
        groups: BTreeMap<Spanned<String>, Spanned<Vec<Spanned<String>>>> = default,
        rules: Vec<Spanned<RawRule>> = default,
        update: Option<Spanned<RawUpdate>> = default,
    }
}

policy_table! {
    /// `[update]`: where `regionwall update` keeps versions, and its limits.
    struct RawUpdate {
        dir: Spanned<String>,
        regions_url: Option<Spanned<String>> = default,
        regions_checksum_url: Option<Spanned<String>> = default,
        interval: Option<Spanned<String>> = default,
        min_share: Option<Spanned<u32>> = default,
        max_churn: Option<Spanned<u32>> = default,
        keep: Option<Spanned<u32>> = default,
        max_size: Option<Spanned<String>> = default,
        timeout: Option<Spanned<String>> = default,
        connect_timeout: Option<Spanned<String>> = default,
        /// PEM certificates trusted besides the built-in web roots (a
        /// mirror behind a private CA).
        ca_file: Option<Spanned<String>> = default,
        canary: BTreeMap<Spanned<String>, Spanned<String>> = default,
    }
}

policy_table! {
    /// `[sources.<name>]`
    struct RawSource {
        format: Spanned<String>,
        path: Spanned<String>,
        /// GeoLite2 only: "located" (default) or "registered".
        country: Option<Spanned<String>> = default,
        /// Where `regionwall update` fetches it (http, https, file).
        url: Option<Spanned<String>> = default,
        /// The published md5 or sha256 of what `url` serves.
        checksum_url: Option<Spanned<String>> = default,
        /// MaxMind: the edition fetched with geoipupdate's protocol.
        edition: Option<Spanned<String>> = default,
        account_id: Option<Spanned<String>> = default,
        license_key_file: Option<Spanned<String>> = default,
    }
}

policy_table! {
    /// `[regions.<name>]`
    struct RawRegion {
        cidrs: Vec<Spanned<String>> = default,
        file: Option<Spanned<String>> = default,
        countries: Vec<Spanned<String>> = default,
        from: Option<Spanned<Vec<Spanned<String>>>> = default,
        except: Vec<Spanned<String>> = default,
    }
}

policy_table! {
    /// `[devices.<name>]`
    struct RawDevice {
        mac: Vec<Spanned<String>> = default,
        ip: Vec<Spanned<String>> = default,
    }
}

policy_table! {
    /// One `[[rules]]` entry.
    struct RawRule {
        name: Option<Spanned<String>> = default,
        devices: Spanned<Vec<Spanned<String>>>,
        block: Vec<Spanned<String>> = default,
        allow: Vec<Spanned<String>> = default,
        ports: Option<Spanned<Vec<Spanned<String>>>> = default,
        mode: Option<Spanned<String>> = default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every structural message of `source`: `line:column: message`.
    fn problems(source: &str) -> Vec<String> {
        let Err(d) = parse(source, Path::new("p.toml")) else {
            panic!("expected structural errors");
        };
        d.0.iter()
            .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
            .collect()
    }

    /// Pins every key of every table, its shape and whether it is
    /// required, as the unknown-key, type and missing-key errors show them.
    #[test]
    fn structural_errors_name_every_key_and_shape() {
        let every_key_wrong = "\
mode = 1
allow_empty = \"x\"
regions_dir = 1
x = 1
[sources.s]
format = 1
path = 1
country = 1
y = 1
[sources.t]
[regions.r]
cidrs = 1
file = 1
countries = 1
from = 1
except = 1
z = 1
[devices.d]
mac = 1
ip = 1
w = 1
[groups]
g = 1
[[rules]]
name = 1
devices = 1
block = 1
allow = 1
ports = 1
mode = 1
v = 1
[[rules]]
";
        let list = "must be an array of strings, e.g. [\"...\"], found an integer";
        assert_eq!(
            problems(every_key_wrong),
            [
                "1:8: `mode` must be a string, found an integer".to_string(),
                "2:15: `allow_empty` must be true or false, found a string".into(),
                "3:15: `regions_dir` must be a string, found an integer".into(),
                "4:1: unknown field `x` in the policy, expected one of `mode`, `allow_empty`, \
                 `regions_dir`, `countries_from`, `sources`, `regions`, `devices`, `groups`, `rules`, \
                 `update`"
                    .into(),
                "6:10: `format` must be a string, found an integer".into(),
                "7:8: `path` must be a string, found an integer".into(),
                "8:11: `country` must be a string, found an integer".into(),
                "9:1: unknown field `y` in [sources.s], expected one of `format`, `path`, \
                 `country`, `url`, `checksum_url`, `edition`, `account_id`, `license_key_file`"
                    .into(),
                "10:1: missing field `format` in [sources.t]".into(),
                "10:1: missing field `path` in [sources.t]".into(),
                format!("12:9: `cidrs` {list}"),
                "13:8: `file` must be a string, found an integer".into(),
                format!("14:13: `countries` {list}"),
                format!("15:8: `from` {list}"),
                format!("16:10: `except` {list}"),
                "17:1: unknown field `z` in [regions.r], expected one of `cidrs`, `file`, \
                 `countries`, `from`, `except`"
                    .into(),
                format!("19:7: `mac` {list}"),
                format!("20:6: `ip` {list}"),
                "21:1: unknown field `w` in [devices.d], expected one of `mac`, `ip`".into(),
                format!("23:5: `groups.g` {list}"),
                "25:8: `name` must be a string, found an integer".into(),
                format!("26:11: `devices` {list}"),
                format!("27:9: `block` {list}"),
                format!("28:9: `allow` {list}"),
                format!("29:9: `ports` {list}"),
                "30:8: `mode` must be a string, found an integer".into(),
                "31:1: unknown field `v` in [[rules]], expected one of `name`, `devices`, \
                 `block`, `allow`, `ports`, `mode`"
                    .into(),
                "32:1: missing field `devices` in [[rules]]".into(),
            ]
        );
        assert_eq!(
            problems("sources = 1\nregions = 1\ndevices = 1\ngroups = 1\nrules = 1\n"),
            [
                "1:11: `sources` must be a table, found an integer",
                "2:11: `regions` must be a table, found an integer",
                "3:11: `devices` must be a table, found an integer",
                "4:10: `groups` must be a table, found an integer",
                "5:9: `rules` must be an array of tables ([[...]]), found an integer",
            ]
        );
        assert_eq!(
            problems("rules = [1]\nsources = { t = 1 }\ngroups = { g = [1] }\n"),
            [
                "1:10: `rules` must be tables ([[rules]]), found an integer",
                "2:17: `sources.t` must be a table, found an integer",
                "3:17: `groups.g` must list strings, found an integer",
            ]
        );
    }
}
