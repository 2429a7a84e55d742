//! Whether reloading from one policy to another would silently pass more.

use std::{collections::BTreeSet, fmt};

use super::{DEFAULT_DEVICE_NAME, Policy};

/// Why a reload from an old policy to a new one would widen what passes
/// without the new policy saying so (`allow_empty = true`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Widening {
    /// The new policy has no rules; the old one had `old_rules`.
    NoRules { old_rules: usize },
    /// Devices (by name; `default` for the default device) that some old
    /// rule covered, directly or through a group, and no new rule covers.
    /// Sorted, at least one.
    Uncovered { devices: Vec<String> },
    /// Regions some rule blocks that had addresses and now have none (an
    /// emptied or truncated data file). Sorted, at least one.
    Emptied { regions: Vec<String> },
    /// Data files a blocked region still reads that gave it addresses and
    /// now give none, though the region keeps others. Sorted.
    EmptiedFiles { files: Vec<String> },
}

impl fmt::Display for Widening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRules { old_rules } => write!(
                f,
                "the new policy has no rules (it would pass everything; the running policy has {old_rules} rule{}); add allow_empty = true to the policy if that is intended",
                if *old_rules == 1 { "" } else { "s" }
            ),
            Self::Uncovered { devices } => {
                let names: Vec<String> = devices.iter().map(|d| format!("\"{d}\"")).collect();
                let (noun, pronoun) = if devices.len() == 1 {
                    ("device", "it")
                } else {
                    ("devices", "them")
                };
                write!(
                    f,
                    "no rule of the new policy covers {noun} {} (the running policy has rules for {pronoun}, so it would pass everything from {pronoun}); add a rule for {pronoun}, or add allow_empty = true to the policy if that is intended",
                    names.join(", ")
                )
            }
            Self::EmptiedFiles { files } => write!(
                f,
                "data file{} {} no longer give{} a blocked region any address (an emptied or truncated file?); fix the data, or add allow_empty = true to the policy if that is intended",
                if files.len() == 1 { "" } else { "s" },
                files.join(", "),
                if files.len() == 1 { "s" } else { "" }
            ),
            Self::Emptied { regions } => {
                let names: Vec<String> = regions.iter().map(|r| format!("\"{r}\"")).collect();
                write!(
                    f,
                    "blocked region{} {} would have no addresses (the running policy blocks addresses there: an emptied or truncated data file?); fix the data, or add allow_empty = true to the policy if that is intended",
                    if regions.len() == 1 { "" } else { "s" },
                    names.join(", ")
                )
            }
        }
    }
}

/// Names of the devices some blocking rule of `p` covers: named directly,
/// as members of a named group, or `default`. A rule that only allows
/// restricts nothing, so losing it widens nothing, and keeping it does
/// not keep a device restricted.
fn covered(p: &Policy) -> BTreeSet<&str> {
    let name = |d: usize| p.devices.get(d).map(|d| d.name.as_str());
    p.rules
        .iter()
        .filter(|r| !r.block.is_empty())
        .flat_map(|r| {
            let direct = r.devices.iter().copied();
            let grouped = r
                .groups
                .iter()
                .filter_map(|g| p.groups.get(*g))
                .flat_map(|g| g.members.iter().copied());
            direct.chain(grouped)
        })
        .filter_map(name)
        .collect()
}

/// Names of the regions some rule of `p` blocks that hold addresses.
fn blocked_nonempty(p: &Policy) -> BTreeSet<&str> {
    p.rules
        .iter()
        .flat_map(|r| r.block.iter())
        .filter_map(|&i| p.regions.get(i))
        .filter(|r| !r.prefixes.is_empty())
        .map(|r| r.name.as_str())
        .collect()
}

