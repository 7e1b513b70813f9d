//! A netlink batch read back into the operations it encodes: the other half of the byte
//! round trip (`parse(raw) == msg`, and `emit(parse(raw)) == raw`), run on every golden case
//! without root, and the fuzz harness's check of the encoder.
//!
//! It reads what [`super::encode`] writes, and only that: anything else is an error that says
//! where. Element lists come back one operation per message (the encoder splits long lists);
//! [`chunked`] splits a transaction the same way, so the two compare equal. A set known only
//! by name (flushes, deletions, element changes) comes back as [`stray_set`] names it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use thiserror::Error;
use wasp_model::{HashKey, Protocol};

use super::encode::{ELEMS_PER_MESSAGE, nfproto, typeof_userdata};
use super::expr::verdict;
use super::ops::{Chain, Elem, Family, Hook, Op, Pick, Rule, Set, SetKind, Verdict};
use super::render::{names, stray_set};
use super::wire::{self, Attr, Message, SUBSYS_NFTABLES, msg};

/// Why a batch cannot be read back.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The batch is not framed by `BATCH_BEGIN` and `BATCH_END`.
    #[error("not a batch: {0}")]
    Framing(&'static str),
    /// A message wasp never sends, or one missing what wasp always writes.
    #[error("message {index}: {what}")]
    Message {
        /// The message's position in the batch.
        index: usize,
        /// What is wrong.
        what: String,
    },
}

/// The operations of `bytes`, a batch [`super::encode::encode`] made.
///
/// # Errors
/// Says which message cannot be read, and why.
pub fn decode(bytes: &[u8]) -> Result<Vec<(Family, Op)>, DecodeError> {
    let msgs = wire::messages(bytes);
    let (Some(first), Some(last)) = (msgs.first(), msgs.last()) else {
        return Err(DecodeError::Framing("no messages"));
    };
    if first.kind != wire::BATCH_BEGIN || last.kind != wire::BATCH_END || msgs.len() < 2 {
        return Err(DecodeError::Framing("no BATCH_BEGIN ... BATCH_END"));
    }
    msgs[1..msgs.len() - 1]
        .iter()
        .enumerate()
        .map(|(i, m)| op(m).map_err(|what| DecodeError::Message { index: i + 1, what }))
        .collect()
}

/// `tx` with every element list cut as the encoder cuts it, one operation per message.
pub fn chunked(tx: &[(Family, Op)]) -> Vec<(Family, Op)> {
    let mut out = Vec::with_capacity(tx.len());
    for (f, o) in tx {
        match o {
            Op::AddElements { set, elems } => {
                for chunk in elems.chunks(ELEMS_PER_MESSAGE) {
                    let (set, elems) = (stray_set(&set.name), chunk.to_vec());
                    out.push((*f, Op::AddElements { set, elems }));
                }
            }
            Op::DeleteElements { set, elems } => {
                for chunk in elems.chunks(ELEMS_PER_MESSAGE) {
                    let set = stray_set(&set.name);
                    let elems = chunk.iter().map(|e| key_only(*f, e)).collect();
                    out.push((*f, Op::DeleteElements { set, elems }));
                }
            }
            Op::FlushSet(s) => out.push((*f, Op::FlushSet(stray_set(&s.name)))),
            Op::DeleteSet(s) => out.push((*f, Op::DeleteSet(stray_set(&s.name)))),
            other => out.push((*f, other.clone())),
        }
    }
    out
}

/// An element as a deletion carries it: its key (the value reads back as nothing).
fn key_only(f: Family, e: &Elem) -> Elem {
    let none = match f {
        Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    match e {
        Elem::Dispatch {
            addr, proto, port, ..
        } => Elem::Dispatch {
            addr: *addr,
            proto: *proto,
            port: *port,
            verdict: Verdict::Drop,
        },
        Elem::Slot {
            vip, port, slot, ..
        } => Elem::Slot {
            vip: *vip,
            port: *port,
            slot: *slot,
            addr: none,
            target: 0,
        },
        Elem::Hairpin(ip) => Elem::Hairpin(*ip),
        Elem::Addr(ip) => Elem::Addr(*ip),
    }
}

fn attr<'a>(attrs: &[Attr<'a>], ty: u16) -> Result<Attr<'a>, String> {
    attrs
        .iter()
        .find(|a| a.ty == ty)
        .cloned()
        .ok_or_else(|| format!("no attribute {ty}"))
}

fn family(m: &Message<'_>) -> Result<Family, String> {
    Family::ALL
        .into_iter()
        .find(|f| nfproto(*f) == m.family())
        .ok_or_else(|| format!("family {}", m.family()))
}

fn op(m: &Message<'_>) -> Result<(Family, Op), String> {
    let f = family(m)?;
    let a = m.attrs();
    if m.kind >> 8 != SUBSYS_NFTABLES {
        return Err(format!("subsystem {}", m.kind >> 8));
    }
    let name = |ty| attr(&a, ty).map(|x| x.string());
    let op = match m.kind & 0xff {
        msg::NEWTABLE => Op::AddTable,
        msg::DELTABLE => Op::DeleteTable,
        msg::NEWCHAIN => Op::AddChain(Chain {
            name: name(3)?,
            hook: a
                .iter()
                .find(|x| x.ty == 4)
                .map(|h| hook(&h.nested(), &a))
                .transpose()?,
        }),
        msg::DELCHAIN => Op::DeleteChain(name(3)?),
        msg::DELRULE => match a.iter().find(|x| x.ty == 2) {
            Some(c) => Op::FlushChain(c.string()),
            None => Op::FlushRules,
        },
        msg::NEWRULE => Op::AddRule {
            chain: name(2)?,
            rule: rule(f, &attr(&a, 4)?.nested())?,
        },
        msg::NEWSET => Op::AddSet(set(f, &a)?),
        msg::DELSET => Op::DeleteSet(stray_set(&name(2)?)),
        msg::NEWSETELEM | msg::DELSETELEM => {
            let set = stray_set(&name(2)?);
            match a.iter().find(|x| x.ty == 3) {
                None => Op::FlushSet(set),
                Some(list) => {
                    let elems = list
                        .nested()
                        .iter()
                        .map(|e| elem(f, set.kind, &e.nested()))
                        .collect::<Result<_, _>>()?;
                    if m.kind & 0xff == msg::NEWSETELEM {
                        Op::AddElements { set, elems }
                    } else {
                        Op::DeleteElements { set, elems }
                    }
                }
            }
        }
        other => return Err(format!("message type {other}")),
    };
    Ok((f, op))
}

