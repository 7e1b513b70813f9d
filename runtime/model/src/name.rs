//! Names: the Kubernetes nouns every other module keys its maps by.

use std::fmt;
use std::sync::Arc;

use crate::intern::intern;

/// A namespace and a name, the key of every namespaced Kubernetes object.
///
/// Every map from the store to the dataplane is keyed by these, so the parts are shared:
/// a clone counts a reference instead of copying two strings, and [`NamespacedName::new`]
/// takes equal parts from one pool ([`crate::intern`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamespacedName {
    /// The namespace; never empty (a missing namespace means `default`).
    pub namespace: Arc<str>,
    /// The object's name.
    pub name: Arc<str>,
}

impl NamespacedName {
    /// Builds a name from its two parts.
    pub fn new(namespace: impl AsRef<str>, name: impl AsRef<str>) -> Self {
        Self {
            namespace: intern(namespace.as_ref()),
            name: intern(name.as_ref()),
        }
    }
}

impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A transport protocol a service port may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Parses the Kubernetes spelling (`TCP`, `UDP`, `SCTP`); a missing protocol means TCP.
    pub fn parse(s: Option<&str>) -> Option<Self> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }

    /// The lower-case name iptables, nft and ip(8) use.
    pub fn lower(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }

    /// The Kubernetes spelling.
    pub fn upper(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.upper())
    }
}

/// One port of one Service: the unit that is balanced and programmed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    /// The Service.
    pub service: NamespacedName,
    /// The port's name; empty for the single unnamed port of a Service.
    pub port: Arc<str>,
    /// The port's protocol.
    pub protocol: Protocol,
}

impl ServicePortName {
    /// Builds a service port name.
    pub fn new(service: NamespacedName, port: impl AsRef<str>, protocol: Protocol) -> Self {
        Self {
            service,
            port: intern(port.as_ref()),
            protocol,
        }
    }
}

impl fmt::Display for ServicePortName {
    /// Formats as kube-proxy does: `ns/name:port`, or `ns/name` for an unnamed port.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port.is_empty() {
            write!(f, "{}", self.service)
        } else {
            write!(f, "{}:{}", self.service, self.port)
        }
    }
}

/// A reference to one Kubernetes object, for error messages and bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// The object's kind, e.g. `Service`.
    pub kind: String,
    /// The object's namespace and name.
    pub name: NamespacedName,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}
