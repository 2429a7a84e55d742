//! The start/end range CSV loader (DB-IP style) on arbitrary bytes: never
//! panics. It reads files, so each input is written to a scratch file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regionwall::sources::range_csv;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("regionwall-fuzz-{}.csv", std::process::id()));
    if std::fs::write(&path, data).is_ok() {
        let _ = range_csv::load(&path, &mut regionwall::input::Inputs::default());
    }
});
