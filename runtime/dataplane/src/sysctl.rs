//! Conntrack kernel settings, applied at start as kube-proxy's `conntrack` section does.

use std::time::Duration;

/// The conntrack settings to apply; `None` leaves the kernel's value alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConntrackSettings {
    /// `nf_conntrack_max` per CPU.
    pub max_per_core: Option<u32>,
    /// The floor of `nf_conntrack_max`.
    pub min: Option<u32>,
    /// `nf_conntrack_tcp_timeout_established`.
    pub tcp_established_timeout: Option<Duration>,
    /// `nf_conntrack_tcp_timeout_close_wait`.
    pub tcp_close_wait_timeout: Option<Duration>,
    /// `nf_conntrack_udp_timeout`.
    pub udp_timeout: Option<Duration>,
    /// `nf_conntrack_udp_timeout_stream`.
    pub udp_stream_timeout: Option<Duration>,
    /// `nf_conntrack_tcp_be_liberal`.
    pub tcp_be_liberal: Option<bool>,
}

const DIR: &str = "/proc/sys/net/netfilter";

/// The sysctl writes the settings ask for, as (name, value).
pub fn wanted(c: &ConntrackSettings, cpus: u32) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if c.max_per_core.is_some() || c.min.is_some() {
        // kube-proxy: max(maxPerCore × CPUs, min).
        let max = c
            .max_per_core
            .unwrap_or(0)
            .saturating_mul(cpus)
            .max(c.min.unwrap_or(0));
        if max > 0 {
            out.push(("nf_conntrack_max", max.to_string()));
        }
    }
    for (name, d) in [
        (
            "nf_conntrack_tcp_timeout_established",
            c.tcp_established_timeout,
        ),
        (
            "nf_conntrack_tcp_timeout_close_wait",
            c.tcp_close_wait_timeout,
        ),
        ("nf_conntrack_udp_timeout", c.udp_timeout),
        ("nf_conntrack_udp_timeout_stream", c.udp_stream_timeout),
    ] {
        if let Some(d) = d.filter(|d| !d.is_zero()) {
            out.push((name, d.as_secs().max(1).to_string()));
        }
    }
    if let Some(b) = c.tcp_be_liberal {
        out.push(("nf_conntrack_tcp_be_liberal", u8::from(b).to_string()));
    }
    out
}

/// Applies the settings; a value the kernel refuses (e.g. `nf_conntrack_max` outside the
/// initial network namespace) is returned as a warning, not an error.
pub fn apply(c: &ConntrackSettings) -> Vec<String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let mut warnings = Vec::new();
    for (name, value) in wanted(c, cpus) {
        let path = format!("{DIR}/{name}");
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current.trim() == value {
            continue;
        }
        match std::fs::write(&path, &value) {
            Ok(()) => tracing::info!(sysctl = name, %value, "set conntrack sysctl"),
            Err(e) => warnings.push(format!("cannot set {name} to {value}: {e}")),
        }
    }
    warnings
}

/// Lets 127.0.0.0/8 be routed, so that node ports answer on localhost (the iptables mode
/// with node ports on every address, as kube-proxy sets it); returns a warning when refused.
pub fn route_localnet() -> Option<String> {
    let path = "/proc/sys/net/ipv4/conf/all/route_localnet";
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
        return None;
    }
    match std::fs::write(path, "1") {
        Ok(()) => {
            tracing::info!(
                sysctl = "net.ipv4.conf.all.route_localnet",
                "set to 1 for node ports on localhost"
            );
            None
        }
        Err(e) => Some(format!(
            "cannot set net.ipv4.conf.all.route_localnet to 1 (node ports will not answer on localhost): {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_follows_kube_proxy() {
        let c = ConntrackSettings {
            max_per_core: Some(32768),
            min: Some(131072),
            tcp_established_timeout: Some(Duration::from_secs(86400)),
            udp_timeout: Some(Duration::ZERO),
            ..Default::default()
        };
        assert_eq!(
            wanted(&c, 2),
            [
                ("nf_conntrack_max", "131072".to_string()),
                ("nf_conntrack_tcp_timeout_established", "86400".into())
            ]
        );
        assert_eq!(wanted(&c, 8)[0].1, "262144");
        assert!(wanted(&ConntrackSettings::default(), 2).is_empty());
    }
}
