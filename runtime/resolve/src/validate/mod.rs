//! API-server validation: the checks `kube-apiserver` would make before accepting an object.
//!
//! Field paths and messages follow `k8s.io/kubernetes/pkg/apis/core/validation`, so an error
//! reads the way `kubectl apply` would have reported it.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::error::{ConfigError, Origin};
use crate::object::Object;
use wasp_model::name::{ObjectRef, Protocol};

mod service;
use service::service;

/// The configuration validation needs: the service CIDRs cluster IPs must lie in.
#[derive(Debug, Clone, Default)]
pub struct ValidationConfig {
    /// The service CIDRs; empty means any address is accepted.
    pub service_cidrs: Vec<IpNet>,
}

struct Check<'a> {
    origin: &'a Origin,
    object: ObjectRef,
    errors: Vec<ConfigError>,
}

impl Check<'_> {
    fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::field(
            self.origin,
            &self.object,
            field,
            message,
        ));
    }
}

/// Validates one object; returns every error found (empty when valid).
pub fn validate(obj: &Object, origin: &Origin, cfg: &ValidationConfig) -> Vec<ConfigError> {
    let mut c = Check {
        origin,
        object: obj.object_ref(),
        errors: Vec::new(),
    };
    let meta = obj.meta();
    let name = meta.name.as_deref().unwrap_or_default();
    let name_ok = match obj {
        Object::Service(_) => is_dns1035_label(name),
        _ => is_dns1123_subdomain(name),
    };
    if name.is_empty() {
        c.fail("metadata.name", "Required value: name is required");
    } else if !name_ok {
        c.fail(
            "metadata.name",
            format!("Invalid value: {name:?}: not a valid object name"),
        );
    }
    if let Some(ns) = meta
        .namespace
        .as_deref()
        .filter(|_| obj.kind().namespaced())
        && !is_dns1123_label(ns)
    {
        c.fail(
            "metadata.namespace",
            format!("Invalid value: {ns:?}: not a valid namespace"),
        );
    }
    match obj {
        Object::Service(s) => service(&mut c, s, cfg),
        Object::Endpoints(e) => endpoints(&mut c, e),
        Object::EndpointSlice(s) => slice(&mut c, s),
        Object::Pod(p) => pod(&mut c, p),
        Object::Node(_) => {}
    }
    c.errors
}

fn endpoints(c: &mut Check<'_>, e: &Endpoints) {
    for (i, s) in e.subsets.iter().flatten().enumerate() {
        let groups = [
            ("addresses", &s.addresses),
            ("notReadyAddresses", &s.not_ready_addresses),
        ];
        for (list, addrs) in groups {
            for (j, a) in addrs.iter().flatten().enumerate() {
                endpoint_ip(c, &format!("subsets[{i}].{list}[{j}].ip"), &a.ip);
            }
        }
        let ports = s.ports.as_deref().unwrap_or_default();
        let mut names = HashSet::new();
        for (j, p) in ports.iter().enumerate() {
            let f = format!("subsets[{i}].ports[{j}]");
            let name = p.name.as_deref().unwrap_or_default();
            if ports.len() > 1 && name.is_empty() {
                c.fail(format!("{f}.name"), "Required value");
            }
            if !name.is_empty() && !names.insert(name) {
                c.fail(format!("{f}.name"), format!("Duplicate value: {name:?}"));
            }
            port_and_protocol(c, &f, Some(p.port), p.protocol.as_deref());
        }
    }
}

