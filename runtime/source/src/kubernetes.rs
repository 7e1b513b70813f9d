//! The Kubernetes API source: kube-rs watches on Services, EndpointSlices and this node's Node.
//!
//! As kube-proxy's informers do: Services and EndpointSlices are listed and watched with the
//! label selector `!service.kubernetes.io/headless` plus either
//! `!service.kubernetes.io/service-proxy-name` or, with a proxy name, that label's value. The
//! watcher backs off and re-lists on errors, restarts on 410 Gone and uses bookmarks. Objects
//! listed on a (re-)list are held until the list is complete and then applied as one
//! message, with deletes for the objects that vanished meanwhile; unchanged objects change
//! nothing, so a reconnect never flaps a Service. `Synced` is sent once all three initial
//! lists are in.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use wasp_model::NamespacedName;
use wasp_resolve::{Object, ObjectKind, Origin};

use crate::batch::Batch;
use crate::event::SourceEvent;

/// Every API call this source makes, as (API group, resource, verbs): the ClusterRole in
/// `configs/kubernetes` must grant exactly these.
pub const API_CALLS: &[(&str, &str, &[&str])] = &[
    ("", "services", &["list", "watch"]),
    ("discovery.k8s.io", "endpointslices", &["list", "watch"]),
    ("", "nodes", &["list", "watch"]),
];

/// What the source watches for.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    /// This node's name: its Node object is watched for zone and topology.
    pub node_name: String,
    /// Handle only Services labelled `service.kubernetes.io/service-proxy-name` with this value.
    pub service_proxy_name: Option<String>,
}

/// The label selector kube-proxy's informers use.
pub fn label_selector(service_proxy_name: Option<&str>) -> String {
    let proxy = match service_proxy_name {
        Some(name) => format!("service.kubernetes.io/service-proxy-name={name}"),
        None => "!service.kubernetes.io/service-proxy-name".into(),
    };
    format!("{proxy},!service.kubernetes.io/headless")
}

/// Starts the watches; returns the channel of events.
pub fn watch(client: Client, cfg: &KubeConfig) -> mpsc::Receiver<SourceEvent> {
    let (tx, rx) = mpsc::channel(64);
    let labels = label_selector(cfg.service_proxy_name.as_deref());
    let synced = Arc::new(AtomicUsize::new(0));
    let svc = watcher::Config::default().labels(&labels);
    let node = watcher::Config::default().fields(&format!("metadata.name={}", cfg.node_name));
    let w = Watch { tx, synced };
    tokio::spawn(w.clone().run(
        Api::<Service>::all(client.clone()),
        svc.clone(),
        ObjectKind::Service,
        |o| Object::Service(Box::new(o)),
    ));
    tokio::spawn(w.clone().run(
        Api::<EndpointSlice>::all(client.clone()),
        svc,
        ObjectKind::EndpointSlice,
        |o| Object::EndpointSlice(Box::new(o)),
    ));
    tokio::spawn(
        w.run(Api::<Node>::all(client), node, ObjectKind::Node, |o| {
            Object::Node(Box::new(o))
        }),
    );
    rx
}

const KINDS: usize = 3;

fn scope(kind: ObjectKind, key: &NamespacedName) -> String {
    format!("kubernetes/{kind}/{key}")
}

fn apply(kind: ObjectKind, obj: Object) -> Batch {
    let key = obj.key();
    let origin = Origin {
        source: "kubernetes".into(),
        document: None,
    };
    Batch {
        scope: scope(kind, &key),
        applies: vec![(obj, origin)],
        ..Batch::default()
    }
}

fn delete(kind: ObjectKind, key: NamespacedName) -> Batch {
    Batch {
        scope: scope(kind, &key),
        deletes: vec![(kind, key.clone())],
        ..Batch::default()
    }
}

/// One kind's watch, and what it shares with the others.
#[derive(Clone)]
struct Watch {
    tx: mpsc::Sender<SourceEvent>,
    /// How many kinds have completed their first list.
    synced: Arc<AtomicUsize>,
}

impl Watch {
    async fn send(&self, ev: SourceEvent) -> bool {
        self.tx.send(ev).await.is_ok()
    }

