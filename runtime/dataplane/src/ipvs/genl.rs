//! IPVS over generic netlink: the commands wasp sends as typed messages, their encoding, and
//! the decoder that reads the kernel's dumps (and the round-trip tests).
//!
//! Numbers are those of `linux/ip_vs.h` and `linux/genetlink.h`. Integers are native-endian,
//! except ports, which are in network order; addresses are 16 bytes (`union nf_inet_addr`),
//! an IPv4 address in the first 4.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use wasp_model::Protocol;

use crate::core::Family;
use crate::nftables::ops::proto_number;
use crate::nftables::wire::{Attr, F_ACK, F_DUMP, F_REQUEST, Message, Writer};

/// The generic netlink controller's family id (`GENL_ID_CTRL`).
pub const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// IPVS's generic netlink family name.
pub const FAMILY_NAME: &str = "IPVS";
const VERSION: u8 = 1;

#[allow(missing_docs)]
mod cmd {
    pub const NEW_SERVICE: u8 = 1;
    pub const SET_SERVICE: u8 = 2;
    pub const DEL_SERVICE: u8 = 3;
    pub const GET_SERVICE: u8 = 4;
    pub const NEW_DEST: u8 = 5;
    pub const SET_DEST: u8 = 6;
    pub const DEL_DEST: u8 = 7;
    pub const GET_DEST: u8 = 8;
}

const ATTR_SERVICE: u16 = 1;
const ATTR_DEST: u16 = 2;

#[allow(missing_docs)]
mod svc {
    pub const AF: u16 = 1;
    pub const PROTOCOL: u16 = 2;
    pub const ADDR: u16 = 3;
    pub const PORT: u16 = 4;
    pub const FWMARK: u16 = 5;
    pub const SCHED_NAME: u16 = 6;
    pub const FLAGS: u16 = 7;
    pub const TIMEOUT: u16 = 8;
    pub const NETMASK: u16 = 9;
}

#[allow(missing_docs)]
mod dest {
    pub const ADDR: u16 = 1;
    pub const PORT: u16 = 2;
    pub const FWD_METHOD: u16 = 3;
    pub const WEIGHT: u16 = 4;
    pub const U_THRESH: u16 = 5;
    pub const L_THRESH: u16 = 6;
    pub const ACTIVE_CONNS: u16 = 7;
    pub const INACT_CONNS: u16 = 8;
    pub const ADDR_FAMILY: u16 = 11;
}

/// `IP_VS_SVC_F_PERSISTENT`: ClientIP affinity.
pub const F_PERSISTENT: u32 = 0x1;
/// `IP_VS_SVC_F_HASHED`: set by the kernel on every service; never compared.
pub const F_HASHED: u32 = 0x2;
/// `IP_VS_SVC_F_SCHED1`: for `mh`, fall back to another server when the hashed one is not
/// available.
pub const F_MH_FALLBACK: u32 = 0x8;
/// `IP_VS_SVC_F_SCHED2`: for `mh`, hash the source port too.
pub const F_MH_PORT: u32 = 0x10;
/// `IP_VS_CONN_F_MASQ`: real servers are reached by NAT.
const FWD_MASQ: u32 = 0;

/// A virtual server's identity: protocol, address and port; or a firewall mark and a
/// family (then the protocol is TCP, the address the family's unspecified one, the port 0,
/// as the kernel reports them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VsKey {
    /// The protocol.
    pub proto: Protocol,
    /// The virtual address.
    pub addr: IpAddr,
    /// The virtual port.
    pub port: u16,
    /// The firewall mark; 0 for an address and port.
    pub fwmark: u32,
}

impl VsKey {
    /// The virtual server at `addr:port`.
    pub fn tuple(proto: Protocol, addr: IpAddr, port: u16) -> Self {
        Self {
            proto,
            addr,
            port,
            fwmark: 0,
        }
    }

    /// The virtual server of packets marked `mark`, in family `f`.
    pub fn marked(f: Family, mark: u32) -> Self {
        let addr = match f {
            Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        Self {
            proto: Protocol::Tcp,
            addr,
            port: 0,
            fwmark: mark,
        }
    }
}

/// A virtual server's settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Service {
    /// Which virtual server.
    pub key: VsKey,
    /// The scheduler: `wrr`, `mh`, ...
    pub scheduler: String,
    /// `IP_VS_SVC_F_*` flags, without [`F_HASHED`].
    pub flags: u32,
    /// The persistence timeout in seconds (with [`F_PERSISTENT`]).
    pub timeout: u32,
}

