//! The Kubernetes kinds wasp reads, and `ObjectStore`, which holds the last good version of each.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::compact::{StoredEndpoints, StoredSlice};
use crate::error::{ConfigError, Origin};
use crate::validate::{self, ValidationConfig};
use wasp_model::name::{NamespacedName, ObjectRef};

/// The annotation `kubectl apply` keeps its last input in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The kinds of object wasp reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    /// v1 Service.
    Service,
    /// v1 Endpoints.
    Endpoints,
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice,
    /// v1 Pod.
    Pod,
    /// v1 Node.
    Node,
}

impl ObjectKind {
    /// The kind and the apiVersion it is read at, or `None` for a kind wasp skips.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Self> {
        match (api_version, kind) {
            ("v1", "Service") => Some(Self::Service),
            ("v1", "Endpoints") => Some(Self::Endpoints),
            ("discovery.k8s.io/v1", "EndpointSlice") => Some(Self::EndpointSlice),
            ("v1", "Pod") => Some(Self::Pod),
            ("v1", "Node") => Some(Self::Node),
            _ => None,
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        self != Self::Node
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One object of a kind wasp reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// A Service.
    Service(Box<Service>),
    /// An Endpoints.
    Endpoints(Box<Endpoints>),
    /// An EndpointSlice.
    EndpointSlice(Box<EndpointSlice>),
    /// A Pod.
    Pod(Box<Pod>),
    /// A Node.
    Node(Box<Node>),
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> ObjectKind {
        match self {
            Self::Service(_) => ObjectKind::Service,
            Self::Endpoints(_) => ObjectKind::Endpoints,
            Self::EndpointSlice(_) => ObjectKind::EndpointSlice,
            Self::Pod(_) => ObjectKind::Pod,
            Self::Node(_) => ObjectKind::Node,
        }
    }

    /// The object's metadata.
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Self::Service(o) => &o.metadata,
            Self::Endpoints(o) => &o.metadata,
            Self::EndpointSlice(o) => &o.metadata,
            Self::Pod(o) => &o.metadata,
            Self::Node(o) => &o.metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Self::Service(o) => &mut o.metadata,
            Self::Endpoints(o) => &mut o.metadata,
            Self::EndpointSlice(o) => &mut o.metadata,
            Self::Pod(o) => &mut o.metadata,
            Self::Node(o) => &mut o.metadata,
        }
    }

    /// Fills in what the API server would store: a namespaced object without a namespace
    /// lives in `default`, and a Service's empty `selector: {}` does not survive storage (the
    /// Service reads back selectorless, and no controller makes endpoints for it).
    pub fn normalize(&mut self) {
        if self.kind().namespaced() {
            let m = self.meta_mut();
            if m.namespace.as_deref().is_none_or(str::is_empty) {
                m.namespace = Some("default".into());
            }
        }
        if let Self::Service(s) = self
            && let Some(spec) = s.spec.as_mut()
            && spec.selector.as_ref().is_some_and(|m| m.is_empty())
        {
            spec.selector = None;
        }
    }

    /// Drops what nothing in wasp reads and what can be larger than the object itself: the
    /// field managers' records (`managedFields`, on every object the API serves) and
    /// `kubectl apply`'s copy of the whole object in an annotation. kube-proxy's informers
    /// strip `managedFields` too.
    pub fn slim(&mut self) {
        let m = self.meta_mut();
        m.managed_fields = None;
        if let Some(a) = m.annotations.as_mut() {
            a.remove(LAST_APPLIED);
        }
    }

    /// Sets `metadata.creationTimestamp`, which the API server gives every object it creates.
    pub fn set_creation_timestamp(&mut self, t: Time) {
        self.meta_mut().creation_timestamp = Some(t);
    }

    /// The object's key; a Node's namespace is empty.
    pub fn key(&self) -> NamespacedName {
        let m = self.meta();
        NamespacedName::new(
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    }

    /// A reference for messages.
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            kind: self.kind().to_string(),
            name: self.key(),
        }
    }
}

/// An object together with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored<T> {
    /// The object.
    pub object: T,
    /// Its origin.
    pub origin: Origin,
}