fn hook(h: &[Attr<'_>], chain: &[Attr<'_>]) -> Result<Hook, String> {
    let hook = match attr(h, 1)?.be32() {
        0 => "prerouting",
        1 => "input",
        2 => "forward",
        3 => "output",
        4 => "postrouting",
        n => return Err(format!("hook {n}")),
    };
    let kind = match attr(chain, 7)?.string().as_str() {
        "nat" => "nat",
        "filter" => "filter",
        other => return Err(format!("chain type {other}")),
    };
    Ok(Hook {
        kind,
        hook,
        priority: attr(h, 2)?.be32() as i32,
    })
}

fn set(f: Family, a: &[Attr<'_>]) -> Result<Set, String> {
    let name = attr(a, 2)?.string();
    let flags = attr(a, 3)?.be32();
    let kind = if flags & 0x10 != 0 {
        let ms = attr(a, 11)?
            .data
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes);
        SetKind::Affinity {
            timeout: (ms.ok_or("timeout")? / 1000) as u32,
        }
    } else if flags & 0x8 != 0 && attr(a, 6)?.be32() == 0xffff_ff00 {
        SetKind::Dispatch
    } else if flags & 0x8 != 0 {
        let udata = attr(a, 13)?;
        let proto = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
            .into_iter()
            .find(|p| typeof_userdata(f, *p) == udata.data)
            .ok_or("endpoints map of an unknown protocol")?;
        SetKind::Endpoints(proto)
    } else if attr(a, 5)?.be32() == f.addr_len() {
        SetKind::Addresses
    } else {
        SetKind::Hairpin
    };
    Ok(Set { name, kind })
}

fn ip(f: Family, b: &[u8]) -> Result<IpAddr, String> {
    match f {
        Family::V4 => b
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        Family::V6 => b
            .get(..16)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(|o| IpAddr::V6(Ipv6Addr::from(o))),
    }
    .ok_or_else(|| "short address".to_string())
}

/// A big-endian u16 at `at`.
fn port(b: &[u8], at: usize) -> Result<u16, String> {
    b.get(at..at + 2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .ok_or_else(|| "short port".into())
}

fn elem(f: Family, kind: SetKind, e: &[Attr<'_>]) -> Result<Elem, String> {
    let key = attr(&attr(e, 1)?.nested(), 1)?;
    let k = key.data;
    let a = f.addr_len() as usize;
    let data = e.iter().find(|x| x.ty == 2).map(|d| d.nested());
    match kind {
        SetKind::Hairpin => Ok(Elem::Hairpin(ip(f, k)?)),
        SetKind::Addresses => Ok(Elem::Addr(ip(f, k)?)),
        SetKind::Dispatch => {
            let proto = match k.get(a) {
                Some(6) => Protocol::Tcp,
                Some(17) => Protocol::Udp,
                Some(132) => Protocol::Sctp,
                other => return Err(format!("protocol {other:?}")),
            };
            let verdict = match data {
                // A deletion names the key only; the verdict is then immaterial.
                None => Verdict::Drop,
                Some(d) => {
                    let v = attr(&d, 2)?.nested();
                    match attr(&v, 1)?.be32() {
                        verdict::GOTO => Verdict::Goto(attr(&v, 2)?.string()),
                        verdict::DROP => Verdict::Drop,
                        n => return Err(format!("verdict {n}")),
                    }
                }
            };
            Ok(Elem::Dispatch {
                addr: ip(f, k)?,
                proto,
                port: port(k, a + 4)?,
                verdict,
            })
        }
        SetKind::Endpoints(_) => {
            let slot = k
                .get(a + 4..a + 8)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_ne_bytes)
                .ok_or("short slot")?;
            let (addr, target) = match data {
                None => (ip(f, &[0; 16])?, 0),
                Some(d) => {
                    let t = attr(&d, 1)?.data;
                    (ip(f, t)?, port(t, a)?)
                }
            };
            Ok(Elem::Slot {
                vip: ip(f, k)?,
                port: port(k, a)?,
                slot,
                addr,
                target,
            })
        }
        SetKind::Affinity { .. } => Err("elements of an affinity set".into()),
    }
}

mod exprs;
mod rule;
use rule::rule;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nftables::encode::encode;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(b"").is_err());
        assert!(decode(&[0xff; 64]).is_err());
        let tx = vec![
            (Family::V4, Op::AddTable),
            (Family::V6, Op::DeleteChain("x".into())),
        ];
        let b = encode(&tx, 1).bytes;
        for cut in 0..b.len() {
            let _ = decode(&b[..cut]);
        }
        assert_eq!(decode(&b), Ok(tx));
    }
}
