//! Rules as kernel expressions: each [`Rule`] becomes the expression list nft would send for
//! its text (registers included, as `nft --debug=netlink` shows them).

use std::net::IpAddr;

use wasp_model::HashKey;

use ipnet::IpNet;

use super::ops::{Action, Family, Match, Pick, Rule, proto_number};
use super::wire::Writer;

pub(super) const LIST_ELEM: u16 = 1;
pub(super) const REG_VERDICT: u32 = 0;
pub(super) const REG_1: u32 = 1;
pub(super) const REG_2: u32 = 2;

/// The 32-bit register `i` (`NFT_REG32_00 + i`).
pub(super) const fn reg32(i: u32) -> u32 {
    8 + i
}

pub(super) const BASE_NETWORK: u32 = 1;
pub(super) const BASE_TRANSPORT: u32 = 2;
pub(super) const META_MARK: u32 = 3;
pub(super) const META_L4PROTO: u32 = 16;
pub(super) const CMP_EQ: u32 = 0;
pub(super) const CMP_NEQ: u32 = 1;
pub(super) const CMP_LT: u32 = 2;
pub(super) const CT_STATE: u32 = 0;
pub(super) const CT_STATUS: u32 = 2;
/// `IP_CT_NEW`'s bit in `ct state`.
pub(super) const CT_STATE_NEW: u32 = 1 << 3;
/// `IPS_DST_NAT` in `ct status`.
pub(super) const CT_STATUS_DNAT: u32 = 1 << 5;
/// `NFT_FIB_RESULT_ADDRTYPE`.
pub(super) const FIB_RESULT_ADDRTYPE: u32 = 3;
/// `NFTA_FIB_F_SADDR`.
pub(super) const FIB_F_SADDR: u32 = 1;
/// `RTN_LOCAL`: an address of this host.
pub(super) const RTN_LOCAL: u32 = 2;
/// `NFT_SOCKET_TRANSPARENT`.
pub(super) const SOCKET_TRANSPARENT: u32 = 0;
/// `NF_NAT_RANGE_PROTO_RANDOM_FULLY`.
pub(super) const NAT_RANDOM_FULLY: u32 = 0x10;

/// Verdict codes (`NF_DROP`, `NFT_JUMP`, ...).
pub mod verdict {
    /// `drop`.
    pub const DROP: u32 = 0;
    /// `jump`.
    pub const JUMP: u32 = -3i32 as u32;
    /// `goto`.
    pub const GOTO: u32 = -4i32 as u32;
    /// `return`.
    pub const RETURN: u32 = -5i32 as u32;
}

/// Writes `rule`'s `NFTA_RULE_EXPRESSIONS` payload. Long: one arm per rule, each the
/// expressions nft would emit for its text.
pub fn encode(w: &mut Writer, f: Family, rule: &Rule) {
    let mut e = Exprs { w, f };
    match rule {
        Rule::Jump(chain) => e.verdict(verdict::JUMP, Some(chain)),
        Rule::JumpIfNew(chain) => {
            e.ct_flag(CT_STATE, CT_STATE_NEW);
            e.verdict(verdict::JUMP, Some(chain));
        }
        Rule::Dispatch(map) => {
            let (proto, port) = match f {
                Family::V4 => (reg32(1), reg32(2)),
                Family::V6 => (reg32(4), reg32(5)),
            };
            e.daddr(REG_1);
            e.meta_load(META_L4PROTO, proto);
            e.payload(BASE_TRANSPORT, 2, 2, port);
            e.lookup(map, REG_1, Some(REG_VERDICT));
        }
        Rule::Reject => e.reject(),
        Rule::Filter { when, action } => {
            e.when(when);
            match action {
                Action::Return => e.verdict(verdict::RETURN, None),
                Action::Drop => e.verdict(verdict::DROP, None),
                Action::Reject => e.reject(),
            }
        }
        Rule::Mark { when, mark } => {
            e.when(when);
            e.set_mark(!mark, *mark);
        }
        Rule::Hairpin(set) => {
            e.ct_flag(CT_STATUS, CT_STATUS_DNAT);
            e.saddr(REG_1);
            e.daddr(match f {
                Family::V4 => reg32(1),
                Family::V6 => REG_2,
            });
            e.lookup(set, REG_1, None);
            e.masq();
        }
        Rule::ReturnUnmarked(mark) => {
            e.meta_load(META_MARK, REG_1);
            e.bitwise(REG_1, &mark.to_ne_bytes(), &[0; 4]);
            e.cmp(CMP_EQ, REG_1, &[0; 4]);
            e.verdict(verdict::RETURN, None);
        }
        Rule::ClearMark(mark) => e.set_mark(u32::MAX, *mark),
        Rule::Masquerade => e.masq(),
        Rule::Dnat {
            when,
            proto,
            pick,
            map,
        } => e.dnat_rule(when, *proto, pick, map),
        Rule::Sticky { .. } => e.sticky_rule(rule),
        Rule::Redirect { when, proto, port } => {
            e.when(when);
            e.l4proto_is(proto_number(*proto));
            e.immediate(REG_1, &port.to_be_bytes());
            e.redir(REG_1);
        }
    }
}

