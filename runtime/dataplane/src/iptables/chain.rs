//! Chain names: kube-proxy's hashed names with a `WASP-` prefix.
//!
//! `WASP-SVC-` + the first 16 characters of base32(sha256(service port name + protocol)), and
//! likewise `WASP-SVL-`, `WASP-EXT-` and `WASP-FW-` (each over its own prefix, as kube-proxy's
//! `servicePortPolicyClusterChain` and friends do), and `WASP-SEP-` over the endpoint too;
//! at most 25 characters, under iptables' limit of 28.

use data_encoding::BASE32;
use sha2::{Digest, Sha256};
use wasp_model::{Endpoint, ServicePortName};

/// The prefix of every chain wasp owns.
pub const PREFIX: &str = "WASP-";
/// The dispatch chain, in nat and filter.
pub const SERVICES: &str = "WASP-SERVICES";
/// nat: node ports → `WASP-EXT-…`; filter: health check node ports accepted.
pub const NODEPORTS: &str = "WASP-NODEPORTS";
/// filter: rejects and drops for external IPs, LoadBalancer IPs and node ports.
pub const EXTERNAL_SERVICES: &str = "WASP-EXTERNAL-SERVICES";
/// filter: LoadBalancer traffic the source ranges did not accept.
pub const PROXY_FIREWALL: &str = "WASP-PROXY-FIREWALL";
/// filter: connections to 127.0.0.0/8 from elsewhere (the `route_localnet` hole).
pub const FIREWALL: &str = "WASP-FIREWALL";
/// The chain that masquerades marked packets.
pub const POSTROUTING: &str = "WASP-POSTROUTING";
/// The chain that marks a packet for masquerade.
pub const MARK_MASQ: &str = "WASP-MARK-MASQ";
/// The filter chain that lets marked and established traffic through FORWARD.
pub const FORWARD: &str = "WASP-FORWARD";

/// mangle: marks replies to the userspace proxy's transparent connections (the userspace
/// mode on iptables).
pub const PROXY_REPLIES: &str = "WASP-PROXY-REPLIES";

/// The prefixes of the chains one service port owns.
const PER_SERVICE: &[&str] = &[
    "WASP-SVC-",
    "WASP-SVL-",
    "WASP-EXT-",
    "WASP-FW-",
    "WASP-SEP-",
];

fn hash(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    BASE32.encode(&digest)[..16].to_string()
}

fn policy(prefix: &str, name: &ServicePortName) -> String {
    let salt = prefix.trim_start_matches(PREFIX).trim_end_matches('-');
    let key = if salt == "SVC" {
        // The cluster chain keeps the name it had before the other chains existed.
        format!("{name}{}", name.protocol.lower())
    } else {
        format!("{salt}{name}{}", name.protocol.lower())
    };
    format!("{prefix}{}", hash(&key))
}

/// The cluster policy chain: every endpoint the port's cluster traffic may use.
pub fn service(name: &ServicePortName) -> String {
    policy("WASP-SVC-", name)
}

/// The local policy chain: this node's endpoints.
pub fn local(name: &ServicePortName) -> String {
    policy("WASP-SVL-", name)
}

/// The chain every external destination of the port (node port, external IPs, LoadBalancer
/// IPs) jumps to.
pub fn external(name: &ServicePortName) -> String {
    policy("WASP-EXT-", name)
}

/// The LoadBalancer source-range chain.
pub fn firewall(name: &ServicePortName) -> String {
    policy("WASP-FW-", name)
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
    PER_SERVICE.iter().any(|p| chain.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasp_model::{NamespacedName, Protocol};

    #[test]
    fn names_are_distinct_short_enough_and_owned_by_the_port() {
        let n = ServicePortName::new(NamespacedName::new("default", "web"), "http", Protocol::Tcp);
        let all = [service(&n), local(&n), external(&n), firewall(&n)];
        for c in &all {
            assert!(c.len() <= 28 && per_service(c), "{c}");
        }
        let distinct: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), 4);
        assert!(!per_service(SERVICES) && !per_service(NODEPORTS));
    }
}
