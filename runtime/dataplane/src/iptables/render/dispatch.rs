//! Picking a Service by destination, as kube-proxy lays it out.
//!
//! - nat `WASP-SERVICES`: each cluster IP → its internal policy chain (`WASP-SVC-…`, or
//!   `WASP-SVL-…` with `internalTrafficPolicy: Local`); each external IP → `WASP-EXT-…`; each
//!   LoadBalancer IP → `WASP-FW-…` with source ranges, else `WASP-EXT-…`; last, the node's
//!   addresses → `WASP-NODEPORTS` (by address type LOCAL when node ports answer on every
//!   address, else one rule per address).
//! - nat `WASP-NODEPORTS`: each node port → `WASP-EXT-…`.
//! - filter `WASP-SERVICES` (FORWARD, OUTPUT) and `WASP-EXTERNAL-SERVICES` (INPUT, FORWARD):
//!   what a class without endpoints meets, REJECT or DROP.
//! - filter `WASP-PROXY-FIREWALL`: LoadBalancer traffic `WASP-FW-…` did not accept, which
//!   was therefore not DNATed and still carries the LoadBalancer IP, is dropped.
//! - filter `WASP-NODEPORTS` (INPUT): health check node ports are accepted.
//!
//! The nat rules are kept even when a class has no endpoints: the chain is then empty and
//! the filter rule takes the packet, so endpoint changes never rewrite `WASP-SERVICES`.

use std::collections::BTreeSet;

use wasp_model::ProxyState;

use super::{Table, View, dest_match, host};
use crate::core::Family;
use crate::iptables::chain;

/// The nat `WASP-SERVICES` rules, the node port jump last.
pub(super) fn services<'a>(
    views: impl Iterator<Item = &'a View<'a>>,
    state: &ProxyState,
    f: Family,
) -> Vec<String> {
    let mut out = Vec::new();
    for v in views {
        let (name, p, svc_port) = (v.name, v.port, v.port.service.port);
        out.push(format!(
            "-A {} -m comment --comment \"{name} cluster IP\" {} -j {}",
            chain::SERVICES,
            dest_match(&v.vip, p, svc_port),
            v.internal_chain()
        ));
        for ip in &v.external_ips {
            out.push(format!(
                "-A {} -m comment --comment \"{name} external IP\" {} -j {}",
                chain::SERVICES,
                dest_match(ip, p, svc_port),
                chain::external(name)
            ));
        }
        let lb_chain = if v.source_ranges(f).is_empty() {
            chain::external(name)
        } else {
            chain::firewall(name)
        };
        for ip in &v.lb_ips {
            out.push(format!(
                "-A {} -m comment --comment \"{name} loadbalancer IP\" {} -j {lb_chain}",
                chain::SERVICES,
                dest_match(ip, p, svc_port),
            ));
        }
    }
    let comment = "-m comment --comment \"wasp service nodeports; NOTE: this must be the last rule in this chain\"";
    match &state.node_port_ips {
        None => {
            // IPv6 cannot route ::1 off the host, so localhost node ports are IPv4 only.
            let not_lo = if f == Family::V6 { " ! -d ::1/128" } else { "" };
            out.push(format!(
                "-A {} {comment} -m addrtype --dst-type LOCAL{not_lo} -j {}",
                chain::SERVICES,
                chain::NODEPORTS
            ));
        }
        Some(ips) => {
            for ip in ips
                .iter()
                .filter(|ip| f.holds(ip) && !(ip.is_ipv6() && ip.is_loopback()))
            {
                out.push(format!(
                    "-A {} {comment} -d {} -j {}",
                    chain::SERVICES,
                    host(ip),
                    chain::NODEPORTS
                ));
            }
        }
    }
    out
}

/// The nat `WASP-NODEPORTS` rules.
pub(super) fn node_ports<'a>(views: impl Iterator<Item = &'a View<'a>>) -> Vec<String> {
    views
        .filter_map(|v| {
            let np = v.port.service.node_port?;
            let p = v.port.service.protocol.lower();
            Some(format!(
                "-A {} -m comment --comment \"{}\" -p {p} -m {p} --dport {np} -j {}",
                chain::NODEPORTS,
                v.name,
                chain::external(v.name)
            ))
        })
        .collect()
}

/// The filter chains, rewritten every sync: rejections and drops, the LoadBalancer
/// firewall, and health check node ports.
pub(super) fn filter_rules<'a>(
    views: impl Iterator<Item = &'a View<'a>>,
    f: Family,
    filter: &mut Table,
) {
    for c in [
        chain::SERVICES,
        chain::EXTERNAL_SERVICES,
        chain::PROXY_FIREWALL,
        chain::NODEPORTS,
    ] {
        filter.chain(c);
    }
    let mut health = BTreeSet::new();
    for v in views {
        unusable_rules(v, filter);
        let fw = v.source_ranges(f);
        if !fw.is_empty() && v.port.has_any_endpoints {
            for ip in &v.lb_ips {
                filter.rule(format!(
                    "-A {} -m comment --comment \"{} traffic not accepted by {}\" {} -j DROP",
                    chain::PROXY_FIREWALL,
                    v.name,
                    chain::firewall(v.name),
                    dest_match(ip, v.port, v.port.service.port)
                ));
            }
        }
        if let Some(hc) = v.port.service.health_check_node_port
            && health.insert(hc)
        {
            filter.rule(format!(
                "-A {} -m comment --comment \"{} health check node port\" -p tcp -m tcp --dport {hc} -j ACCEPT",
                chain::NODEPORTS,
                v.name.service
            ));
        }
    }
}

/// REJECT or DROP for each destination whose class has no endpoint.
fn unusable_rules(v: &View<'_>, filter: &mut Table) {
    let (why, target) = v.unusable();
    let (name, p, svc_port) = (v.name, v.port, v.port.service.port);
    if v.internal().is_empty() {
        filter.rule(format!(
            "-A {} -m comment --comment \"{name} {why}\" {} -j {target}",
            chain::SERVICES,
            dest_match(&v.vip, p, svc_port)
        ));
    }
    if !v.has_external() || !v.external().is_empty() {
        return;
    }
    for ip in v.external_ips.iter().chain(&v.lb_ips) {
        filter.rule(format!(
            "-A {} -m comment --comment \"{name} {why}\" {} -j {target}",
            chain::EXTERNAL_SERVICES,
            dest_match(ip, p, svc_port)
        ));
    }
    if let Some(np) = p.service.node_port {
        let proto = p.service.protocol.lower();
        filter.rule(format!(
            "-A {} -m comment --comment \"{name} {why}\" -m addrtype --dst-type LOCAL -p {proto} -m {proto} --dport {np} -j {target}",
            chain::EXTERNAL_SERVICES,
        ));
    }
}
