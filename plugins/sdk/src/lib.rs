//! The guest SDK: write a wasp balancing plugin in Rust without touching wit-bindgen.
//!
//! ```no_run
//! use wasp_plugin_sdk::{Policy, Selection, Service, Snapshot};
//! struct Equal;
//! impl Policy for Equal {
//!     fn new(_: &Service, _: &str) -> Result<Self, String> { Ok(Equal) }
//!     fn update(&mut self, s: &Snapshot) -> Result<Selection, String> {
//!         Ok(Selection::Weighted(vec![1; s.endpoints.len()]))
//!     }
//! }
//! wasp_plugin_sdk::plugin!(Equal);
//! ```
//!
//! # Layout
//! - [`bindings`]: the generated bindings (an implementation detail of [`plugin!`]).
//! - [`Policy`]: what a plugin implements.
//! - [`host`]: log, clock and endpoint stats.
//! - helpers: [`address`], [`Snapshot`] string lookups.

#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "picking-plugin",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "wasp_plugin_sdk::bindings",
    });
}

pub mod util;

pub use bindings::wasp::balancer::types::{
    AllEndpointStats, Connection, Endpoint, EndpointStats, HashKey, Hashed, IpAddress, Protocol,
    Selection, Service, Snapshot,
};

/// A balancing policy: one value per service port.
pub trait Policy: Sized + 'static {
    /// Builds the policy for `service` from the Service's config annotation.
    ///
    /// # Errors
    /// A config the policy cannot use; the port then stays on the default selection.
    fn new(service: &Service, config: &str) -> Result<Self, String>;

    /// Decides the selection for the current endpoints.
    ///
    /// # Errors
    /// Anything that makes a decision impossible; the port falls back to the default.
    fn update(&mut self, snapshot: &Snapshot) -> Result<Selection, String>;

    /// Picks an endpoint for one new connection (the userspace mode); `None` lets the host use
    /// the weights.
    fn pick(&mut self, _connection: &Connection) -> Option<u32> {
        None
    }
}

/// What `picker.pick` returns to let the host use the weights.
pub const NO_PICK: u32 = u32::MAX;

/// The host's services.
pub mod host {
    pub use crate::bindings::wasp::balancer::host::{Level, all_stats, log, now_ms, stats};
}

/// An endpoint's address.
pub fn ip(a: &IpAddress) -> std::net::IpAddr {
    match *a {
        IpAddress::V4(v) => std::net::Ipv4Addr::from(v).into(),
        IpAddress::V6((hi, lo)) => {
            std::net::Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo)).into()
        }
    }
}

/// An endpoint's address as text (`10.0.0.1`, `fd00::1`).
pub fn address(a: &IpAddress) -> String {
    ip(a).to_string()
}

/// An interned string of the snapshot.
pub fn string(s: &Snapshot, id: Option<u32>) -> Option<&str> {
    let i = id? as usize;
    let end = *s.string_ends.get(i)? as usize;
    let start = if i == 0 {
        0
    } else {
        s.string_ends[i - 1] as usize
    };
    s.strings.get(start..end)
}

/// A stable identity for an endpoint across updates: `address:port`.
pub fn endpoint_key(e: &Endpoint) -> String {
    let mut k = String::with_capacity(24);
    write_endpoint_key(&mut k, e);
    k
}

/// Appends [`endpoint_key`] to `out`. IPv4 is written digit by digit, which in a plugin is
/// much cheaper than the formatting machinery; the bytes are the same.
pub fn write_endpoint_key(out: &mut String, e: &Endpoint) {
    fn decimal(out: &mut String, v: u32) {
        if v >= 10 {
            decimal(out, v / 10);
        }
        out.push(char::from(b'0' + (v % 10) as u8));
    }
    match e.address {
        IpAddress::V4(a) => {
            for (i, octet) in a.to_be_bytes().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                decimal(out, u32::from(octet));
            }
        }
        IpAddress::V6(_) => {
            use std::fmt::Write;
            let _ = write!(out, "{}", ip(&e.address));
        }
    }
    out.push(':');
    decimal(out, u32::from(e.port));
}

/// Exports `$policy` as the plugin's balancer and picker.
#[macro_export]
macro_rules! plugin {
    ($policy:ty) => {
        struct __WaspPlugin;
        type __WaspCell = ::std::rc::Rc<::core::cell::RefCell<::core::result::Result<$policy, String>>>;

        ::std::thread_local! {
            /// The live balancers by service id, for `pick`.
            static __WASP_BALANCERS: ::core::cell::RefCell<$crate::util::ById<__WaspCell>> =
                ::core::cell::RefCell::new($crate::util::ById::default());
        }

        struct __WaspBalancer {
            id: u32,
            policy: __WaspCell,
        }

        impl Drop for __WaspBalancer {
            fn drop(&mut self) {
                __WASP_BALANCERS.with(|b| b.borrow_mut().remove(self.id));
            }
        }

        impl $crate::bindings::exports::wasp::balancer::balancer::Guest for __WaspPlugin {
            type Balancer = __WaspBalancer;
        }

        impl $crate::bindings::exports::wasp::balancer::balancer::GuestBalancer for __WaspBalancer {
            fn new(service: $crate::Service, config: String) -> Self {
                let policy = ::std::rc::Rc::new(::core::cell::RefCell::new(<$policy as $crate::Policy>::new(&service, &config)));
                __WASP_BALANCERS.with(|b| b.borrow_mut().insert(service.id, policy.clone()));
                Self { id: service.id, policy }
            }

            fn update(&self, snapshot: $crate::Snapshot) -> Result<$crate::Selection, String> {
                match &mut *self.policy.borrow_mut() {
                    Ok(p) => $crate::Policy::update(p, &snapshot),
                    Err(e) => Err(format!("invalid config: {e}")),
                }
            }
        }

        impl $crate::bindings::exports::wasp::balancer::picker::Guest for __WaspPlugin {
            fn pick(connection: $crate::Connection) -> u32 {
                __WASP_BALANCERS.with(|b| match &mut *b.borrow().get(connection.service)?.borrow_mut() {
                    Ok(p) => $crate::Policy::pick(p, &connection),
                    Err(_) => None,
                }).unwrap_or($crate::NO_PICK)
            }
        }

        $crate::bindings::export!(__WaspPlugin with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_keys_are_address_colon_port() {
        let e = |address, port| Endpoint {
            address,
            port,
            ready: true,
            serving: true,
            terminating: false,
            is_local: false,
            zone: None,
            node: None,
            target: None,
        };
        for (a, port) in [
            ([10, 244, 0, 1], 8080),
            ([0, 0, 0, 0], 0),
            ([255, 255, 255, 255], 65535),
            ([1, 20, 100, 9], 7),
        ] {
            let v4 = std::net::Ipv4Addr::from(a);
            let key = endpoint_key(&e(IpAddress::V4(u32::from(v4)), port));
            assert_eq!(key, format!("{v4}:{port}"));
        }
        let v6: std::net::Ipv6Addr = "fd00::1".parse().unwrap();
        let bits = u128::from(v6);
        let key = endpoint_key(&e(IpAddress::V6(((bits >> 64) as u64, bits as u64)), 80));
        assert_eq!(key, "fd00::1:80");
    }
}
