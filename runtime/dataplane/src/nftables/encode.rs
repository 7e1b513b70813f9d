//! A transaction as one nfnetlink batch: pure encoding, no I/O ([`super::socket`] sends it).
//!
//! The batch is built from [`Op`]s directly and never reads the ruleset back, which is what
//! makes a delta cost what it changes rather than what the table holds (the `nft` tool
//! re-reads the whole table for every transaction). [`super::decode`] reads a batch back into
//! the same operations, for the round-trip tests.

use super::expr::{self, addr_bytes};
use super::ops::{Elem, Family, Op, Set, SetKind, TABLE, Verdict, proto_number};
use super::wire::{self, F_ACK, F_APPEND, F_CREATE, F_REQUEST, SUBSYS_NFTABLES, Writer, msg};

/// nft's datatype numbers, for `nft list` to print wasp's sets.
mod datatype {
    pub const INTEGER: u32 = 4;
    pub const IPV4: u32 = 7;
    pub const IPV6: u32 = 8;
    pub const INET_PROTO: u32 = 12;
    pub const INET_SERVICE: u32 = 13;
    /// A concatenation's type: each field's type shifted in, first field highest.
    pub fn concat(types: &[u32]) -> u32 {
        types.iter().fold(0, |acc, t| (acc << 6) | t)
    }
}

/// `NFT_MSG_GETCHAIN`.
pub const GETCHAIN: u16 = 4;
/// `NFT_MSG_GETSET`.
pub const GETSET: u16 = 10;
const SET_MAP: u32 = 0x8;
const SET_TIMEOUT: u32 = 0x10;
const SET_EVAL: u32 = 0x20;
const DATA_VERDICT: u32 = 0xffff_ff00;

/// A batch ready to send: its bytes and, per sequence number, what the message does.
#[derive(Debug, Default)]
pub struct Batch {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// The first sequence number of the operations.
    pub first_seq: u32,
    /// The sequence number of the last operation (the one acknowledged).
    pub last_seq: u32,
    /// The index into the transaction of each message, by `seq - first_seq`.
    pub op_of: Vec<usize>,
}

/// `NFPROTO_*` of a family.
pub fn nfproto(f: Family) -> u8 {
    f.af()
}

/// Encodes a transaction as `BATCH_BEGIN`, one message per operation (element lists split to
/// stay well under netlink's message size), `BATCH_END`. Only the last operation asks for an
/// acknowledgement; errors are always reported.
pub fn encode(tx: &[(Family, Op)], seq: u32) -> Batch {
    let mut w = Writer::default();
    let mut b = Batch {
        first_seq: seq + 1,
        ..Batch::default()
    };
    w.begin(wire::BATCH_BEGIN, F_REQUEST, seq, 0, SUBSYS_NFTABLES);
    w.end();
    let mut s = seq;
    let mut set_id = 0u32;
    let mut last_start = 0;
    for (i, (f, op)) in tx.iter().enumerate() {
        let chunks: Vec<&[Elem]> = match op {
            Op::AddElements { elems, .. } | Op::DeleteElements { elems, .. } => {
                elems.chunks(ELEMS_PER_MESSAGE).collect()
            }
            _ => vec![&[]],
        };
        for chunk in chunks {
            s += 1;
            last_start = w.buf.len();
            b.op_of.push(i);
            set_id += 1;
            message(&mut w, *f, op, chunk, s, set_id);
        }
    }
    b.last_seq = s;
    if s > seq {
        // Ask for an acknowledgement of the last operation: its arrival ends the batch.
        let flags = u16::from_ne_bytes([w.buf[last_start + 6], w.buf[last_start + 7]]) | F_ACK;
        w.buf[last_start + 6..last_start + 8].copy_from_slice(&flags.to_ne_bytes());
    }
    w.begin(wire::BATCH_END, F_REQUEST, s + 1, 0, SUBSYS_NFTABLES);
    w.end();
    b.bytes = w.buf;
    b
}

/// Elements per `NEWSETELEM` message: about 40 bytes each keeps a message near 40 KiB.
pub const ELEMS_PER_MESSAGE: usize = 1000;

