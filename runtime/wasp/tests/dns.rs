//! The DNS responder on the real kernel: queries of every record type over UDP and TCP from a
//! client namespace, a headless Service too large for UDP, a headless Service's ready Pods, a
//! name forwarded upstream, and an edit of the config followed.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use common::{Node, modes, root_or_skip, wait_until};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

const SERVER: &str = "10.250.0.1:5353";

fn config(web_ip: &str) -> String {
    let db: Vec<String> = (1..=100)
        .map(|i| format!("{{ip: 10.244.61.{i}}}"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{clusterIP: {web_ip}, ports: [{{name: http, port: 80}}]}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: dual}}\nspec: {{ipFamilyPolicy: RequireDualStack, clusterIPs: [10.96.0.81, \"fd00:96::81\"], ports: [{{port: 80}}]}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: db}}\nspec: {{clusterIP: None, ports: [{{name: sql, port: 5432}}]}}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: db}}\nsubsets: [{{addresses: [{}], ports: [{{name: sql, port: 5432}}]}}]\n",
        db.join(", ")
    )
}

/// One query from namespace `ns`, over UDP or TCP.
fn query(ns: &str, name: &str, t: RecordType, tcp: bool) -> Message {
    let mut m = Message::new();
    m.set_id(7).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    exchange(ns, &m, tcp)
}

/// One query over UDP with an EDNS record that offers `payload` bytes.
fn query_edns(ns: &str, name: &str, payload: u16) -> Message {
    let mut m = Message::new();
    m.set_id(8).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let mut e = hickory_proto::op::Edns::new();
    e.set_max_payload(payload);
    m.set_edns(e);
    exchange(ns, &m, false)
}

/// Sends `m` from namespace `ns` and reads the answer.
fn exchange(ns: &str, m: &Message, tcp: bool) -> Message {
    let bytes = m.to_vec().unwrap();
    let server: SocketAddr = SERVER.parse().unwrap();
    let path = format!("/run/netns/{ns}");
    let answer = std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let timeout = Some(Duration::from_secs(3));
            if tcp {
                let mut c = TcpStream::connect_timeout(&server, Duration::from_secs(3)).unwrap();
                c.set_read_timeout(timeout).unwrap();
                c.write_all(&(bytes.len() as u16).to_be_bytes()).unwrap();
                c.write_all(&bytes).unwrap();
                let mut len = [0u8; 2];
                c.read_exact(&mut len).unwrap();
                let mut out = vec![0u8; usize::from(u16::from_be_bytes(len))];
                c.read_exact(&mut out).unwrap();
                out
            } else {
                let u = UdpSocket::bind("0.0.0.0:0").unwrap();
                u.set_read_timeout(timeout).unwrap();
                u.send_to(&bytes, server).unwrap();
                let mut out = vec![0u8; 4096];
                let n = u.recv(&mut out).unwrap();
                out.truncate(n);
                out
            }
        })
        .join()
        .unwrap()
    });
    Message::from_vec(&answer).unwrap()
}

