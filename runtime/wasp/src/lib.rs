//! The `wasp` daemon and command line: sources → model → planner → dataplane, with its HTTP
//! surfaces and the throw-away network namespaces the demo and the tests build.
//!
//! # Layout
//! - [`config`]: the daemon config file (a `KubeProxyConfiguration`'s fields that apply).
//! - [`options`]: flags merged over the config file: the `Settings` everything is built from.
//! - [`duration`]: Go-style durations, parsed without panics.
//! - [`logging`]: the log, as escaped text or JSON.
//! - [`source`]: starting the files or the Kubernetes API source.
//! - [`daemon`]: the sync loop: store, resolve, diff, plan, apply; full resync; health.
//! - [`planning`]: the one planning path of `run` and `plan`: what to plan, the selections.
//! - [`load`]: one-shot loading of a config dir, for `plan` and `validate`.
//! - [`metrics`]: Prometheus metrics, named as kube-proxy's with a `wasp_` prefix.
//! - [`http`]: `/healthz` (kube-proxy's semantics) and `/metrics` over hyper.
//! - [`healthcheck`]: the health check node ports of LoadBalancer Services with policy Local.
//! - [`node`]: this host's addresses, and its primary ones from the default route.
//! - [`echo`]: a tiny real TCP/UDP server and client, the demo's and the tests' pods.
//! - [`testbed`]: nodes and pods as network namespaces joined by veth pairs.
//! - [`demo`]: the article's walk-through, end to end.

pub mod checks;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod dns;
pub mod duration;
pub mod echo;
pub mod healthcheck;
pub mod http;
pub mod load;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod options;
pub mod planning;
pub mod source;
pub mod status;
pub mod testbed;
