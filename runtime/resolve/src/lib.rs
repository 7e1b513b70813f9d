//! Kubernetes objects → the node-local model: what the API server and its controllers would
//! make of the Services, Endpoints, EndpointSlices, Pods and Nodes a source delivers.
//!
//! This is the only crate below the binary that knows Kubernetes types; the model it produces
//! (`wasp_model::ProxyState`) does not, so the dataplane and the plugin host never see them.
//! It does no I/O.
//!
//! # Layout
//! - [`object`]: the Kubernetes kinds wasp reads and the `ObjectStore` that holds the last
//!   good version of each; [`compact`]: the forms it keeps Endpoints and EndpointSlices in.
//! - [`validate`]: API-server validation of each object.
//! - [`controllers`]: objects → `ProxyState`, as the endpoints, mirroring and EndpointSlice
//!   controllers and kube-proxy's caches would do it.
//! - [`allocate`]: deterministic, sticky cluster IP allocation from the service CIDR.
//! - [`error`]: `ConfigError`, the error that names the file, the document, the object and
//!   the field.

pub mod allocate;
pub mod compact;
pub mod controllers;
pub mod error;
pub mod health;
pub mod object;
pub mod validate;

pub use allocate::Allocator;
pub use controllers::{NodePortAddresses, ResolveConfig, Resolver, node_eligible, resolve};
pub use error::{ConfigError, Origin};
pub use object::{Changes, Object, ObjectKind, ObjectStore};