/// An address's bytes in network order.
pub fn addr_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

struct Exprs<'a> {
    w: &'a mut Writer,
    f: Family,
}

impl Exprs<'_> {
    /// `[WHEN] meta l4proto P [hash|numgen] daddr . dport . slot @MAP dnat`.
    fn dnat_rule(
        &mut self,
        when: &Option<Match>,
        proto: wasp_model::Protocol,
        pick: &Pick,
        map: &str,
    ) {
        // The key `daddr . dport . slot` fills 32-bit registers from 0; the slot sits after
        // the port. A hash is computed first, from fields loaded at register 0, so even an
        // IPv6 5-tuple fits beside the key.
        let words = self.f.addr_len() / 4;
        let (port, slot) = (reg32(words), reg32(words + 1));
        self.when(when);
        self.l4proto_is(proto_number(proto));
        if let Pick::Hash {
            key,
            modulus,
            seed,
            offset,
        } = *pick
        {
            let len = self.hash_fields(key);
            self.hash(len, modulus, seed, offset, slot);
        }
        self.daddr(REG_1);
        self.payload(BASE_TRANSPORT, 2, 2, port);
        if let Pick::Random { modulus, offset } = *pick {
            self.numgen(modulus, offset, slot);
        }
        self.lookup(map, REG_1, Some(REG_1));
        self.dnat(REG_1, port);
    }

    /// A [`Rule::Sticky`]'s expressions.
    fn sticky_rule(&mut self, rule: &Rule) {
        let Rule::Sticky {
            when,
            proto,
            chance,
            known,
            set,
            addr,
            port,
        } = rule
        else {
            return;
        };
        self.when(when);
        self.l4proto_is(proto_number(*proto));
        if *known {
            self.saddr(REG_1);
            self.lookup(set, REG_1, None);
        }
        if let Some((m, w)) = chance {
            self.numgen(*m, 0, REG_1);
            self.hton(REG_1);
            self.cmp(CMP_LT, REG_1, &w.to_be_bytes());
        }
        self.saddr(REG_1);
        self.dynset_update(set, REG_1);
        self.immediate(REG_1, &addr_bytes(addr));
        self.immediate(REG_2, &port.to_be_bytes());
        self.dnat(REG_1, REG_2);
    }
    /// A rule's condition, if it has one.
    fn when(&mut self, when: &Option<Match>) {
        match when {
            None => {}
            Some(Match::Saddr { cidr, not }) => {
                self.saddr(REG_1);
                self.in_cidr(cidr, *not);
            }
            Some(Match::Daddr(cidr)) => {
                self.daddr(REG_1);
                self.in_cidr(cidr, false);
            }
            Some(Match::DaddrIn(set)) => {
                self.daddr(REG_1);
                self.lookup(set, REG_1, None);
            }
            Some(Match::SaddrLocal) => {
                self.expr("fib", |w| {
                    w.u32(1, REG_1);
                    w.u32(2, FIB_RESULT_ADDRTYPE);
                    w.u32(3, FIB_F_SADDR);
                });
                self.cmp(CMP_EQ, REG_1, &RTN_LOCAL.to_ne_bytes());
            }
            Some(Match::SocketTransparent) => {
                self.expr("socket", |w| {
                    w.u32(1, SOCKET_TRANSPARENT);
                    w.u32(2, REG_1);
                });
                self.cmp(CMP_EQ, REG_1, &[1]);
            }
        }
    }

    /// The address loaded at register 1 is inside `cidr` (outside, with `not`). A host
    /// address is compared whole, as nft writes it.
    fn in_cidr(&mut self, cidr: &IpNet, not: bool) {
        if cidr.prefix_len() < cidr.max_prefix_len() {
            let mask = addr_bytes(&cidr.netmask());
            self.bitwise(REG_1, &mask, &vec![0; mask.len()]);
        }
        self.cmp(
            if not { CMP_NEQ } else { CMP_EQ },
            REG_1,
            &addr_bytes(&cidr.network()),
        );
    }

    /// One `NFTA_LIST_ELEM { NAME, DATA { ... } }`.
    fn expr(&mut self, name: &str, body: impl FnOnce(&mut Writer)) {
        self.w.nest(LIST_ELEM);
        self.w.str(1, name);
        self.w.nest(2);
        body(self.w);
        self.w.end();
        self.w.end();
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32, dreg: u32) {
        self.expr("payload", |w| {
            w.u32(1, dreg);
            w.u32(2, base);
            w.u32(3, offset);
            w.u32(4, len);
        });
    }

    fn saddr(&mut self, dreg: u32) {
        let (off, len) = match self.f {
            Family::V4 => (12, 4),
            Family::V6 => (8, 16),
        };
        self.payload(BASE_NETWORK, off, len, dreg);
    }

    fn daddr(&mut self, dreg: u32) {
        let (off, len) = match self.f {
            Family::V4 => (16, 4),
            Family::V6 => (24, 16),
        };
        self.payload(BASE_NETWORK, off, len, dreg);
    }

    fn meta_load(&mut self, key: u32, dreg: u32) {
        self.expr("meta", |w| {
            w.u32(1, dreg);
            w.u32(2, key);
        });
    }

    fn l4proto_is(&mut self, proto: u8) {
        self.meta_load(META_L4PROTO, REG_1);
        self.cmp(CMP_EQ, REG_1, &[proto]);
    }

    fn data(w: &mut Writer, ty: u16, bytes: &[u8]) {
        w.nest(ty);
        w.bytes(1, bytes);
        w.end();
    }

    fn cmp(&mut self, op: u32, sreg: u32, data: &[u8]) {
        self.expr("cmp", |w| {
            w.u32(1, sreg);
            w.u32(2, op);
            Self::data(w, 3, data);
        });
    }

    /// `reg = (reg & mask) ^ xor`.
    fn bitwise(&mut self, reg: u32, mask: &[u8], xor: &[u8]) {
        self.expr("bitwise", |w| {
            w.u32(1, reg);
            w.u32(2, reg);
            w.u32(3, mask.len() as u32);
            Self::data(w, 4, mask);
            Self::data(w, 5, xor);
        });
    }

    /// `meta mark set (meta mark & mask) ^ xor`.
    fn set_mark(&mut self, mask: u32, xor: u32) {
        self.meta_load(META_MARK, REG_1);
        self.bitwise(REG_1, &mask.to_ne_bytes(), &xor.to_ne_bytes());
        self.expr("meta", |w| {
            w.u32(2, META_MARK);
            w.u32(3, REG_1);
        });
    }

    /// `ct KEY & flag != 0`.
    fn ct_flag(&mut self, key: u32, flag: u32) {
        self.expr("ct", |w| {
            w.u32(1, REG_1);
            w.u32(2, key);
        });
        self.bitwise(REG_1, &flag.to_ne_bytes(), &[0; 4]);
        self.cmp(CMP_NEQ, REG_1, &[0; 4]);
    }

    fn lookup(&mut self, set: &str, sreg: u32, dreg: Option<u32>) {
        self.expr("lookup", |w| {
            w.str(1, set);
            w.u32(2, sreg);
            if let Some(d) = dreg {
                w.u32(3, d);
            }
        });
    }

    fn verdict(&mut self, code: u32, chain: Option<&str>) {
        self.expr("immediate", |w| {
            w.u32(1, REG_VERDICT);
            w.nest(2);
            w.nest(2);
            w.u32(1, code);
            if let Some(c) = chain {
                w.str(2, c);
            }
            w.end();
            w.end();
        });
    }

    fn immediate(&mut self, dreg: u32, data: &[u8]) {
        self.expr("immediate", |w| {
            w.u32(1, dreg);
            Self::data(w, 2, data);
        });
    }

    fn numgen(&mut self, modulus: u32, offset: u32, dreg: u32) {
        self.expr("numgen", |w| {
            w.u32(1, dreg);
            w.u32(2, modulus);
            w.u32(3, 1);
            if offset != 0 {
                w.u32(4, offset);
            }
        });
    }

    /// Loads the hashed fields into registers from 0 on; returns their length.
    fn hash_fields(&mut self, key: HashKey) -> u32 {
        let words = self.f.addr_len() / 4;
        let mut at = 0;
        self.saddr(reg32(at));
        at += words;
        if key == HashKey::FiveTuple {
            self.daddr(reg32(at));
            at += words;
            self.meta_load(META_L4PROTO, reg32(at));
            at += 1;
        }
        if key != HashKey::SourceIp {
            self.payload(BASE_TRANSPORT, 0, 2, reg32(at));
            at += 1;
        }
        if key == HashKey::FiveTuple {
            self.payload(BASE_TRANSPORT, 2, 2, reg32(at));
            at += 1;
        }
        at * 4
    }

    fn hash(&mut self, len: u32, modulus: u32, seed: u32, offset: u32, dreg: u32) {
        self.expr("hash", |w| {
            w.u32(1, reg32(0));
            w.u32(2, dreg);
            w.u32(3, len);
            w.u32(4, modulus);
            w.u32(5, seed);
            if offset != 0 {
                w.u32(6, offset);
            }
            w.u32(7, 0);
        });
    }

    fn hton(&mut self, reg: u32) {
        self.expr("byteorder", |w| {
            w.u32(1, reg);
            w.u32(2, reg);
            w.u32(3, 1);
            w.u32(4, 4);
            w.u32(5, 4);
        });
    }

    fn dnat(&mut self, addr: u32, port: u32) {
        let family = match self.f {
            Family::V4 => 2,
            Family::V6 => 10,
        };
        self.expr("nat", |w| {
            w.u32(1, 1);
            w.u32(2, family);
            w.u32(3, addr);
            w.u32(5, port);
        });
    }

    /// `redirect to :PORT`, the port in register `port`.
    fn redir(&mut self, port: u32) {
        self.expr("redir", |w| w.u32(1, port));
    }

    fn masq(&mut self) {
        self.expr("masq", |w| w.u32(1, NAT_RANDOM_FULLY));
    }

    fn reject(&mut self) {
        // ICMP port unreachable: code 3 in ICMP, 4 in ICMPv6.
        let code = match self.f {
            Family::V4 => 3u8,
            Family::V6 => 4u8,
        };
        self.expr("reject", |w| {
            w.u32(1, 0);
            w.bytes(2, &[code]);
        });
    }

    fn dynset_update(&mut self, set: &str, key: u32) {
        self.expr("dynset", |w| {
            w.str(1, set);
            w.u32(3, 1);
            w.u32(4, key);
        });
    }
}