fn slice(c: &mut Check<'_>, s: &EndpointSlice) {
    let ty = s.address_type.as_str();
    if !["IPv4", "IPv6", "FQDN"].contains(&ty) {
        c.fail(
            "addressType",
            format!("Unsupported value: {ty:?}: supported values: \"FQDN\", \"IPv4\", \"IPv6\""),
        );
    }
    for (i, e) in s.endpoints.iter().flatten().enumerate() {
        if e.addresses.is_empty() || e.addresses.len() > 100 {
            c.fail(
                format!("endpoints[{i}].addresses"),
                "Invalid value: must contain 1 to 100 addresses",
            );
        }
        for (j, a) in e.addresses.iter().enumerate() {
            let f = format!("endpoints[{i}].addresses[{j}]");
            match (ty, a.parse::<IpAddr>()) {
                ("IPv4", Ok(IpAddr::V4(_))) | ("IPv6", Ok(IpAddr::V6(_))) => endpoint_ip(c, &f, a),
                ("FQDN", _) => {}
                _ => c.fail(
                    f,
                    format!("Invalid value: {a:?}: must be a valid {ty} address"),
                ),
            }
        }
    }
    let mut names = HashSet::new();
    for (i, p) in s.ports.iter().flatten().enumerate() {
        let f = format!("ports[{i}]");
        let name = p.name.as_deref().unwrap_or_default();
        if !name.is_empty() && !names.insert(name) {
            c.fail(format!("{f}.name"), format!("Duplicate value: {name:?}"));
        }
        port_and_protocol(c, &f, p.port, p.protocol.as_deref());
    }
}

fn pod(c: &mut Check<'_>, p: &Pod) {
    for (i, ctr) in p.spec.iter().flat_map(|s| &s.containers).enumerate() {
        for (j, port) in ctr.ports.iter().flatten().enumerate() {
            let f = format!("spec.containers[{i}].ports[{j}]");
            if let Some(n) = port.name.as_deref().filter(|n| !is_port_name(n)) {
                c.fail(
                    format!("{f}.name"),
                    format!("Invalid value: {n:?}: must be an IANA_SVC_NAME"),
                );
            }
            port_and_protocol(c, &f, Some(port.container_port), port.protocol.as_deref());
        }
    }
    if let Some(status) = &p.status {
        if let Some(ip) = &status.pod_ip
            && ip.parse::<IpAddr>().is_err()
        {
            c.fail(
                "status.podIP",
                format!("Invalid value: {ip:?}: must be a valid IP address"),
            );
        }
        for (i, ip) in status.pod_ips.iter().flatten().enumerate() {
            if ip.ip.parse::<IpAddr>().is_err() {
                c.fail(
                    format!("status.podIPs[{i}].ip"),
                    format!("Invalid value: {:?}: must be a valid IP address", ip.ip),
                );
            }
        }
    }
}

fn port_and_protocol(c: &mut Check<'_>, f: &str, port: Option<i32>, protocol: Option<&str>) {
    if let Some(p) = port.filter(|p| !(1..=65535).contains(p)) {
        c.fail(
            format!("{f}.port"),
            format!("Invalid value: {p}: must be between 1 and 65535, inclusive"),
        );
    }
    if Protocol::parse(protocol).is_none() {
        c.fail(
            format!("{f}.protocol"),
            format!("Unsupported value: {:?}", protocol.unwrap_or_default()),
        );
    }
}

/// Endpoint addresses may not be unspecified, loopback, link-local or multicast.
fn endpoint_ip(c: &mut Check<'_>, field: &str, s: &str) {
    let Ok(ip) = s.parse::<IpAddr>() else {
        c.fail(
            field,
            format!("Invalid value: {s:?}: must be a valid IP address"),
        );
        return;
    };
    let why = if ip.is_unspecified() {
        Some("may not be unspecified (0.0.0.0)")
    } else if ip.is_loopback() {
        Some("may not be in the loopback range (127.0.0.0/8, ::1/128)")
    } else if ip.is_multicast() {
        Some("may not be in the multicast range")
    } else if match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    } {
        Some("may not be in the link-local range (169.254.0.0/16, fe80::/10)")
    } else {
        None
    };
    if let Some(why) = why {
        c.fail(field, format!("Invalid value: {s:?}: {why}"));
    }
}

/// A DNS-1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A DNS-1035 label: a DNS-1123 label that starts with a letter (Service names).
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// An IANA_SVC_NAME: at most 15 of [-a-z0-9], with a letter, no "--", no '-' at either end.
pub fn is_port_name(s: &str) -> bool {
    is_dns1123_label(s)
        && s.len() <= 15
        && s.bytes().any(|c| c.is_ascii_lowercase())
        && !s.contains("--")
}

fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    s.is_empty()
        || (b.len() <= 63
            && b.iter()
                .all(|&c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests;
