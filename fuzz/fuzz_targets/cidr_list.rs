//! The country/list CIDR reader on arbitrary text: never panics, at most
//! one prefix and one problem per line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regionwall::sources;

fuzz_target!(|text: &str| {
    let path = std::path::Path::new("fuzz/ipv4-aggregated.txt");
    let (sourced, diags) = sources::read_cidr_list(path, text);
    let lines = text.lines().count();
    assert!(diags.len() <= lines.max(1), "at most one problem per line");
    assert!(sourced.len() <= lines, "at most one prefix per line");
});
