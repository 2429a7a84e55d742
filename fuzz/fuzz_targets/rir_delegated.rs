//! The RIR delegated-statistics parser on arbitrary text: never panics;
//! accepted records turn into at most a bounded number of prefixes each.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regionwall::sources::rir;

fuzz_target!(|text: &str| {
    let path = std::path::Path::new("fuzz/delegated-apnic-latest");
    if let Ok((by_country, _stats)) = rir::parse(path, text) {
        // An IPv4 range splits into at most 62 prefixes; one IPv6 record is one prefix.
        let total = by_country.prefix_count();
        assert!(total <= 62 * text.lines().count().max(1));
    }
});