/// The last good version of every object, by kind and key.
#[derive(Debug, Clone, Default)]
pub struct ObjectStore {
    /// What validation checks objects against.
    pub validation: ValidationConfig,
    /// Services.
    pub services: BTreeMap<NamespacedName, Box<Stored<Service>>>,
    /// v1 Endpoints, as the mirroring controller reads them.
    pub endpoints: BTreeMap<NamespacedName, Box<Stored<StoredEndpoints>>>,
    /// EndpointSlices, as kube-proxy's cache reads them.
    pub slices: BTreeMap<NamespacedName, Box<Stored<StoredSlice>>>,
    /// Pods.
    pub pods: BTreeMap<NamespacedName, Box<Stored<Pod>>>,
    /// Nodes (keyed with an empty namespace).
    pub nodes: BTreeMap<NamespacedName, Box<Stored<Node>>>,
    /// EndpointSlices by the Service their `kubernetes.io/service-name` label names.
    /// A short list each (a Service has a slice or two; a set would take a B-tree node of
    /// eleven).
    slice_index: BTreeMap<NamespacedName, Vec<NamespacedName>>,
    /// What changed since the last [`ObjectStore::take_changes`].
    changes: Changes,
}

/// What changed in a store: the Services whose resolution an object change can affect, and
/// whether a Node changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The Services to resolve again (some may be gone).
    pub services: BTreeSet<NamespacedName>,
    /// A Node changed (its zone or addresses may move every port).
    pub node: bool,
}

/// The Service an EndpointSlice's label ties it to.
fn slice_service(key: &NamespacedName, slice: &StoredSlice) -> Option<NamespacedName> {
    let svc = slice.service.as_deref()?;
    Some(NamespacedName::new(key.namespace.clone(), svc))
}

/// Whether `svc`'s selector picks a Pod with `labels`.
pub(crate) fn selects(svc: &Service, labels: Option<&BTreeMap<String, String>>) -> bool {
    let Some(selector) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The entries of `map` in namespace `ns`.
fn in_namespace<'a, T>(
    map: &'a BTreeMap<NamespacedName, T>,
    ns: &'a str,
) -> impl Iterator<Item = (&'a NamespacedName, &'a T)> {
    map.range(NamespacedName::new(ns, "")..)
        .take_while(move |(k, _)| *k.namespace == *ns)
}

impl ObjectStore {
    /// An empty store that validates against `validation`.
    pub fn new(validation: ValidationConfig) -> Self {
        Self {
            validation,
            ..Self::default()
        }
    }

    /// Validates `obj` and, if it is valid, stores it in place of any older version.
    ///
    /// # Errors
    /// Returns every validation error; the older version, if any, stays stored.
    pub fn apply(&mut self, mut obj: Object, origin: Origin) -> Result<bool, Vec<ConfigError>> {
        obj.normalize();
        let errors = validate::validate(&obj, &origin, &self.validation);
        if !errors.is_empty() {
            return Err(errors);
        }
        obj.slim();
        let (kind, key) = (obj.kind(), obj.key());
        let before = self.affected(kind, &key);
        let changed = match obj {
            Object::Service(o) => put(&mut self.services, key.clone(), *o, origin),
            Object::Endpoints(o) => put(&mut self.endpoints, key.clone(), (&*o).into(), origin),
            Object::EndpointSlice(o) => put(&mut self.slices, key.clone(), (&*o).into(), origin),
            Object::Pod(o) => put(&mut self.pods, key.clone(), *o, origin),
            Object::Node(o) => put(&mut self.nodes, key.clone(), *o, origin),
        };
        if changed {
            self.changed(kind, &key, before);
        }
        Ok(changed)
    }

    /// Removes an object; returns whether it was there.
    pub fn delete(&mut self, kind: ObjectKind, key: &NamespacedName) -> bool {
        let before = self.affected(kind, key);
        let removed = match kind {
            ObjectKind::Service => self.services.remove(key).is_some(),
            ObjectKind::Endpoints => self.endpoints.remove(key).is_some(),
            ObjectKind::EndpointSlice => self.slices.remove(key).is_some(),
            ObjectKind::Pod => self.pods.remove(key).is_some(),
            ObjectKind::Node => self.nodes.remove(key).is_some(),
        };
        if removed {
            self.changed(kind, key, before);
        }
        removed
    }

