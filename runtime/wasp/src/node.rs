//! This host's addresses: every local one (for `nodePortAddresses` given as CIDRs), and the
//! primary ones (the address of the interface that holds the default route, per family), for
//! node ports in static mode without `--node-ip`.

use std::net::IpAddr;

/// Every address on this host's interfaces.
pub fn host_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = addrs
        .filter_map(|a| {
            let sa = a.address?;
            if let Some(v4) = sa.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The interfaces holding the IPv4 and IPv6 default routes, read from `/proc/net`.
fn default_route_interfaces() -> (Option<String>, Option<String>) {
    let v4 = std::fs::read_to_string("/proc/net/route")
        .ok()
        .and_then(|t| default_v4(&t));
    let v6 = std::fs::read_to_string("/proc/net/ipv6_route")
        .ok()
        .and_then(|t| default_v6(&t));
    (v4, v6)
}

/// `/proc/net/route`: `Iface Destination Gateway Flags RefCnt Use Metric …`, in hex; the
/// default route (destination and mask 0) with the lowest metric.
fn default_v4(table: &str) -> Option<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (iface, dest, metric, mask) = (f.first()?, f.get(1)?, f.get(6)?, f.get(7)?);
            (*dest == "00000000" && *mask == "00000000")
                .then(|| (metric.parse::<u32>().unwrap_or(u32::MAX), iface.to_string()))
        })
        .min()
        .map(|(_, i)| i)
}

/// `/proc/net/ipv6_route`: `dest plen src srcplen nexthop metric refcnt use flags iface`;
/// the default route (::/0) with the lowest metric, not the loopback's unreachable one.
fn default_v6(table: &str) -> Option<String> {
    table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dest, plen, metric, iface) = (f.first()?, f.get(1)?, f.get(5)?, f.get(9)?);
            (dest.bytes().all(|b| b == b'0') && *plen == "00" && *iface != "lo").then(|| {
                (
                    u32::from_str_radix(metric, 16).unwrap_or(u32::MAX),
                    iface.to_string(),
                )
            })
        })
        .min()
        .map(|(_, i)| i)
}

/// The node's primary addresses: per family, the first usable address of the interface that
/// holds the default route (global scope for IPv6).
pub fn primary_addresses() -> Vec<IpAddr> {
    let (v4, v6) = default_route_interfaces();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let addrs: Vec<_> = addrs.collect();
    let mut out = Vec::new();
    if let Some(i) = v4
        && let Some(ip) = addrs
            .iter()
            .filter(|a| a.interface_name == i)
            .find_map(|a| a.address?.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())))
    {
        out.push(ip);
    }
    if let Some(i) = v6
        && let Some(ip) = addrs
            .iter()
            .filter(|a| a.interface_name == i)
            .filter_map(|a| a.address?.as_sockaddr_in6().map(|s| s.ip()))
            .find(|ip| !ip.is_unicast_link_local() && !ip.is_loopback())
    {
        out.push(IpAddr::V6(ip));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_routes_interface_is_read_from_proc() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                  eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                  wg0\t00000000\t00000000\t0001\t0\t0\t50\t00000000\t0\t0\t0\n";
        assert_eq!(default_v4(v4).as_deref(), Some("wg0"), "lowest metric");
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00450003     eth0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n";
        assert_eq!(default_v6(v6).as_deref(), Some("eth0"));
        assert_eq!(default_v4("Iface\tDestination\n"), None);
    }
}
