//! TCP checks as half-open handshakes: a SYN from a raw socket, and the endpoint's answer,
//! a SYN-ACK (something listens: healthy) or a reset (nothing does). The kernel answers the
//! SYN-ACK with a reset of its own, since no socket of ours owns the connection, so the
//! endpoint's half-open connection goes at once and its program never sees the probe.
//!
//! Against a full connect, this spares both ends a socket: no connection is made, accepted or
//! torn down. All of these probes run from one task, the sweep: at each tick of its 50 ms
//! grid it reads the answers that came since the last (`recvmmsg`), counts a probe failed
//! when its timeout has passed, and sends the SYNs that are due (`sendmmsg`). There is no
//! task, timer or channel per probe, and an answer wakes nothing: it waits in the socket's
//! buffer for the next tick (`docs/BENCHMARKS.md` has what each of these saved). It needs
//! `CAP_NET_RAW`; without it the checker connects instead.
//! While any TCP check runs, every TCP segment this host receives for itself is cloned to the
//! raw socket and dropped there by a socket filter unless it is addressed to the probes'
//! port, so the raw sockets are open only while there is a TCP check.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use wasp_model::HealthCheck;

use super::{Shared, Streak, fraction};

/// The sweep's grid: coarser than the connecting probes' (a SYN costs the endpoint less than
/// a connection, so more of them may go at once), for fewer wake-ups.
const TICK: std::time::Duration = std::time::Duration::from_millis(50);

/// The most SYNs sent in one tick; the rest wait for the next. Their answers wait in the
/// socket's buffer until the next tick, which holds [`BUFFER`] bytes.
const BURST: usize = 256;

/// The raw sockets' receive buffer: a tick's answers, at about a kilobyte each as the kernel
/// counts them, with room to spare.
const BUFFER: usize = 1 << 20;

/// The sweep: raw sockets of both families and the task that probes through them.
pub(super) struct Sweep {
    covers: [bool; 2],
    changes: mpsc::UnboundedSender<Change>,
    task: AbortHandle,
}

enum Change {
    Watch(SocketAddr, HealthCheck),
    Forget(SocketAddr),
}

impl Sweep {
    /// Opens a raw socket per family and starts the sweep on the current runtime. An error
    /// when neither family can (no `CAP_NET_RAW`).
    pub(super) fn start(shared: Arc<Shared>) -> io::Result<Self> {
        let (v4, v6) = match (Family::open(Domain::IPV4), Family::open(Domain::IPV6)) {
            (Err(e), Err(_)) => return Err(e),
            (v4, v6) => (v4.ok(), v6.ok()),
        };
        let covers = [v4.is_some(), v6.is_some()];
        let (changes, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run([v4, v6], rx, shared)).abort_handle();
        Ok(Self {
            covers,
            changes,
            task,
        })
    }

    /// Whether `to` can be probed this way (its family's raw socket is open).
    pub(super) fn covers(&self, to: SocketAddr) -> bool {
        self.covers[usize::from(to.is_ipv6())]
    }

    /// Probes `to` from now on (starting over if it was probed already), healthy until proven
    /// otherwise.
    pub(super) fn watch(&self, to: SocketAddr, check: HealthCheck) {
        let _ = self.changes.send(Change::Watch(to, check));
    }

