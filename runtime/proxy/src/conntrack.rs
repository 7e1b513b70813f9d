//! The original destination of a redirected UDP flow, from conntrack: the kernel keeps it in
//! the flow's entry, and a UDP socket has no `SO_ORIGINAL_DST`. One ctnetlink `GET` by the
//! reply tuple (this node's address and the listener's port → the client).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 1 << 15;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// A ctnetlink socket.
pub(crate) struct Conntrack {
    fd: OwnedFd,
    seq: u32,
}

/// One netlink attribute, appended (padded to 4 bytes).
fn attr(out: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// The attributes of `b`: (type without flags, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes(b.get(0..2)?.try_into().ok()?));
        let ty = u16::from_ne_bytes(b.get(2..4)?.try_into().ok()?) & !NLA_F_NESTED;
        let payload = b.get(4..len)?;
        b = b.get(len.next_multiple_of(4).min(b.len())..)?;
        Some((ty, payload))
    })
}

fn find(b: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(b).find(|(t, _)| *t == ty).map(|(_, p)| p)
}

/// A tuple's attributes: addresses (`CTA_IP_V4_*` or `CTA_IP_V6_*`) and UDP ports.
fn tuple(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut ip = Vec::new();
    for (i, a) in [src.ip(), dst.ip()].iter().enumerate() {
        match a {
            IpAddr::V4(v4) => attr(&mut ip, 1 + i as u16, &v4.octets()),
            IpAddr::V6(v6) => attr(&mut ip, 3 + i as u16, &v6.octets()),
        }
    }
    let mut proto = Vec::new();
    attr(&mut proto, CTA_PROTO_NUM, &[17]);
    attr(&mut proto, CTA_PROTO_SRC_PORT, &src.port().to_be_bytes());
    attr(&mut proto, CTA_PROTO_DST_PORT, &dst.port().to_be_bytes());
    let mut t = Vec::new();
    attr(&mut t, CTA_TUPLE_IP | NLA_F_NESTED, &ip);
    attr(&mut t, CTA_TUPLE_PROTO | NLA_F_NESTED, &proto);
    t
}

/// The destination of a tuple's attributes.
fn destination(t: &[u8]) -> Option<SocketAddr> {
    let ip = find(t, CTA_TUPLE_IP)?;
    let addr: IpAddr = match (find(ip, 2), find(ip, 4)) {
        (Some(v4), _) => <[u8; 4]>::try_from(v4).ok()?.into(),
        (_, Some(v6)) => <[u8; 16]>::try_from(v6).ok()?.into(),
        _ => return None,
    };
    let port = find(find(t, CTA_TUPLE_PROTO)?, CTA_PROTO_DST_PORT)?;
    Some(SocketAddr::new(
        addr,
        u16::from_be_bytes(port.try_into().ok()?),
    ))
}

impl Conntrack {
    pub fn open() -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        // The kernel answers at once; never hang on a lost answer.
        let t = TimeVal::new(0, Duration::from_millis(200).as_micros() as i64);
        setsockopt(&fd, sockopt::ReceiveTimeout, &t)?;
        Ok(Self { fd, seq: 0 })
    }

    /// Where the flow whose replies go `local` → `client` was first going.
    pub fn original_dst(
        &mut self,
        local: SocketAddr,
        client: SocketAddr,
    ) -> io::Result<SocketAddr> {
        self.seq = self.seq.wrapping_add(1);
        let mut body = vec![if client.is_ipv4() { 2 } else { 10 }, 0, 0, 0];
        attr(
            &mut body,
            CTA_TUPLE_REPLY | NLA_F_NESTED,
            &tuple(local, client),
        );
        let mut msg = Vec::with_capacity(16 + body.len());
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET).to_ne_bytes());
        msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&body);
        send(self.fd.as_raw_fd(), &msg, MsgFlags::empty())?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            let b = &buf[..n];
            let (Some(kind), Some(seq)) = (b.get(4..6), b.get(8..12)) else {
                return Err(io::Error::other("conntrack: a short answer"));
            };
            if u32::from_ne_bytes(seq.try_into().expect("4 bytes")) != self.seq {
                continue;
            }
            if u16::from_ne_bytes(kind.try_into().expect("2 bytes")) == NLMSG_ERROR {
                let code = b
                    .get(16..20)
                    .map_or(0, |c| i32::from_ne_bytes(c.try_into().expect("4")));
                return Err(io::Error::from_raw_os_error(-code));
            }
            // nlmsghdr (16) + nfgenmsg (4), then the entry's attributes.
            return b
                .get(20..)
                .and_then(|a| destination(find(a, CTA_TUPLE_ORIG)?))
                .ok_or_else(|| io::Error::other("conntrack: no original tuple"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tuple_reads_back_its_destination() {
        let src: SocketAddr = "10.244.0.5:40000".parse().unwrap();
        let dst: SocketAddr = "10.96.0.10:53".parse().unwrap();
        assert_eq!(destination(&tuple(src, dst)), Some(dst));
        let v6: SocketAddr = "[fd00:96::10]:53".parse().unwrap();
        assert_eq!(
            destination(&tuple("[fd00::5]:1".parse().unwrap(), v6)),
            Some(v6)
        );
    }
}
