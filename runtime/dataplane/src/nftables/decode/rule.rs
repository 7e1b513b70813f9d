//! A rule's expressions read back into the [`Rule`] they encode: the inverse of
//! [`super::super::expr::encode`], pattern by pattern.

use std::net::IpAddr;

use super::exprs::{Expr, expr};
use super::*;
use crate::nftables::expr::{
    BASE_NETWORK, BASE_TRANSPORT, CMP_EQ, CMP_LT, CMP_NEQ, CT_STATE, CT_STATUS, FIB_F_SADDR,
    FIB_RESULT_ADDRTYPE, META_L4PROTO, META_MARK, SOCKET_TRANSPARENT,
};
use crate::nftables::ops::{Action, Match};

/// The static chain and set names rules refer to.
fn known(name: &str) -> Result<&'static str, String> {
    names::ALL
        .iter()
        .copied()
        .find(|n| *n == name)
        .ok_or_else(|| format!("unknown name {name}"))
}

/// A cursor over a rule's expressions.
struct Cur {
    e: Vec<Expr>,
    at: usize,
}

impl Cur {
    fn next(&mut self) -> Result<Expr, String> {
        let e = self.e.get(self.at).cloned().ok_or("the rule ends early")?;
        self.at += 1;
        Ok(e)
    }

    fn peek(&self) -> Option<&Expr> {
        self.e.get(self.at)
    }

    fn done(&self) -> bool {
        self.at == self.e.len()
    }

    fn is_payload(&self, base: u32, offset: u32) -> bool {
        matches!(self.peek(), Some(Expr::Payload { base: b, offset: o, .. }) if *b == base && *o == offset)
    }

    fn proto(&mut self) -> Result<Protocol, String> {
        match (self.next()?, self.next()?) {
            (Expr::MetaLoad { key: META_L4PROTO }, Expr::Cmp { op: CMP_EQ, data }) => {
                match data.as_slice() {
                    [6] => Ok(Protocol::Tcp),
                    [17] => Ok(Protocol::Udp),
                    [132] => Ok(Protocol::Sctp),
                    other => Err(format!("protocol {other:?}")),
                }
            }
            other => Err(format!("not a protocol match: {other:?}")),
        }
    }
}

fn mark(b: &[u8]) -> Result<u32, String> {
    b.try_into()
        .map(u32::from_ne_bytes)
        .map_err(|_| "a mark of 4 bytes".to_string())
}

/// A CIDR from a compared address and its mask (none: a whole host address).
fn cidr(f: Family, net: &[u8], mask: Option<&[u8]>) -> Result<IpNet, String> {
    let prefix = mask.map_or(f.addr_len() * 8, |m| {
        m.iter().map(|b| b.count_ones()).sum::<u32>()
    });
    IpNet::new(ip(f, net)?, prefix as u8).map_err(|e| e.to_string())
}

impl Cur {
    /// The condition a rule starts with, if it has one (`expr::Exprs::when`).
    fn when(&mut self, f: Family) -> Result<Option<Match>, String> {
        let (saddr, daddr) = match f {
            Family::V4 => (12, 16),
            Family::V6 => (8, 24),
        };
        let rest = &self.e[self.at..];
        let (m, used) = match rest {
            [
                Expr::Fib {
                    result: FIB_RESULT_ADDRTYPE,
                    flags: FIB_F_SADDR,
                },
                Expr::Cmp { op: CMP_EQ, .. },
                ..,
            ] => (Match::SaddrLocal, 2),
            [
                Expr::Socket {
                    key: SOCKET_TRANSPARENT,
                },
                Expr::Cmp { op: CMP_EQ, .. },
                ..,
            ] => (Match::SocketTransparent, 2),
            [
                Expr::Payload {
                    base: BASE_NETWORK,
                    offset,
                    ..
                },
                Expr::Lookup { set, dreg: None },
                ..,
            ] if *offset == daddr => (Match::DaddrIn(known(set)?), 2),
            [
                Expr::Payload {
                    base: BASE_NETWORK,
                    offset,
                    ..
                },
                Expr::Bitwise { mask, .. },
                Expr::Cmp { op, data },
                ..,
            ] if *op == CMP_EQ || *op == CMP_NEQ => (
                self.addr_match(f, *offset == saddr, *offset == daddr, *op, data, Some(mask))?,
                3,
            ),
            [
                Expr::Payload {
                    base: BASE_NETWORK,
                    offset,
                    ..
                },
                Expr::Cmp { op, data },
                ..,
            ] if (*op == CMP_EQ || *op == CMP_NEQ) && (*offset == saddr || *offset == daddr) => (
                self.addr_match(f, *offset == saddr, *offset == daddr, *op, data, None)?,
                2,
            ),
            _ => return Ok(None),
        };
        self.at += used;
        Ok(Some(m))
    }

