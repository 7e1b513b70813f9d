//! A transaction as data: the operations one sync sends.
//!
//! The same [`Op`] list is sent to the kernel as one netlink batch ([`super::encode`]) and
//! printed by `wasp plan` as `nft -f` input ([`super::text`]), so what is planned is what is
//! applied.

use std::net::IpAddr;

use ipnet::IpNet;
use wasp_model::{HashKey, Protocol};

pub use crate::core::Family;

/// wasp's table name, in both families.
pub const TABLE: &str = "wasp";

/// A base chain's hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    /// `nat` or `filter`.
    pub kind: &'static str,
    /// `prerouting`, `output`, `postrouting` or `forward`.
    pub hook: &'static str,
    /// The priority (dstnat is -100, srcnat 100).
    pub priority: i32,
}

/// A chain to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Its name.
    pub name: String,
    /// Its hook, for a base chain.
    pub hook: Option<Hook>,
}

/// The kinds of set and map wasp uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    /// `daddr . l4proto . dport : verdict`.
    Dispatch,
    /// `saddr . daddr` pairs: endpoints that may reach themselves through a VIP.
    Hairpin,
    /// `VIP . port . slot : address . port`: the slots of the service ports of one protocol
    /// (one of its shards).
    Endpoints(Protocol),
    /// Plain addresses (the cluster IPs).
    Addresses,
    /// Client addresses that stick to one endpoint for `timeout` seconds.
    Affinity {
        /// Seconds an entry lives after its last use.
        timeout: u32,
    },
}

impl SetKind {
    /// Maps have values; sets do not.
    pub fn is_map(self) -> bool {
        matches!(self, Self::Dispatch | Self::Endpoints(_))
    }
}

/// A set or map to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// Its name.
    pub name: String,
    /// What it holds.
    pub kind: SetKind,
}

/// A verdict held in a dispatch map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// `goto CHAIN`.
    Goto(String),
    /// `drop`.
    Drop,
}

/// One set or map element.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Elem {
    /// `VIP . proto . port : verdict` (or, for a delete, just the key).
    Dispatch {
        /// The cluster IP.
        addr: IpAddr,
        /// The protocol.
        proto: Protocol,
        /// The service port.
        port: u16,
        /// The verdict.
        verdict: Verdict,
    },
    /// `ep . ep`: the hairpin pair of one endpoint address.
    Hairpin(IpAddr),
    /// An address (the cluster IPs).
    Addr(IpAddr),
    /// `VIP . port . slot : addr . port`: one slot of a service port's selection.
    Slot {
        /// The cluster IP.
        vip: IpAddr,
        /// The service port.
        port: u16,
        /// The slot.
        slot: u32,
        /// The endpoint's address.
        addr: IpAddr,
        /// The endpoint's port.
        target: u16,
    },
}

/// How a DNAT rule picks the slot it looks up: a number in `offset .. offset + modulus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pick {
    /// `numgen random mod M [offset O]`.
    Random {
        /// Slots.
        modulus: u32,
        /// The first slot.
        offset: u32,
    },
    /// `jhash KEY mod M seed S [offset O]`.
    Hash {
        /// What is hashed.
        key: HashKey,
        /// Slots.
        modulus: u32,
        /// The seed.
        seed: u32,
        /// The first slot.
        offset: u32,
    },
}

/// A condition a rule starts with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Match {
    /// `ip saddr CIDR`, or `ip saddr != CIDR` when `not`.
    Saddr {
        /// The CIDR.
        cidr: IpNet,
        /// The source is outside it.
        not: bool,
    },
    /// `fib saddr type local`: the packet comes from this node.
    SaddrLocal,
    /// `ip daddr CIDR`.
    Daddr(IpNet),
    /// `ip daddr @SET`.
    DaddrIn(&'static str),
    /// `socket transparent 1`: the packet belongs to a transparent socket of this node (the
    /// userspace proxy's upstream connections that keep the client's address).
    SocketTransparent,
}

