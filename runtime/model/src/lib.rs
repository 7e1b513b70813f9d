//! The node-local model of wasp: what the Services and their endpoints mean on this node.
//!
//! No Kubernetes types and no I/O: `wasp_resolve` turns objects into this model, the planner
//! decides a [`Selection`] for each service port, and every dataplane mode renders the model
//! and the selections into rules. Cargo enforces the direction: nothing here can name a
//! Kubernetes type.
//!
//! # Layout
//! - [`name`]: `NamespacedName`, `ServicePortName`, `Protocol`, `ObjectRef`; [`intern`]: the
//!   pool their parts share.
//! - [`service`]: the per-port service model and the endpoint model.
//! - [`state`]: `ProxyState`, the whole resolved model (this node included), and its diff
//!   (the change tracker).
//! - [`categorize`]: kube-proxy's endpoint categorisation (traffic policy, terminating fallback).
//! - [`selection`]: the `Selection` contract and the default planner.

pub mod categorize;
pub mod intern;
pub mod name;
pub mod selection;
pub mod service;
pub mod state;

pub use categorize::NodeTopology;
pub use name::{NamespacedName, ObjectRef, Protocol, ServicePortName};
pub use selection::{EqualWeights, HashKey, Planner, Selection, SelectionError};
pub use service::{BalancerRef, Endpoint, HealthCheck, HealthProbe, ServicePort};
pub use state::{ProxyState, ServicePortState, StateDiff};
