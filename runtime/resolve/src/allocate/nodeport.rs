//! Node port allocation for NodePort and LoadBalancer Services that give none, as the API
//! server's node port allocator would: from `--service-node-port-range`, a port chosen by the
//! hash of the Service and its port, kept for as long as the Service exists.
//!
//! A node port belongs to one Service (whose ports may share it across protocols when it is
//! given explicitly, as a DNS Service's TCP and UDP ports do; an allocated port is its
//! port's own). An explicit port two Services claim stays with whoever held it first, as
//! cluster IPs do: the holder, then the older Service.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::RangeInclusive;

use sha2::{Digest, Sha256};
use wasp_model::NamespacedName;

use super::changed::{Outside, Waiting, claims_free, outside_holder};

/// What one port of a Service asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRequest {
    /// The Service.
    pub service: NamespacedName,
    /// Which port: the port's name and protocol, or `healthCheckNodePort`.
    pub key: String,
    /// The node port the Service gave itself, if any.
    pub explicit: Option<u16>,
    /// When the Service was created (nanoseconds since the epoch), if known.
    pub created: Option<i128>,
}

/// Why a port could not be given a node port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRefusal {
    /// Another Service holds this node port.
    Taken {
        /// The port.
        port: u16,
        /// Its holder.
        holder: NamespacedName,
    },
    /// An explicit port outside the range.
    OutOfRange {
        /// The port.
        port: u16,
    },
    /// No free port in the range.
    Exhausted,
}

/// Hands out node ports, deterministically and stickily.
#[derive(Debug, Clone)]
pub struct NodePorts {
    range: RangeInclusive<u16>,
    sticky: BTreeMap<(NamespacedName, String), u16>,
    /// Which Service holds each port in `sticky`.
    holders: HashMap<u16, NamespacedName>,
    /// The ports refused, and the node port each waits for.
    waiting: Waiting<(NamespacedName, String), u16>,
}

impl Default for NodePorts {
    fn default() -> Self {
        Self::new(30000..=32767)
    }
}

type Assigned = BTreeMap<(NamespacedName, String), Result<u16, PortRefusal>>;

impl NodePorts {
    /// An allocator over `range` (kube-apiserver's `--service-node-port-range`).
    pub fn new(range: RangeInclusive<u16>) -> Self {
        Self {
            range,
            sticky: BTreeMap::new(),
            holders: HashMap::new(),
            waiting: Waiting::default(),
        }
    }

    /// Gives every request its node port; requests no longer made lose their sticky ports.
    pub fn assign(&mut self, requests: &[PortRequest]) -> Assigned {
        let out = self.assign_among(requests, None);
        self.sticky = out
            .iter()
            .filter_map(|(k, r)| r.as_ref().ok().map(|p| (k.clone(), *p)))
            .collect();
        self.holders = self
            .sticky
            .iter()
            .map(|((n, _), p)| (*p, n.clone()))
            .collect();
        self.waiting = Waiting::default();
        for (k, r) in &out {
            if let Err(e) = r {
                self.wait(k, e);
            }
        }
        out
    }

    /// Whether [`NodePorts::assign_changed`] gives what [`NodePorts::assign`] of every
    /// request would, as [`super::Allocator::isolated`] for addresses: no refused port waits
    /// for one the excluded Services hold, and no changed request claims a port another
    /// Service holds or claims.
    pub fn isolated(&self, changed: &[PortRequest], excluded: &HashSet<&NamespacedName>) -> bool {
        let asking: HashSet<&NamespacedName> = changed.iter().map(|r| &r.service).collect();
        let claims = changed
            .iter()
            .filter_map(|r| Some((r.explicit?, &r.service)));
        let freed = excluded.iter().flat_map(|n| {
            self.sticky
                .range(((*n).clone(), String::new())..)
                .take_while(move |((s, _), _)| s == *n)
                .map(|(_, p)| p)
        });
        !self.waiting.wants(freed) && claims_free(&self.holders, excluded, &asking, claims)
    }

    /// Records that port `k` was refused: a port taken waits for it, one refused for want of
    /// a free port for any; one out of the range waits for nothing another Service does.
    fn wait(&mut self, k: &(NamespacedName, String), e: &PortRefusal) {
        match e {
            PortRefusal::Taken { port, .. } => self.waiting.insert(k.clone(), Some(*port)),
            PortRefusal::Exhausted => self.waiting.insert(k.clone(), None),
            PortRefusal::OutOfRange { .. } => {}
        }
    }

    /// Gives the `changed` requests their node ports, every Service outside `excluded`
    /// keeping its own; the Services in `excluded` lose the ports they no longer ask for.
    /// Only exact when [`NodePorts::isolated`] says so.
    pub fn assign_changed(
        &mut self,
        changed: &[PortRequest],
        excluded: &HashSet<&NamespacedName>,
    ) -> Assigned {
        let out = self.assign_among(changed, Some((&self.holders, excluded)));
        self.sticky.retain(|(n, _), p| {
            let keep = !excluded.contains(n);
            if !keep {
                self.holders.remove(p);
            }
            keep
        });
        self.waiting.forget(|(n, _)| excluded.contains(n));
        for (k, r) in &out {
            match r {
                Ok(p) => {
                    self.holders.insert(*p, k.0.clone());
                    self.sticky.insert(k.clone(), *p);
                }
                Err(e) => self.wait(k, e),
            }
        }
        out
    }

