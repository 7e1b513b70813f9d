//! What the store keeps of v1 Endpoints and EndpointSlices: the endpoints resolution and the
//! DNS responder read, and nothing else.
//!
//! The Kubernetes types are much larger than what they say: a v1 `EndpointAddress` is 240
//! bytes before its strings, an EndpointSlice endpoint 352. At 10,000 Services × 10
//! endpoints the Endpoints alone held 27 MiB; these forms hold a fifth of it. Both kinds
//! become [`EndpointGroup`]s, a set of ports and the endpoints that serve them, so the
//! mirroring controller's reading and the EndpointSlice cache's reading are one loop.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints};
use k8s_openapi::api::discovery::v1::{self as discovery, EndpointSlice};
use wasp_model::name::Protocol;

use crate::controllers::SERVICE_NAME_LABEL;

/// The label that stops the mirroring controller.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";

/// One port of an [`EndpointGroup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPort {
    /// The port's name (empty when unnamed).
    pub name: Box<str>,
    /// The protocol; `None` for one wasp does not proxy.
    pub protocol: Option<Protocol>,
    /// The port number; `None` when absent or out of range.
    pub port: Option<u16>,
}

/// One endpoint: an address of a v1 Endpoints subset, or an EndpointSlice endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEndpoint {
    /// The first address (kube-proxy uses it alone; the others are the same endpoint).
    pub ip: IpAddr,
    /// Ready (unset conditions mean ready and serving, not terminating: KEP-1672).
    pub ready: bool,
    /// Serving.
    pub serving: bool,
    /// Terminating.
    pub terminating: bool,
    /// The node it runs on.
    pub node_name: Option<Arc<str>>,
    /// The Pod (or, for a v1 Endpoints address without one, the hostname) behind it.
    pub target: Option<Arc<str>>,
    /// What most endpoints do not have, behind one pointer.
    pub extra: Option<Box<EndpointExtra>>,
}

/// The rarer parts of a [`GroupEndpoint`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointExtra {
    /// Its zone.
    pub zone: Option<Arc<str>>,
    /// The zones its topology hints name.
    pub zone_hints: Option<Arc<[Arc<str>]>>,
    /// Its addresses after the first.
    pub others: Box<[IpAddr]>,
}

impl GroupEndpoint {
    /// Its zone.
    pub fn zone(&self) -> Option<&Arc<str>> {
        self.extra.as_ref()?.zone.as_ref()
    }

    /// The zones its hints name.
    pub fn zone_hints(&self) -> Option<&Arc<[Arc<str>]>> {
        self.extra.as_ref()?.zone_hints.as_ref()
    }

    /// Every address, the first first.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let others = self.extra.iter().flat_map(|x| x.others.iter().copied());
        std::iter::once(self.ip).chain(others)
    }
}

/// Ports and the endpoints that serve them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointGroup {
    /// The ports.
    pub ports: Box<[GroupPort]>,
    /// The endpoints.
    pub endpoints: Box<[GroupEndpoint]>,
}

impl EndpointGroup {
    /// The number of the group's port named `name` with `protocol`: `None` when there is no
    /// such port, or it has no usable number.
    pub fn port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| &*p.name == name && p.protocol == Some(protocol))?
            .port
    }
}

/// A v1 Endpoints as the mirroring controller reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredEndpoints {
    /// Labelled `endpointslice.kubernetes.io/skip-mirror: "true"`.
    pub skip_mirror: bool,
    /// Each subset: `addresses` ready, then `notReadyAddresses` not.
    pub subsets: Box<[EndpointGroup]>,
}

/// An EndpointSlice as kube-proxy's cache reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredSlice {
    /// The Service its `kubernetes.io/service-name` label names.
    pub service: Option<Box<str>>,
    /// Its ports and endpoints (none for an FQDN slice, which no proxy uses).
    pub group: EndpointGroup,
}

fn shared(s: &Option<String>) -> Option<Arc<str>> {
    s.as_deref().map(Arc::from)
}

fn address(a: &EndpointAddress, ready: bool) -> Option<GroupEndpoint> {
    Some(GroupEndpoint {
        ip: a.ip.parse().ok()?,
        ready,
        serving: ready,
        terminating: false,
        node_name: shared(&a.node_name),
        target: shared(
            &a.target_ref
                .as_ref()
                .and_then(|t| t.name.clone())
                .or(a.hostname.clone()),
        ),
        extra: None,
    })
}

impl From<&Endpoints> for StoredEndpoints {
    fn from(e: &Endpoints) -> Self {
        let labels = e.metadata.labels.as_ref();
        let skip = labels.and_then(|l| l.get(SKIP_MIRROR_LABEL));
        let subsets = e.subsets.iter().flatten().map(|s| {
            let ports = s.ports.iter().flatten().map(|p| GroupPort {
                name: p.name.as_deref().unwrap_or_default().into(),
                protocol: Protocol::parse(p.protocol.as_deref()),
                port: u16::try_from(p.port).ok(),
            });
            let ready = s.addresses.iter().flatten().map(|a| address(a, true));
            let not_ready = s.not_ready_addresses.iter().flatten();
            EndpointGroup {
                ports: ports.collect(),
                endpoints: ready
                    .chain(not_ready.map(|a| address(a, false)))
                    .flatten()
                    .collect(),
            }
        });
        Self {
            skip_mirror: skip.map(String::as_str) == Some("true"),
            subsets: subsets.collect(),
        }
    }
}

