//! The DNS responder (`--dns-bind-address`), for nodes without cluster DNS: Service names
//! from the same store and resolution as the proxy ([`Records`]), over UDP and TCP. Names in
//! the cluster domain are answered here (NXDOMAIN when unknown); others go to the upstream
//! servers when there are any, else are REFUSED. A UDP answer larger than the client can take
//! (512 bytes, or its EDNS size) is sent truncated, and the client retries over TCP.

mod cache;
mod records;

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

pub use records::Records;

/// Answers' time to live: short, as the names follow the config.
const TTL: u32 = 5;

/// The running responder: its records, replaced after every sync.
#[derive(Debug, Clone)]
pub struct Dns {
    records: Arc<RwLock<Current>>,
    upstreams: Arc<Vec<SocketAddr>>,
}

/// The records answered from, and their version (counting every change).
#[derive(Debug, Default)]
struct Current {
    records: Arc<Records>,
    version: u64,
}

/// What to do with one query.
enum Reply {
    /// Send this.
    Local(Message),
    /// Ask the upstream servers.
    Forward,
}

impl Dns {
    /// Binds UDP and TCP on `addr` and serves on the current runtime, with no names until
    /// [`set`](Self::set).
    ///
    /// # Errors
    /// Fails when `addr` cannot be bound.
    pub async fn start(addr: SocketAddr, upstreams: Vec<SocketAddr>) -> anyhow::Result<Self> {
        let bind = |e: std::io::Error| anyhow::anyhow!("--dns-bind-address {addr}: {e}");
        let udp = Arc::new(std::net::UdpSocket::bind(addr).map_err(bind)?);
        let tcp = TcpListener::bind(addr).await.map_err(bind)?;
        let dns = Self {
            records: Arc::new(RwLock::new(Current::default())),
            upstreams: Arc::new(upstreams),
        };
        let (weak, runtime) = (
            Arc::downgrade(&dns.records),
            tokio::runtime::Handle::current(),
        );
        let upstreams = Arc::clone(&dns.upstreams);
        std::thread::Builder::new()
            .name("wasp-dns-udp".into())
            .spawn(move || serve_udp(&udp, &weak, &upstreams, &runtime))
            .map_err(|e| anyhow::anyhow!("DNS responder thread: {e}"))?;
        tokio::spawn(dns.clone().serve_tcp(tcp));
        tracing::info!(%addr, upstreams = ?dns.upstreams, "DNS responder listening");
        Ok(dns)
    }

    /// Answers from `records` from now on.
    pub fn set(&self, records: Records) {
        let mut current = self.records.write().unwrap_or_else(PoisonError::into_inner);
        current.records = Arc::new(records);
        current.version += 1;
    }

    /// Follows a sync: every name again after a full one, else the names of `services` (those
    /// resolved again), from `state` and `store`, under `domain`.
    pub fn update(
        &self,
        state: &wasp_model::ProxyState,
        store: &wasp_resolve::ObjectStore,
        services: &std::collections::BTreeSet<wasp_model::NamespacedName>,
        full: bool,
        domain: &str,
    ) {
        if full {
            return self.set(Records::build(state, store, domain));
        }
        if services.is_empty() {
            return;
        }
        let mut current = self.records.write().unwrap_or_else(PoisonError::into_inner);
        current.version += 1;
        // Copies the records only while a query still holds the old ones.
        let r = Arc::make_mut(&mut current.records);
        for key in services {
            r.service(key, state, store);
        }
    }

    fn records(&self) -> Arc<Records> {
        current(&self.records).0
    }

