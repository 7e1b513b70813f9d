//! Which traffic to a service is masqueraded: all of it with `masquerade_all`, else what does
//! not come from the cluster's pods (kube-proxy's `--cluster-cidr` rule), per family.

use ipnet::IpNet;

use super::{Family, RenderConfig};

/// The masquerade decision for one family's service traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Masquerade {
    /// Everything is marked.
    All,
    /// Traffic from outside each of these CIDRs is marked (none: nothing is).
    NotFrom(Vec<IpNet>),
}

/// The masquerade decision for family `f`.
pub fn decision(cfg: &RenderConfig, f: Family) -> Masquerade {
    if cfg.masquerade_all {
        return Masquerade::All;
    }
    Masquerade::NotFrom(
        cfg.cluster_cidrs
            .iter()
            .filter(|c| f.holds(&c.addr()))
            .copied()
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerade_all_wins_else_the_familys_cluster_cidrs() {
        let mut cfg = RenderConfig {
            cluster_cidrs: vec![
                "10.244.0.0/16".parse().unwrap(),
                "fd00:244::/64".parse().unwrap(),
            ],
            masquerade_all: false,
            masquerade_mark: 0x2000,
            service_cidrs: Vec::new(),
            capture: None,
        };
        assert_eq!(
            decision(&cfg, Family::V6),
            Masquerade::NotFrom(vec!["fd00:244::/64".parse().unwrap()])
        );
        cfg.masquerade_all = true;
        assert_eq!(decision(&cfg, Family::V4), Masquerade::All);
    }
}
