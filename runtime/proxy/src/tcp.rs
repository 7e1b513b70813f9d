//! Captured TCP connections: the original destination, the endpoint (with retries on a
//! failed connect), then the data path until the connection ends or its endpoint drains.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::{TcpListener, TcpStream};
use wasp_model::Protocol;

use crate::Shared;
use crate::pick::choose;
use crate::table::Route;

/// Accepts connections until the runtime stops; at most `max_connections` at once, the rest
/// wait in the kernel's backlog.
pub(crate) async fn serve(listener: TcpListener, sh: Arc<Shared>) {
    loop {
        let Ok(permit) = Arc::clone(&sh.permits).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((client, peer)) => {
                let sh = Arc::clone(&sh);
                tokio::spawn(async move {
                    handle(client, peer, &sh).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::warn!(error = %e, "userspace proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Where the client (at `peer`) was going before the redirect.
fn original_dst(s: &TcpStream, peer: SocketAddr) -> io::Result<SocketAddr> {
    if peer.is_ipv4() {
        let a = getsockopt(s, sockopt::OriginalDst)?;
        let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
        Ok(SocketAddrV4::new(ip, u16::from_be(a.sin_port)).into())
    } else {
        let a = getsockopt(s, sockopt::Ip6tOriginalDst)?;
        let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
        Ok(SocketAddrV6::new(ip, u16::from_be(a.sin6_port), 0, 0).into())
    }
}

/// A connection to `to`, from `from` (a client's address, with a transparent socket) or
/// from this node.
async fn open(from: Option<IpAddr>, to: SocketAddr) -> io::Result<TcpStream> {
    let Some(from) = from else {
        return TcpStream::connect(to).await;
    };
    let s = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        None,
    )?;
    if to.is_ipv4() {
        s.set_ip_transparent_v4(true)?;
    } else {
        s.set_ip_transparent_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::new(from, 0).into())?;
    tokio::net::TcpSocket::from_std_stream(s.into())
        .connect(to)
        .await
}

/// Closes with a reset, as a refused connection would look to the client.
fn reset(s: TcpStream) {
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
}

async fn handle(client: TcpStream, peer: SocketAddr, sh: &Shared) {
    let _ = client.set_nodelay(true);
    let Ok(dst) = original_dst(&client, peer) else {
        return reset(client);
    };
    let route = sh.table().route(Protocol::Tcp, dst, peer);
    let Some(route) = route.filter(|r| !r.candidates.is_empty()) else {
        sh.counters.unrouted.inc();
        tracing::debug!(%peer, %dst, "userspace proxy: no service port at the original destination");
        return reset(client);
    };
    let Some((addr, upstream)) = connect(sh, &route, peer, dst).await else {
        sh.counters.exhausted.inc();
        return reset(client);
    };
    let _ = upstream.set_nodelay(true);
    let state = sh.endpoints.get(route.target.id, addr);
    let _active = state.open();
    sh.counters.connections.inc();
    sh.counters.active.inc();
    tokio::select! {
        r = crate::splice::bridge(&client, &upstream, sh.cfg.idle_timeout) => {
            if let Err(e) = r {
                tracing::debug!(%peer, endpoint = %addr, error = %e, "userspace proxy: connection ended");
            }
        }
        () = state.drained() => {
            sh.counters.drained.inc();
            tracing::debug!(%peer, endpoint = %addr, "userspace proxy: drain timeout; closing");
        }
    }
    sh.counters.active.dec();
}

/// Connects to an endpoint of `route`; a refused, unreachable or timed-out connect tries
/// another, up to the attempt limit. Each failure puts the endpoint in backoff and is counted.
async fn connect(
    sh: &Shared,
    route: &Route,
    peer: SocketAddr,
    dst: SocketAddr,
) -> Option<(SocketAddr, TcpStream)> {
    let target = &route.target;
    let mut tried = Vec::new();
    for attempt in 1..=sh.cfg.connect_attempts.max(1) {
        let i = choose(sh, route, Protocol::Tcp, peer, dst, &tried)?;
        let addr = target.endpoints[i];
        let state = sh.endpoints.get(target.id, addr);
        // A backend reaching itself through the Service is masqueraded (hairpin).
        let from = (route.keep_client && peer.ip() != addr.ip()).then_some(peer.ip());
        let error = match tokio::time::timeout(sh.cfg.connect_timeout, open(from, addr)).await {
            Ok(Ok(s)) => {
                state.succeeded();
                sh.remember(route, peer, addr);
                return Some((addr, s));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", sh.cfg.connect_timeout),
        };
        sh.counters.connect_failures.inc();
        if state.failed(sh.cfg.backoff) {
            tracing::warn!(port = %target.name, endpoint = %addr, %error, attempt, "userspace proxy: connect failed; the endpoint is skipped for the backoff period");
        } else {
            tracing::debug!(port = %target.name, endpoint = %addr, %error, attempt, "userspace proxy: connect failed");
        }
        tried.push(i);
    }
    tracing::warn!(port = %target.name, %peer, "userspace proxy: every attempt failed; the client is reset");
    None
}