    async fn serve_tcp(self, l: TcpListener) {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let dns = self.clone();
            tokio::spawn(async move {
                // Queries one after another on the connection, until it closes or idles.
                let idle = Duration::from_secs(10);
                while let Ok(Ok(len)) = tokio::time::timeout(idle, s.read_u16()).await {
                    let mut q = vec![0u8; usize::from(len)];
                    if s.read_exact(&mut q).await.is_err() {
                        return;
                    }
                    let Some(out) = dns.respond(&q, false).await else {
                        return;
                    };
                    let len = u16::try_from(out.len()).unwrap_or(u16::MAX);
                    if s.write_u16(len).await.is_err() || s.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    /// The answer to `query`'s bytes; `None` for bytes that are no query.
    async fn respond(&self, query: &[u8], udp: bool) -> Option<Vec<u8>> {
        let q = Message::from_vec(query).ok()?;
        match answer(&self.records(), &q, !self.upstreams.is_empty()) {
            Reply::Local(m) => encode(&q, &m, udp),
            Reply::Forward => forwarded(&self.upstreams, &q, query, udp).await,
        }
    }
}

/// The most datagrams read (and answers sent) in one system call.
const BATCH: usize = 16;

/// Answers UDP queries on a thread of its own, blocked in `recvmmsg` between them: a query
/// wakes it directly, with no event loop between (on a task, waking the runtime per query made
/// the responder slower than dnsmasq), and the queries waiting then are read, and answered, in
/// one call each. Only forwarding waits, on a task of `runtime`. The thread ends within a
/// second of the last [`Dns`] handle going (the TCP task holds one until the runtime stops).
fn serve_udp(
    sock: &Arc<std::net::UdpSocket>,
    records: &std::sync::Weak<RwLock<Current>>,
    upstreams: &Arc<Vec<SocketAddr>>,
    runtime: &tokio::runtime::Handle,
) {
    if let Err(e) = sock.set_read_timeout(Some(Duration::from_secs(1))) {
        tracing::error!(error = %e, "DNS responder: UDP socket timeout; UDP is not answered");
        return;
    }
    let (mut batch, mut cache) = (Batch::new(), cache::Answers::default());
    loop {
        let got = batch.receive(sock);
        let Some(records) = records.upgrade() else {
            return;
        };
        let (current, version) = current(&records);
        drop(records);
        cache.follow(version);
        let mut answers = Vec::with_capacity(got.len());
        for (i, n, peer) in got {
            let query = &batch.bufs[i][..n];
            if let Some(out) = cache.answer(query) {
                answers.push((out, peer));
                continue;
            }
            let Ok(q) = Message::from_vec(query) else {
                continue;
            };
            match answer(&current, &q, !upstreams.is_empty()) {
                Reply::Local(m) => {
                    if let Some(out) = encode(&q, &m, true) {
                        cache.learn(query, &out);
                        answers.push((out, peer));
                    }
                }
                Reply::Forward => {
                    let (sock, upstreams) = (Arc::clone(sock), Arc::clone(upstreams));
                    let query = query.to_vec();
                    runtime.spawn(async move {
                        if let Some(out) = forwarded(&upstreams, &q, &query, true).await {
                            let _ = sock.send_to(&out, peer);
                        }
                    });
                }
            }
        }
        batch.send(sock, &answers);
    }
}

/// Buffers and message headers for `recvmmsg` and `sendmmsg`.
struct Batch {
    bufs: Vec<Vec<u8>>,
    rx: MultiHeaders<SockaddrStorage>,
    tx: MultiHeaders<SockaddrStorage>,
}

impl Batch {
    fn new() -> Self {
        Self {
            bufs: vec![vec![0u8; 4096]; BATCH],
            rx: MultiHeaders::preallocate(BATCH, None),
            tx: MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// Waits for one datagram (up to the socket's read timeout) and takes those queued
    /// behind it: each one's place in `bufs`, its length and its sender.
    fn receive(&mut self, sock: &std::net::UdpSocket) -> Vec<(usize, usize, SocketAddr)> {
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
            self.bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
        let fd = sock.as_raw_fd();
        match recvmmsg(
            fd,
            &mut self.rx,
            iovs.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        ) {
            Ok(got) => got
                .enumerate()
                .filter_map(|(i, m)| Some((i, m.bytes, wasp_proxy::socket_addr(&m.address?)?)))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Sends each answer to its client, in one call.
    fn send(&mut self, sock: &std::net::UdpSocket, answers: &[(Vec<u8>, SocketAddr)]) {
        if answers.is_empty() {
            return;
        }
        let iovs: Vec<[IoSlice<'_>; 1]> = answers.iter().map(|(b, _)| [IoSlice::new(b)]).collect();
        let to: Vec<Option<SockaddrStorage>> = answers
            .iter()
            .map(|(_, peer)| Some(SockaddrStorage::from(*peer)))
            .collect();
        let none: [ControlMessage<'_>; 0] = [];
        let _ = sendmmsg(
            sock.as_raw_fd(),
            &mut self.tx,
            iovs.iter(),
            &to,
            none,
            MsgFlags::empty(),
        );
    }
}

/// The records now, and their version.
fn current(records: &RwLock<Current>) -> (Arc<Records>, u64) {
    let c = records.read().unwrap_or_else(PoisonError::into_inner);
    (Arc::clone(&c.records), c.version)
}

/// The upstream's answer to `query` (`q` decoded), or SERVFAIL when none answers.
async fn forwarded(
    upstreams: &[SocketAddr],
    q: &Message,
    query: &[u8],
    udp: bool,
) -> Option<Vec<u8>> {
    match forward(upstreams, query).await {
        Some(bytes) => Some(bytes),
        None => encode(q, &error(q, ResponseCode::ServFail), udp),
    }
}

/// `m`'s bytes, truncated (no answers, the TC bit) when over UDP they exceed what the
/// client of `q` takes.
fn encode(q: &Message, m: &Message, udp: bool) -> Option<Vec<u8>> {
    let out = m.to_vec().ok()?;
    let limit = usize::from(q.max_payload().max(512));
    if udp && out.len() > limit {
        let mut t = m.clone();
        t.answers_mut().clear();
        t.additionals_mut().clear();
        t.set_truncated(true);
        return t.to_vec().ok();
    }
    Some(out)
}

/// A response to `q` with `code` and no answers.
fn error(q: &Message, code: ResponseCode) -> Message {
    let mut m = Message::error_msg(q.id(), OpCode::Query, code);
    m.add_queries(q.queries().to_vec());
    m.set_recursion_desired(q.recursion_desired());
    m
}

/// The answer to one query from `records`, or forward it when the name is outside the
/// cluster domain and there is somewhere to forward to.
fn answer(records: &Records, q: &Message, can_forward: bool) -> Reply {
    let Some(query) = q.queries().first().filter(|_| q.queries().len() == 1) else {
        return Reply::Local(error(q, ResponseCode::FormErr));
    };
    let name = query.name().to_ascii().to_lowercase();
    let name = if name.ends_with('.') {
        name
    } else {
        format!("{name}.")
    };
    if !records.in_zone(&name) {
        return if can_forward {
            Reply::Forward
        } else {
            Reply::Local(error(q, ResponseCode::Refused))
        };
    }
    let (addrs, srv) = (records.addresses.get(&name), records.srv.get(&name));
    if addrs.is_none() && srv.is_none() {
        let mut m = error(q, ResponseCode::NXDomain);
        m.set_authoritative(true);
        return Reply::Local(m);
    }
    let mut m = error(q, ResponseCode::NoError);
    m.set_authoritative(true);
    m.set_recursion_available(can_forward);
    let owner = query.name().clone();
    let t = query.query_type();
    for ip in addrs.into_iter().flatten() {
        let rdata = match ip {
            std::net::IpAddr::V4(v4) if matches!(t, RecordType::A | RecordType::ANY) => {
                RData::A(A(*v4))
            }
            std::net::IpAddr::V6(v6) if matches!(t, RecordType::AAAA | RecordType::ANY) => {
                RData::AAAA(AAAA(*v6))
            }
            _ => continue,
        };
        m.add_answer(Record::from_rdata(owner.clone(), TTL, rdata));
    }
    if matches!(t, RecordType::SRV | RecordType::ANY) {
        for (port, target) in srv.into_iter().flatten() {
            let Ok(target) = Name::from_ascii(target) else {
                continue;
            };
            let rdata = RData::SRV(SRV::new(0, 100, *port, target));
            m.add_answer(Record::from_rdata(owner.clone(), TTL, rdata));
        }
    }
    m.set_message_type(MessageType::Response);
    Reply::Local(m)
}

/// Asks each upstream in turn (2 s each) over UDP; the first answer's bytes.
async fn forward(upstreams: &[SocketAddr], query: &[u8]) -> Option<Vec<u8>> {
    for up in upstreams {
        let any: SocketAddr = if up.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let Ok(sock) = UdpSocket::bind(any).await else {
            continue;
        };
        if sock.connect(up).await.is_err() || sock.send(query).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf)).await {
            buf.truncate(n);
            return Some(buf);
        }
        tracing::debug!(upstream = %up, "DNS upstream did not answer");
    }
    None
}

/// The nameservers of `/etc/resolv.conf` (port 53), except `own` (the responder itself).
pub fn system_upstreams(own: SocketAddr) -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .filter(|a| *a != own)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    fn ask(records: &Records, name: &str, t: RecordType, can_forward: bool) -> Option<Message> {
        let mut q = Message::new();
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        match answer(records, &q, can_forward) {
            Reply::Local(m) => Some(m),
            Reply::Forward => None,
        }
    }

    #[test]
    fn outside_the_zone_is_refused_or_forwarded_and_a_known_name_without_the_type_is_empty() {
        let mut r = Records::new("cluster.local");
        r.addresses.insert(
            "web.shop.svc.cluster.local.".into(),
            ["10.96.0.1".parse().unwrap()].into(),
        );
        let refused = ask(&r, "example.org.", RecordType::A, false).unwrap();
        assert_eq!(refused.response_code(), ResponseCode::Refused);
        assert!(
            ask(&r, "example.org.", RecordType::A, true).is_none(),
            "forwarded"
        );
        let nodata = ask(&r, "WEB.shop.svc.cluster.local.", RecordType::AAAA, false).unwrap();
        assert_eq!(nodata.response_code(), ResponseCode::NoError);
        assert!(nodata.answers().is_empty());
        let a = ask(&r, "WEB.shop.svc.cluster.local.", RecordType::A, false).unwrap();
        assert_eq!(a.answers().len(), 1, "names are case-insensitive");
        let nx = ask(&r, "other.cluster.local.", RecordType::A, true).unwrap();
        assert_eq!(
            nx.response_code(),
            ResponseCode::NXDomain,
            "never forwarded"
        );
    }
}
