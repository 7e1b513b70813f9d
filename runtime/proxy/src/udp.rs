//! Captured UDP: a session per client address (and the node address its datagrams were
//! redirected to). Its original destination comes from conntrack; its endpoint is picked as a
//! TCP connection's is; an upstream socket carries it (from the client's address where the
//! kernel modes would not masquerade). Replies go back from the listener with the redirected
//! address as their source, so conntrack turns them into replies from the Service's address.
//! A session ends after the idle timeout, or when its endpoint has drained.

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::libc;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, SockaddrStorage,
    recvmsg, sendmsg,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use wasp_model::Protocol;

use crate::conntrack::Conntrack;
use crate::pick::choose;
use crate::{Activity, Shared};

/// The most sessions held at once; datagrams of new flows beyond it are dropped.
const MAX_SESSIONS: usize = 65_536;

/// One flow.
struct Session {
    upstream: Arc<UdpSocket>,
    done: Arc<AtomicBool>,
    activity: Arc<Activity>,
}

/// Receives one datagram: its length, sender, and the (redirected) address it was sent to.
async fn receive(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, SocketAddr)> {
    let port = sock.local_addr()?.port();
    sock.async_io(Interest::READABLE, || {
        let mut iov = [IoSliceMut::new(buf)];
        let mut space = nix::cmsg_space!(libc::sockaddr_in6);
        let m = recvmsg::<SockaddrStorage>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )?;
        let from = m
            .address
            .as_ref()
            .and_then(socket_addr)
            .ok_or_else(|| io::Error::other("a datagram without a sender"))?;
        let mut to = None;
        for c in m.cmsgs()? {
            match c {
                ControlMessageOwned::Ipv4OrigDstAddr(a) => {
                    let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                    to = Some(SocketAddr::new(ip.into(), port));
                }
                ControlMessageOwned::Ipv6OrigDstAddr(a) => {
                    let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                    to = Some(SocketAddr::new(ip.into(), port));
                }
                _ => {}
            }
        }
        let to = to.ok_or_else(|| io::Error::other("a datagram without its destination"))?;
        Ok((m.bytes, from, to))
    })
    .await
}

/// Sends `data` to `to` from the listener, with `from` (a local address) as the source.
async fn send_from(sock: &UdpSocket, data: &[u8], from: IpAddr, to: SocketAddr) -> io::Result<()> {
    sock.async_io(Interest::WRITABLE, || {
        let iov = [IoSlice::new(data)];
        let fd = sock.as_raw_fd();
        match (from, to) {
            (IpAddr::V4(f), SocketAddr::V4(t)) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(f).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                let c = [ControlMessage::Ipv4PacketInfo(&info)];
                sendmsg(fd, &iov, &c, MsgFlags::empty(), Some(&SockaddrIn::from(t)))?;
            }
            (IpAddr::V6(f), SocketAddr::V6(t)) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: f.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                let c = [ControlMessage::Ipv6PacketInfo(&info)];
                sendmsg(fd, &iov, &c, MsgFlags::empty(), Some(&SockaddrIn6::from(t)))?;
            }
            _ => return Err(io::Error::other("a reply across families")),
        }
        Ok(())
    })
    .await
}

/// Serves one family's UDP listener until the runtime stops.
pub(crate) async fn serve(sock: UdpSocket, sh: Arc<Shared>) {
    let sock = Arc::new(sock);
    let mut ct = match Conntrack::open() {
        Ok(ct) => ct,
        Err(e) => {
            tracing::warn!(error = %e, "userspace proxy: no conntrack socket; UDP is not proxied");
            return;
        }
    };
    let mut sessions: HashMap<(SocketAddr, SocketAddr), Session> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, client, local) = match receive(&sock, &mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "userspace proxy: UDP receive");
                continue;
            }
        };
        let key = (client, local);
        if sessions
            .get(&key)
            .is_some_and(|s| s.done.load(Ordering::Relaxed))
        {
            sessions.remove(&key);
        }
        if !sessions.contains_key(&key) {
            if sessions.len() >= MAX_SESSIONS {
                sessions.retain(|_, s| !s.done.load(Ordering::Relaxed));
            }
            if sessions.len() >= MAX_SESSIONS {
                continue;
            }
            let Some(s) = open(&sh, &mut ct, &sock, client, local).await else {
                continue;
            };
            sessions.insert(key, s);
        }
        if let Some(s) = sessions.get(&key) {
            s.activity.touch();
            let _ = s.upstream.send(&buf[..n]).await;
        }
    }
}

