//! The Service checks: type, ports, cluster IPs and the fields of external traffic.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Check, ValidationConfig, endpoint_ip, is_dns1123_label, is_label_value, is_port_name};
use wasp_model::name::Protocol;

pub(super) fn service(c: &mut Check<'_>, svc: &Service, cfg: &ValidationConfig) {
    let Some(spec) = &svc.spec else {
        c.fail("spec", "Required value");
        return;
    };
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty) {
        c.fail("spec.type", format!("Unsupported value: {ty:?}"));
        return;
    }
    if ty == "ExternalName" {
        if spec.external_name.as_deref().is_none_or(str::is_empty) {
            c.fail("spec.externalName", "Required value");
        }
        return;
    }
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let ports = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() && !headless {
        c.fail("spec.ports", "Required value");
    }
    service_ports(c, spec, ty);
    cluster_ips(c, spec, cfg);
    match spec.session_affinity.as_deref().unwrap_or("None") {
        "None" => {}
        "ClientIP" => {
            let t = spec
                .session_affinity_config
                .as_ref()
                .and_then(|s| s.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            if let Some(t) = t.filter(|t| !(1..=86400).contains(t)) {
                c.fail(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    format!("Invalid value: {t}: must be greater than 0 and less than 86400"),
                );
            }
        }
        other => c.fail(
            "spec.sessionAffinity",
            format!("Unsupported value: {other:?}"),
        ),
    }
    for (field, v) in [
        ("spec.internalTrafficPolicy", &spec.internal_traffic_policy),
        ("spec.externalTrafficPolicy", &spec.external_traffic_policy),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !["Cluster", "Local"].contains(v)) {
            c.fail(field, format!("Unsupported value: {v:?}"));
        }
    }
    external(c, svc, spec, ty);
    if let Err((annotation, why)) = crate::health::health_check(svc) {
        c.fail(format!("metadata.annotations[{annotation}]"), why);
    }
    for (k, v) in spec.selector.iter().flatten() {
        if !is_label_value(v) {
            c.fail(
                format!("spec.selector.{k}"),
                format!("Invalid value: {v:?}"),
            );
        }
    }
}

/// What a Service says about traffic from outside: external IPs, LoadBalancer status and
/// source ranges, and the fields that only some types may set.
fn external(c: &mut Check<'_>, svc: &Service, spec: &ServiceSpec, ty: &str) {
    let external = ty == "NodePort" || ty == "LoadBalancer";
    if spec.external_traffic_policy.as_deref() == Some("Local") && !external {
        c.fail(
            "spec.externalTrafficPolicy",
            "Invalid value: \"Local\": may only be set when `type` is 'NodePort' or 'LoadBalancer'",
        );
    }
    let local_lb = ty == "LoadBalancer" && spec.external_traffic_policy.as_deref() == Some("Local");
    if spec.health_check_node_port.is_some_and(|p| p != 0) && !local_lb {
        c.fail(
            "spec.healthCheckNodePort",
            "Invalid value: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        );
    }
    if let Some(p) = spec
        .health_check_node_port
        .filter(|p| !(0..=65535).contains(p))
    {
        c.fail(
            "spec.healthCheckNodePort",
            format!("Invalid value: {p}: must be between 1 and 65535, inclusive"),
        );
    }
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        endpoint_ip(c, &format!("spec.externalIPs[{i}]"), ip);
    }
    for (i, r) in spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .enumerate()
    {
        if ty != "LoadBalancer" {
            c.fail(
                "spec.loadBalancerSourceRanges",
                "Forbidden: may only be used when `type` is 'LoadBalancer'",
            );
            break;
        }
        if r.trim().parse::<IpNet>().is_err() {
            c.fail(
                format!("spec.loadBalancerSourceRanges[{i}]"),
                format!("Invalid value: {r:?}: must be a valid CIDR"),
            );
        }
    }
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref()?.ingress.as_ref());
    for (i, g) in ingress.into_iter().flatten().enumerate() {
        let f = format!("status.loadBalancer.ingress[{i}]");
        if let Some(ip) = &g.ip {
            endpoint_ip(c, &format!("{f}.ip"), ip);
        }
        match g.ip_mode.as_deref() {
            None | Some("VIP") => {}
            Some("Proxy") if g.ip.is_some() => {}
            Some("Proxy") => c.fail(
                format!("{f}.ipMode"),
                "Required value: must be specified when `ip` is set",
            ),
            Some(m) => c.fail(
                format!("{f}.ipMode"),
                format!("Unsupported value: {m:?}: supported values: \"Proxy\", \"VIP\""),
            ),
        }
    }
}

