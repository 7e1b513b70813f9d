//! A transaction as `nft -f` input: what `wasp plan` prints, and what the kernel round-trip
//! test loads with the nft tool to compare with the netlink batch.

use std::fmt::{self, Write};
use std::net::IpAddr;

use wasp_model::HashKey;

use super::ops::{Action, Elem, Family, Match, Op, Pick, Rule, SetKind, TABLE, Verdict};

fn noun(kind: SetKind) -> &'static str {
    if kind.is_map() { "map" } else { "set" }
}

/// nft's name for the family's address type.
fn addr_type(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    }
}

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
        let t = format!("{} {TABLE}", f.nft_name());
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
                noun(s.kind),
                s.name,
                set_spec(f, s.kind)
            ),
            Op::FlushSet(s) => write!(out, "flush {} {t} {}", noun(s.kind), s.name),
            Op::DeleteSet(s) => write!(out, "delete {} {t} {}", noun(s.kind), s.name),
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
    let a = addr_type(f);
    match kind {
        SetKind::Dispatch => format!("type {a} . inet_proto . inet_service : verdict;"),
        SetKind::Hairpin => format!("type {a} . {a};"),
        SetKind::Addresses => format!("type {a};"),
        SetKind::Endpoints(proto) => {
            let (ip, p) = (f.nft_name(), proto.lower());
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
            Elem::Addr(ip) => write!(out, "{ip}")?,
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
        let ip = f.nft_name();
        match self.1 {
            Rule::Jump(c) => write!(out, "jump {c}"),
            Rule::JumpIfNew(c) => write!(out, "ct state new jump {c}"),
            Rule::Dispatch(m) => write!(out, "{ip} daddr . meta l4proto . th dport vmap @{m}"),
            Rule::Reject => out.write_str("reject"),
            Rule::Filter { when, action } => {
                write!(out, "{}", WhenText(f, when))?;
                out.write_str(match action {
                    Action::Return => "return",
                    Action::Drop => "drop",
                    Action::Reject => "reject",
                })
            }
            Rule::Mark { when, mark } => {
                write!(
                    out,
                    "{}meta mark set meta mark | {mark:#x}",
                    WhenText(f, when)
                )
            }
            Rule::Hairpin(set) => write!(
                out,
                "ct status dnat {ip} saddr . {ip} daddr @{set} masquerade fully-random"
            ),
            Rule::ReturnUnmarked(mark) => write!(out, "meta mark & {mark:#x} == 0 return"),
            Rule::ClearMark(mark) => write!(out, "meta mark set meta mark ^ {mark:#x}"),
            Rule::Masquerade => out.write_str("masquerade fully-random"),
            Rule::Dnat {
                when,
                proto,
                pick,
                map,
            } => {
                let p = proto.lower();
                write!(
                    out,
                    "{}meta l4proto {p} dnat {ip} to {ip} daddr . {p} dport . ",
                    WhenText(f, when)
                )?;
                let offset = match pick {
                    Pick::Random { modulus, offset } => {
                        write!(out, "numgen random mod {modulus}")?;
                        offset
                    }
                    Pick::Hash {
                        key,
                        modulus,
                        seed,
                        offset,
                    } => {
                        let fields = hash_fields(f, *key, p);
                        write!(out, "jhash {fields} mod {modulus} seed {seed:#x}")?;
                        offset
                    }
                };
                if *offset != 0 {
                    write!(out, " offset {offset}")?;
                }
                write!(out, " map @{map}")
            }
            Rule::Redirect { when, proto, port } => write!(
                out,
                "{}meta l4proto {} redirect to :{port}",
                WhenText(f, when),
                proto.lower()
            ),
            Rule::Sticky {
                when,
                proto,
                chance,
                known,
                set,
                addr,
                port,
            } => {
                write!(out, "{}meta l4proto {} ", WhenText(f, when), proto.lower())?;
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

/// A rule's condition, with the blank that follows it (nothing for none).
struct WhenText<'a>(Family, &'a Option<Match>);

/// A CIDR as nft writes it: a host address without its prefix.
struct CidrText<'a>(&'a ipnet::IpNet);

impl fmt::Display for CidrText<'_> {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(out, "{}", self.0.addr())
        } else {
            write!(out, "{}", self.0)
        }
    }
}

impl fmt::Display for WhenText<'_> {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = self.0.nft_name();
        match self.1 {
            None => Ok(()),
            Some(Match::Saddr { cidr, not: true }) => {
                write!(out, "{ip} saddr != {} ", CidrText(cidr))
            }
            Some(Match::Saddr { cidr, not: false }) => {
                write!(out, "{ip} saddr {} ", CidrText(cidr))
            }
            Some(Match::SaddrLocal) => out.write_str("fib saddr type local "),
            Some(Match::Daddr(cidr)) => write!(out, "{ip} daddr {} ", CidrText(cidr)),
            Some(Match::DaddrIn(set)) => write!(out, "{ip} daddr @{set} "),
            Some(Match::SocketTransparent) => out.write_str("socket transparent 1 "),
        }
    }
}

/// The fields a hash key covers, in nft syntax.
fn hash_fields(f: Family, key: HashKey, p: &str) -> String {
    let ip = f.nft_name();
    match key {
        HashKey::SourceIp => format!("{ip} saddr"),
        HashKey::SourceIpPort => format!("{ip} saddr . {p} sport"),
        HashKey::FiveTuple => {
            format!("{ip} saddr . {ip} daddr . meta l4proto . {p} sport . {p} dport")
        }
    }
}
