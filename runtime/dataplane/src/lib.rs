//! wasp's dataplane: each mode renders the model and the planner's selections into kernel
//! rules, and applies them.
//!
//! Each mode is split into a pure `render` (model + selections → rules, covered by golden
//! tests) and an `apply`, the only code that touches the kernel. Modes never see Kubernetes
//! types or plugins.
//!
//! # Layout
//! - [`mode`]: `Mode`, the `--mode` values; `Dataplane`, the interface every mode offers; and
//!   [`build`], the factory, so the binary knows no mode's types.
//! - [`core`]: what every mode shares: the render config, the address family, the spread of
//!   a Selection, masquerade decisions, endpoint filtering, names and hashes.
//! - [`exec`]: running the kernel tools (iptables-restore, conntrack) with clear errors.
//! - [`nftables`]: the nftables mode (the default): wasp's own tables over netlink batches.
//! - [`iptables`]: the iptables mode, in kube-proxy's chain layout under a `WASP-` prefix.
//! - [`userspace`]: the userspace mode: the `wasp-proxy` crate behind the nftables mode's
//!   rules, which redirect TCP to it.
//! - [`ipvs`]: the ipvs mode: IPVS virtual servers over generic netlink, service addresses
//!   on a dummy device, and a small nftables helper table.
//! - [`leftovers`]: removing what the other mode left behind.
//! - [`conntrack`]: clearing stale UDP flows when endpoints go away.
//! - [`sysctl`]: conntrack kernel settings from the config file.

pub mod conntrack;
pub mod core;
pub mod exec;
pub mod iptables;
pub mod ipvs;
pub mod leftovers;
pub mod mode;
pub mod nftables;
pub mod sysctl;
pub mod userspace;

pub use core::{Family, RenderConfig};
pub use exec::ExecError;
pub use mode::{
    BackendChoice, Dataplane, DataplaneConfig, Mode, RulesChoice, SyncReport, SyncRequest, build,
};