/// What a filter rule does with what it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `return`: back to the chain that jumped here.
    Return,
    /// `drop`.
    Drop,
    /// `reject`.
    Reject,
}

/// The rules wasp writes; each knows its nft text and its kernel expressions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Rule {
    /// `jump CHAIN`.
    Jump(&'static str),
    /// `ct state new jump CHAIN`.
    JumpIfNew(&'static str),
    /// `ip daddr . meta l4proto . th dport vmap @MAP`.
    Dispatch(&'static str),
    /// `reject`.
    Reject,
    /// `[WHEN] ACTION`.
    Filter {
        /// What the rule applies to; everything when `None`.
        when: Option<Match>,
        /// What it does.
        action: Action,
    },
    /// `[WHEN] meta mark set meta mark | MARK`: ask for masquerade.
    Mark {
        /// What is marked; everything when `None`.
        when: Option<Match>,
        /// The mark bit.
        mark: u32,
    },
    /// `ct status dnat ip saddr . ip daddr @SET masquerade fully-random`.
    Hairpin(&'static str),
    /// `meta mark & MARK == 0 return`.
    ReturnUnmarked(u32),
    /// `meta mark set meta mark ^ MARK`.
    ClearMark(u32),
    /// `masquerade fully-random`.
    Masquerade,
    /// `[WHEN] meta l4proto P dnat ip to ip daddr . P dport . PICK map @MAP`.
    Dnat {
        /// What the rule applies to; everything when `None`.
        when: Option<Match>,
        /// The protocol (NAT to a port needs it).
        proto: Protocol,
        /// How the slot is picked.
        pick: Pick,
        /// The endpoints map (a shard of the protocol's).
        map: String,
    },
    /// `[WHEN] meta l4proto P redirect to :PORT`: the userspace mode's capture, to its own
    /// listener on this node.
    Redirect {
        /// What the rule applies to; everything when `None`.
        when: Option<Match>,
        /// The protocol.
        proto: Protocol,
        /// The listener's port.
        port: u16,
    },
    /// A ClientIP-affinity rule: `[WHEN] meta l4proto P [ip saddr @SET | numgen random mod M
    /// < W] update @SET { ip saddr } dnat ip to EP`.
    Sticky {
        /// What the rule applies to; everything when `None`.
        when: Option<Match>,
        /// The protocol.
        proto: Protocol,
        /// `Some((m, w))`: a fresh pick taken with probability w/m; `None`: the client is in
        /// the set already (or this is the last choice).
        chance: Option<(u32, u32)>,
        /// Only clients already in the set match.
        known: bool,
        /// The endpoint's affinity set.
        set: String,
        /// The endpoint's address.
        addr: IpAddr,
        /// The endpoint's port.
        port: u16,
    },
}

/// One operation of a transaction, in one family's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `add table`.
    AddTable,
    /// `delete table`.
    DeleteTable,
    /// `flush table`: delete the rules of every chain (sets keep their elements).
    FlushRules,
    /// `add chain`.
    AddChain(Chain),
    /// `flush chain`: delete its rules.
    FlushChain(String),
    /// `delete chain`.
    DeleteChain(String),
    /// `add rule` (appended).
    AddRule {
        /// The chain.
        chain: String,
        /// The rule.
        rule: Rule,
    },
    /// `add set` / `add map`.
    AddSet(Set),
    /// `flush set` / `flush map`.
    FlushSet(Set),
    /// `delete set` / `delete map`.
    DeleteSet(Set),
    /// `add element`.
    AddElements {
        /// The set.
        set: Set,
        /// The elements.
        elems: Vec<Elem>,
    },
    /// `delete element`.
    DeleteElements {
        /// The set.
        set: Set,
        /// The elements (their keys count).
        elems: Vec<Elem>,
    },
}

/// One sync's operations, over both families, applied as one transaction.
pub type Transaction = Vec<(Family, Op)>;

/// The IANA protocol number.
pub fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}