    async fn run<K>(
        self,
        api: Api<K>,
        config: watcher::Config,
        kind: ObjectKind,
        object: fn(K) -> Object,
    ) where
        K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
    {
        let source = format!("kubernetes/{kind}");
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        let mut objects = Known {
            kind,
            known: BTreeSet::new(),
            listing: None,
        };
        let mut first = true;
        let mut healthy = true;
        while let Some(ev) = stream.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!(%source, error = %e, "watch failed; backing off, the last state stays programmed");
                    if healthy {
                        healthy = false;
                        let problem = Some(format!("watch failing: {e}"));
                        let health = SourceEvent::Health {
                            source: source.clone(),
                            problem,
                        };
                        if !self.send(health).await {
                            return;
                        }
                    }
                    continue;
                }
            };
            let ev = match ev {
                Event::Init => Event::Init,
                Event::InitApply(o) => Event::InitApply(object(o)),
                Event::InitDone => Event::InitDone,
                Event::Apply(o) => Event::Apply(object(o)),
                Event::Delete(o) => Event::Delete(object(o)),
            };
            let Some((batches, list_done)) = objects.on(ev) else {
                continue;
            };
            if !healthy {
                healthy = true;
                tracing::info!(%source, "watch recovered");
                let health = SourceEvent::Health {
                    source: source.clone(),
                    problem: None,
                };
                if !self.send(health).await {
                    return;
                }
            }
            if !self.send(SourceEvent::Batches(batches)).await {
                return;
            }
            if first && list_done {
                first = false;
                if self.synced.fetch_add(1, Ordering::SeqCst) + 1 == KINDS
                    && !self.send(SourceEvent::Synced).await
                {
                    return;
                }
            }
        }
    }
}

/// One kind's objects as the watch has reported them.
struct Known {
    kind: ObjectKind,
    known: BTreeSet<NamespacedName>,
    /// The keys of a (re-)list in progress.
    listing: Option<BTreeSet<NamespacedName>>,
}

impl Known {
    /// The batches an event makes, and whether it completed a list; `None` when it makes
    /// none. A listed object is applied as it arrives (the daemon programs nothing before
    /// every kind has listed once), so a list of 10,000 objects is never held whole; the
    /// list's end deletes what vanished meanwhile.
    fn on(&mut self, ev: Event<Object>) -> Option<(Vec<Batch>, bool)> {
        let kind = self.kind;
        match ev {
            Event::Init => {
                self.listing = Some(BTreeSet::new());
                None
            }
            Event::InitApply(o) => {
                let key = normal_key(&o);
                self.known.insert(key.clone());
                self.listing.get_or_insert_default().insert(key);
                Some((vec![apply(kind, o)], false))
            }
            Event::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                let gone = self.known.difference(&listed);
                let b: Vec<Batch> = gone.map(|k| delete(kind, k.clone())).collect();
                tracing::debug!(%kind, objects = listed.len(), "list complete");
                self.known = listed;
                Some((b, true))
            }
            Event::Apply(o) => {
                self.known.insert(normal_key(&o));
                Some((vec![apply(kind, o)], false))
            }
            Event::Delete(o) => {
                let key = normal_key(&o);
                self.known.remove(&key);
                Some((vec![delete(kind, key)], false))
            }
        }
    }
}

/// The key the store gives `o`: a namespaced object without a namespace lives in `default`.
fn normal_key(o: &Object) -> NamespacedName {
    let key = o.key();
    if o.kind().namespaced() && key.namespace.is_empty() {
        return NamespacedName::new("default", key.name);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str) -> Object {
        let mut s = k8s_openapi::api::core::v1::Service::default();
        s.metadata.name = Some(name.into());
        Object::Service(Box::new(s))
    }

    /// What `batches` apply and delete, by name.
    fn names(batches: &[Batch]) -> (Vec<String>, Vec<String>) {
        let applied = batches.iter().flat_map(|b| &b.applies);
        let deleted = batches.iter().flat_map(|b| &b.deletes);
        (
            applied.map(|(o, _)| o.key().name.to_string()).collect(),
            deleted.map(|(_, k)| format!("{k}")).collect(),
        )
    }

    #[test]
    fn a_list_applies_as_it_arrives_and_its_end_deletes_what_vanished() {
        let mut k = Known {
            kind: ObjectKind::Service,
            known: BTreeSet::new(),
            listing: None,
        };
        assert!(k.on(Event::Init).is_none());
        let (b, done) = k.on(Event::InitApply(svc("a"))).expect("applied at once");
        assert!(!done);
        assert_eq!(names(&b), (vec!["a".into()], vec![]));
        k.on(Event::InitApply(svc("b")));
        let (b, done) = k.on(Event::InitDone).expect("the list's end");
        assert!(done);
        assert_eq!(names(&b), (vec![], vec![]));
        // A re-list without b, interrupted once by a restart of the list.
        k.on(Event::Init);
        k.on(Event::InitApply(svc("c")));
        k.on(Event::Init);
        k.on(Event::InitApply(svc("a")));
        let (b, _) = k.on(Event::InitDone).expect("the list's end");
        assert_eq!(names(&b).1, ["default/b", "default/c"]);
        assert_eq!(
            k.known,
            BTreeSet::from([NamespacedName::new("default", "a")])
        );
    }

    #[test]
    fn label_selectors_match_kube_proxy() {
        assert_eq!(
            label_selector(None),
            "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"
        );
        assert_eq!(
            label_selector(Some("wasp")),
            "service.kubernetes.io/service-proxy-name=wasp,!service.kubernetes.io/headless"
        );
    }
}
