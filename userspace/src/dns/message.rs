//! One DNS answer decoded with hickory-proto: the name the device asked
//! for, and every address it got with the CNAME chain followed.

use std::{collections::HashMap, net::IpAddr};

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{Name, RData},
};

/// CNAME links followed from the question before giving up (resolvers
/// stop at 8-16; a longer chain is a loop or an attack).
pub const MAX_CHAIN: usize = 16;
/// Addresses taken from one answer; more are counted, not kept.
pub const MAX_ADDRESSES: usize = 64;
/// Answer records looked at in one message.
pub const MAX_RECORDS: usize = 256;

/// What one answer told a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// The name in the question, lowercase, without the trailing dot.
    pub query: String,
    pub addresses: Vec<Resolved>,
    /// Addresses of the chain beyond [`MAX_ADDRESSES`].
    pub dropped: usize,
}

/// One address of an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub addr: IpAddr,
    /// The owner of the address record: the end of the CNAME chain (equal
    /// to the query when there is no CNAME).
    pub canonical: String,
    /// Seconds: the smallest TTL along the chain to this address.
    pub ttl: u32,
}

/// Why a message gives no names.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("malformed DNS message: {0}")]
    Malformed(String),
    #[error("a query, not a response")]
    NotResponse,
    #[error("not a standard query (opcode {0})")]
    NotQuery(u8),
    #[error("response code {0}")]
    Failed(u16),
    #[error("no question")]
    NoQuestion,
}

fn text(name: &Name) -> String {
    let mut s = name.to_lowercase().to_ascii();
    if s.len() > 1 && s.ends_with('.') {
        s.pop();
    }
    s
}

/// Decodes `payload` (one DNS message) and follows the CNAME chain from
/// the question to its addresses.
pub fn parse(payload: &[u8]) -> Result<Resolution, MessageError> {
    let message = Message::from_vec(payload).map_err(|e| MessageError::Malformed(e.to_string()))?;
    let meta = &message.metadata;
    if meta.message_type != MessageType::Response {
        return Err(MessageError::NotResponse);
    }
    if meta.op_code != OpCode::Query {
        return Err(MessageError::NotQuery(u8::from(meta.op_code)));
    }
    if meta.response_code != ResponseCode::NoError {
        return Err(MessageError::Failed(u16::from(meta.response_code)));
    }
    let question = message.queries.first().ok_or(MessageError::NoQuestion)?;
    let query = text(question.name());
    let records = message.answers.iter().take(MAX_RECORDS);
    // owner -> (target, ttl) of every CNAME in the answer.
    let mut links: HashMap<String, (String, u32)> = HashMap::new();
    for r in records.clone() {
        if let RData::CNAME(target) = &r.data {
            links
                .entry(text(&r.name))
                .or_insert((text(&target.0), r.ttl));
        }
    }
    // Names on the chain from the question, with the smallest TTL so far.
    let mut chain: HashMap<String, u32> = HashMap::new();
    let mut at = query.clone();
    let mut ttl = u32::MAX;
    for _ in 0..=MAX_CHAIN {
        if chain.contains_key(&at) {
            break; // a loop
        }
        chain.insert(at.clone(), ttl);
        match links.get(&at) {
            Some((next, t)) => {
                ttl = ttl.min(*t);
                at.clone_from(next);
            }
            None => break,
        }
    }
    let mut addresses = Vec::new();
    let mut dropped = 0;
    for r in records {
        let addr = match &r.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            _ => continue,
        };
        let owner = text(&r.name);
        let Some(chain_ttl) = chain.get(&owner) else {
            continue; // not on the question's chain
        };
        if addresses.len() == MAX_ADDRESSES {
            dropped += 1;
            continue;
        }
        addresses.push(Resolved {
            addr,
            canonical: owner,
            ttl: r.ttl.min(*chain_ttl),
        });
    }
    Ok(Resolution {
        query,
        addresses,
        dropped,
    })
}
