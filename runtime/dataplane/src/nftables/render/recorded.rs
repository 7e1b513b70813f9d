//! What the nftables mode remembers of each port it programmed: enough for the next partial
//! sync's delta, in much less than the rendered objects.
//!
//! A partial sync compares a port's new objects with what was programmed and sends only the
//! difference. It needs the old elements (to delete those that went) and the old chains'
//! names (to delete a chain that went), but of the old rules only whether they differ, since
//! a changed chain is flushed and written again. So a chain is kept as its name and a
//! fingerprint of its rules, and every list as a boxed slice without spare capacity. At
//! 10,000 Services × 10 endpoints the rendered objects held 26 MiB.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;

use wasp_model::Protocol;

use super::port::PortObjects;
use crate::nftables::ops::{Elem, Rule, Set, SetKind};

/// One port as programmed in one family's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The protocol.
    pub proto: Protocol,
    /// Each chain's name and a fingerprint of its rules (a hash).
    pub chains: Box<[(Box<str>, u64)]>,
    /// The endpoints map (shard) holding the port's slots.
    pub map: Box<str>,
    /// The port's slots in its map.
    pub slots: Box<[Elem]>,
    /// Its `service-ips` elements.
    pub dispatch: Box<[Elem]>,
    /// Its `no-endpoint-services` elements.
    pub unusable: Box<[Elem]>,
    /// Its `firewall-ips` elements.
    pub firewall: Box<[Elem]>,
    /// The endpoint addresses it needs in the hairpin set, sorted.
    pub hairpin: Box<[IpAddr]>,
    /// Its cluster IPs, sorted.
    pub cluster_ips: Box<[IpAddr]>,
    /// Its affinity sets.
    pub affinity: Box<[Set]>,
}

/// A chain's rules, reduced to what tells two versions apart.
pub fn fingerprint(rules: &[Rule]) -> u64 {
    let mut h = DefaultHasher::new();
    rules.hash(&mut h);
    h.finish()
}

impl From<PortObjects> for Recorded {
    fn from(p: PortObjects) -> Self {
        let chains = p.chains.iter();
        Self {
            proto: p.proto,
            chains: chains
                .map(|(c, r)| (c.as_str().into(), fingerprint(r)))
                .collect(),
            map: p.map.into(),
            slots: p.slots.into(),
            dispatch: p.dispatch.into(),
            unusable: p.unusable.into(),
            firewall: p.firewall.into(),
            hairpin: p.hairpin.into_iter().collect(),
            cluster_ips: p.cluster_ips.into_iter().collect(),
            affinity: p.affinity.into(),
        }
    }
}

impl Recorded {
    /// The port's map, as a set to name.
    pub fn map_set(&self) -> Set {
        Set {
            name: self.map.to_string(),
            kind: SetKind::Endpoints(self.proto),
        }
    }

    /// The fingerprint of chain `name`'s rules, if the port has that chain.
    pub fn chain(&self, name: &str) -> Option<u64> {
        self.chains
            .iter()
            .find(|(c, _)| &**c == name)
            .map(|(_, f)| *f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nftables::ops::{Pick, Rule};

    fn dnat(modulus: u32) -> Rule {
        Rule::Dnat {
            when: None,
            proto: Protocol::Tcp,
            pick: Pick::Random { modulus, offset: 0 },
            map: "endpoints-tcp-0".into(),
        }
    }

    #[test]
    fn a_fingerprint_tells_rules_apart() {
        assert_eq!(fingerprint(&[dnat(3)]), fingerprint(&[dnat(3)]));
        assert_ne!(fingerprint(&[dnat(3)]), fingerprint(&[dnat(4)]));
        assert_ne!(
            fingerprint(&[dnat(3)]),
            fingerprint(&[dnat(3), Rule::Reject])
        );
        assert_ne!(fingerprint(&[]), fingerprint(&[Rule::Reject]));
    }
}
