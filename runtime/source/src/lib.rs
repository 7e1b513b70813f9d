//! Sources of Kubernetes objects for wasp.
//!
//! A source turns the outside world into [`Batch`]es of whole objects to apply or delete, which
//! [`Batch::apply_to`] folds into the model's `ObjectStore`. Sources never see the kernel.
//!
//! # Layout
//! - [`batch`]: `Batch`, the unit a source emits, and how it is applied to the store.
//! - [`event`]: `SourceEvent`, what every source sends the daemon.
//! - [`files`]: the files source: parsing manifests, scanning a directory, watching it.
//! - [`kubernetes`]: the Kubernetes API source: kube-rs watches on Services, EndpointSlices
//!   and this node's Node.

pub mod batch;
pub mod event;
pub mod files;
pub mod kubernetes;

pub use batch::{Batch, ErrorLog};
pub use event::SourceEvent;
pub use files::{FileSource, Limits, WatchConfig, parse_manifests, watch};