    /// Stops probing `to`.
    pub(super) fn forget(&self, to: SocketAddr) {
        let _ = self.changes.send(Change::Forget(to));
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One family's raw socket.
struct Family {
    /// The raw socket, non-blocking, as a datagram socket: it sends and receives whole
    /// segments with an address, as a UDP socket does datagrams. It is not registered with
    /// the runtime, so that an answer wakes no thread: the sweep reads at its ticks.
    raw: std::net::UdpSocket,
    /// The port the SYNs come from: held by a bound TCP socket that never listens, so no other
    /// program takes it and the kernel resets every answer.
    port: u16,
    _hold: Socket,
}

impl Family {
    fn open(domain: Domain) -> io::Result<Self> {
        let raw = Socket::new(domain, Type::RAW, Some(Protocol::TCP))?;
        let hold = Socket::new(domain, Type::STREAM, None)?;
        if domain == Domain::IPV6 {
            hold.set_only_v6(true)?;
        }
        hold.bind(&any(domain == Domain::IPV6).into())?;
        let port = hold
            .local_addr()?
            .as_socket()
            .map(|a| a.port())
            .ok_or_else(|| io::Error::other("the held port has no address"))?;
        raw.attach_filter(&filter(domain == Domain::IPV6, port))?;
        // As much as the host allows (`net.core.rmem_max`), or more where the daemon may.
        if raw.set_recv_buffer_size(BUFFER).is_ok() && raw.recv_buffer_size()? < BUFFER {
            let _ =
                nix::sys::socket::setsockopt(&raw, nix::sys::socket::sockopt::RcvBufForce, &BUFFER);
        }
        raw.set_nonblocking(true)?;
        raw.set_cloexec(true)?;
        Ok(Self {
            raw: raw.into(),
            port,
            _hold: hold,
        })
    }
}

/// How an endpoint answered a SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A SYN-ACK: something listens.
    Open,
    /// A reset: nothing does.
    Refused,
}

/// One swept endpoint.
struct Endpoint {
    check: HealthCheck,
    streak: Streak,
    /// Ticks between probes.
    period: u64,
    /// The tick of its next probe.
    next: u64,
    /// The address its SYNs come from (it is in the checksum): found at the first probe and
    /// again after one that got no answer or could not be sent, since a route may have moved.
    source: Option<IpAddr>,
}

/// A probe awaiting its answer.
struct Flight {
    seq: u32,
    /// The endpoint was healthy with no failure in a row when it was sent: a SYN-ACK then
    /// changes nothing of it but a count, and its record is not touched.
    steady: bool,
}

/// What the sweep knows.
struct Sweeping {
    endpoints: HashMap<SocketAddr, Endpoint>,
    /// The probes in flight: a small map (a tick's worth, as answers come at once), so that
    /// an answer or a timeout is looked up without touching the endpoints' records.
    flight: HashMap<SocketAddr, Flight>,
    /// Endpoints by the tick of their next probe.
    due: BTreeMap<u64, Vec<SocketAddr>>,
    /// Probes in flight by the tick their timeout passes.
    deadlines: BTreeMap<u64, Vec<(SocketAddr, u32)>>,
    epoch: tokio::time::Instant,
    seqs: Seqs,
}

/// The sweep's task: ticks, answers and changes, until the sweep is dropped.
async fn run(
    families: [Option<Family>; 2],
    mut changes: mpsc::UnboundedReceiver<Change>,
    sh: Arc<Shared>,
) {
    let mut sweep = Sweeping {
        endpoints: HashMap::new(),
        flight: HashMap::new(),
        due: BTreeMap::new(),
        deadlines: BTreeMap::new(),
        epoch: tokio::time::Instant::now(),
        seqs: Seqs::default(),
    };
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticks.tick() => sweep.tick(&families, &sh),
            change = changes.recv() => match change {
                Some(change) => sweep.apply(change),
                None => return,
            },
        }
    }
}