fn ips(m: &Message) -> Vec<IpAddr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// A stub upstream: answers every query with one A record, 192.0.2.99.
const UPSTREAM: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 53))
while True:
    q, peer = s.recvfrom(512)
    end = 12
    while q[end] != 0:
        end += q[end] + 1
    question = q[12:end + 5]
    head = q[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"
    answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x63"
    s.sendto(head + question + answer, peer)
"#;

#[test]
fn service_names_over_udp_and_tcp_follow_the_config() {
    if !root_or_skip("dns") {
        return;
    }
    // The responder reads the store, not the kernel: one mode is enough.
    let (mode, backend) = modes()[0];
    let mut n = Node::new("dns", mode, backend);
    n.tb.add_pod("client", "10.244.2.10").unwrap();
    n.tb.add_pod("upstream", "10.244.62.2").unwrap();
    let up = n.tb.pod_ns("upstream");
    n.tb.spawn_in(&up, &["python3", "-c", UPSTREAM], false)
        .unwrap();
    n.extra_args = [
        "--dns-bind-address",
        SERVER,
        "--dns-upstream",
        "10.244.62.2",
    ]
    .map(String::from)
    .to_vec();
    n.write("svc.yaml", &config("10.96.0.80"));
    n.start();
    let c = n.tb.pod_ns("client");
    for tcp in [false, true] {
        let a = query(&c, "web.shop.svc.cluster.local.", RecordType::A, tcp);
        assert_eq!(
            ips(&a),
            ["10.96.0.80".parse::<IpAddr>().unwrap()],
            "tcp={tcp} {a:?}"
        );
        assert!(a.authoritative());
        let aaaa = query(&c, "dual.default.svc.cluster.local.", RecordType::AAAA, tcp);
        assert_eq!(
            ips(&aaaa),
            ["fd00:96::81".parse::<IpAddr>().unwrap()],
            "{aaaa:?}"
        );
        let srv = query(
            &c,
            "_http._tcp.web.shop.svc.cluster.local.",
            RecordType::SRV,
            tcp,
        );
        let RData::SRV(s) = srv.answers()[0].data() else {
            panic!("{srv:?}")
        };
        assert_eq!(
            (s.port(), s.target().to_ascii()),
            (80, "web.shop.svc.cluster.local.".into())
        );
        let nx = query(&c, "nope.shop.svc.cluster.local.", RecordType::A, tcp);
        assert_eq!(nx.response_code(), ResponseCode::NXDomain);
    }
    // A headless Service: its endpoints; 100 of them do not fit in 512 bytes of UDP.
    let udp = query(&c, "db.default.svc.cluster.local.", RecordType::A, false);
    assert!(udp.truncated() && udp.answers().is_empty(), "{udp:?}");
    let tcp = query(&c, "db.default.svc.cluster.local.", RecordType::A, true);
    assert_eq!(ips(&tcp).len(), 100, "{tcp:?}");
    // With EDNS the client offers room for them over UDP; asked again, the answer comes from
    // the responder's cache, and a smaller offer is still truncated.
    for _ in 0..2 {
        let big = query_edns(&c, "db.default.svc.cluster.local.", 4096);
        assert!(!big.truncated() && ips(&big).len() == 100, "{big:?}");
        let small = query_edns(&c, "db.default.svc.cluster.local.", 512);
        assert!(small.truncated() && small.answers().is_empty(), "{small:?}");
    }
    wait_until("a name outside the cluster domain is forwarded", || {
        let fwd = query(&c, "example.org.", RecordType::A, false);
        ips(&fwd) == ["192.0.2.99".parse::<IpAddr>().unwrap()]
    });
    // A headless Service with a selector: its ready Pods, following their readiness.
    let cache = |b_ready: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: cache}}\nspec: {{clusterIP: None, selector: {{app: cache}}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: cache-a, labels: {{app: cache}}}}\nspec: {{containers: [{{name: c}}]}}\nstatus: {{phase: Running, podIP: 10.244.63.2}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: cache-b, labels: {{app: cache}}}}\nspec: {{containers: [{{name: c}}]}}\nstatus: {{phase: Running, podIP: 10.244.63.3, conditions: [{{type: Ready, status: \"{b_ready}\"}}]}}\n"
        )
    };
    let cache_ips = || {
        let mut got = ips(&query(
            &c,
            "cache.default.svc.cluster.local.",
            RecordType::A,
            false,
        ));
        got.sort();
        got
    };
    n.write("cache.yaml", &cache("False"));
    wait_until("the ready Pod is served", || {
        cache_ips() == ["10.244.63.2".parse::<IpAddr>().unwrap()]
    });
    n.write("cache.yaml", &cache("True"));
    wait_until("both once the other is ready", || cache_ips().len() == 2);
    // An edit of the file moves the name.
    n.write("svc.yaml", &config("10.96.0.82"));
    wait_until("the new address is served", || {
        ips(&query(
            &c,
            "web.shop.svc.cluster.local.",
            RecordType::A,
            false,
        )) == ["10.96.0.82".parse::<IpAddr>().unwrap()]
    });
}
