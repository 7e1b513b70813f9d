//! The operations that take one port, and the hairpin set, from what is programmed to what is
//! wanted: element changes where the layout allows, rules only when they change.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::port::PortObjects;
use super::table::{hairpin, no_endpoints, service_ips};
use crate::nftables::ops::{Chain, Elem, Family, Op, Verdict};

/// The operations that take one port from `old` to `new` (either may be absent).
pub fn port_ops(
    f: Family,
    old: Option<&PortObjects>,
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

fn goto(p: &PortObjects) -> Elem {
    p.dispatch_elem(Verdict::Goto(p.chain.clone()))
}

/// A new port: its chain, its map (declared: adding a set that exists changes nothing), its
/// slots and rules, then its dispatch elements.
fn add(n: &PortObjects, op: &mut impl FnMut(Op)) {
    op(Op::AddChain(Chain {
        name: n.chain.clone(),
        hook: None,
    }));
    op(Op::AddSet(n.map_set()));
    for s in &n.affinity {
        op(Op::AddSet(s.clone()));
    }
    if !n.slots.is_empty() {
        op(Op::AddElements {
            set: n.map_set(),
            elems: n.slots.clone(),
        });
    }
    for r in &n.rules {
        op(Op::AddRule {
            chain: n.chain.clone(),
            rule: r.clone(),
        });
    }
    op(Op::AddElements {
        set: service_ips(),
        elems: vec![goto(n)],
    });
    if let Some(v) = &n.unusable {
        op(Op::AddElements {
            set: no_endpoints(),
            elems: vec![n.dispatch_elem(v.clone())],
        });
    }
}

/// A port that went away: its dispatch elements first, then its chain, slots and sets.
fn remove(o: &PortObjects, op: &mut impl FnMut(Op)) {
    op(Op::DeleteElements {
        set: service_ips(),
        elems: vec![goto(o)],
    });
    if let Some(v) = &o.unusable {
        op(Op::DeleteElements {
            set: no_endpoints(),
            elems: vec![o.dispatch_elem(v.clone())],
        });
    }
    op(Op::FlushChain(o.chain.clone()));
    op(Op::DeleteChain(o.chain.clone()));
    if !o.slots.is_empty() {
        op(Op::DeleteElements {
            set: o.map_set(),
            elems: o.slots.clone(),
        });
    }
    for s in &o.affinity {
        op(Op::DeleteSet(s.clone()));
    }
}

/// A port that changed: only what differs. A slot whose endpoint changed is deleted and
/// added again (elements only); the rules are rewritten only when they differ.
fn change(o: &PortObjects, n: &PortObjects, op: &mut impl FnMut(Op)) {
    let moved = o.vip != n.vip;
    let unusable_changed = moved || o.unusable != n.unusable;
    if unusable_changed && let Some(v) = &o.unusable {
        op(Op::DeleteElements {
            set: no_endpoints(),
            elems: vec![o.dispatch_elem(v.clone())],
        });
    }
    if moved {
        op(Op::DeleteElements {
            set: service_ips(),
            elems: vec![goto(o)],
        });
    }
    for s in n.affinity.iter().filter(|s| !o.affinity.contains(s)) {
        op(Op::AddSet(s.clone()));
    }
    if o.slots != n.slots {
        slot_changes(o, n, op);
    }
    if o.rules != n.rules {
        op(Op::FlushChain(n.chain.clone()));
        for r in &n.rules {
            op(Op::AddRule {
                chain: n.chain.clone(),
                rule: r.clone(),
            });
        }
    }
    for s in o.affinity.iter().filter(|s| !n.affinity.contains(s)) {
        op(Op::DeleteSet(s.clone()));
    }
    if moved {
        op(Op::AddElements {
            set: service_ips(),
            elems: vec![goto(n)],
        });
    }
    if unusable_changed && let Some(v) = &n.unusable {
        op(Op::AddElements {
            set: no_endpoints(),
            elems: vec![n.dispatch_elem(v.clone())],
        });
    }
}

/// Slots are in slot order, so they are compared position by position.
fn slot_changes(o: &PortObjects, n: &PortObjects, op: &mut impl FnMut(Op)) {
    let (mut gone, mut new) = (Vec::new(), Vec::new());
    for i in 0..o.slots.len().max(n.slots.len()) {
        let (a, b) = (o.slots.get(i), n.slots.get(i));
        if a != b {
            gone.extend(a.cloned());
            new.extend(b.cloned());
        }
    }
    if !gone.is_empty() {
        op(Op::DeleteElements {
            set: o.map_set(),
            elems: gone,
        });
    }
    if !new.is_empty() {
        op(Op::AddElements {
            set: n.map_set(),
            elems: new,
        });
    }
}

/// The hairpin set's element changes.
pub fn hairpin_ops(
    f: Family,
    added: BTreeSet<IpAddr>,
    removed: BTreeSet<IpAddr>,
    tx: &mut Vec<(Family, Op)>,
) {
    let set = hairpin();
    if !removed.is_empty() {
        tx.push((
            f,
            Op::DeleteElements {
                set: set.clone(),
                elems: removed.into_iter().map(Elem::Hairpin).collect(),
            },
        ));
    }
    if !added.is_empty() {
        tx.push((
            f,
            Op::AddElements {
                set,
                elems: added.into_iter().map(Elem::Hairpin).collect(),
            },
        ));
    }
}