// Long: one arm per operation, each the attributes of its message type.
fn message(w: &mut Writer, f: Family, op: &Op, elems: &[Elem], seq: u32, set_id: u32) {
    let fam = nfproto(f);
    let begin = |w: &mut Writer, m: u16, flags: u16| {
        w.begin(SUBSYS_NFTABLES << 8 | m, F_REQUEST | flags, seq, fam, 0);
    };
    match op {
        Op::AddTable => {
            begin(w, msg::NEWTABLE, F_CREATE);
            w.str(1, TABLE);
            w.u32(2, 0);
        }
        Op::DeleteTable => {
            begin(w, msg::DELTABLE, 0);
            w.str(1, TABLE);
        }
        Op::AddChain(c) => {
            begin(w, msg::NEWCHAIN, F_CREATE);
            w.str(1, TABLE);
            w.str(3, &c.name);
            if let Some(h) = c.hook {
                w.nest(4);
                w.u32(1, hook_number(h.hook));
                w.u32(2, h.priority as u32);
                w.end();
                w.u32(5, 1);
                w.str(7, h.kind);
            }
        }
        Op::FlushRules => {
            // DELRULE naming only the table empties every chain in it.
            begin(w, msg::DELRULE, 0);
            w.str(1, TABLE);
        }
        Op::FlushChain(c) => {
            begin(w, msg::DELRULE, 0);
            w.str(1, TABLE);
            w.str(2, c);
        }
        Op::DeleteChain(c) => {
            begin(w, msg::DELCHAIN, 0);
            w.str(1, TABLE);
            w.str(3, c);
        }
        Op::AddRule { chain, rule } => {
            begin(w, msg::NEWRULE, F_CREATE | F_APPEND);
            w.str(1, TABLE);
            w.str(2, chain);
            w.nest(4);
            expr::encode(w, f, rule);
            w.end();
        }
        Op::AddSet(s) => {
            begin(w, msg::NEWSET, F_CREATE);
            set_attrs(w, f, s, set_id);
        }
        Op::FlushSet(s) => {
            begin(w, msg::DELSETELEM, 0);
            w.str(1, TABLE);
            w.str(2, &s.name);
        }
        Op::DeleteSet(s) => {
            begin(w, msg::DELSET, 0);
            w.str(1, TABLE);
            w.str(2, &s.name);
        }
        Op::AddElements { set, .. } | Op::DeleteElements { set, .. } => {
            let (m, values) = match op {
                Op::AddElements { .. } => (msg::NEWSETELEM, true),
                _ => (msg::DELSETELEM, false),
            };
            begin(w, m, if values { F_CREATE } else { 0 });
            w.str(1, TABLE);
            w.str(2, &set.name);
            w.nest(3);
            for e in elems {
                elem(w, e, values);
            }
            w.end();
        }
    }
    w.end();
}

fn hook_number(hook: &str) -> u32 {
    match hook {
        "prerouting" => 0,
        "input" => 1,
        "forward" => 2,
        "output" => 3,
        _ => 4,
    }
}

fn set_attrs(w: &mut Writer, f: Family, s: &Set, id: u32) {
    let (addr_type, a) = match f {
        Family::V4 => (datatype::IPV4, 4),
        Family::V6 => (datatype::IPV6, 16),
    };
    w.str(1, TABLE);
    w.str(2, &s.name);
    let (flags, key_type, key_len, data) = match s.kind {
        SetKind::Dispatch => (
            SET_MAP,
            datatype::concat(&[addr_type, datatype::INET_PROTO, datatype::INET_SERVICE]),
            a + 8,
            Some((DATA_VERDICT, 0)),
        ),
        SetKind::Hairpin => (0, datatype::concat(&[addr_type, addr_type]), 2 * a, None),
        SetKind::Addresses => (0, addr_type, a, None),
        SetKind::Endpoints(_) => (
            SET_MAP,
            datatype::concat(&[addr_type, datatype::INET_SERVICE, datatype::INTEGER]),
            a + 8,
            Some((
                datatype::concat(&[addr_type, datatype::INET_SERVICE]),
                a + 4,
            )),
        ),
        SetKind::Affinity { .. } => (SET_TIMEOUT | SET_EVAL, addr_type, a, None),
    };
    w.u32(3, flags);
    w.u32(4, key_type);
    w.u32(5, key_len);
    if let Some((ty, len)) = data {
        w.u32(6, ty);
        w.u32(7, len);
    }
    w.u32(10, id);
    if let SetKind::Affinity { timeout } = s.kind {
        w.u64(11, u64::from(timeout) * 1000);
    }
    if let SetKind::Endpoints(p) = s.kind {
        w.bytes(13, &typeof_userdata(f, p));
    }
}

