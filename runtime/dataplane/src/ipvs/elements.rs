//! The helper table's element changes as one nfnetlink batch, sent over the nftables mode's
//! socket: a partial sync's set elements cost what they change, not an `nft` process (which
//! also re-reads the table). The table itself is written with `nft -f` ([`super::helper`]).

use super::genl::VsKey;
use super::helper::TABLE;
use super::render::Elem;
use crate::core::Family;
use crate::nftables::encode::{Batch, nfproto};
use crate::nftables::expr::addr_bytes;
use crate::nftables::ops::proto_number;
use crate::nftables::wire::{self, F_ACK, F_CREATE, F_REQUEST, SUBSYS_NFTABLES, Writer, msg};

/// The elements of one message: a set, add or delete, and the elements.
type Group<'a> = (Family, &'static str, bool, Vec<&'a Elem>);

fn padded(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(field);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn tuple(k: &VsKey) -> Vec<u8> {
    let mut key = Vec::new();
    padded(&mut key, &addr_bytes(&k.addr));
    padded(&mut key, &[proto_number(k.proto)]);
    padded(&mut key, &k.port.to_be_bytes());
    key
}

/// An element's key and, for the map, its value.
fn key_value(e: &Elem) -> (Vec<u8>, Option<u32>) {
    match e {
        Elem::Vip(a) => (addr_bytes(a), None),
        Elem::Hairpin(a) => ([addr_bytes(a), addr_bytes(a)].concat(), None),
        Elem::ShortCircuit(k, mark) => (tuple(k), Some(*mark)),
        Elem::Service(k)
        | Elem::Reject(k)
        | Elem::Drop(k)
        | Elem::MasqueradeOutside(k)
        | Elem::MasqueradeAll(k)
        | Elem::Firewall(k, _) => (tuple(k), None),
    }
}

fn element(w: &mut Writer, e: &Elem, add: bool) {
    let (key, value) = key_value(e);
    w.nest(1);
    w.nest(1);
    w.bytes(1, &key);
    w.end();
    if let (Some(v), true) = (value, add) {
        // The map's value is a mark: a host-order u32.
        w.nest(2);
        w.bytes(1, &v.to_ne_bytes());
        w.end();
    }
    w.end();
}

/// Groups element changes by family and set: deletions first.
pub fn groups<'a>(removed: &'a [Elem], added: &'a [Elem]) -> Vec<Group<'a>> {
    let mut out: Vec<Group<'a>> = Vec::new();
    for (add, elems) in [(false, removed), (true, added)] {
        for e in elems.iter().filter(|e| !matches!(e, Elem::Firewall(..))) {
            let (f, set) = (super::helper::family(e), super::helper::set_name(e));
            match out
                .iter_mut()
                .find(|g| g.0 == f && g.1 == set && g.2 == add)
            {
                Some(g) => g.3.push(e),
                None => out.push((f, set, add, vec![e])),
            }
        }
    }
    out
}

/// The batch that applies `groups`, sequence numbers from `seq`.
pub fn batch(groups: &[Group<'_>], seq: u32) -> Batch {
    let mut w = Writer::default();
    w.begin(wire::BATCH_BEGIN, F_REQUEST, seq, 0, SUBSYS_NFTABLES);
    w.end();
    let mut b = Batch {
        first_seq: seq + 1,
        ..Batch::default()
    };
    let mut s = seq;
    for (i, (f, set, add, elems)) in groups.iter().enumerate() {
        for chunk in elems.chunks(1000) {
            s += 1;
            b.op_of.push(i);
            let m = if *add {
                msg::NEWSETELEM
            } else {
                msg::DELSETELEM
            };
            let flags = if *add { F_CREATE } else { 0 };
            w.begin(
                SUBSYS_NFTABLES << 8 | m,
                F_REQUEST | flags,
                s,
                nfproto(*f),
                0,
            );
            w.str(1, TABLE);
            w.str(2, set);
            w.nest(3);
            for e in chunk {
                element(&mut w, e, *add);
            }
            w.end();
            w.end();
        }
    }
    b.last_seq = s;
    // Ask for an acknowledgement of the last message: its arrival ends the batch.
    if let Some(start) = last_message_start(&w.buf, seq) {
        let flags = u16::from_ne_bytes([w.buf[start + 6], w.buf[start + 7]]) | F_ACK;
        w.buf[start + 6..start + 8].copy_from_slice(&flags.to_ne_bytes());
    }
    w.begin(wire::BATCH_END, F_REQUEST, s + 1, 0, SUBSYS_NFTABLES);
    w.end();
    b.bytes = w.buf;
    b
}

/// Where the last message after the batch's begin starts.
fn last_message_start(buf: &[u8], begin_seq: u32) -> Option<usize> {
    let mut offset = 0;
    let mut last = None;
    for m in wire::messages(buf) {
        if m.seq != begin_seq {
            last = Some(offset);
        }
        offset += wire::aligned_len(&m);
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasp_model::Protocol;

    #[test]
    fn changes_group_by_set_and_read_back() {
        let k = VsKey::tuple(Protocol::Tcp, "10.96.0.10".parse().unwrap(), 80);
        let removed = [Elem::Hairpin("10.244.1.2".parse().unwrap())];
        let added = [
            Elem::Hairpin("10.244.1.3".parse().unwrap()),
            Elem::ShortCircuit(k, 0x5a00_0001),
            Elem::Vip("fd00::10".parse().unwrap()),
        ];
        let g = groups(&removed, &added);
        assert_eq!(g.len(), 4, "{g:?}");
        let b = batch(&g, 100);
        let msgs = wire::messages(&b.bytes);
        assert_eq!(msgs.len(), 6, "begin, four messages, end");
        assert_eq!(msgs[1].kind, SUBSYS_NFTABLES << 8 | msg::DELSETELEM);
        let attrs = msgs[1].attrs();
        assert_eq!(
            (attrs[0].string(), attrs[1].string()),
            (TABLE.to_string(), "hairpin".into())
        );
        // The map element carries the mark as its value; only the last message asks for an ack.
        let map = msgs
            .iter()
            .find(|m| {
                m.attrs()
                    .get(1)
                    .is_some_and(|a| a.string() == "short-circuit")
            })
            .unwrap();
        let elem = map.attrs()[2].nested()[0].nested();
        assert_eq!(elem[1].nested()[0].data, &0x5a00_0001u32.to_ne_bytes());
        assert!(msgs[4].flags & F_ACK != 0 && msgs[3].flags & F_ACK == 0);
        assert_eq!((b.first_seq, b.last_seq), (101, 104));
        assert_eq!(
            msgs[4].family(),
            10,
            "the IPv6 address goes to the ip6 table"
        );
    }
}