    /// The assignment of `requests`, with the ports `outside` holds (but for the Services
    /// it excludes) taken already.
    fn assign_among<'a>(
        &self,
        requests: &'a [PortRequest],
        outside: Option<Outside<'a, u16>>,
    ) -> Assigned {
        let mut order: Vec<&PortRequest> = requests.iter().collect();
        // A port that has its node port already keeps it, explicit or allocated.
        let holds = |r: &PortRequest| {
            self.sticky
                .get(&(r.service.clone(), r.key.clone()))
                .is_some_and(|s| r.explicit.is_none_or(|e| e == *s))
        };
        // Holders first, then the older Service, then by name.
        order.sort_by(|a, b| {
            (
                !holds(a),
                a.created.is_none(),
                a.created,
                &a.service,
                &a.key,
            )
                .cmp(&(
                    !holds(b),
                    b.created.is_none(),
                    b.created,
                    &b.service,
                    &b.key,
                ))
        });
        let mut used: HashMap<u16, &NamespacedName> = HashMap::new();
        let holder = |used: &HashMap<u16, &'a NamespacedName>, p: &u16| {
            used.get(p).copied().or_else(|| outside_holder(outside, p))
        };
        let mut out = Assigned::new();
        let mut pending = Vec::new();
        for r in order.iter().copied() {
            let k = (r.service.clone(), r.key.clone());
            let wanted = r.explicit.or_else(|| {
                // Its own Service's other port may share it (an explicit port set to it).
                self.sticky
                    .get(&k)
                    .copied()
                    .filter(|p| holder(&used, p).is_none_or(|h| *h == r.service))
            });
            let Some(port) = wanted else {
                pending.push(r);
                continue;
            };
            let res = match holder(&used, &port) {
                _ if r.explicit.is_some() && !self.range.contains(&port) => {
                    Err(PortRefusal::OutOfRange { port })
                }
                Some(h) if *h != r.service => Err(PortRefusal::Taken {
                    port,
                    holder: h.clone(),
                }),
                _ => {
                    used.insert(port, &r.service);
                    Ok(port)
                }
            };
            out.insert(k, res);
        }
        for r in pending {
            // An allocated port is the port's own.
            let res = self
                .probe(r, |p| holder(&used, p).is_some())
                .ok_or(PortRefusal::Exhausted);
            if let Ok(p) = res {
                used.insert(p, &r.service);
            }
            out.insert((r.service.clone(), r.key.clone()), res);
        }
        out
    }

    /// The first free port at or after the hashed offset.
    fn probe(&self, r: &PortRequest, taken: impl Fn(&u16) -> bool) -> Option<u16> {
        let (lo, hi) = (u32::from(*self.range.start()), u32::from(*self.range.end()));
        let size = hi.checked_sub(lo)? + 1;
        let d = Sha256::digest(format!(
            "{}/{}/{}",
            r.service.namespace, r.service.name, r.key
        ));
        let start = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % size;
        (0..size)
            .map(|i| (lo + (start + i) % size) as u16)
            .find(|p| !taken(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(svc: &str, key: &str, explicit: Option<u16>, created: Option<i128>) -> PortRequest {
        PortRequest {
            service: NamespacedName::new("default", svc),
            key: key.into(),
            explicit,
            created,
        }
    }

    fn port(out: &Assigned, svc: &str, key: &str) -> Result<u16, PortRefusal> {
        out[&(NamespacedName::new("default", svc), key.to_string())].clone()
    }

    #[test]
    fn allocated_ports_are_stable_sticky_and_in_range() {
        let mut a = NodePorts::default();
        let one = a.assign(&[req("web", "http/TCP", None, None)]);
        let p = port(&one, "web", "http/TCP").unwrap();
        assert!((30000..=32767).contains(&p));
        // The same after a restart, and not moved by a newcomer.
        let mut b = NodePorts::default();
        assert_eq!(
            port(
                &b.assign(&[req("web", "http/TCP", None, None)]),
                "web",
                "http/TCP"
            ),
            Ok(p)
        );
        let both = a.assign(&[
            req("aaa", "x/TCP", Some(p), None),
            req("web", "http/TCP", None, None),
        ]);
        assert_eq!(port(&both, "web", "http/TCP"), Ok(p), "web holds it");
        assert_eq!(
            port(&both, "aaa", "x/TCP"),
            Err(PortRefusal::Taken {
                port: p,
                holder: NamespacedName::new("default", "web")
            })
        );
    }

    #[test]
    fn explicit_conflicts_go_to_the_older_service_and_a_service_may_share_across_protocols() {
        let mut a = NodePorts::default();
        let out = a.assign(&[
            req("b", "dns/TCP", Some(30053), Some(1)),
            req("b", "dns/UDP", Some(30053), Some(1)),
            req("a", "x/TCP", Some(30053), Some(2)),
        ]);
        assert_eq!(port(&out, "b", "dns/TCP"), Ok(30053));
        assert_eq!(port(&out, "b", "dns/UDP"), Ok(30053));
        assert!(matches!(
            port(&out, "a", "x/TCP"),
            Err(PortRefusal::Taken { .. })
        ));
        let out = a.assign(&[req("c", "x/TCP", Some(80), None)]);
        assert_eq!(
            port(&out, "c", "x/TCP"),
            Err(PortRefusal::OutOfRange { port: 80 })
        );
    }
}
