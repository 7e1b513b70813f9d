//! A transaction as data: the operations one sync sends, and their text in nft syntax.
//!
//! The same [`Op`] list is sent to the kernel as one netlink batch ([`super::netlink`]) and
//! printed by `wasp plan` as `nft -f` input, so what is planned is what is applied.

use std::fmt::{self, Write};
use std::net::IpAddr;

use ipnet::IpNet;
use wasp_model::{HashKey, Protocol};

/// wasp's table name, in both families.
pub const TABLE: &str = "wasp";

/// An IP family: wasp has one table in each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// `table ip wasp`.
    V4,
    /// `table ip6 wasp`.
    V6,
}

impl Family {
    /// The family an address belongs to.
    pub fn of(ip: &IpAddr) -> Self {
        if ip.is_ipv4() { Self::V4 } else { Self::V6 }
    }

    /// nft's name for the family.
    pub fn name(self) -> &'static str {
        match self {
            Self::V4 => "ip",
            Self::V6 => "ip6",
        }
    }

    /// The address type's name.
    pub fn addr_type(self) -> &'static str {
        match self {
            Self::V4 => "ipv4_addr",
            Self::V6 => "ipv6_addr",
        }
    }

    /// Address length in bytes.
    pub fn addr_len(self) -> u32 {
        match self {
            Self::V4 => 4,
            Self::V6 => 16,
        }
    }
}

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

    fn noun(self) -> &'static str {
        if self.is_map() { "map" } else { "set" }
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

/// How a DNAT rule picks the slot it looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// `numgen random mod M`.
    Random {
        /// Slots.
        modulus: u32,
    },
    /// `jhash KEY mod M seed S`.
    Hash {
        /// What is hashed.
        key: HashKey,
        /// Slots.
        modulus: u32,
        /// The seed.
        seed: u32,
    },
}