/// A new session for the flow `client` → `local`, with its reply task running.
async fn open(
    sh: &Arc<Shared>,
    ct: &mut Conntrack,
    listener: &Arc<UdpSocket>,
    client: SocketAddr,
    local: SocketAddr,
) -> Option<Session> {
    let dst = ct
        .original_dst(local, client)
        .inspect_err(
            |e| tracing::debug!(%client, error = %e, "userspace proxy: UDP flow not in conntrack"),
        )
        .ok()?;
    let route = sh.table().route(Protocol::Udp, dst, client)?;
    let i = choose(sh, &route, Protocol::Udp, client, dst, &[])?;
    let addr = route.target.endpoints[i];
    let from = (route.keep_client && client.ip() != addr.ip()).then_some(client.ip());
    let upstream = match upstream(from, addr).await {
        Ok(u) => Arc::new(u),
        Err(e) => {
            tracing::warn!(endpoint = %addr, error = %e, "userspace proxy: no UDP socket");
            return None;
        }
    };
    sh.remember(&route, client, addr);
    sh.counters.connections.inc();
    let state = sh.endpoints.get(route.target.id, addr);
    let done = Arc::new(AtomicBool::new(false));
    let activity = Arc::new(Activity::new());
    let (sh2, up, lis) = (Arc::clone(sh), Arc::clone(&upstream), Arc::clone(listener));
    let (done2, act) = (Arc::clone(&done), Arc::clone(&activity));
    tokio::spawn(async move {
        let _active = state.open();
        sh2.counters.active.inc();
        let idle = sh2.cfg.udp_idle_timeout;
        tokio::select! {
            r = replies(&up, &lis, (local.ip(), client), &act, idle) => {
                if let Err(e) = r {
                    // A refused datagram (ICMP port unreachable) ends the session; the next
                    // datagram of the flow picks again, skipping this endpoint for a while.
                    state.failed(sh2.cfg.backoff);
                    sh2.counters.connect_failures.inc();
                    tracing::debug!(endpoint = %addr, error = %e, "userspace proxy: UDP session failed");
                }
            }
            () = state.drained() => sh2.counters.drained.inc(),
        }
        sh2.counters.active.dec();
        done2.store(true, Ordering::Relaxed);
    });
    Some(Session {
        upstream,
        done,
        activity,
    })
}

/// A socket connected to `to`, from `from` (a client's address, transparent) or this node.
async fn upstream(from: Option<IpAddr>, to: SocketAddr) -> io::Result<UdpSocket> {
    let s = socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::DGRAM, None)?;
    let bind = match from {
        Some(ip) => {
            if to.is_ipv4() {
                s.set_ip_transparent_v4(true)?;
            } else {
                s.set_ip_transparent_v6(true)?;
            }
            SocketAddr::new(ip, 0)
        }
        None if to.is_ipv4() => SocketAddr::from(([0, 0, 0, 0], 0)),
        None => SocketAddr::from(([0u16; 8], 0)),
    };
    s.set_nonblocking(true)?;
    s.bind(&bind.into())?;
    let u = UdpSocket::from_std(s.into())?;
    u.connect(to).await?;
    Ok(u)
}

/// Relays the endpoint's replies to the client (`flow`: the redirected address, the client)
/// until the flow is idle for `idle`.
async fn replies(
    up: &UdpSocket,
    listener: &UdpSocket,
    (local, client): (IpAddr, SocketAddr),
    activity: &Activity,
    idle: Duration,
) -> io::Result<()> {
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = idle.saturating_sub(activity.idle_for());
        if left.is_zero() {
            return Ok(());
        }
        if let Ok(r) = tokio::time::timeout(left, up.recv(&mut buf)).await {
            let n = r?;
            send_from(listener, &buf[..n], local, client).await?;
            activity.touch();
        }
    }
}

/// A socket address from the kernel's (IPv4 or IPv6) as the standard library has it.
pub fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    a.as_sockaddr_in()
        .map(|v4| SocketAddr::from(SocketAddrV4::from(*v4)))
        .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddrV6::from(*v6).into()))
}
