//! The names the DNS responder answers for, built from the same store and resolution as the
//! proxy (the Kubernetes DNS specification, the parts a node without cluster DNS needs):
//! `<svc>.<ns>.svc.<domain>` with the cluster IPs, or for a headless Service the ready
//! endpoints' addresses; `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV for named ports.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use wasp_model::ProxyState;
use wasp_resolve::ObjectStore;

/// One SRV answer: the port and the target name.
pub type Srv = (u16, String);

/// Every name, lower case, with its trailing dot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    /// The cluster domain, with its trailing dot (`cluster.local.`).
    pub zone: String,
    /// Where Services' names end: `svc.` and the zone.
    pub domain: String,
    /// Addresses by name.
    pub addresses: BTreeMap<String, BTreeSet<IpAddr>>,
    /// SRV answers by name.
    pub srv: BTreeMap<String, BTreeSet<Srv>>,
}

impl Records {
    /// The records of `state` (Services with cluster IPs) and the headless Services of
    /// `store`, under `domain` (`cluster.local`).
    pub fn build(state: &ProxyState, store: &ObjectStore, domain: &str) -> Self {
        let zone = format!("{}.", domain.trim_end_matches('.').to_lowercase());
        let domain = format!("svc.{zone}");
        let mut r = Self {
            zone,
            domain: domain.clone(),
            ..Self::default()
        };
        for (spn, port) in &state.ports {
            let svc = service_name(&spn.service.name, &spn.service.namespace, &domain);
            r.addresses
                .entry(svc.clone())
                .or_default()
                .extend(port.service.cluster_ips.iter().copied());
            if !spn.port.is_empty() {
                let name = format!(
                    "_{}._{}.{svc}",
                    spn.port.to_lowercase(),
                    spn.protocol.lower()
                );
                r.srv
                    .entry(name)
                    .or_default()
                    .insert((port.service.port, svc.clone()));
            }
        }
        r.headless(store);
        r
    }

    /// Headless Services: their ready endpoints, from Endpoints and EndpointSlices.
    fn headless(&mut self, store: &ObjectStore) {
        for (key, s) in &store.services {
            let spec = s.object.spec.as_ref();
            if spec.and_then(|s| s.cluster_ip.as_deref()) != Some("None") {
                continue;
            }
            let svc = service_name(&key.name, &key.namespace, &self.domain);
            let mut ips: BTreeSet<IpAddr> = store
                .endpoints
                .get(key)
                .and_then(|e| e.object.subsets.as_ref())
                .into_iter()
                .flatten()
                .flat_map(|s| s.addresses.iter().flatten())
                .filter_map(|a| a.ip.parse().ok())
                .collect();
            for slice in store.slices.values().map(|s| &s.object) {
                let labels = slice.metadata.labels.as_ref();
                let owner = labels.and_then(|l| l.get("kubernetes.io/service-name"));
                if slice.metadata.namespace.as_deref().unwrap_or("default") != key.namespace
                    || owner != Some(&key.name)
                {
                    continue;
                }
                let ready = slice
                    .endpoints
                    .iter()
                    .flatten()
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false));
                ips.extend(
                    ready
                        .flat_map(|e| e.addresses.iter())
                        .filter_map(|a| a.parse::<IpAddr>().ok()),
                );
            }
            self.addresses.entry(svc.clone()).or_default().extend(ips);
            for p in spec.and_then(|s| s.ports.as_ref()).into_iter().flatten() {
                let (Some(name), Ok(port)) = (&p.name, u16::try_from(p.port)) else {
                    continue;
                };
                let proto = p.protocol.as_deref().unwrap_or("TCP").to_lowercase();
                let srv = format!("_{}._{proto}.{svc}", name.to_lowercase());
                self.srv.entry(srv).or_default().insert((port, svc.clone()));
            }
        }
    }

    /// Whether `name` (lower case, trailing dot) is inside the cluster domain.
    pub fn in_zone(&self, name: &str) -> bool {
        name == self.zone || name.ends_with(&format!(".{}", self.zone))
    }
}

fn service_name(name: &str, namespace: &str, domain: &str) -> String {
    format!(
        "{}.{}.{domain}",
        name.to_lowercase(),
        namespace.to_lowercase()
    )
}