/// The rules wasp writes; each knows its nft text and its kernel expressions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `jump CHAIN`.
    Jump(&'static str),
    /// `ct state new jump CHAIN`.
    JumpIfNew(&'static str),
    /// `ip daddr . meta l4proto . th dport vmap @MAP`.
    Dispatch(&'static str),
    /// `reject`.
    Reject,
    /// `ip saddr != CIDR meta mark set meta mark | MARK`, or with no CIDR, for all traffic.
    MarkMasquerade {
        /// Traffic from outside this CIDR is marked; `None` marks all.
        outside: Option<IpNet>,
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
    /// `meta l4proto P dnat ip to ip daddr . P dport . PICK map @MAP`.
    Dnat {
        /// The protocol (NAT to a port needs it).
        proto: Protocol,
        /// How the slot is picked.
        pick: Pick,
        /// The endpoints map (a shard of the protocol's).
        map: String,
    },
    /// A ClientIP-affinity rule: `meta l4proto P [ip saddr @SET | numgen random mod M < W]
    /// update @SET { ip saddr } dnat ip to EP`.
    Sticky {
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

/// The transaction as `nft -f` input.
pub fn text(tx: &[(Family, Op)]) -> String {
    let mut out = String::new();
    for (f, op) in tx {
        let _ = writeln!(out, "{}", OpText(*f, op));
    }
    out
}

struct OpText<'a>(Family, &'a Op);

impl fmt::Display for OpText<'_> {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let f = self.0;
        let t = format!("{} {TABLE}", f.name());
        match self.1 {
            Op::AddTable => write!(out, "add table {t}"),
            Op::DeleteTable => write!(out, "delete table {t}"),
            Op::FlushRules => write!(out, "flush table {t}"),
            Op::AddChain(c) => match c.hook {
                None => write!(out, "add chain {t} {}", c.name),
                Some(h) => write!(
                    out,
                    "add chain {t} {} {{ type {} hook {} priority {}; policy accept; }}",
                    c.name, h.kind, h.hook, h.priority
                ),
            },
            Op::FlushChain(c) => write!(out, "flush chain {t} {c}"),
            Op::DeleteChain(c) => write!(out, "delete chain {t} {c}"),
            Op::AddRule { chain, rule } => {
                write!(out, "add rule {t} {chain} {}", RuleText(f, rule))
            }
            Op::AddSet(s) => write!(
                out,
                "add {} {t} {} {{ {} }}",
                s.kind.noun(),
                s.name,
                set_spec(f, s.kind)
            ),
            Op::FlushSet(s) => write!(out, "flush {} {t} {}", s.kind.noun(), s.name),
            Op::DeleteSet(s) => write!(out, "delete {} {t} {}", s.kind.noun(), s.name),
            Op::AddElements { set, elems } => {
                write!(out, "add element {t} {} {{ ", set.name)?;
                elems_text(out, elems, true)?;
                out.write_str(" }")
            }
            Op::DeleteElements { set, elems } => {
                write!(out, "delete element {t} {} {{ ", set.name)?;
                elems_text(out, elems, false)?;
                out.write_str(" }")
            }
        }
    }
}

fn set_spec(f: Family, kind: SetKind) -> String {
    let a = f.addr_type();
    match kind {
        SetKind::Dispatch => format!("type {a} . inet_proto . inet_service : verdict;"),
        SetKind::Hairpin => format!("type {a} . {a};"),
        SetKind::Endpoints(proto) => {
            let (ip, p) = (f.name(), proto.lower());
            format!("typeof {ip} daddr . {p} dport . numgen random mod 2 : {ip} daddr . {p} dport;")
        }
        SetKind::Affinity { timeout } => {
            format!("type {a}; flags dynamic,timeout; timeout {timeout}s;")
        }
    }
}

fn elems_text(out: &mut fmt::Formatter<'_>, elems: &[Elem], values: bool) -> fmt::Result {
    for (i, e) in elems.iter().enumerate() {
        if i > 0 {
            out.write_str(", ")?;
        }
        match e {
            Elem::Dispatch {
                addr,
                proto,
                port,
                verdict,
            } => {
                write!(out, "{addr} . {} . {port}", proto.lower())?;
                if values {
                    match verdict {
                        Verdict::Goto(c) => write!(out, " : goto {c}")?,
                        Verdict::Drop => out.write_str(" : drop")?,
                    }
                }
            }
            Elem::Hairpin(ip) => write!(out, "{ip} . {ip}")?,
            Elem::Slot {
                vip,
                port,
                slot,
                addr,
                target,
            } => {
                write!(out, "{vip} . {port} . {slot}")?;
                if values {
                    write!(out, " : {addr} . {target}")?;
                }
            }
        }
    }
    Ok(())
}

/// A rule's nft text in one family.
pub struct RuleText<'a>(pub Family, pub &'a Rule);

impl fmt::Display for RuleText<'_> {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let f = self.0;
        let ip = f.name();
        match self.1 {
            Rule::Jump(c) => write!(out, "jump {c}"),
            Rule::JumpIfNew(c) => write!(out, "ct state new jump {c}"),
            Rule::Dispatch(m) => write!(out, "{ip} daddr . meta l4proto . th dport vmap @{m}"),
            Rule::Reject => out.write_str("reject"),
            Rule::MarkMasquerade { outside, mark } => {
                if let Some(cidr) = outside {
                    write!(out, "{ip} saddr != {cidr} ")?;
                }
                write!(out, "meta mark set meta mark | {mark:#x}")
            }
            Rule::Hairpin(set) => write!(
                out,
                "ct status dnat {ip} saddr . {ip} daddr @{set} masquerade fully-random"
            ),
            Rule::ReturnUnmarked(mark) => write!(out, "meta mark & {mark:#x} == 0 return"),
            Rule::ClearMark(mark) => write!(out, "meta mark set meta mark ^ {mark:#x}"),
            Rule::Masquerade => out.write_str("masquerade fully-random"),
            Rule::Dnat { proto, pick, map } => {
                let p = proto.lower();
                write!(
                    out,
                    "meta l4proto {p} dnat {ip} to {ip} daddr . {p} dport . "
                )?;
                match pick {
                    Pick::Random { modulus } => write!(out, "numgen random mod {modulus}")?,
                    Pick::Hash { key, modulus, seed } => write!(
                        out,
                        "jhash {} mod {modulus} seed {seed:#x}",
                        hash_fields(f, *key, p)
                    )?,
                }
                write!(out, " map @{map}")
            }
            Rule::Sticky {
                proto,
                chance,
                known,
                set,
                addr,
                port,
            } => {
                write!(out, "meta l4proto {} ", proto.lower())?;
                if *known {
                    write!(out, "{ip} saddr @{set} ")?;
                }
                if let Some((m, w)) = chance {
                    write!(out, "numgen random mod {m} < {w} ")?;
                }
                write!(out, "update @{set} {{ {ip} saddr }} dnat {ip} to ")?;
                match addr {
                    IpAddr::V4(a) => write!(out, "{a}:{port}"),
                    IpAddr::V6(a) => write!(out, "[{a}]:{port}"),
                }
            }
        }
    }
}

/// The fields a hash key covers, in nft syntax.
fn hash_fields(f: Family, key: HashKey, p: &str) -> String {
    let ip = f.name();
    match key {
        HashKey::SourceIp => format!("{ip} saddr"),
        HashKey::SourceIpPort => format!("{ip} saddr . {p} sport"),
        HashKey::FiveTuple => {
            format!("{ip} saddr . {ip} daddr . meta l4proto . {p} sport . {p} dport")
        }
    }
}

/// The IANA protocol number.
pub fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}