impl Sweeping {
    fn now(&self) -> u64 {
        (self.epoch.elapsed().as_millis() / TICK.as_millis()) as u64
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Forget(to) => {
                self.endpoints.remove(&to);
                self.flight.remove(&to);
            }
            Change::Watch(to, check) => {
                let period = (check.interval.as_millis() / TICK.as_millis()).max(1) as u64;
                // An endpoint keeps its slot in its interval, and slots spread evenly.
                let slot = (fraction(to) * period as f64) as u64;
                let now = self.now();
                let next = now - now % period + slot;
                let next = if next <= now { next + period } else { next };
                self.flight.remove(&to);
                self.due.entry(next).or_default().push(to);
                self.endpoints.insert(
                    to,
                    Endpoint {
                        check,
                        streak: Streak::default(),
                        period,
                        next,
                        source: None,
                    },
                );
            }
        }
    }

    /// One tick: the answers that came are taken, probes whose timeout has passed fail, and
    /// the due ones are sent.
    fn tick(&mut self, families: &[Option<Family>; 2], sh: &Shared) {
        let mut buffers = vec![[0; SNAP]; BATCH];
        for family in families.iter().flatten() {
            self.drain(family, &mut buffers, sh);
        }
        let now = self.now();
        while let Some(entry) = self.deadlines.first_entry() {
            if *entry.key() > now {
                break;
            }
            for (to, seq) in entry.remove() {
                if self.flight.get(&to).is_some_and(|f| f.seq == seq)
                    && let Some(e) = self.endpoints.get_mut(&to)
                {
                    self.flight.remove(&to);
                    e.source = None;
                    let why = format!("no answer within {:?}", e.check.timeout);
                    e.streak.record(to, &e.check, Err(why), sh);
                }
            }
        }
        let mut out: [Vec<Outgoing>; 2] = Default::default();
        'due: while let Some(entry) = self.due.first_entry() {
            let tick = *entry.key();
            if tick > now {
                break;
            }
            let mut batch = entry.remove();
            while let Some(to) = batch.pop() {
                if out[0].len() + out[1].len() == BURST {
                    // The rest go next tick; their grid stays.
                    batch.push(to);
                    self.due.entry(now + 1).or_default().append(&mut batch);
                    break 'due;
                }
                // Forgotten, or watched again since with another slot.
                let Some(e) = self.endpoints.get_mut(&to).filter(|e| e.next == tick) else {
                    continue;
                };
                e.next = tick + e.period;
                while e.next <= now {
                    e.next += e.period;
                }
                self.due.entry(e.next).or_default().push(to);
                // Still waiting for the last answer (a timeout longer than the interval).
                if self.flight.contains_key(&to) {
                    continue;
                }
                let family = usize::from(to.is_ipv6());
                let Some(port) = families[family].as_ref().map(|f| f.port) else {
                    let why = format!("no raw socket for {to}");
                    e.streak.record(to, &e.check, Err(why), sh);
                    continue;
                };
                let from = match e.source.map_or_else(|| source_for(to), Ok) {
                    Ok(ip) => ip,
                    Err(err) => {
                        let why = format!("no route to {to}: {err}");
                        e.streak.record(to, &e.check, Err(why), sh);
                        continue;
                    }
                };
                e.source = Some(from);
                let seq = self.seqs.next();
                let ticks = e
                    .check
                    .timeout
                    .as_millis()
                    .div_ceil(TICK.as_millis())
                    .max(1);
                out[family].push(Outgoing {
                    to,
                    seq,
                    steady: e.streak.steady(),
                    deadline: now + ticks as u64,
                    segment: syn(from, to, port, seq),
                });
            }
        }
        for (family, out) in families.iter().zip(out) {
            let Some(family) = family else {
                continue;
            };
            // `sendmmsg` stops at the first segment that fails: it is failed alone, and the
            // rest go in the next call.
            let mut rest = &out[..];
            while !rest.is_empty() {
                let chunk = &rest[..rest.len().min(BATCH)];
                let (went, why) = match send(family, chunk) {
                    Ok(0) => (0, Some("connect: not sent".to_owned())),
                    Ok(n) => (n, None),
                    Err(e) => (0, Some(format!("connect: {}", io::Error::from(e)))),
                };
                for o in &chunk[..went] {
                    let (seq, steady) = (o.seq, o.steady);
                    self.flight.insert(o.to, Flight { seq, steady });
                    self.deadlines
                        .entry(o.deadline)
                        .or_default()
                        .push((o.to, seq));
                }
                rest = &rest[went..];
                if let Some(why) = why {
                    let o = &rest[0];
                    if let Some(e) = self.endpoints.get_mut(&o.to) {
                        e.source = None;
                        e.streak.record(o.to, &e.check, Err(why), sh);
                    }
                    rest = &rest[1..];
                }
            }
        }
    }

    /// Takes every answer waiting on `family`'s socket, [`BATCH`] to a system call.
    fn drain(&mut self, family: &Family, buffers: &mut [[u8; SNAP]], sh: &Shared) {
        loop {
            let got = {
                let mut slices: Vec<[std::io::IoSliceMut; 1]> = buffers
                    .iter_mut()
                    .map(|b| [std::io::IoSliceMut::new(b)])
                    .collect();
                // Fresh headers for each call: the kernel leaves each one's address length
                // at what it wrote, and an IPv4 sender's is too short for the next IPv6 one.
                let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
                let read = recvmmsg(
                    family.raw.as_raw_fd(),
                    &mut headers,
                    slices.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                );
                match read {
                    // Each one's bytes, in the buffer of its place, and its sender.
                    Ok(msgs) => msgs
                        .map(|m| {
                            (
                                m.bytes,
                                m.address.as_ref().and_then(wasp_proxy::socket_addr),
                            )
                        })
                        .collect::<Vec<_>>(),
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(nix::errno::Errno::EAGAIN) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "health checks: reading the raw socket");
                        return;
                    }
                }
            };
            let full = got.len() == BATCH;
            for (i, (n, from)) in got.into_iter().enumerate() {
                if let Some(from) = from {
                    self.answer(&buffers[i][..n.min(SNAP)], from.ip(), sh);
                }
            }
            if !full {
                return;
            }
        }
    }

    /// Counts one received segment for the probe it answers, if any.
    fn answer(&mut self, packet: &[u8], from: IpAddr, sh: &Shared) {
        let Some((port, ack, answer)) = parse(packet, from) else {
            return;
        };
        let to = SocketAddr::new(from, port);
        // Only the answer to this probe's SYN acknowledges its sequence number.
        let Some(flight) = self.flight.remove(&to) else {
            return;
        };
        if flight.seq.wrapping_add(1) != ack {
            self.flight.insert(to, flight);
            return;
        }
        if flight.steady && answer == Answer::Open {
            sh.passed.inc();
            return;
        }
        let Some(e) = self.endpoints.get_mut(&to) else {
            return;
        };
        // A reset came back, so the source address is still right.
        let result = match answer {
            Answer::Open => Ok(()),
            Answer::Refused => Err("connect: refused (a reset)".to_owned()),
        };
        e.streak.record(to, &e.check, result, sh);
    }
}

