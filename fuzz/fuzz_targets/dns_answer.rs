//! The DNS answer decoder on arbitrary frames: never panics, and the name
//! cache never holds more than its cap however many answers arrive.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use regionwall::dns::{NameCache, Names, frame, message};

fuzz_target!(|bytes: &[u8]| {
    let mut names = Names::new(NameCache::new(8));
    let now = Instant::now();
    // As a whole frame, and as a bare message (the payload of a UDP answer).
    names.ingest_frame(bytes, now);
    if let Ok(answer) = message::parse(bytes) {
        assert!(answer.addresses.len() <= message::MAX_ADDRESSES);
        // A name is at most 255 bytes on the wire; in text each byte is at
        // most an escape of four characters (`\ooo`).
        assert!(answer.query.len() <= 4 * 255);
    }
    let (messages, _) = frame::tcp_messages(bytes);
    assert!(messages.iter().map(|m| m.len() + 2).sum::<usize>() <= bytes.len());
    assert!(names.cache().len() <= 8);
    let s = names.stats();
    assert!(s.answers + s.malformed + s.ignored <= 1 + bytes.len() as u64 / 2);
});
