//! The service port every plugin test and the plugin benchmark balance: cluster IP
//! 10.96.0.1:80/TCP, annotated with `plugin` and its config.

use wasp_model::{BalancerRef, Endpoint, Protocol, ServicePort, ServicePortState};

/// A port using `plugin` with `config`, over `endpoints`.
pub fn port_with(plugin: &str, config: &str, endpoints: Vec<Endpoint>) -> ServicePortState {
    let service = ServicePort {
        balancer: Some(BalancerRef {
            name: plugin.into(),
            config: config.into(),
        }),
        ..ServicePort::new("10.96.0.1".parse().unwrap(), 80, Protocol::Tcp)
    };
    ServicePortState::new(service, endpoints)
}
