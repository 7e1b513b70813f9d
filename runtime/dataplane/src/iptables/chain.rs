//! Chain names: kube-proxy's hashed names with a `WASP-` prefix.
//!
//! `WASP-SVC-` + the first 16 characters of base32(sha256(service port name + protocol)), and
//! `WASP-SEP-` likewise over the endpoint too, as `servicePortChainName` and
//! `servicePortEndpointChainName` do in kube-proxy; 25 characters, under iptables' limit of 28.

use data_encoding::BASE32;
use sha2::{Digest, Sha256};
use wasp_model::{Endpoint, ServicePortName};

/// The prefix of every chain wasp owns.
pub const PREFIX: &str = "WASP-";
/// The dispatch chain, in nat and filter.
pub const SERVICES: &str = "WASP-SERVICES";
/// The chain that masquerades marked packets.
pub const POSTROUTING: &str = "WASP-POSTROUTING";
/// The chain that marks a packet for masquerade.
pub const MARK_MASQ: &str = "WASP-MARK-MASQ";
/// The filter chain that lets marked and established traffic through FORWARD.
pub const FORWARD: &str = "WASP-FORWARD";

fn hash(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    BASE32.encode(&digest)[..16].to_string()
}

/// The per-service-port chain.
pub fn service(name: &ServicePortName) -> String {
    format!(
        "WASP-SVC-{}",
        hash(&format!("{name}{}", name.protocol.lower()))
    )
}

/// The per-endpoint chain.
pub fn endpoint(name: &ServicePortName, ep: &Endpoint) -> String {
    format!(
        "WASP-SEP-{}",
        hash(&format!("{name}{}{ep}", name.protocol.lower()))
    )
}

/// Whether a chain belongs to one service port (and so is rewritten with it).
pub fn per_service(chain: &str) -> bool {
    chain.starts_with("WASP-SVC-") || chain.starts_with("WASP-SEP-")
}