fn slice_endpoint(e: &discovery::Endpoint) -> Option<GroupEndpoint> {
    let mut addrs = e.addresses.iter().map(|a| a.parse::<IpAddr>());
    let ip = addrs.next()?.ok()?;
    let others: Box<[IpAddr]> = addrs.flatten().collect();
    let zone_hints = e.hints.as_ref().and_then(|h| h.for_zones.as_ref());
    let extra = EndpointExtra {
        zone: shared(&e.zone),
        zone_hints: zone_hints.map(|z| z.iter().map(|z| z.name.as_str().into()).collect()),
        others,
    };
    let cond = e.conditions.as_ref();
    let ready = cond.and_then(|c| c.ready).unwrap_or(true);
    Some(GroupEndpoint {
        ip,
        ready,
        serving: cond.and_then(|c| c.serving).unwrap_or(ready),
        terminating: cond.and_then(|c| c.terminating).unwrap_or(false),
        node_name: shared(&e.node_name),
        target: shared(&e.target_ref.as_ref().and_then(|t| t.name.clone())),
        extra: (extra != EndpointExtra::default()).then(|| Box::new(extra)),
    })
}

impl From<&EndpointSlice> for StoredSlice {
    fn from(s: &EndpointSlice) -> Self {
        let labels = s.metadata.labels.as_ref();
        let service = labels.and_then(|l| l.get(SERVICE_NAME_LABEL));
        let ports = s.ports.iter().flatten().map(|p| GroupPort {
            name: p.name.as_deref().unwrap_or_default().into(),
            protocol: Protocol::parse(p.protocol.as_deref()),
            port: p.port.and_then(|p| u16::try_from(p).ok()),
        });
        let endpoints = s.endpoints.iter().flatten().filter_map(slice_endpoint);
        let fqdn = s.address_type == "FQDN";
        Self {
            service: service.map(|s| s.as_str().into()),
            group: EndpointGroup {
                ports: ports.collect(),
                endpoints: if fqdn {
                    Box::default()
                } else {
                    endpoints.collect()
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
        serde_saphyr::from_str(s).expect("yaml")
    }

    #[test]
    fn endpoints_keep_what_mirroring_reads() {
        let e: Endpoints = yaml(
            "metadata: {name: web, labels: {endpointslice.kubernetes.io/skip-mirror: \"true\"}}\n\
             subsets:\n- addresses: [{ip: 10.0.0.1, nodeName: n1, targetRef: {name: web-1}}, {ip: 10.0.0.2, hostname: h2}]\n  \
             notReadyAddresses: [{ip: 10.0.0.3}]\n  ports: [{name: http, port: 8080}, {name: big, port: 70000}]",
        );
        let s = StoredEndpoints::from(&e);
        assert!(s.skip_mirror);
        let g = &s.subsets[0];
        assert_eq!(g.port("http", Protocol::Tcp), Some(8080));
        assert_eq!(g.port("http", Protocol::Udp), None);
        assert_eq!(g.port("big", Protocol::Tcp), None);
        let seen: Vec<_> = g
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.ip.to_string(),
                    e.ready,
                    e.node_name.as_deref(),
                    e.target.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("10.0.0.1".into(), true, Some("n1"), Some("web-1")),
                ("10.0.0.2".into(), true, None, Some("h2")),
                ("10.0.0.3".into(), false, None, None),
            ]
        );
    }

    #[test]
    fn slices_keep_conditions_zones_hints_and_every_address() {
        let s: EndpointSlice = yaml(
            "metadata: {name: web-x, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\n\
             endpoints:\n- addresses: [10.0.0.1, 10.0.0.9]\n  conditions: {ready: false, serving: true, terminating: true}\n  \
             zone: z1\n  hints: {forZones: [{name: z1}, {name: z2}]}\n- addresses: [10.0.0.2]\n\
             ports: [{name: http, port: 8080, protocol: UDP}]",
        );
        let s = StoredSlice::from(&s);
        assert_eq!(s.service.as_deref(), Some("web"));
        assert_eq!(s.group.port("http", Protocol::Udp), Some(8080));
        let [a, b] = &s.group.endpoints[..] else {
            panic!("two endpoints: {:?}", s.group.endpoints)
        };
        assert!(!a.ready && a.serving && a.terminating);
        assert_eq!(a.zone().map(|z| &**z), Some("z1"));
        assert_eq!(a.zone_hints().map(|h| h.len()), Some(2));
        assert_eq!(a.addresses().count(), 2);
        assert!(b.ready && b.serving && !b.terminating && b.extra.is_none());
    }

    #[test]
    fn an_fqdn_slice_has_no_endpoints() {
        let s: EndpointSlice = yaml(
            "metadata: {name: ext}\naddressType: FQDN\nendpoints: [{addresses: [example.com]}]",
        );
        assert!(StoredSlice::from(&s).group.endpoints.is_empty());
    }
}
