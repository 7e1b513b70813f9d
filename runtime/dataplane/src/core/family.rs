//! `Family`: IPv4 or IPv6.

use std::net::IpAddr;

/// An IP family: each mode programs one table (or tool) per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The family an address belongs to.
    pub fn of(ip: &IpAddr) -> Self {
        if ip.is_ipv4() { Self::V4 } else { Self::V6 }
    }

    /// Whether `ip` is of this family.
    pub fn holds(self, ip: &IpAddr) -> bool {
        Self::of(ip) == self
    }

    /// nft's name for the family (`ip`, `ip6`).
    pub fn nft_name(self) -> &'static str {
        match self {
            Self::V4 => "ip",
            Self::V6 => "ip6",
        }
    }

    /// The address length in bytes.
    pub fn addr_len(self) -> u32 {
        match self {
            Self::V4 => 4,
            Self::V6 => 16,
        }
    }

    /// The prefix length of one host.
    pub fn host_prefix(self) -> u8 {
        match self {
            Self::V4 => 32,
            Self::V6 => 128,
        }
    }

    /// The kernel's `AF_*` / `NFPROTO_*` number.
    pub fn af(self) -> u8 {
        match self {
            Self::V4 => 2,
            Self::V6 => 10,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_know_their_family() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(Family::of(&v4), Family::V4);
        assert!(Family::V6.holds(&v6) && !Family::V6.holds(&v4));
        assert_eq!((Family::V4.nft_name(), Family::V6.addr_len()), ("ip", 16));
        assert_eq!((Family::V4.af(), Family::V6.host_prefix()), (2, 128));
    }
}
