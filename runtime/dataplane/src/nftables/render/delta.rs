//! The operations that take one port, and the shared sets, from what is programmed to what is
//! wanted: element changes where the layout allows, rules only when they change.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::port::PortObjects;
use super::recorded::{Recorded, fingerprint};
use super::table::{firewall_ips, no_endpoints, service_ips};
use crate::nftables::ops::{Chain, Elem, Family, Op, Set};

/// The operations that take one port from `old`, as programmed, to `new` (either may be
/// absent).
pub fn port_ops(
    f: Family,
    old: Option<&Recorded>,
    new: Option<&PortObjects>,
    tx: &mut Vec<(Family, Op)>,
) {
    let mut op = |o: Op| tx.push((f, o));
    match (old, new) {
        (None, None) => {}
        (None, Some(n)) => add(n, &mut op),
        (Some(o), None) => remove(o, &mut op),
        (Some(o), Some(n)) => change(o, n, &mut op),
    }
}

fn add_elements(op: &mut impl FnMut(Op), set: Set, elems: &[Elem]) {
    if !elems.is_empty() {
        op(Op::AddElements {
            set,
            elems: elems.to_vec(),
        });
    }
}

fn delete_elements(op: &mut impl FnMut(Op), set: Set, elems: &[Elem]) {
    if !elems.is_empty() {
        op(Op::DeleteElements {
            set,
            elems: elems.to_vec(),
        });
    }
}

/// A port's element lists (dispatch, unusable, firewall), each with the set it lives in.
fn element_sets(lists: [&[Elem]; 3]) -> [(Set, &[Elem]); 3] {
    let [dispatch, unusable, firewall] = lists;
    [
        (service_ips(), dispatch),
        (no_endpoints(), unusable),
        (firewall_ips(), firewall),
    ]
}

fn new_elements(p: &PortObjects) -> [(Set, &[Elem]); 3] {
    element_sets([&p.dispatch, &p.unusable, &p.firewall])
}

fn old_elements(p: &Recorded) -> [(Set, &[Elem]); 3] {
    element_sets([&p.dispatch, &p.unusable, &p.firewall])
}

/// A new port: its chains, its map (declared: adding a set that exists changes nothing), its
/// sets, slots and rules, then the elements that lead to it.
fn add(n: &PortObjects, op: &mut impl FnMut(Op)) {
    for (chain, _) in &n.chains {
        op(Op::AddChain(Chain {
            name: chain.clone(),
            hook: None,
        }));
    }
    op(Op::AddSet(n.map_set()));
    for s in &n.affinity {
        op(Op::AddSet(s.clone()));
    }
    add_elements(op, n.map_set(), &n.slots);
    for (chain, rules) in &n.chains {
        for r in rules {
            op(Op::AddRule {
                chain: chain.clone(),
                rule: r.clone(),
            });
        }
    }
    for (set, elems) in new_elements(n) {
        add_elements(op, set, elems);
    }
}

/// A port that went away: the elements that lead to it first, then its chains, slots and
/// sets.
fn remove(o: &Recorded, op: &mut impl FnMut(Op)) {
    for (set, elems) in old_elements(o) {
        delete_elements(op, set, elems);
    }
    for (chain, _) in &o.chains {
        op(Op::FlushChain(chain.to_string()));
        op(Op::DeleteChain(chain.to_string()));
    }
    delete_elements(op, o.map_set(), &o.slots);
    for s in &o.affinity {
        op(Op::DeleteSet(s.clone()));
    }
}

/// Of two element lists, what to delete (gone, or now with another value) and what to add.
fn element_changes(old: &[Elem], new: &[Elem]) -> (Vec<Elem>, Vec<Elem>) {
    let (o, n): (BTreeSet<&Elem>, BTreeSet<&Elem>) = (old.iter().collect(), new.iter().collect());
    let gone = old.iter().filter(|e| !n.contains(e)).cloned().collect();
    let added = new.iter().filter(|e| !o.contains(e)).cloned().collect();
    (gone, added)
}

/// A port that changed: only what differs. A slot whose endpoint changed is deleted and
/// added again (elements only); a chain's rules are rewritten only when they differ.
fn change(o: &Recorded, n: &PortObjects, op: &mut impl FnMut(Op)) {
    for s in n.affinity.iter().filter(|s| !o.affinity.contains(s)) {
        op(Op::AddSet(s.clone()));
    }
    for (chain, _) in n.chains.iter().filter(|(c, _)| o.chain(c).is_none()) {
        op(Op::AddChain(Chain {
            name: chain.clone(),
            hook: None,
        }));
    }
    if *o.slots != *n.slots {
        let (gone, added) = element_changes(&o.slots, &n.slots);
        delete_elements(op, o.map_set(), &gone);
        add_elements(op, n.map_set(), &added);
    }
    for (chain, rules) in &n.chains {
        match o.chain(chain) {
            Some(old) if old == fingerprint(rules) => continue,
            Some(_) => op(Op::FlushChain(chain.clone())),
            None => {}
        }
        for r in rules {
            op(Op::AddRule {
                chain: chain.clone(),
                rule: r.clone(),
            });
        }
    }
    for ((set, old), (_, new)) in old_elements(o).into_iter().zip(new_elements(n)) {
        let (gone, added) = element_changes(old, new);
        delete_elements(op, set.clone(), &gone);
        add_elements(op, set, &added);
    }
    for (chain, _) in o
        .chains
        .iter()
        .filter(|(c, _)| !n.chains.iter().any(|(x, _)| x.as_str() == &**c))
    {
        op(Op::FlushChain(chain.to_string()));
        op(Op::DeleteChain(chain.to_string()));
    }
    for s in o.affinity.iter().filter(|s| !n.affinity.contains(s)) {
        op(Op::DeleteSet(s.clone()));
    }
}

/// A shared set's element changes (the hairpin pairs, the cluster IPs): elements that no port
/// needs any more go, new ones come.
pub fn shared_ops(
    f: Family,
    set: Set,
    added: BTreeSet<IpAddr>,
    removed: BTreeSet<IpAddr>,
    elem: fn(IpAddr) -> Elem,
    tx: &mut Vec<(Family, Op)>,
) {
    let mut op = |o: Op| tx.push((f, o));
    let removed: Vec<Elem> = removed.into_iter().map(elem).collect();
    let added: Vec<Elem> = added.into_iter().map(elem).collect();
    delete_elements(&mut op, set.clone(), &removed);
    add_elements(&mut op, set, &added);
}
