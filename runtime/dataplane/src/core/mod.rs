//! What every mode shares: the render configuration, the address family, and the decisions
//! that do not depend on how a kernel is programmed — how a Selection spreads over
//! endpoints, which traffic is masqueraded, which endpoints a family's table holds, and the
//! names and hashes rules are known by.
//!
//! # Layout
//! - [`family`]: `Family`, IPv4 or IPv6: each mode has one table (or tool) per family.
//! - [`spread`]: a Selection as each kernel realises it: sequential chances, slot tables,
//!   the equal-weight fallback.
//! - [`masquerade`]: which sources a service's traffic is masqueraded from.
//! - [`endpoints`]: a port's VIP and endpoints in one family.
//! - [`names`]: name hashes and the hash seed.

pub mod endpoints;
pub mod family;
pub mod masquerade;
pub mod names;
pub mod spread;

use ipnet::IpNet;

pub use family::Family;

/// The packet mark of replies to the userspace proxy's transparent connections; policy
/// routing (`ip rule fwmark`) delivers them locally.
pub const TRANSPARENT_MARK: u32 = 0x0010_0000;

/// What a render needs besides the model and the selections.
#[derive(Debug, Clone)]
pub struct RenderConfig {
    /// Traffic to a service from outside these CIDRs (the pods) is masqueraded.
    pub cluster_cidrs: Vec<IpNet>,
    /// Masquerade all traffic to services.
    pub masquerade_all: bool,
    /// The packet-mark bit that asks for masquerade.
    pub masquerade_mark: u32,
    /// The service CIDRs: traffic to an address in them that no Service took is dropped
    /// (nftables mode).
    pub service_cidrs: Vec<IpNet>,
    /// The userspace mode's listener port: TCP traffic to a service port with endpoints is
    /// redirected there instead of DNATed (nftables mode). `None` in the kernel modes.
    pub capture: Option<u16>,
}
