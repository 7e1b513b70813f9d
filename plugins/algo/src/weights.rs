//! Weights from a balancer config string: `KEY=WEIGHT` pairs separated by commas or spaces,
//! where KEY is an endpoint address, a target (pod) name, a zone, or `default`.
//! Example: `10.0.0.1=3,zone-b=0,default=1`.

use std::net::IpAddr;

/// What a config key can name about an endpoint.
#[derive(Debug, Clone, Copy)]
pub struct EndpointKeys<'a> {
    /// The address (a key `10.0.0.1` names it).
    pub address: IpAddr,
    /// The target (pod) name.
    pub target: Option<&'a str>,
    /// The zone.
    pub zone: Option<&'a str>,
}

/// Parses `config` into (key, weight) pairs.
///
/// # Errors
/// Names the first pair that is not `KEY=NUMBER`.
pub fn parse(config: &str) -> Result<Vec<(String, u32)>, String> {
    config
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("{p:?} is not KEY=WEIGHT"))?;
            let w = v
                .trim()
                .parse::<u32>()
                .map_err(|_| format!("{p:?}: weight {v:?} is not a whole number"))?;
            Ok((k.trim().to_string(), w))
        })
        .collect()
}

/// The weight of each endpoint: the first matching key among address, target and zone, else
/// `default` (1 when unset).
pub fn resolve(pairs: &[(String, u32)], eps: &[EndpointKeys<'_>]) -> Vec<u32> {
    let get = |k: &str| pairs.iter().find(|(p, _)| p == k).map(|(_, w)| *w);
    // Address keys are compared as addresses: no endpoint address is ever formatted.
    let by_address: Vec<(IpAddr, u32)> = pairs
        .iter()
        .filter_map(|(k, w)| Some((k.parse().ok()?, *w)))
        .collect();
    let default = get("default").unwrap_or(1);
    eps.iter()
        .map(|e| {
            by_address
                .iter()
                .find(|(a, _)| *a == e.address)
                .map(|(_, w)| *w)
                .or_else(|| e.target.and_then(get))
                .or_else(|| e.zone.and_then(get))
                .unwrap_or(default)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_address_target_zone_and_default() {
        let pairs = parse("10.0.0.1=3, web-b=2,zone-c=0 default=5").unwrap();
        let e = |a: &str, t, z| EndpointKeys {
            address: a.parse().unwrap(),
            target: t,
            zone: z,
        };
        let w = resolve(
            &pairs,
            &[
                e("10.0.0.1", None, None),
                e("10.0.0.2", Some("web-b"), None),
                e("10.0.0.3", None, Some("zone-c")),
                e("10.0.0.4", None, None),
            ],
        );
        assert_eq!(w, [3, 2, 0, 5]);
        assert!(parse("a=b").unwrap_err().contains("not a whole number"));
        assert!(parse("oops").unwrap_err().contains("not KEY=WEIGHT"));
    }
}
