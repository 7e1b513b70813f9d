//! Cluster IP allocation for Services that give none, as the API server's allocator would.
//!
//! An address is derived from a hash of `namespace/name`, so the same config gets the same
//! addresses after a restart. Once given, an address sticks to its Service for as long as the
//! Service exists, so Services that come and go never move it. On a collision the next free
//! address is probed.
//!
//! An explicit address two Services claim belongs to whoever held it first, as with the API
//! server (which refuses the second Service at creation): the Service holding it now keeps it,
//! and among new claimants the older one (by `metadata.creationTimestamp`, then by name) wins.
//! Allocated addresses are handed out in the same order, so a restart gives a Service the
//! address it had.
//!
//! A change to a few Services' requests need not run over every Service:
//! [`Allocator::assign_changed`] gives exactly what [`Allocator::assign`] of every request
//! would, whenever [`Allocator::isolated`] says that no other Service's result can move (no
//! refused Service waits for an address the change may free, and no changed claim is on an
//! address someone else holds).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use sha2::{Digest, Sha256};

mod changed;
pub mod nodeport;

#[cfg(test)]
mod changed_tests;

use changed::{Outside, Waiting, claims_free, outside_holder};
pub use nodeport::{NodePorts, PortRefusal, PortRequest};

use wasp_model::name::NamespacedName;

/// What one Service asks of the allocator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The Service.
    pub name: NamespacedName,
    /// The addresses the Service gave itself, if any.
    pub explicit: Vec<IpAddr>,
    /// The families (true = IPv4) that need an allocated address.
    pub families: Vec<bool>,
    /// When the Service was created (nanoseconds since the epoch), if known.
    pub created: Option<i128>,
}
/// Why a Service could not be given an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Another Service holds this explicit address.
    Taken {
        /// The address.
        ip: IpAddr,
        /// Its holder.
        holder: NamespacedName,
    },
    /// No service CIDR of the family has a free address.
    Exhausted {
        /// The family (true = IPv4).
        ipv4: bool,
    },
}

impl Refusal {
    /// The address a refused Service waits for (`None`: any free one).
    fn waits_for(&self) -> Option<IpAddr> {
        match self {
            Self::Taken { ip, .. } => Some(*ip),
            Self::Exhausted { .. } => None,
        }
    }
}

/// Hands out cluster IPs (and, through [`Allocator::node_ports`], node ports),
/// deterministically and stickily.
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    cidrs: Vec<IpNet>,
    sticky: BTreeMap<NamespacedName, Vec<IpAddr>>,
    /// Who holds each address in `sticky`.
    holders: HashMap<IpAddr, NamespacedName>,
    /// The Services refused, and the address each waits for.
    waiting: Waiting<NamespacedName, IpAddr>,
    /// The node port allocator.
    pub node_ports: NodePorts,
}

impl Allocator {
    /// An allocator over `cidrs` (at most one per family is used).
    pub fn new(cidrs: Vec<IpNet>) -> Self {
        Self {
            cidrs,
            sticky: BTreeMap::new(),
            holders: HashMap::new(),
            waiting: Waiting::default(),
            node_ports: NodePorts::default(),
        }
    }

    /// The family of the first CIDR (true = IPv4): the family of single-stack Services.
    pub fn primary_ipv4(&self) -> bool {
        self.cidrs.first().is_none_or(|c| c.addr().is_ipv4())
    }

    /// Whether a CIDR of the family is configured.
    pub fn has_family(&self, ipv4: bool) -> bool {
        self.cidrs.iter().any(|c| c.addr().is_ipv4() == ipv4)
    }

    /// Gives every request its addresses. Explicit addresses first: a Service that holds
    /// all of its addresses already keeps them, then the others in creation order; the first
    /// holder of an address keeps it. Services no longer requested lose their sticky addresses.
    pub fn assign(
        &mut self,
        requests: &[Request],
    ) -> BTreeMap<NamespacedName, Result<Vec<IpAddr>, Refusal>> {
        let result = self.assign_among(requests, None);
        self.sticky = result
            .iter()
            .filter_map(|(n, r)| r.as_ref().ok().map(|ips| (n.clone(), ips.clone())))
            .collect();
        self.holders = self
            .sticky
            .iter()
            .flat_map(|(n, ips)| ips.iter().map(|ip| (*ip, n.clone())))
            .collect();
        self.waiting = Waiting::default();
        for (n, r) in &result {
            if let Err(e) = r {
                self.waiting.insert(n.clone(), e.waits_for());
            }
        }
        result
    }

