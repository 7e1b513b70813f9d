//! A port in one family: its VIP and the endpoints that family's table holds.

use std::net::IpAddr;

use wasp_model::{Endpoint, ServicePortState};

use super::Family;

/// The port's cluster IP in family `f`, if it has one.
pub fn vip(port: &ServicePortState, f: Family) -> Option<IpAddr> {
    port.service
        .cluster_ips
        .iter()
        .copied()
        .find(|ip| f.holds(ip))
}

/// The port's endpoints of family `f`, each with its index in `port.endpoints` (the index a
/// Selection's weights and slots refer to).
pub fn of_family(port: &ServicePortState, f: Family) -> Vec<(usize, &Endpoint)> {
    port.endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| f.holds(&e.ip))
        .collect()
}

/// Of `family` (one family's endpoints with their indices), those whose index is in
/// `indices` (a traffic class of the port), in order; linear in both.
pub fn class<'a>(
    port: &ServicePortState,
    family: &[(usize, &'a Endpoint)],
    indices: &[usize],
) -> Vec<(usize, &'a Endpoint)> {
    let mut member = vec![false; port.endpoints.len()];
    for &i in indices {
        if let Some(m) = member.get_mut(i) {
            *m = true;
        }
    }
    family
        .iter()
        .copied()
        .filter(|(i, _)| member.get(*i).copied().unwrap_or(false))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasp_model::{Protocol, ServicePort};

    #[test]
    fn a_family_sees_its_own_vip_and_endpoints_with_their_indices() {
        let mut service = ServicePort::new("10.96.0.1".parse().unwrap(), 80, Protocol::Tcp);
        service.cluster_ips.push("fd00::1".parse().unwrap());
        let endpoints = ["10.0.0.1", "fd00::a", "10.0.0.2"]
            .iter()
            .map(|ip| Endpoint::ready(ip.parse().unwrap(), 8080))
            .collect();
        let port = ServicePortState::new(service, endpoints);
        assert_eq!(vip(&port, Family::V6), Some("fd00::1".parse().unwrap()));
        let v4: Vec<usize> = of_family(&port, Family::V4)
            .iter()
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(v4, [0, 2]);
    }
}
