//! Assigning only the changed requests against assigning every request: over a history of
//! random changes in a space small enough for claims to collide and addresses to run out,
//! whenever the allocator says the changed requests are isolated, assigning them alone must
//! give every Service what assigning everything gives.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use super::*;

/// A small deterministic generator (a 64-bit LCG's high bits).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn name(i: u64) -> NamespacedName {
    NamespacedName::new("default", format!("s{i}"))
}

/// What Service `i` asks for at random: an explicit address (from a handful, so claims
/// collide), or one allocated; an older creation time for some.
fn request(rng: &mut Rng, i: u64) -> Request {
    let explicit = match rng.below(3) {
        0 => vec![format!("10.96.0.{}", 2 + rng.below(5)).parse().unwrap()],
        _ => vec![],
    };
    Request {
        name: name(i),
        families: if explicit.is_empty() {
            vec![true]
        } else {
            vec![]
        },
        explicit,
        created: (rng.below(2) == 0).then(|| i128::from(rng.below(4))),
    }
}

fn port_request(rng: &mut Rng, i: u64, key: &str) -> PortRequest {
    PortRequest {
        service: name(i),
        key: key.into(),
        explicit: (rng.below(6) == 0).then(|| 30000 + rng.below(8) as u16),
        created: (rng.below(2) == 0).then(|| i128::from(rng.below(4))),
    }
}

/// One step: one to three Services change their requests or go away.
fn step<T: Clone>(
    rng: &mut Rng,
    now: &mut BTreeMap<NamespacedName, Vec<T>>,
    make: &mut impl FnMut(&mut Rng, u64) -> Vec<T>,
) -> (Vec<T>, Vec<NamespacedName>) {
    let mut touched = Vec::new();
    for _ in 0..=rng.below(3) {
        let i = rng.below(12);
        if rng.below(4) == 0 {
            now.remove(&name(i));
        } else {
            now.insert(name(i), make(rng, i));
        }
        touched.push(name(i));
    }
    let changed = touched
        .iter()
        .collect::<HashSet<_>>()
        .into_iter()
        .flat_map(|n| now.get(n).cloned().unwrap_or_default())
        .collect();
    (changed, touched)
}

#[test]
fn assigning_the_changed_addresses_alone_matches_assigning_all() {
    let mut rng = Rng(7);
    // 13 usable addresses for up to 12 Services, 5 of them claimed explicitly at random.
    let cidr: IpNet = "10.96.0.0/28".parse().unwrap();
    let (mut full, mut inc) = (Allocator::new(vec![cidr]), Allocator::new(vec![cidr]));
    let mut now: BTreeMap<NamespacedName, Vec<Request>> = BTreeMap::new();
    let mut got: BTreeMap<NamespacedName, Result<Vec<IpAddr>, Refusal>> = BTreeMap::new();
    let mut alone = 0;
    for i in 0..3000 {
        let (changed, touched) = step(&mut rng, &mut now, &mut |r, i| vec![request(r, i)]);
        let all: Vec<Request> = now.values().flatten().cloned().collect();
        let want = full.assign(&all);
        let excluded: HashSet<&NamespacedName> = touched.iter().collect();
        if inc.isolated(&changed, &excluded) {
            alone += 1;
            let out = inc.assign_changed(&changed, &excluded);
            got.retain(|n, _| !excluded.contains(n));
            got.extend(out);
        } else {
            got = inc.assign(&all);
        }
        assert_eq!(got, want, "step {i}");
    }
    assert!(alone > 500, "only {alone} steps were assigned alone");
}

#[test]
fn assigning_the_changed_node_ports_alone_matches_assigning_all() {
    let mut rng = Rng(11);
    // 16 ports for up to 12 Services of one or two ports, 8 of them claimed at random.
    let range = 30000..=30015;
    let (mut full, mut inc) = (NodePorts::new(range.clone()), NodePorts::new(range));
    let mut now: BTreeMap<NamespacedName, Vec<PortRequest>> = BTreeMap::new();
    let mut got = BTreeMap::new();
    let mut alone = 0;
    for i in 0..3000 {
        let (changed, touched) = step(&mut rng, &mut now, &mut |r, i| {
            let mut ports = vec![port_request(r, i, "http/TCP")];
            if r.below(3) == 0 {
                ports.push(port_request(r, i, "dns/UDP"));
            }
            ports
        });
        let all: Vec<PortRequest> = now.values().flatten().cloned().collect();
        let want = full.assign(&all);
        let excluded: HashSet<&NamespacedName> = touched.iter().collect();
        if inc.isolated(&changed, &excluded) {
            alone += 1;
            let out = inc.assign_changed(&changed, &excluded);
            got.retain(|(n, _), _| !excluded.contains(n));
            got.extend(out);
        } else {
            got = inc.assign(&all);
        }
        assert_eq!(got, want, "step {i}");
    }
    assert!(alone > 500, "only {alone} steps were assigned alone");
}