/// Segments read per system call.
const BATCH: usize = 64;

/// The bytes kept of a segment: the IP and TCP headers.
const SNAP: usize = 128;

/// A SYN to send.
struct Outgoing {
    to: SocketAddr,
    seq: u32,
    steady: bool,
    /// The tick its timeout passes.
    deadline: u64,
    segment: [u8; 24],
}

/// Sends `out` (at most [`BATCH`]) in one system call; how many went, in order.
fn send(family: &Family, out: &[Outgoing]) -> nix::Result<usize> {
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(out.len(), None);
    let slices: Vec<[IoSlice; 1]> = out.iter().map(|o| [IoSlice::new(&o.segment)]).collect();
    // A raw socket takes no port: the segment has its own.
    let addrs: Vec<Option<SockaddrStorage>> = out
        .iter()
        .map(|o| Some(SocketAddr::new(o.to.ip(), 0).into()))
        .collect();
    let no_cmsgs: [ControlMessage; 0] = [];
    sendmmsg(
        family.raw.as_raw_fd(),
        &mut headers,
        &slices,
        addrs,
        no_cmsgs,
        MsgFlags::MSG_DONTWAIT,
    )
    .map(|sent| sent.count())
}

/// A segment's source port, acknowledgement number and meaning, if it is a SYN-ACK or a reset.
fn parse(packet: &[u8], from: IpAddr) -> Option<(u16, u32, Answer)> {
    let tcp = match from {
        // An IPv4 raw socket gets the IP header too.
        IpAddr::V4(_) => packet.get(usize::from(packet.first()? & 0xf) * 4..)?,
        IpAddr::V6(_) => packet,
    };
    if tcp.len() < 20 {
        return None;
    }
    let port = u16::from_be_bytes([tcp[0], tcp[1]]);
    let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    let answer = match tcp[13] {
        f if f & (SYN | ACK) == SYN | ACK => Answer::Open,
        f if f & RST != 0 => Answer::Refused,
        _ => return None,
    };
    Some((port, ack, answer))
}

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// The socket filter: a TCP segment to `port` with ACK or RST set (a SYN-ACK, or a reset);
/// everything else is dropped in the kernel. An IPv4 raw socket sees the IP header first, an
/// IPv6 one the TCP header.
fn filter(v6: bool, port: u16) -> Vec<SockFilter> {
    // Classic BPF opcodes (linux/filter.h).
    const LDX_MSH_B: u16 = 0xb1; // x = 4 * (pkt[k] & 0xf)
    const LD_H_IND: u16 = 0x48; // a = u16 at pkt[x + k]
    const LD_B_IND: u16 = 0x50; // a = pkt[x + k]
    const LDX_IMM: u16 = 0x01; // x = k
    const JEQ: u16 = 0x15;
    const JSET: u16 = 0x45;
    const RET: u16 = 0x06;
    vec![
        if v6 {
            SockFilter::new(LDX_IMM, 0, 0, 0)
        } else {
            SockFilter::new(LDX_MSH_B, 0, 0, 0)
        },
        SockFilter::new(LD_H_IND, 0, 0, 2),
        SockFilter::new(JEQ, 0, 3, u32::from(port)),
        SockFilter::new(LD_B_IND, 0, 0, 13),
        SockFilter::new(JSET, 0, 1, u32::from(ACK | RST)),
        SockFilter::new(RET, 0, 0, 0xffff),
        SockFilter::new(RET, 0, 0, 0),
    ]
}

