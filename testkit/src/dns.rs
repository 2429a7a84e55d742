//! DNS messages in wire form for tests: questions and answers with A, AAAA
//! and CNAME records, written without compression by a hand encoder that
//! shares nothing with the decoder under test.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_AAAA: u16 = 28;

/// One answer record.
#[derive(Clone, Debug)]
pub enum Rr {
    A(&'static str, Ipv4Addr, u32),
    Aaaa(&'static str, Ipv6Addr, u32),
    Cname(&'static str, &'static str, u32),
}

/// A name as length-prefixed labels ending with the root.
#[must_use]
pub fn name(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in text
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(u8::try_from(label.len()).unwrap_or(63));
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// A standard query for `qname`.
#[must_use]
pub fn query(id: u16, qname: &str, qtype: u16) -> Vec<u8> {
    let mut m = header(id, 0x0100, 1, 0);
    question(&mut m, qname, qtype);
    m
}

/// A response (rcode `rcode`) to `qname` with `answers`.
#[must_use]
pub fn response(id: u16, qname: &str, qtype: u16, rcode: u8, answers: &[Rr]) -> Vec<u8> {
    let count = u16::try_from(answers.len()).unwrap_or(u16::MAX);
    let mut m = header(id, 0x8180 | u16::from(rcode & 0x0f), 1, count);
    question(&mut m, qname, qtype);
    for rr in answers {
        let (owner, kind, ttl, data) = match rr {
            Rr::A(o, a, t) => (*o, TYPE_A, *t, a.octets().to_vec()),
            Rr::Aaaa(o, a, t) => (*o, TYPE_AAAA, *t, a.octets().to_vec()),
            Rr::Cname(o, target, t) => (*o, TYPE_CNAME, *t, name(target)),
        };
        m.extend_from_slice(&name(owner));
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&u16::try_from(data.len()).unwrap_or(0).to_be_bytes());
        m.extend_from_slice(&data);
    }
    m
}

fn header(id: u16, flags: u16, questions: u16, answers: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(512);
    for v in [id, flags, questions, answers, 0, 0] {
        m.extend_from_slice(&v.to_be_bytes());
    }
    m
}

fn question(m: &mut Vec<u8>, qname: &str, qtype: u16) {
    m.extend_from_slice(&name(qname));
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
}

/// A DNS answer as resolvers write it, with every record's owner a
/// compression pointer to the question: for `name` (dotted, e.g. `"example.com"`) with
/// `records` A records (192.0.2.1, 192.0.2.2, ...), as a resolver sends it
/// over UDP. Each record is 16 bytes (a name pointer to the question).
#[must_use]
pub fn compressed_answer(id: u16, name: &str, records: u16) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x81, 0x80]); // response, RD, RA, no error
    m.extend_from_slice(&1u16.to_be_bytes());
    m.extend_from_slice(&records.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        m.push(u8::try_from(label.len()).unwrap_or(63).min(63));
        m.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    m.push(0);
    m.extend_from_slice(&[0, 1, 0, 1]); // A, IN
    for i in 0..records {
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4]);
        let [hi, lo] = (i + 1).to_be_bytes();
        m.extend_from_slice(&[192, 0, 2u8.wrapping_add(hi), lo]);
    }
    m
}

/// DNS over TCP: `messages`, each after its two-byte length.
#[must_use]
pub fn tcp_stream(messages: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        out.extend_from_slice(&u16::try_from(m.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}