fn service_ports(c: &mut Check<'_>, spec: &ServiceSpec, ty: &str) {
    let ports = spec.ports.as_deref().unwrap_or_default();
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let f = format!("spec.ports[{i}]");
        let name = p.name.as_deref().unwrap_or_default();
        if ports.len() > 1 && name.is_empty() {
            c.fail(
                format!("{f}.name"),
                "Required value: a name is required for multi-port services",
            );
        } else if !name.is_empty() && !is_dns1123_label(name) {
            c.fail(
                format!("{f}.name"),
                format!("Invalid value: {name:?}: not a DNS-1123 label"),
            );
        }
        if !name.is_empty() && !names.insert(name) {
            c.fail(format!("{f}.name"), format!("Duplicate value: {name:?}"));
        }
        if !(1..=65535).contains(&p.port) {
            c.fail(
                format!("{f}.port"),
                format!(
                    "Invalid value: {}: must be between 1 and 65535, inclusive",
                    p.port
                ),
            );
        }
        let Some(proto) = Protocol::parse(p.protocol.as_deref()) else {
            c.fail(
                format!("{f}.protocol"),
                format!(
                    "Unsupported value: {:?}: supported values: \"SCTP\", \"TCP\", \"UDP\"",
                    p.protocol.as_deref().unwrap_or_default()
                ),
            );
            continue;
        };
        if !keys.insert((p.port, proto)) {
            c.fail(
                f.clone(),
                format!("Duplicate value: port {} {proto}", p.port),
            );
        }
        match &p.target_port {
            Some(IntOrString::Int(t)) if !(1..=65535).contains(t) => c.fail(
                format!("{f}.targetPort"),
                format!("Invalid value: {t}: must be between 1 and 65535, inclusive"),
            ),
            Some(IntOrString::String(s)) if !is_port_name(s) => c.fail(
                format!("{f}.targetPort"),
                format!("Invalid value: {s:?}: must be a port number or an IANA_SVC_NAME"),
            ),
            _ => {}
        }
        match p.node_port {
            Some(n) if n != 0 && ty == "ClusterIP" => c.fail(
                format!("{f}.nodePort"),
                "Forbidden: may not be used when `type` is 'ClusterIP'",
            ),
            Some(n) if !(0..=65535).contains(&n) => c.fail(
                format!("{f}.nodePort"),
                format!("Invalid value: {n}: must be between 1 and 65535, inclusive"),
            ),
            _ => {}
        }
    }
}

fn cluster_ips(c: &mut Check<'_>, spec: &ServiceSpec, cfg: &ValidationConfig) {
    let ip = spec.cluster_ip.as_deref().unwrap_or_default();
    let ips = spec.cluster_ips.as_deref().unwrap_or_default();
    if let Some(first) = ips.first()
        && !ip.is_empty()
        && first != ip
    {
        c.fail(
            "spec.clusterIPs[0]",
            "Invalid value: must match `clusterIP` when both are specified",
        );
    }
    let mut all: Vec<(String, &str)> = Vec::new();
    if !ip.is_empty() {
        all.push(("spec.clusterIP".into(), ip));
    }
    all.extend(
        ips.iter()
            .enumerate()
            .skip(1)
            .map(|(i, s)| (format!("spec.clusterIPs[{i}]"), s.as_str())),
    );
    let mut families = HashSet::new();
    for (field, s) in all {
        if s == "None" {
            continue;
        }
        let Ok(addr) = s.parse::<IpAddr>() else {
            c.fail(field, format!("Invalid value: {s:?}: must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"));
            continue;
        };
        if !families.insert(addr.is_ipv4()) {
            c.fail(
                field.clone(),
                format!("Invalid value: {s:?}: may specify no more than one IP for each IP family"),
            );
        }
        let family_cidrs: Vec<&IpNet> = cfg
            .service_cidrs
            .iter()
            .filter(|n| n.addr().is_ipv4() == addr.is_ipv4())
            .collect();
        if !cfg.service_cidrs.is_empty() && !family_cidrs.iter().any(|n| n.contains(&addr)) {
            let cidrs: Vec<String> = cfg.service_cidrs.iter().map(|n| n.to_string()).collect();
            c.fail(
                field,
                format!("Invalid value: {s:?}: provided IP is not in the valid range. The range of valid IPs is {}", cidrs.join(",")),
            );
        }
    }
}