/// The address a packet to `to` leaves from, as routing picks it (a UDP socket's connect
/// sends nothing).
fn source_for(to: SocketAddr) -> io::Result<IpAddr> {
    let s = std::net::UdpSocket::bind(any(to.is_ipv6()))?;
    s.connect(to)?;
    Ok(s.local_addr()?.ip())
}

/// The unspecified address of a family, port 0.
fn any(v6: bool) -> SocketAddr {
    if v6 {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    }
}

/// A SYN from `from:port` to `to` with sequence number `seq` and an MSS option, checksummed.
fn syn(from: IpAddr, to: SocketAddr, port: u16, seq: u32) -> [u8; 24] {
    let mut t = [0u8; 24];
    t[0..2].copy_from_slice(&port.to_be_bytes());
    t[2..4].copy_from_slice(&to.port().to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 6 << 4; // six words of header: 20 bytes and the option
    t[13] = SYN;
    t[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    let mss: u16 = if to.is_ipv6() { 1440 } else { 1460 };
    t[20..22].copy_from_slice(&[2, 4]);
    t[22..24].copy_from_slice(&mss.to_be_bytes());
    let sum = checksum(from, to.ip(), &t);
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    t
}

/// The TCP checksum of `segment` between `from` and `to` (RFC 793, RFC 8200 for IPv6).
fn checksum(from: IpAddr, to: IpAddr, segment: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            sum += hi | pair.get(1).map_or(0, |&lo| u64::from(lo));
        }
    };
    for ip in [from, to] {
        match ip {
            IpAddr::V4(a) => add(&a.octets()),
            IpAddr::V6(a) => add(&a.octets()),
        }
    }
    add(&[0, 6]);
    add(&(segment.len() as u32).to_be_bytes());
    add(segment);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sequence numbers no one off the path can guess (a forged SYN-ACK would make a dead
/// endpoint look alive): a counter through a randomly keyed hash.
#[derive(Default)]
struct Seqs {
    key: RandomState,
    count: AtomicU64,
}

impl Seqs {
    fn next(&self) -> u32 {
        self.key
            .hash_one(self.count.fetch_add(1, Ordering::Relaxed)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_sums_to_zero_with_its_checksum_in_place() {
        // One's complement: summed with its own checksum, a segment gives zero. (That the
        // kernel takes it is the checker's tests: a segment with a bad checksum gets no
        // answer, and the endpoint would turn unhealthy.)
        for (from, to) in [("127.0.0.1", "10.1.2.3:80"), ("fd00::1", "[fd00::9]:8443")] {
            let from: IpAddr = from.parse().unwrap();
            let to: SocketAddr = to.parse().unwrap();
            let segment = syn(from, to, 40_001, 0xdead_beef);
            assert_eq!(checksum(from, to.ip(), &segment), 0, "{from} -> {to}");
            let elsewhere: IpAddr = if from.is_ipv6() {
                "fd00::2"
            } else {
                "127.0.0.2"
            }
            .parse()
            .unwrap();
            assert_ne!(
                checksum(elsewhere, to.ip(), &segment),
                0,
                "the source counts"
            );
        }
    }

    #[tokio::test]
    async fn the_sweep_finds_listeners_open_and_closed_ports_refused_in_both_families() {
        let sh = Arc::new(Shared::new(
            mpsc::channel(8).0,
            super::super::CheckMetrics::default(),
        ));
        let sweep = match Sweep::start(Arc::clone(&sh)) {
            Ok(s) => s,
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("no raw socket ({e}), and CI=true forbids skipping")
            }
            Err(e) => {
                eprintln!("SKIP the sweep: no raw socket ({e}); run as root");
                return;
            }
        };
        let check = HealthCheck {
            probe: wasp_model::HealthProbe::Tcp,
            interval: std::time::Duration::from_millis(100),
            timeout: std::time::Duration::from_millis(500),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
        };
        let (mut listeners, mut closed) = (Vec::new(), Vec::new());
        for any in ["127.0.0.1:0", "[::1]:0"] {
            let open = std::net::TcpListener::bind(any).unwrap();
            open.set_nonblocking(true).unwrap();
            let gone = std::net::TcpListener::bind(any)
                .unwrap()
                .local_addr()
                .unwrap();
            assert!(sweep.covers(gone), "{gone}");
            sweep.watch(open.local_addr().unwrap(), check.clone());
            sweep.watch(gone, check.clone());
            listeners.push(open);
            closed.push(gone);
        }
        let unhealthy = || {
            let bad = sh.unhealthy.lock().unwrap();
            let mut bad: Vec<(SocketAddr, String)> =
                bad.iter().map(|(a, w)| (*a, w.clone())).collect();
            bad.sort();
            bad
        };
        let start = std::time::Instant::now();
        // Two rounds of the open ones, at least, and both closed ones found.
        while (sh.passed.get() < 4 || unhealthy().len() < 2)
            && start.elapsed() < std::time::Duration::from_secs(10)
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        closed.sort();
        let bad = unhealthy();
        assert_eq!(
            bad.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
            closed,
            "{bad:?}"
        );
        assert!(
            bad.iter().all(|(_, why)| why.contains("refused (a reset)")),
            "{bad:?}"
        );
        assert!(
            sh.passed.get() >= 4,
            "the listeners answered: {}",
            sh.passed.get()
        );
        for l in &listeners {
            // The program listening never sees a probe: nothing waits to be accepted.
            let accepted = l.accept().map_err(|e| e.kind()).err();
            assert_eq!(accepted, Some(io::ErrorKind::WouldBlock));
        }
        // Forgotten, an endpoint is no longer probed.
        sweep.forget(listeners[0].local_addr().unwrap());
        sweep.forget(listeners[1].local_addr().unwrap());
        drop(listeners);
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        assert_eq!(unhealthy().len(), 2, "{:?}", unhealthy());
    }

    #[test]
    fn answers_are_told_apart_by_their_flags() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let mut reply = [0u8; 40];
        reply[0] = 0x45;
        reply[20..22].copy_from_slice(&9u16.to_be_bytes());
        reply[28..32].copy_from_slice(&42u32.to_be_bytes());
        for (flags, answer) in [
            (SYN | ACK, Some(Answer::Open)),
            (RST | ACK, Some(Answer::Refused)),
            (RST, Some(Answer::Refused)),
            (ACK, None),
            (SYN, None),
        ] {
            reply[33] = flags;
            assert_eq!(parse(&reply, v4), answer.map(|a| (9, 42, a)), "{flags:#x}");
            // An IPv6 raw socket sees no IP header.
            let v6: IpAddr = "::1".parse().unwrap();
            assert_eq!(
                parse(&reply[20..], v6),
                answer.map(|a| (9, 42, a)),
                "{flags:#x}"
            );
        }
        assert_eq!(parse(&reply[..30], v4), None, "short");
    }
}
