//! The node-local model of wasp: what the Services and their endpoints mean on this node.
//!
//! This crate does no I/O. Sources feed it Kubernetes objects; it validates them as the API
//! server would, resolves them into one entry per service port (VIPs, endpoints, policies),
//! tracks what changed since the last sync, and defines the [`Selection`] that a planner hands
//! to the dataplane.
//!
//! # Layout
//! - [`name`]: `NamespacedName`, `ServicePortName`, `Protocol`, `ObjectRef`.
//! - [`service`]: the per-port service model and the endpoint model.
//! - [`state`]: `ProxyState`, the whole resolved model, and its diff (the change tracker).
//! - [`categorize`]: kube-proxy's endpoint categorisation (traffic policy, terminating fallback).
//! - [`selection`]: the `Selection` contract and the default planner.
//! - [`object`]: the Kubernetes kinds wasp reads and the `ObjectStore` that holds them.
//! - [`validate`]: API-server validation of each object.
//! - [`mod@resolve`]: objects → `ProxyState`, as the API server and its controllers would do it.
//! - [`allocate`]: deterministic, sticky cluster IP allocation from the service CIDR.
//! - [`error`]: `ConfigError`, the error that names the file, the document, the object and the field.

pub mod allocate;
pub mod categorize;
pub mod error;
pub mod name;
pub mod object;
pub mod resolve;
pub mod selection;
pub mod service;
pub mod state;
pub mod validate;

pub use allocate::Allocator;
pub use error::{ConfigError, Origin};
pub use name::{NamespacedName, ObjectRef, Protocol, ServicePortName};
pub use object::{Object, ObjectKind, ObjectStore};
pub use resolve::{ResolveConfig, resolve};
pub use selection::{EqualWeights, HashKey, Planner, Selection, SelectionError};
pub use service::{BalancerRef, Endpoint, ServicePort};
pub use state::{ProxyState, ServicePortState, StateDiff};