    /// Whether [`Allocator::assign_changed`] of `changed` (the new requests of some Services)
    /// with the Services `excluded` (those, and the ones no longer requested) gives what
    /// [`Allocator::assign`] of every request would: when no Service the last assignment
    /// refused waits for an address the excluded Services hold now (so none freed can go to a
    /// waiting Service) and no changed request claims an address another Service holds or
    /// another changed request claims (so no claim can take an address away). Every other
    /// Service then keeps what it has, or stays refused.
    pub fn isolated(&self, changed: &[Request], excluded: &HashSet<&NamespacedName>) -> bool {
        let asking: HashSet<&NamespacedName> = changed.iter().map(|r| &r.name).collect();
        let claims = changed
            .iter()
            .flat_map(|r| r.explicit.iter().map(move |ip| (*ip, &r.name)));
        let freed = excluded
            .iter()
            .flat_map(|n| self.sticky.get(*n).into_iter().flatten());
        !self.waiting.wants(freed) && claims_free(&self.holders, excluded, &asking, claims)
    }

    /// Gives the `changed` requests their addresses, every Service outside `excluded`
    /// keeping what it holds; the Services in `excluded` without a request lose theirs. Only
    /// exact (the same as [`Allocator::assign`] of every request) when
    /// [`Allocator::isolated`] says so.
    pub fn assign_changed(
        &mut self,
        changed: &[Request],
        excluded: &HashSet<&NamespacedName>,
    ) -> BTreeMap<NamespacedName, Result<Vec<IpAddr>, Refusal>> {
        let result = self.assign_among(changed, Some((&self.holders, excluded)));
        for name in excluded {
            for ip in self.sticky.remove(*name).into_iter().flatten() {
                self.holders.remove(&ip);
            }
        }
        self.waiting.forget(|n| excluded.contains(n));
        for (n, r) in &result {
            match r {
                Ok(ips) => {
                    self.holders.extend(ips.iter().map(|ip| (*ip, n.clone())));
                    self.sticky.insert(n.clone(), ips.clone());
                }
                Err(e) => self.waiting.insert(n.clone(), e.waits_for()),
            }
        }
        result
    }

    /// The assignment of `requests`, with the addresses `outside` holds (but for the names
    /// it excludes) taken already.
    fn assign_among<'a>(
        &self,
        requests: &'a [Request],
        outside: Option<Outside<'a, IpAddr>>,
    ) -> BTreeMap<NamespacedName, Result<Vec<IpAddr>, Refusal>> {
        let mut order: Vec<&Request> = requests.iter().collect();
        // Older first; a Service without a creation time after those with one.
        order.sort_by(|a, b| {
            (a.created.is_none(), a.created, &a.name).cmp(&(
                b.created.is_none(),
                b.created,
                &b.name,
            ))
        });
        let mut a = Assignment {
            used: HashMap::new(),
            outside,
            out: HashMap::new(),
        };
        self.claim_explicit(&order, &mut a);
        let pending = self.keep_sticky(&order, &mut a);
        for (r, v4) in pending {
            self.allocate(r, v4, &mut a);
        }
        let primary_v4 = self.primary_ipv4();
        let mut result = BTreeMap::new();
        for r in requests {
            let Some(mut res) = a.out.remove(&r.name) else {
                continue;
            };
            if let Ok(ips) = &mut res
                && r.explicit.is_empty()
            {
                // Primary family first, as the API server orders clusterIPs.
                ips.sort_by_key(|ip| ip.is_ipv4() != primary_v4);
            }
            result.insert(r.name.clone(), res);
        }
        result
    }

    /// Explicit addresses: those who hold theirs first, then in `order`.
    fn claim_explicit<'a>(&self, order: &[&'a Request], a: &mut Assignment<'a>) {
        let holds = |r: &Request| {
            let old = self.sticky.get(&r.name);
            r.explicit
                .iter()
                .all(|ip| old.is_some_and(|o| o.contains(ip)))
        };
        let mut claims: Vec<&Request> = order
            .iter()
            .copied()
            .filter(|r| !r.explicit.is_empty())
            .collect();
        claims.sort_by_key(|r| !holds(r));
        for r in claims {
            if let Some((ip, holder)) = r.explicit.iter().find_map(|ip| Some((*ip, a.holder(ip)?)))
            {
                let holder = holder.clone();
                a.out.insert(&r.name, Err(Refusal::Taken { ip, holder }));
                continue;
            }
            for ip in &r.explicit {
                a.used.insert(*ip, &r.name);
            }
        }
    }

    /// Sticky addresses next, so a new Service never moves an existing one; returns the
    /// (request, family) pairs that still need an address.
    fn keep_sticky<'a>(
        &self,
        order: &[&'a Request],
        a: &mut Assignment<'a>,
    ) -> Vec<(&'a Request, bool)> {
        let mut pending = Vec::new();
        for r in order {
            if a.out.contains_key(&r.name) {
                continue;
            }
            let mut ips = r.explicit.clone();
            let old = self
                .sticky
                .get(&r.name)
                .map(Vec::as_slice)
                .unwrap_or_default();
            for &v4 in &r.families {
                match old
                    .iter()
                    .find(|ip| ip.is_ipv4() == v4 && a.holder(ip).is_none())
                {
                    Some(&ip) => {
                        a.used.insert(ip, &r.name);
                        ips.push(ip);
                    }
                    None => pending.push((*r, v4)),
                }
            }
            a.out.insert(&r.name, Ok(ips));
        }
        pending
    }

    /// A fresh address of the family for `r`, from the hash of its name.
    fn allocate<'a>(&self, r: &'a Request, v4: bool, a: &mut Assignment<'a>) {
        let result = match self.cidrs.iter().find(|c| c.addr().is_ipv4() == v4) {
            Some(cidr) => probe(cidr, &r.name, |ip| a.holder(ip).is_some())
                .ok_or(Refusal::Exhausted { ipv4: v4 }),
            None => Err(Refusal::Exhausted { ipv4: v4 }),
        };
        match result {
            Ok(ip) => {
                a.used.insert(ip, &r.name);
                if let Some(Ok(ips)) = a.out.get_mut(&r.name) {
                    ips.push(ip);
                }
            }
            Err(e) => {
                a.out.insert(&r.name, Err(e));
            }
        }
    }
}

