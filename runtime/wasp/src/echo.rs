//! A tiny real server and client: the demo's and the tests' pods.
//!
//! The server answers HTTP/1.0 over TCP and single datagrams over UDP with
//! `Hello from <name>`, and reports the peer address it saw (to show masquerade). The client
//! makes N fresh connections and prints one line per attempt:
//! `ok <name> <peer>`, `refused`, `timeout` or `error <why>`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};

/// Serves TCP and UDP on the given ports, IPv4 and IPv6 (one dual-stack socket each), until
/// killed.
///
/// # Errors
/// Fails when a port cannot be bound.
pub async fn serve(name: String, tcp: Vec<u16>, udp: Vec<u16>) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for port in tcp {
        let l = TcpListener::bind(("::", port)).await?;
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((mut s, peer)) = l.accept().await else { continue };
                let name = name.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    // Read the request head (or whatever comes within a moment), then answer.
                    let _ = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await;
                    let body = format!("Hello from {name}\n");
                    let resp = format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Peer: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len(),
                        peer.ip().to_canonical()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        }));
    }
    for port in udp {
        let sock = UdpSocket::bind(("::", port)).await?;
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((_, peer)) = sock.recv_from(&mut buf).await else {
                    continue;
                };
                let reply = format!("Hello from {name}\nX-Peer: {}\n", peer.ip().to_canonical());
                let _ = sock.send_to(reply.as_bytes(), peer).await;
            }
        }));
    }
    // The listeners run until the process is killed.
    let _tasks = tasks;
    std::future::pending().await
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A backend answered.
    Answered {
        /// Its name.
        name: String,
        /// The client address it saw.
        peer: String,
    },
    /// The connection was refused (TCP RST or ICMP unreachable).
    Refused,
    /// No answer in time.
    Timeout,
    /// Anything else.
    Error(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Answered { name, peer } => write!(f, "ok {name} {peer}"),
            Self::Refused => f.write_str("refused"),
            Self::Timeout => f.write_str("timeout"),
            Self::Error(e) => write!(f, "error {e}"),
        }
    }
}

impl Outcome {
    /// Parses a line printed by `wasp probe`.
    pub fn parse(line: &str) -> Self {
        let mut w = line.split_whitespace();
        match (w.next(), w.next(), w.next()) {
            (Some("ok"), Some(name), Some(peer)) => Self::Answered {
                name: name.into(),
                peer: peer.into(),
            },
            (Some("refused"), ..) => Self::Refused,
            (Some("timeout"), ..) => Self::Timeout,
            _ => Self::Error(line.to_string()),
        }
    }
}

fn parse_reply(text: &str) -> Outcome {
    let name = text
        .lines()
        .find_map(|l| l.strip_prefix("Hello from "))
        .map(str::trim);
    let peer = text
        .lines()
        .find_map(|l| l.strip_prefix("X-Peer: "))
        .map(str::trim);
    match (name, peer) {
        (Some(n), Some(p)) => Outcome::Answered {
            name: n.into(),
            peer: p.into(),
        },
        _ => Outcome::Error(format!("unexpected reply {text:?}")),
    }
}

fn io_outcome(e: &std::io::Error) -> Outcome {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
        std::io::ErrorKind::TimedOut => Outcome::Timeout,
        _ => Outcome::Error(e.kind().to_string().replace(' ', "-")),
    }
}

/// One TCP request, from `source` when given.
pub async fn probe_tcp(addr: SocketAddr, source: Option<IpAddr>, timeout: Duration) -> Outcome {
    let attempt = async {
        let sock = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = source {
            sock.bind(SocketAddr::new(ip, 0))?;
        }
        let mut s = sock.connect(addr).await?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: wasp\r\n\r\n").await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Outcome::Timeout,
        Ok(Err(e)) => io_outcome(&e),
        Ok(Ok(text)) => parse_reply(&text),
    }
}

/// One UDP datagram and its answer, from `source` when given.
pub async fn probe_udp(addr: SocketAddr, source: Option<IpAddr>, timeout: Duration) -> Outcome {
    let attempt = async {
        let any: IpAddr = if addr.is_ipv4() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            IpAddr::from([0u16; 8])
        };
        let s = UdpSocket::bind(SocketAddr::new(source.unwrap_or(any), 0)).await?;
        s.connect(addr).await?;
        s.send(b"hello").await?;
        let mut buf = [0u8; 1500];
        let n = s.recv(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Outcome::Timeout,
        Ok(Err(e)) => io_outcome(&e),
        Ok(Ok(text)) => parse_reply(&text),
    }
}

/// `count` probes, each on a fresh socket (from `source` when given), one line per probe on
/// stdout.
pub async fn probe(
    udp: bool,
    addr: SocketAddr,
    source: Option<IpAddr>,
    count: u32,
    timeout: Duration,
) -> Vec<Outcome> {
    let mut out = Vec::new();
    for _ in 0..count {
        let o = if udp {
            probe_udp(addr, source, timeout).await
        } else {
            probe_tcp(addr, source, timeout).await
        };
        println!("{o}");
        out.push(o);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_through_their_lines() {
        for o in [
            Outcome::Answered {
                name: "pod-a".into(),
                peer: "10.0.0.1".into(),
            },
            Outcome::Refused,
            Outcome::Timeout,
        ] {
            assert_eq!(Outcome::parse(&o.to_string()), o);
        }
    }

    #[tokio::test]
    async fn serves_and_probes_on_loopback() {
        let name = "loopback-test".to_string();
        tokio::spawn(serve(name, vec![47811], vec![47811]));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let addr: SocketAddr = "127.0.0.1:47811".parse().unwrap();
        let want = Outcome::Answered {
            name: "loopback-test".into(),
            peer: "127.0.0.1".into(),
        };
        assert_eq!(probe_tcp(addr, None, Duration::from_secs(2)).await, want);
        assert_eq!(probe_udp(addr, None, Duration::from_secs(2)).await, want);
        assert_eq!(
            probe_tcp("127.0.0.1:1".parse().unwrap(), None, Duration::from_secs(2)).await,
            Outcome::Refused
        );
    }
}