/// A real server of a virtual server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dest {
    /// Its address.
    pub addr: IpAddr,
    /// Its port.
    pub port: u16,
    /// Its weight; 0 takes no new connections.
    pub weight: u32,
}

/// A real server as a dump reports it, with its connection counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestState {
    /// The real server.
    pub dest: Dest,
    /// Established connections.
    pub active: u32,
    /// Other connections (closing, UDP).
    pub inactive: u32,
}

/// One IPVS command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Adds a virtual server.
    NewService(Service),
    /// Changes a virtual server's scheduler, flags or timeout in place.
    SetService(Service),
    /// Deletes a virtual server and its real servers.
    DelService(VsKey),
    /// Adds a real server.
    NewDest(VsKey, Dest),
    /// Changes a real server's weight.
    SetDest(VsKey, Dest),
    /// Deletes a real server (its weight is not sent).
    DelDest(VsKey, Dest),
    /// Dumps every virtual server.
    GetServices,
    /// Dumps one virtual server's real servers.
    GetDests(VsKey),
}

fn family_of(addr: &IpAddr) -> Family {
    Family::of(addr)
}

fn addr_bytes(addr: &IpAddr) -> [u8; 16] {
    let mut b = [0u8; 16];
    match addr {
        IpAddr::V4(a) => b[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => b = a.octets(),
    }
    b
}

fn addr_of(af: u16, data: &[u8]) -> Option<IpAddr> {
    match af {
        2 => Some(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(data.get(..4)?).ok()?,
        ))),
        10 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(data.get(..16)?).ok()?,
        ))),
        _ => None,
    }
}