/// One assignment in progress: the addresses taken, and each Service's result so far.
struct Assignment<'a> {
    used: HashMap<IpAddr, &'a NamespacedName>,
    outside: Option<Outside<'a, IpAddr>>,
    out: HashMap<&'a NamespacedName, Result<Vec<IpAddr>, Refusal>>,
}

impl<'a> Assignment<'a> {
    /// Who holds `ip`: a Service assigned already, or one outside the assignment.
    fn holder(&self, ip: &IpAddr) -> Option<&'a NamespacedName> {
        self.used
            .get(ip)
            .copied()
            .or_else(|| outside_holder(self.outside, ip))
    }
}

/// The first free address at or after the hashed offset, skipping the network address, the
/// first host address (by convention the `kubernetes` Service's) and the IPv4 broadcast.
fn probe(cidr: &IpNet, name: &NamespacedName, used: impl Fn(&IpAddr) -> bool) -> Option<IpAddr> {
    let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len()).min(64);
    if host_bits < 2 {
        return None;
    }
    let size: u64 = if host_bits == 64 {
        u64::MAX
    } else {
        1u64 << host_bits
    };
    let reserved_top = u64::from(cidr.addr().is_ipv4());
    let usable = size - 2 - reserved_top;
    let digest = Sha256::digest(format!("{}/{}", name.namespace, name.name).as_bytes());
    let mut h = [0u8; 8];
    h.copy_from_slice(&digest[..8]);
    let start = u64::from_be_bytes(h) % usable;
    let tries = usable.min(1 << 20);
    (0..tries)
        .map(|i| 2 + (start + i) % usable)
        .map(|off| nth(cidr, off))
        .find(|ip| !used(ip))
}

