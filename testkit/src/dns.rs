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