fn protocol_of(n: u16) -> Option<Protocol> {
    [Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
        .into_iter()
        .find(|p| u16::from(proto_number(*p)) == n)
}

fn put_key(w: &mut Writer, key: &VsKey) {
    w.ne16(svc::AF, family_of(&key.addr).af().into());
    if key.fwmark != 0 {
        w.ne32(svc::FWMARK, key.fwmark);
        return;
    }
    w.ne16(svc::PROTOCOL, proto_number(key.proto).into());
    w.bytes(svc::ADDR, &addr_bytes(&key.addr));
    w.be16(svc::PORT, key.port);
}

fn put_service(w: &mut Writer, s: &Service) {
    w.nest(ATTR_SERVICE);
    put_key(w, &s.key);
    w.str(svc::SCHED_NAME, &s.scheduler);
    let mut flags = [0u8; 8];
    flags[..4].copy_from_slice(&s.flags.to_ne_bytes());
    flags[4..].copy_from_slice(&u32::MAX.to_ne_bytes());
    w.bytes(svc::FLAGS, &flags);
    w.ne32(svc::TIMEOUT, s.timeout);
    let netmask = match family_of(&s.key.addr) {
        Family::V4 => u32::MAX,
        Family::V6 => 128,
    };
    w.ne32(svc::NETMASK, netmask);
    w.end();
}

fn put_dest(w: &mut Writer, d: &Dest, full: bool) {
    w.nest(ATTR_DEST);
    w.ne16(dest::ADDR_FAMILY, family_of(&d.addr).af().into());
    w.bytes(dest::ADDR, &addr_bytes(&d.addr));
    w.be16(dest::PORT, d.port);
    if full {
        w.ne32(dest::FWD_METHOD, FWD_MASQ);
        w.ne32(dest::WEIGHT, d.weight);
        w.ne32(dest::U_THRESH, 0);
        w.ne32(dest::L_THRESH, 0);
    }
    w.end();
}

/// Appends `c` to `w` as one message of generic netlink family `family`. Changes ask for no
/// acknowledgement: the kernel answers only a failure, and a final barrier
/// ([`barrier`]) says the batch is done.
pub fn encode(w: &mut Writer, family: u16, seq: u32, c: &Command) {
    let (command, flags) = match c {
        Command::NewService(_) => (cmd::NEW_SERVICE, 0),
        Command::SetService(_) => (cmd::SET_SERVICE, 0),
        Command::DelService(_) => (cmd::DEL_SERVICE, 0),
        Command::NewDest(..) => (cmd::NEW_DEST, 0),
        Command::SetDest(..) => (cmd::SET_DEST, 0),
        Command::DelDest(..) => (cmd::DEL_DEST, 0),
        Command::GetServices => (cmd::GET_SERVICE, F_DUMP),
        Command::GetDests(_) => (cmd::GET_DEST, F_DUMP),
    };
    w.begin_with(family, F_REQUEST | flags, seq, &[command, VERSION, 0, 0]);
    match c {
        Command::NewService(s) | Command::SetService(s) => put_service(w, s),
        Command::DelService(k) | Command::GetDests(k) => {
            w.nest(ATTR_SERVICE);
            put_key(w, k);
            w.end();
        }
        Command::NewDest(k, d) | Command::SetDest(k, d) | Command::DelDest(k, d) => {
            w.nest(ATTR_SERVICE);
            put_key(w, k);
            w.end();
            put_dest(w, d, !matches!(c, Command::DelDest(..)));
        }
        Command::GetServices => {}
    }
    w.end();
}

/// A no-op message that asks for an acknowledgement: its answer comes after the answers to
/// everything sent before it.
pub fn barrier(w: &mut Writer, seq: u32) {
    // NLMSG_NOOP: control messages are acknowledged without being handled.
    w.begin_with(1, F_REQUEST | F_ACK, seq, &[]);
    w.end();
}

/// Asks the generic netlink controller for IPVS's family id.
pub fn family_request(w: &mut Writer, seq: u32) {
    w.begin_with(GENL_ID_CTRL, F_REQUEST, seq, &[CTRL_CMD_GETFAMILY, 1, 0, 0]);
    w.str(CTRL_ATTR_FAMILY_NAME, FAMILY_NAME);
    w.end();
}

/// The family id in the controller's answer to [`family_request`].
pub fn family_id(m: &Message<'_>) -> Option<u16> {
    (m.kind == GENL_ID_CTRL)
        .then(|| m.attrs())?
        .iter()
        .find(|a| a.ty == CTRL_ATTR_FAMILY_ID)
        .map(Attr::ne16)
}

/// A service nest: its key, and its settings when it has them.
fn read_service(attrs: &[Attr<'_>]) -> Option<(VsKey, Option<Service>)> {
    let get = |ty| attrs.iter().find(|a| a.ty == ty);
    let af = get(svc::AF)?.ne16();
    let key = match get(svc::FWMARK).map(Attr::ne32) {
        Some(mark) if mark != 0 => {
            VsKey::marked(if af == 10 { Family::V6 } else { Family::V4 }, mark)
        }
        _ => VsKey::tuple(
            protocol_of(get(svc::PROTOCOL)?.ne16())?,
            addr_of(af, get(svc::ADDR)?.data)?,
            get(svc::PORT)?.be16(),
        ),
    };
    let settings = get(svc::SCHED_NAME).map(|s| Service {
        key,
        scheduler: s.string(),
        flags: get(svc::FLAGS).map_or(0, Attr::ne32) & !F_HASHED,
        timeout: get(svc::TIMEOUT).map_or(0, Attr::ne32),
    });
    Some((key, settings))
}

fn read_dest(attrs: &[Attr<'_>]) -> Option<DestState> {
    let get = |ty| attrs.iter().find(|a| a.ty == ty);
    let af = get(dest::ADDR_FAMILY)?.ne16();
    let n = |ty| get(ty).map_or(0, Attr::ne32);
    Some(DestState {
        dest: Dest {
            addr: addr_of(af, get(dest::ADDR)?.data)?,
            port: get(dest::PORT)?.be16(),
            weight: n(dest::WEIGHT),
        },
        active: n(dest::ACTIVE_CONNS),
        inactive: n(dest::INACT_CONNS),
    })
}

/// Reads an IPVS message back as the command it carries; a dump's answers read as
/// `NewService` (every virtual server) and `NewDest` with a default key (each real server,
/// whose virtual server the request named).
pub fn decode(m: &Message<'_>) -> Option<Command> {
    let command = m.family();
    let attrs = m.attrs();
    let nest = |ty| attrs.iter().find(|a| a.ty == ty).map(Attr::nested);
    let service = nest(ATTR_SERVICE).and_then(|a| read_service(&a));
    let dest = nest(ATTR_DEST).and_then(|a| read_dest(&a)).map(|d| d.dest);
    let key = || service.as_ref().map(|(k, _)| *k);
    let settings = || service.as_ref().and_then(|(_, s)| s.clone());
    Some(match command {
        cmd::NEW_SERVICE => Command::NewService(settings()?),
        cmd::SET_SERVICE => Command::SetService(settings()?),
        cmd::DEL_SERVICE => Command::DelService(key()?),
        cmd::GET_SERVICE => Command::GetServices,
        cmd::GET_DEST => Command::GetDests(key()?),
        cmd::NEW_DEST | cmd::SET_DEST | cmd::DEL_DEST => {
            let k = key().unwrap_or(VsKey::tuple(
                Protocol::Tcp,
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                0,
            ));
            let d = dest?;
            match command {
                cmd::NEW_DEST => Command::NewDest(k, d),
                cmd::SET_DEST => Command::SetDest(k, d),
                _ => Command::DelDest(k, Dest { weight: 0, ..d }),
            }
        }
        _ => return None,
    })
}

/// A real server in a `GET_DEST` dump's answer, with its connection counts.
pub fn decode_dest(m: &Message<'_>) -> Option<DestState> {
    let attrs = m.attrs();
    let nested = attrs.iter().find(|a| a.ty == ATTR_DEST)?.nested();
    read_dest(&nested)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nftables::wire::messages;

    fn key(addr: &str, proto: Protocol) -> VsKey {
        VsKey::tuple(proto, addr.parse().unwrap(), 80)
    }

    fn every_command() -> Vec<Command> {
        let v4 = key("10.96.0.10", Protocol::Tcp);
        let v6 = key("fd00:96::10", Protocol::Udp);
        let sctp = key("10.96.0.11", Protocol::Sctp);
        let service = |k, scheduler: &str, flags, timeout| Service {
            key: k,
            scheduler: scheduler.into(),
            flags,
            timeout,
        };
        let d = |addr: &str, weight| Dest {
            addr: addr.parse().unwrap(),
            port: 8080,
            weight,
        };
        vec![
            Command::NewService(service(v4, "wrr", 0, 0)),
            Command::NewService(service(v6, "mh", F_MH_FALLBACK | F_MH_PORT, 0)),
            Command::SetService(service(sctp, "wrr", F_PERSISTENT, 10800)),
            Command::DelService(v6),
            Command::NewDest(v4, d("10.244.1.2", 3)),
            Command::SetDest(v6, d("fd00:244::2", 0)),
            Command::DelDest(sctp, d("10.244.1.3", 0)),
            Command::NewService(service(VsKey::marked(Family::V6, 0x5a00_0001), "wrr", 0, 0)),
            Command::NewDest(VsKey::marked(Family::V4, 0x5a00_0002), d("10.244.1.4", 1)),
            Command::GetServices,
            Command::GetDests(v4),
        ]
    }

    #[test]
    fn every_command_reads_back_as_sent() {
        for (i, c) in every_command().iter().enumerate() {
            let mut w = Writer::default();
            encode(&mut w, 0x23, i as u32 + 1, c);
            let msgs = messages(&w.buf);
            assert_eq!(msgs.len(), 1, "{c:?}");
            assert_eq!((msgs[0].kind, msgs[0].seq), (0x23, i as u32 + 1));
            assert_eq!(decode(&msgs[0]).as_ref(), Some(c), "{c:?}");
            // Re-encoding what was read gives the same bytes.
            let mut again = Writer::default();
            encode(&mut again, 0x23, i as u32 + 1, &decode(&msgs[0]).unwrap());
            assert_eq!(again.buf, w.buf, "{c:?}");
        }
    }

    #[test]
    fn the_wire_layout_is_the_kernels() {
        let mut w = Writer::default();
        let k = key("10.96.0.10", Protocol::Tcp);
        encode(&mut w, 0x23, 9, &Command::DelService(k));
        let m = &messages(&w.buf)[0];
        // genlmsghdr: the command and IPVS's version.
        assert_eq!(&m.payload[..2], &[cmd::DEL_SERVICE, VERSION]);
        let svc = m.attrs()[0].nested();
        assert_eq!(svc[0].ne16(), 2, "AF_INET, native-endian");
        assert_eq!(svc[1].ne16(), 6, "IPPROTO_TCP");
        assert_eq!(svc[2].data.len(), 16, "nf_inet_addr");
        assert_eq!(&svc[2].data[..4], &[10, 96, 0, 10]);
        assert_eq!(
            svc[3].data,
            &80u16.to_be_bytes(),
            "the port in network order"
        );
        // A change asks for no ack; a dump asks for a dump.
        assert_eq!(m.flags, F_REQUEST);
        let mut w = Writer::default();
        encode(&mut w, 0x23, 10, &Command::GetServices);
        assert_eq!(messages(&w.buf)[0].flags, F_REQUEST | F_DUMP);
    }

    #[test]
    fn the_family_request_names_ipvs() {
        let mut w = Writer::default();
        family_request(&mut w, 1);
        let m = &messages(&w.buf)[0];
        assert_eq!(m.kind, GENL_ID_CTRL);
        assert_eq!(m.attrs()[0].string(), "IPVS");
        let mut b = Writer::default();
        barrier(&mut b, 2);
        let m = &messages(&b.buf)[0];
        assert_eq!((m.kind, m.flags), (1, F_REQUEST | F_ACK));
    }
}