    fn addr_match(
        &self,
        f: Family,
        src: bool,
        dst: bool,
        op: u32,
        data: &[u8],
        mask: Option<&[u8]>,
    ) -> Result<Match, String> {
        let cidr = cidr(f, data, mask)?;
        match (src, dst, op) {
            (true, _, _) => Ok(Match::Saddr {
                cidr,
                not: op == CMP_NEQ,
            }),
            (_, true, CMP_EQ) => Ok(Match::Daddr(cidr)),
            _ => Err("an address comparison wasp does not write".into()),
        }
    }
}

/// The expressions of `NFTA_RULE_EXPRESSIONS` read back into the rule. Long: one arm per
/// rule shape, in the order `expr::encode` writes them.
pub(super) fn rule(f: Family, list: &[Attr<'_>]) -> Result<Rule, String> {
    let e = list
        .iter()
        .map(|x| expr(&x.nested()))
        .collect::<Result<Vec<_>, _>>()?;
    // Rules without a condition of the form `when` reads.
    let bare = match e.as_slice() {
        [
            Expr::Verdict {
                code: verdict::JUMP,
                chain: Some(c),
            },
        ] => Some(Rule::Jump(known(c)?)),
        [
            Expr::Ct { key: CT_STATE },
            Expr::Bitwise { .. },
            Expr::Cmp { op: CMP_NEQ, .. },
            Expr::Verdict {
                code: verdict::JUMP,
                chain: Some(c),
            },
        ] => Some(Rule::JumpIfNew(known(c)?)),
        [
            Expr::Payload { .. },
            Expr::MetaLoad { key: META_L4PROTO },
            Expr::Payload { .. },
            Expr::Lookup { set, dreg: Some(0) },
        ] => Some(Rule::Dispatch(known(set)?)),
        [Expr::Reject] => Some(Rule::Reject),
        [Expr::Masq] => Some(Rule::Masquerade),
        [
            Expr::Ct { key: CT_STATUS },
            Expr::Bitwise { .. },
            Expr::Cmp { .. },
            Expr::Payload { .. },
            Expr::Payload { .. },
            Expr::Lookup { set, dreg: None },
            Expr::Masq,
        ] => Some(Rule::Hairpin(known(set)?)),
        [
            Expr::MetaLoad { key: META_MARK },
            Expr::Bitwise { mask, .. },
            Expr::Cmp { op: CMP_EQ, .. },
            Expr::Verdict {
                code: verdict::RETURN,
                ..
            },
        ] => Some(Rule::ReturnUnmarked(mark(mask)?)),
        [
            Expr::MetaLoad { key: META_MARK },
            Expr::Bitwise { mask, xor },
            Expr::MetaSet { key: META_MARK },
        ] if mark(mask)? == u32::MAX => Some(Rule::ClearMark(mark(xor)?)),
        _ => None,
    };
    if let Some(r) = bare {
        return Ok(r);
    }
    let mut c = Cur { e, at: 0 };
    let when = c.when(f)?;
    let r = match &c.e[c.at..] {
        [
            Expr::Verdict {
                code: verdict::RETURN,
                chain: None,
            },
        ] => Rule::Filter {
            when,
            action: Action::Return,
        },
        [
            Expr::Verdict {
                code: verdict::DROP,
                chain: None,
            },
        ] => Rule::Filter {
            when,
            action: Action::Drop,
        },
        [Expr::Reject] => Rule::Filter {
            when,
            action: Action::Reject,
        },
        [
            Expr::MetaLoad { key: META_MARK },
            Expr::Bitwise { xor, .. },
            Expr::MetaSet { key: META_MARK },
        ] => Rule::Mark {
            when,
            mark: mark(xor)?,
        },
        _ => return nat_rule(f, when, c),
    };
    Ok(r)
}

/// The DNAT and affinity rules, which begin with a protocol match.
fn nat_rule(f: Family, when: Option<Match>, mut c: Cur) -> Result<Rule, String> {
    let proto = c.proto()?;
    let (saddr, daddr) = match f {
        Family::V4 => (12, 16),
        Family::V6 => (8, 24),
    };
    if let [Expr::Immediate { data }, Expr::Redir] = &c.e[c.at..] {
        return Ok(Rule::Redirect {
            when,
            proto,
            port: port(data, 0)?,
        });
    }
    if matches!(c.e.last(), Some(Expr::Nat)) && c.e.iter().any(|x| matches!(x, Expr::Dynset { .. }))
    {
        return sticky(f, when, proto, c, saddr);
    }
    // Dnat: [hash fields, hash] daddr dport [numgen] lookup nat.
    let mut fields = 0;
    // The hash fields: everything up to the hash (none before a random pick's daddr).
    let at_end = |c: &Cur, fields: usize| {
        c.done()
            || matches!(c.peek(), Some(Expr::Hash { .. }))
            || (fields == 0 && c.is_payload(BASE_NETWORK, daddr))
    };
    while !at_end(&c, fields) {
        c.next()?;
        fields += 1;
    }
    let hash = match c.peek() {
        Some(Expr::Hash {
            modulus,
            seed,
            offset,
        }) => {
            let key = match fields {
                1 => HashKey::SourceIp,
                2 => HashKey::SourceIpPort,
                5 => HashKey::FiveTuple,
                n => return Err(format!("a hash over {n} fields")),
            };
            let pick = Pick::Hash {
                key,
                modulus: *modulus,
                seed: *seed,
                offset: *offset,
            };
            c.next()?;
            Some(pick)
        }
        _ => None,
    };
    let (
        Expr::Payload { .. },
        Expr::Payload {
            base: BASE_TRANSPORT,
            ..
        },
    ) = (c.next()?, c.next()?)
    else {
        return Err("a DNAT without daddr . dport".into());
    };
    let pick = match hash {
        Some(p) => p,
        None => match c.next()? {
            Expr::Numgen { modulus, offset } => Pick::Random { modulus, offset },
            other => return Err(format!("a DNAT without a pick: {other:?}")),
        },
    };
    let (Expr::Lookup { set: map, .. }, Expr::Nat) = (c.next()?, c.next()?) else {
        return Err("a DNAT without its map".into());
    };
    if !c.done() {
        return Err("expressions after the DNAT".into());
    }
    Ok(Rule::Dnat {
        when,
        proto,
        pick,
        map,
    })
}

fn sticky(
    f: Family,
    when: Option<Match>,
    proto: Protocol,
    mut c: Cur,
    saddr: u32,
) -> Result<Rule, String> {
    let mut known = false;
    if c.is_payload(BASE_NETWORK, saddr)
        && matches!(c.e.get(c.at + 1), Some(Expr::Lookup { dreg: None, .. }))
    {
        c.next()?;
        c.next()?;
        known = true;
    }
    let mut chance = None;
    if let Some(Expr::Numgen { modulus, .. }) = c.peek().cloned() {
        c.next()?;
        let (Expr::Byteorder, Expr::Cmp { op: CMP_LT, data }) = (c.next()?, c.next()?) else {
            return Err("a chance without its comparison".into());
        };
        let w = data
            .as_slice()
            .try_into()
            .map(u32::from_be_bytes)
            .map_err(|_| "a weight of 4 bytes")?;
        chance = Some((modulus, w));
    }
    let (Expr::Payload { .. }, Expr::Dynset { set }) = (c.next()?, c.next()?) else {
        return Err("an affinity rule without its update".into());
    };
    let (Expr::Immediate { data: a }, Expr::Immediate { data: p }, Expr::Nat) =
        (c.next()?, c.next()?, c.next()?)
    else {
        return Err("an affinity rule without its DNAT".into());
    };
    let addr: IpAddr = ip(f, &a)?;
    Ok(Rule::Sticky {
        when,
        proto,
        chance,
        known,
        set,
        addr,
        port: port(&p, 0)?,
    })
}
