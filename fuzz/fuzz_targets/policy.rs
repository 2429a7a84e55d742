//! The policy parser on arbitrary text: never panics; a rejection always
//! carries at least one diagnostic, each positioned inside the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regionwall::{PolicyError, policy};

fuzz_target!(|text: &str| {
    let path = std::path::Path::new("/nonexistent/regionwall-fuzz/policy.toml");
    if let Err(PolicyError::Invalid(diags)) = policy::parse_str(text, path) {
        let shown = diags.to_string();
        assert!(!shown.is_empty(), "a rejection names its problem");
        let lines = text.lines().count().max(1);
        for line in shown.lines().filter_map(|l| {
            l.trim_start()
                .strip_prefix("error: /nonexistent/regionwall-fuzz/policy.toml:")
        }) {
            let n: usize = line
                .split(':')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("a line number");
            assert!(n >= 1 && n <= lines + 1, "line {n} of {lines}");
        }
    }
});