    /// Records a change of the object at `key`: the Services its old version affected
    /// (`before`) and those its new version affects; keeps the slice index current.
    fn changed(&mut self, kind: ObjectKind, key: &NamespacedName, before: Vec<NamespacedName>) {
        if kind == ObjectKind::EndpointSlice {
            for svc in &before {
                if let Some(set) = self.slice_index.get_mut(svc) {
                    set.retain(|k| k != key);
                    if set.is_empty() {
                        self.slice_index.remove(svc);
                    }
                }
            }
            if let Some(svc) = self
                .slices
                .get(key)
                .and_then(|s| slice_service(key, &s.object))
            {
                let set = self.slice_index.entry(svc).or_default();
                if !set.contains(key) {
                    set.push(key.clone());
                    set.sort();
                }
            }
        }
        let after = self.affected(kind, key);
        self.changes.node |= kind == ObjectKind::Node;
        self.changes.services.extend(before);
        self.changes.services.extend(after);
    }

    /// The Services whose resolution the stored object at `key` takes part in.
    fn affected(&self, kind: ObjectKind, key: &NamespacedName) -> Vec<NamespacedName> {
        match kind {
            ObjectKind::Service | ObjectKind::Endpoints => vec![key.clone()],
            ObjectKind::EndpointSlice => self
                .slices
                .get(key)
                .and_then(|s| slice_service(key, &s.object))
                .into_iter()
                .collect(),
            ObjectKind::Pod => {
                let Some(pod) = self.pods.get(key) else {
                    return Vec::new();
                };
                let labels = pod.object.metadata.labels.as_ref();
                in_namespace(&self.services, &key.namespace)
                    .filter(|(_, s)| selects(&s.object, labels))
                    .map(|(k, _)| k.clone())
                    .collect()
            }
            ObjectKind::Node => Vec::new(),
        }
    }

    /// What changed since the last call, and forgets it.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// The EndpointSlices labelled with Service `svc`'s name, in its namespace.
    pub fn slices_of<'a>(
        &'a self,
        svc: &NamespacedName,
    ) -> impl Iterator<Item = &'a StoredSlice> + 'a {
        self.slice_index
            .get(svc)
            .into_iter()
            .flatten()
            .filter_map(|k| self.slices.get(k).map(|s| &s.object))
    }

    /// The Pods in namespace `ns`.
    pub fn pods_in<'a>(&'a self, ns: &'a str) -> impl Iterator<Item = &'a Pod> + 'a {
        in_namespace(&self.pods, ns).map(|(_, p)| &p.object)
    }

    /// The number of objects held.
    pub fn len(&self) -> usize {
        self.services.len()
            + self.endpoints.len()
            + self.slices.len()
            + self.pods.len()
            + self.nodes.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Stores `object`; returns whether anything changed.
fn put<T: PartialEq>(
    map: &mut BTreeMap<NamespacedName, Box<Stored<T>>>,
    key: NamespacedName,
    object: T,
    origin: Origin,
) -> bool {
    let new = Stored { object, origin };
    if map.get(&key).map(|s| &**s) == Some(&new) {
        return false;
    }
    // Boxed: a B-tree node then holds pointers, not half-empty rows of large objects.
    map.insert(key, Box::new(new));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_managers_and_the_last_applied_copy_are_not_kept() {
        let svc: Service = serde_saphyr::from_str(
            r#"
metadata:
  name: web
  annotations: {kubectl.kubernetes.io/last-applied-configuration: "{\"kind\":\"Service\"}", wasp.dev/health-check: tcp}
  managedFields: [{manager: kubectl, operation: Apply, apiVersion: v1, fieldsType: FieldsV1, fieldsV1: {f:spec: {}}}]
spec: {clusterIP: 10.96.0.31, ports: [{port: 80}]}
"#,
        )
        .expect("yaml");
        let mut store = ObjectStore::new(ValidationConfig {
            service_cidrs: vec!["10.96.0.0/12".parse().expect("cidr")],
        });
        let origin = Origin::file("test.yaml", 0);
        store
            .apply(Object::Service(Box::new(svc)), origin)
            .expect("valid");
        let meta = &store.services[&NamespacedName::new("default", "web")]
            .object
            .metadata;
        assert_eq!(meta.managed_fields, None);
        let kept: Vec<&String> = meta.annotations.iter().flatten().map(|(k, _)| k).collect();
        assert_eq!(kept, ["wasp.dev/health-check"]);
    }
}