/// The userdata nft writes for `typeof ip daddr . tcp dport . numgen random mod 2 :
/// ip daddr . tcp dport`, so that `nft list` prints the endpoints maps as it prints its own
/// (without it, nft cannot size the slot and aborts). The format is libnftnl's `udata` TLVs;
/// the numbers are nft's expression kinds (concat 13, payload 7, numgen 23) and protocol
/// header templates (ip 12 with daddr 12, ip6 13 with daddr 9; tcp 8, udp 6, sctp 10, dport 2).
pub fn typeof_userdata(f: Family, p: wasp_model::Protocol) -> Vec<u8> {
    fn tlv(t: u8, v: &[u8]) -> Vec<u8> {
        let mut out = vec![t, v.len() as u8];
        out.extend_from_slice(v);
        out
    }
    fn num(t: u8, x: u32) -> Vec<u8> {
        tlv(t, &x.to_ne_bytes())
    }
    let payload = |t, desc, field| {
        tlv(
            t,
            &[num(0, 7), tlv(1, &[num(0, desc), num(1, field)].concat())].concat(),
        )
    };
    let (ip, daddr) = match f {
        Family::V4 => (12, 12),
        Family::V6 => (13, 9),
    };
    let th = match p {
        wasp_model::Protocol::Tcp => 8,
        wasp_model::Protocol::Udp => 6,
        wasp_model::Protocol::Sctp => 10,
    };
    let (addr, port) = (payload(0, ip, daddr), payload(1, th, 2));
    let numgen = tlv(
        2,
        &[
            num(0, 23),
            tlv(1, &[num(0, 1), num(1, 2), num(2, 0)].concat()),
        ]
        .concat(),
    );
    let concat = |parts: &[&[u8]]| [num(0, 13), tlv(1, &parts.concat())].concat();
    [
        num(0, 0),
        num(1, 0),
        tlv(3, &concat(&[&addr, &port, &numgen])),
        tlv(4, &concat(&[&addr, &port])),
    ]
    .concat()
}

/// Pads a field to its 32-bit register width.
fn padded(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(field);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn elem(w: &mut Writer, e: &Elem, values: bool) {
    let one = |w: &mut Writer, key: &[u8], data: Option<&dyn Fn(&mut Writer)>| {
        w.nest(1);
        w.nest(1);
        w.bytes(1, key);
        w.end();
        if let Some(d) = data {
            w.nest(2);
            d(w);
            w.end();
        }
        w.end();
    };
    match e {
        Elem::Dispatch {
            addr,
            proto,
            port,
            verdict,
        } => {
            let mut key = Vec::new();
            padded(&mut key, &addr_bytes(addr));
            padded(&mut key, &[proto_number(*proto)]);
            padded(&mut key, &port.to_be_bytes());
            let data = |w: &mut Writer| {
                w.nest(2);
                match verdict {
                    Verdict::Goto(c) => {
                        w.u32(1, expr::verdict::GOTO);
                        w.str(2, c);
                    }
                    Verdict::Drop => w.u32(1, expr::verdict::DROP),
                }
                w.end();
            };
            one(w, &key, values.then_some(&data as &dyn Fn(&mut Writer)));
        }
        Elem::Hairpin(ip) => {
            let mut key = addr_bytes(ip);
            key.extend(addr_bytes(ip));
            one(w, &key, None);
        }
        Elem::Addr(ip) => one(w, &addr_bytes(ip), None),
        Elem::Slot {
            vip,
            port,
            slot,
            addr,
            target,
        } => {
            let mut key = addr_bytes(vip);
            padded(&mut key, &port.to_be_bytes());
            // The slot is what numgen and jhash write: a host-order u32.
            key.extend_from_slice(&slot.to_ne_bytes());
            let mut t = addr_bytes(addr);
            padded(&mut t, &target.to_be_bytes());
            let data = |w: &mut Writer| w.bytes(1, &t);
            one(w, &key, values.then_some(&data as &dyn Fn(&mut Writer)));
        }
    }
}