fn nth(cidr: &IpNet, off: u64) -> IpAddr {
    match cidr.network() {
        IpAddr::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n).wrapping_add(off as u32))),
        IpAddr::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n).wrapping_add(u128::from(off)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, explicit: &[&str]) -> Request {
        Request {
            name: NamespacedName::new("default", name),
            explicit: explicit.iter().map(|s| s.parse().unwrap()).collect(),
            families: if explicit.is_empty() {
                vec![true]
            } else {
                vec![]
            },
            created: None,
        }
    }

    fn ip(out: &BTreeMap<NamespacedName, Result<Vec<IpAddr>, Refusal>>, name: &str) -> IpAddr {
        out[&NamespacedName::new("default", name)].as_ref().unwrap()[0]
    }

    #[test]
    fn deterministic_and_inside_the_cidr() {
        let cidr: IpNet = "10.96.0.0/12".parse().unwrap();
        let a = Allocator::new(vec![cidr]).assign(&[req("web", &[]), req("db", &[])]);
        let b = Allocator::new(vec![cidr]).assign(&[req("db", &[]), req("web", &[])]);
        assert_eq!(ip(&a, "web"), ip(&b, "web"));
        assert!(cidr.contains(&ip(&a, "web")));
        assert_ne!(ip(&a, "web"), ip(&a, "db"));
    }

    #[test]
    fn sticky_when_others_come_and_go() {
        let mut al = Allocator::new(vec!["10.96.0.0/28".parse().unwrap()]);
        let first = al.assign(&[req("web", &[])]);
        let before = ip(&first, "web");
        // Fill the small CIDR with others, then drop them: web never moves.
        let many: Vec<Request> = (0..8)
            .map(|i| req(&format!("s{i}"), &[]))
            .chain([req("web", &[])])
            .collect();
        assert_eq!(ip(&al.assign(&many), "web"), before);
        assert_eq!(ip(&al.assign(&[req("web", &[])]), "web"), before);
    }

    #[test]
    fn explicit_addresses_win_and_conflicts_are_refused() {
        let mut al = Allocator::new(vec!["10.96.0.0/12".parse().unwrap()]);
        let out = al.assign(&[req("a", &["10.96.0.10"]), req("b", &["10.96.0.10"])]);
        assert_eq!(ip(&out, "a"), "10.96.0.10".parse::<IpAddr>().unwrap());
        assert_eq!(
            out[&NamespacedName::new("default", "b")],
            Err(Refusal::Taken {
                ip: "10.96.0.10".parse().unwrap(),
                holder: NamespacedName::new("default", "a")
            })
        );
    }

    #[test]
    fn an_explicit_address_stays_with_whoever_held_it_first() {
        let want: IpAddr = "10.96.0.50".parse().unwrap();
        let ip_of = ip;
        let ip = want;
        let taken_by = |out: &BTreeMap<NamespacedName, Result<Vec<IpAddr>, Refusal>>, who: &str| {
            out[&NamespacedName::new("default", who)]
                == Err(Refusal::Taken {
                    ip,
                    holder: NamespacedName::new(
                        "default",
                        if who == "alpha" { "zeta" } else { "alpha" },
                    ),
                })
        };
        // zeta holds the address; alpha comes later and sorts first by name.
        let mut al = Allocator::new(vec!["10.96.0.0/12".parse().unwrap()]);
        al.assign(&[req("zeta", &["10.96.0.50"])]);
        let out = al.assign(&[req("alpha", &["10.96.0.50"]), req("zeta", &["10.96.0.50"])]);
        assert_eq!(ip_of(&out, "zeta"), want);
        assert!(taken_by(&out, "alpha"), "{out:?}");
        // After a restart, the older Service wins.
        let mut fresh = Allocator::new(vec!["10.96.0.0/12".parse().unwrap()]);
        let (mut a, mut z) = (req("alpha", &["10.96.0.50"]), req("zeta", &["10.96.0.50"]));
        (z.created, a.created) = (Some(1), Some(2));
        let out = fresh.assign(&[a, z]);
        assert_eq!(ip_of(&out, "zeta"), want);
        assert!(taken_by(&out, "alpha"), "{out:?}");
    }

    #[test]
    fn assign_scales_with_the_number_of_services() {
        // 50k Services with explicit and allocated addresses: before the allocator worked in
        // O(n log n), this alone took minutes.
        let mut al = Allocator::new(vec!["10.96.0.0/12".parse().unwrap()]);
        let reqs: Vec<Request> = (0..50_000u32)
            .map(|i| {
                if i % 2 == 0 {
                    req(
                        &format!("s{i}"),
                        &[&format!("10.97.{}.{}", i / 250, i % 250)],
                    )
                } else {
                    req(&format!("s{i}"), &[])
                }
            })
            .collect();
        let out = al.assign(&reqs);
        assert_eq!(out.values().filter(|r| r.is_ok()).count(), 50_000);
    }

    #[test]
    fn exhaustion_is_reported() {
        let mut al = Allocator::new(vec!["10.96.0.0/30".parse().unwrap()]);
        let out = al.assign(&[req("a", &[]), req("b", &[])]);
        assert!(out.values().filter(|r| r.is_ok()).count() == 1);
        assert!(
            out.values()
                .any(|r| r == &Err(Refusal::Exhausted { ipv4: true }))
        );
    }
}