/// A path as compared here: absolute, symlinks not resolved (as
/// `Policy::inputs` lists them).
fn absolute(p: &std::path::Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// Per data file, how many prefixes it gives the regions some rule of
/// `p` blocks.
fn blocked_file_counts(p: &Policy) -> std::collections::BTreeMap<(String, String), usize> {
    let mut out = std::collections::BTreeMap::new();
    let blocked: BTreeSet<usize> = p
        .rules
        .iter()
        .flat_map(|r| r.block.iter().copied())
        .collect();
    for r in blocked.iter().filter_map(|&i| p.regions.get(i)) {
        for (_, origin) in &r.prefixes {
            *out.entry((absolute(&origin.file), r.name.clone()))
                .or_insert(0) += 1;
        }
    }
    out
}

/// Why replacing `old` by `new` would silently widen what passes, or
/// `None` if it would not or if `new` sets `allow_empty = true`.
///
/// Devices are compared by name. A device the new policy no longer defines
/// at all is matched as the default device (its traffic is), so it counts
/// as covered when a new rule covers `default`.
#[must_use]
pub fn widening(old: &Policy, new: &Policy) -> Option<Widening> {
    if new.allow_empty {
        return None;
    }
    if new.rules.is_empty() && !old.rules.is_empty() {
        return Some(Widening::NoRules {
            old_rules: old.rules.len(),
        });
    }
    let now = covered(new);
    let defined: BTreeSet<&str> = new.devices.iter().map(|d| d.name.as_str()).collect();
    let devices: Vec<String> = covered(old)
        .into_iter()
        .filter(|d| {
            let as_named = now.contains(d);
            let as_default = !defined.contains(d) && now.contains(DEFAULT_DEVICE_NAME);
            !as_named && !as_default
        })
        .map(str::to_string)
        .collect();
    if !devices.is_empty() {
        return Some(Widening::Uncovered { devices });
    }
    let still = blocked_nonempty(new);
    let blocked_now: BTreeSet<&str> = new
        .rules
        .iter()
        .flat_map(|r| r.block.iter())
        .filter_map(|&i| new.regions.get(i))
        .map(|r| r.name.as_str())
        .collect();
    let regions: Vec<String> = blocked_nonempty(old)
        .into_iter()
        .filter(|r| blocked_now.contains(r) && !still.contains(r))
        .map(str::to_string)
        .collect();
    if !regions.is_empty() {
        return Some(Widening::Emptied { regions });
    }
    // A file the new policy still reads that gave blocked addresses and
    // now gives none: its region shrank by a whole file.
    // The policy file itself is edited on purpose: only data files count.
    let policy_file = absolute(&new.source);
    let read_now: BTreeSet<String> = new
        .inputs
        .iter()
        .map(|p| absolute(p))
        .filter(|p| *p != policy_file)
        .collect();
    // Per (file, region): a region the new policy no longer blocks is
    // passed on purpose, whatever its files give it.
    let counts_now = blocked_file_counts(new);
    let files: BTreeSet<String> = blocked_file_counts(old)
        .into_iter()
        .filter(|((file, region), n)| {
            *n > 0
                && blocked_now.contains(region.as_str())
                && read_now.contains(file)
                && counts_now
                    .get(&(file.clone(), region.clone()))
                    .copied()
                    .unwrap_or(0)
                    == 0
        })
        .map(|((file, _), _)| crate::shown::escaped(&file).into_owned())
        .collect();
    let files: Vec<String> = files.into_iter().collect();
    (!files.is_empty()).then_some(Widening::EmptiedFiles { files })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const DEVICES: &str = r#"
[regions.doc]
cidrs = ["198.51.100.0/24"]
[devices.tv]
mac = ["02:00:5e:00:53:01"]
[devices.phone]
mac = ["02:00:5e:00:53:02"]
[groups]
screens = ["tv", "phone"]
"#;

    fn policy(rules: &str) -> Policy {
        parsed(&format!("{DEVICES}{rules}"))
    }

    /// With `allow_empty = true` (a top-level key: before every table).
    fn allowing(rules: &str) -> Policy {
        parsed(&format!("allow_empty = true\n{DEVICES}{rules}"))
    }

    fn parsed(text: &str) -> Policy {
        match super::super::parse_str(text, Path::new("p.toml")) {
            Ok(p) => p,
            Err(e) => panic!("test policy does not parse:\n{e}"),
        }
    }

    fn rule(devices: &str) -> String {
        format!("[[rules]]\ndevices = [{devices}]\nblock = [\"doc\"]\n")
    }

    #[test]
    fn no_rules_after_some_widens_unless_allowed() {
        let old = policy(&rule("\"default\""));
        let empty = policy("");
        let w = widening(&old, &empty);
        assert_eq!(w, Some(Widening::NoRules { old_rules: 1 }));
        assert_eq!(
            w.map(|w| w.to_string()).as_deref(),
            Some(
                "the new policy has no rules (it would pass everything; the running policy has 1 rule); add allow_empty = true to the policy if that is intended"
            )
        );
        let allowed = allowing("");
        assert!(allowed.allow_empty && allowed.warnings.is_empty());
        assert_eq!(widening(&old, &allowed), None);
        assert_eq!(widening(&empty, &empty), None, "nothing to lose");
        assert!(!empty.allow_empty, "the default is false");
    }

    #[test]
    fn same_or_more_coverage_does_not_widen() {
        let old = policy(&rule("\"tv\""));
        assert_eq!(widening(&old, &old), None);
        let more = policy(&format!("{}{}", rule("\"tv\""), rule("\"default\"")));
        assert_eq!(widening(&old, &more), None);
        // A rule through a group covers its members.
        assert_eq!(widening(&old, &policy(&rule("\"screens\""))), None);
    }

    #[test]
    fn a_group_only_rule_lost_uncovers_its_members() {
        let old = policy(&format!("{}{}", rule("\"screens\""), rule("\"default\"")));
        let new = policy(&rule("\"default\""));
        let w = widening(&old, &new);
        assert_eq!(
            w,
            Some(Widening::Uncovered {
                devices: vec!["phone".into(), "tv".into()]
            })
        );
        let text = w.map(|w| w.to_string()).unwrap_or_default();
        assert!(
            text.starts_with("no rule of the new policy covers devices \"phone\", \"tv\"")
                && text.ends_with("add allow_empty = true to the policy if that is intended"),
            "{text}"
        );
    }

    #[test]
    fn a_rule_lost_for_one_device_only_names_that_device() {
        let old = policy(&rule("\"tv\", \"phone\""));
        let new = policy(&rule("\"phone\""));
        assert_eq!(
            widening(&old, &new),
            Some(Widening::Uncovered {
                devices: vec!["tv".into()]
            })
        );
        let allowed = allowing(&rule("\"phone\""));
        assert_eq!(widening(&old, &allowed), None);
    }

    #[test]
    fn losing_the_default_rule_widens() {
        let old = policy(&format!("{}{}", rule("\"default\""), rule("\"tv\"")));
        let new = policy(&rule("\"tv\""));
        assert_eq!(
            widening(&old, &new),
            Some(Widening::Uncovered {
                devices: vec!["default".into()]
            })
        );
    }

    #[test]
    fn a_removed_device_falls_to_default_coverage() {
        let old = policy(&rule("\"tv\", \"default\""));
        let without_tv = policy(&rule("\"default\""));
        // tv is still defined here, so a default-only rule does not cover it.
        assert!(widening(&old, &without_tv).is_some());
        let text = "[regions.doc]\ncidrs = [\"198.51.100.0/24\"]\n[[rules]]\ndevices = [\"default\"]\nblock = [\"doc\"]\n";
        let gone = parsed(text);
        assert_eq!(widening(&old, &gone), None, "tv's traffic is default's now");
    }

    #[test]
    fn allow_empty_must_be_a_boolean() {
        let Err(e) = super::super::parse_str("allow_empty = \"yes\"\n", Path::new("p.toml")) else {
            panic!("a string allow_empty parsed");
        };
        assert!(
            e.to_string()
                .contains("`allow_empty` must be true or false"),
            "{e}"
        );
    }

    #[test]
    fn keeping_an_allow_only_rule_does_not_keep_a_device_restricted() {
        // A save cut before the second rule: the allow-only rule survives.
        let allow_only = "[[rules]]\nname = \"ok\"\ndevices = [\"default\"]\nallow = [\"doc\"]\n";
        let block = "[[rules]]\nname = \"no\"\ndevices = [\"default\"]\nblock = [\"doc\"]\n";
        let old = policy(&format!("{allow_only}{block}"));
        let cut = policy(allow_only);
        assert_eq!(
            widening(&old, &cut),
            Some(Widening::Uncovered {
                devices: vec!["default".into()]
            })
        );
        // Losing an allow-only rule restricts more: not a widening.
        assert_eq!(
            widening(&policy(&format!("{allow_only}{block}")), &policy(block)),
            None
        );
    }

    #[test]
    fn a_blocked_region_emptied_widens() {
        let dir = std::env::temp_dir().join(format!("rw-widen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let list = dir.join("list.txt");
        let text = format!(
            "[regions.listed]\nfile = \"{}\"\n[[rules]]\ndevices = [\"default\"]\nblock = [\"listed\"]\n",
            list.display()
        );
        let load = |content: &str| {
            std::fs::write(&list, content).expect("list");
            let path = dir.join("p.toml");
            std::fs::write(&path, &text).expect("policy");
            super::super::parse_file(&path).expect("parses")
        };
        let old = load("203.0.113.0/24\n");
        let emptied = load("");
        let why = widening(&old, &emptied).expect("widens");
        assert_eq!(
            why,
            Widening::Emptied {
                regions: vec!["listed".into()]
            }
        );
        assert!(
            why.to_string().contains("emptied or truncated data file"),
            "{why}"
        );
        assert_eq!(
            widening(&old, &load("203.0.113.0/25\n")),
            None,
            "smaller is not empty"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_data_file_emptied_under_a_region_with_other_addresses_widens() {
        let dir = std::env::temp_dir().join(format!("rw-widen-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let list = dir.join("list.txt");
        let load = |content: &str, cidrs: &str| {
            std::fs::write(&list, content).expect("list");
            let path = dir.join("p.toml");
            std::fs::write(
                &path,
                format!(
                    "[regions.zone]\ncidrs = [{cidrs}]\nfile = \"{}\"\n[[rules]]\ndevices = [\"default\"]\nblock = [\"zone\"]\n",
                    list.display()
                ),
            )
            .expect("policy");
            super::super::parse_file(&path).expect("parses")
        };
        let old = load("203.0.113.0/24\n", "\"198.51.100.0/24\"");
        let why = widening(&old, &load("", "\"198.51.100.0/24\"")).expect("widens");
        assert!(matches!(why, Widening::EmptiedFiles { .. }), "{why}");
        assert!(why.to_string().contains("list.txt"), "{why}");
        // Editing the policy's own inline list is deliberate: not flagged.
        let two = load("203.0.113.0/24\n", "\"198.51.100.0/24\", \"192.0.2.0/24\"");
        assert_eq!(widening(&two, &load("203.0.113.0/24\n", "")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A region the new policy simply stops blocking is not an emptied
    /// file, though its file still gives it addresses only it used.
    #[test]
    fn a_region_no_longer_blocked_is_no_emptied_file() {
        let dir = std::env::temp_dir().join(format!("rw-widen-unblock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("c.txt"), "203.0.113.0/24\n").expect("list");
        let load = |block: &str| {
            let path = dir.join("p.toml");
            std::fs::write(
                &path,
                format!(
                    "[regions.a]\ncidrs = [\"198.51.100.0/24\"]\n[regions.c]\nfile = \"c.txt\"\n[[rules]]\ndevices = [\"default\"]\nblock = [{block}]\n"
                ),
            )
            .expect("policy");
            super::super::parse_file(&path).expect("parses")
        };
        let both = load("\"a\", \"c\"");
        assert_eq!(widening(&both, &load("\"a\"")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
