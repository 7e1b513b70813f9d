//! The names the DNS responder answers for, built from the same store and resolution as the
//! proxy (the Kubernetes DNS specification, the parts a node without cluster DNS needs):
//! `<svc>.<ns>.svc.<domain>` with the cluster IPs, or for a headless Service the ready
//! endpoints' addresses; `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV for named ports.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use wasp_model::{NamespacedName, Protocol, ProxyState, ServicePortName};
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
    /// The names each Service gave: its address name and its SRV names.
    owned: HashMap<NamespacedName, (String, Vec<String>)>,
}

impl Records {
    /// No names yet, under `domain` (`cluster.local`).
    pub fn new(domain: &str) -> Self {
        let zone = format!("{}.", domain.trim_end_matches('.').to_lowercase());
        Self {
            domain: format!("svc.{zone}"),
            zone,
            ..Self::default()
        }
    }

    /// The records of `state` (Services with cluster IPs) and the headless Services of
    /// `store`, under `domain` (`cluster.local`).
    pub fn build(state: &ProxyState, store: &ObjectStore, domain: &str) -> Self {
        let mut r = Self::new(domain);
        let mut services: BTreeSet<&NamespacedName> =
            state.ports.keys().map(|n| &n.service).collect();
        services.extend(store.services.keys());
        for key in services {
            r.service(key, state, store);
        }
        r
    }

    /// Builds Service `key`'s names again: from its ports in `state`, or for a headless
    /// Service from its ready endpoints in `store`; a Service in neither loses its names.
    pub fn service(&mut self, key: &NamespacedName, state: &ProxyState, store: &ObjectStore) {
        if let Some((name, srv)) = self.owned.remove(key) {
            self.addresses.remove(&name);
            for n in srv {
                self.srv.remove(&n);
            }
        }
        let svc = service_name(&key.name, &key.namespace, &self.domain);
        let mut ips = BTreeSet::new();
        let mut srv: Vec<(String, Srv)> = Vec::new();
        let first = ServicePortName::new(key.clone(), "", Protocol::Tcp);
        for (spn, port) in state
            .ports
            .range(first..)
            .take_while(|(n, _)| n.service == *key)
        {
            ips.extend(port.service.cluster_ips.iter().copied());
            if !spn.port.is_empty() {
                let name = format!(
                    "_{}._{}.{svc}",
                    spn.port.to_lowercase(),
                    spn.protocol.lower()
                );
                srv.push((name, (port.service.port, svc.clone())));
            }
        }
        if let Some(s) = store.services.get(key)
            && headless(&s.object)
        {
            headless_records(key, &s.object, store, &svc, &mut ips, &mut srv);
        }
        if ips.is_empty() && srv.is_empty() {
            return;
        }
        if !ips.is_empty() {
            self.addresses.entry(svc.clone()).or_default().extend(ips);
        }
        let names = srv.iter().map(|(n, _)| n.clone()).collect();
        for (name, answer) in srv {
            self.srv.entry(name).or_default().insert(answer);
        }
        self.owned.insert(key.clone(), (svc, names));
    }

    /// Whether `name` (lower case, trailing dot) is inside the cluster domain.
    pub fn in_zone(&self, name: &str) -> bool {
        name == self.zone || name.ends_with(&format!(".{}", self.zone))
    }
}

fn headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// A headless Service's ready endpoints (from Endpoints and EndpointSlices, and for one with
/// a selector its ready Pods, as the endpoints controller would publish them) and its named
/// ports' SRV answers.
fn headless_records(
    key: &NamespacedName,
    svc: &Service,
    store: &ObjectStore,
    name: &str,
    ips: &mut BTreeSet<IpAddr>,
    srv: &mut Vec<(String, Srv)>,
) {
    let subsets = store
        .endpoints
        .get(key)
        .into_iter()
        .flat_map(|e| &e.object.subsets);
    let slices = store.slices_of(key).map(|s| &s.group);
    for group in subsets.chain(slices) {
        let ready = group.endpoints.iter().filter(|e| e.ready);
        ips.extend(ready.flat_map(|e| e.addresses()));
    }
    ips.extend(wasp_resolve::controllers::ready_pod_ips(store, svc));
    let ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref());
    for p in ports.into_iter().flatten() {
        let (Some(port_name), Ok(port)) = (&p.name, u16::try_from(p.port)) else {
            continue;
        };
        let proto = p.protocol.as_deref().unwrap_or("TCP").to_lowercase();
        let n = format!("_{}._{proto}.{name}", port_name.to_lowercase());
        srv.push((n, (port, name.to_string())));
    }
}

fn service_name(name: &str, namespace: &str, domain: &str) -> String {
    format!(
        "{}.{}.{domain}",
        name.to_lowercase(),
        namespace.to_lowercase()
    )
}
