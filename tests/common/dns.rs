//! Decoding the records of `DNS_RING` for the DNS copier's tests.

use aya::maps::{MapData, RingBuf};
use regionwall_common::dns::DNS_COPY_BYTES;

/// One record of `DNS_RING`, decoded field by field (the ring's bytes are
/// not aligned for `DnsCopy`).
#[derive(Debug)]
pub struct Record {
    pub wire_len: u32,
    pub captured: u32,
    pub ifindex: u32,
    pub frame: Vec<u8>,
}

fn word(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Every record in the ring now.
pub fn drain(ring: &mut RingBuf<MapData>) -> Vec<Record> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        assert_eq!(item.len(), 16 + DNS_COPY_BYTES, "record size");
        let captured = word(&item, 4);
        out.push(Record {
            wire_len: word(&item, 0),
            captured,
            ifindex: word(&item, 8),
            frame: item[16..16 + captured as usize].to_vec(),
        });
    }
    out
}
