//! What a sync sends: the commands that take the kernel's virtual servers (as wasp last
//! programmed them, or as a dump reads them) to the wanted ones, with graceful termination:
//! a real server that goes away is set to weight 0 and deleted later, once its connections
//! are gone or its drain timeout has passed. UDP and SCTP real servers go at once.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use wasp_model::Protocol;

use super::genl::{Command, Dest, Service, VsKey};

/// A real server's identity.
pub type DestKey = (IpAddr, u16);

/// A virtual server with its real servers and their weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Its settings.
    pub service: Service,
    /// Its real servers, by address and port, with their weights.
    pub dests: BTreeMap<DestKey, u32>,
}

impl Server {
    /// A server from its settings and real servers.
    pub fn new(service: Service, dests: &[Dest]) -> Self {
        Self {
            service,
            dests: dests.iter().map(|d| ((d.addr, d.port), d.weight)).collect(),
        }
    }
}

/// Real servers at weight 0, waiting to be deleted: since when.
pub type Draining = BTreeMap<(VsKey, DestKey), Instant>;

fn dest((addr, port): DestKey, weight: u32) -> Dest {
    Dest { addr, port, weight }
}

/// The commands that take virtual server `key` from `have` to `want` (either may be
/// absent). Removed real servers go to weight 0 and into `draining`; a real server that
/// comes back leaves it.
pub fn server(
    key: VsKey,
    have: Option<&Server>,
    want: Option<&Server>,
    draining: &mut Draining,
    now: Instant,
    out: &mut Vec<Command>,
) {
    match (have, want) {
        (None, None) => {}
        (Some(_), None) => {
            draining.retain(|(k, _), _| *k != key);
            out.push(Command::DelService(key));
        }
        (None, Some(w)) => {
            out.push(Command::NewService(w.service.clone()));
            for (&d, &weight) in &w.dests {
                out.push(Command::NewDest(key, dest(d, weight)));
            }
        }
        (Some(h), Some(w)) => {
            if h.service != w.service {
                out.push(Command::SetService(w.service.clone()));
            }
            for (&d, &weight) in &w.dests {
                let back = draining.remove(&(key, d)).is_some();
                match h.dests.get(&d) {
                    None => out.push(Command::NewDest(key, dest(d, weight))),
                    Some(&had) if had != weight || back => {
                        out.push(Command::SetDest(key, dest(d, weight)));
                    }
                    Some(_) => {}
                }
            }
            for (&d, &had) in &h.dests {
                if w.dests.contains_key(&d) {
                    continue;
                }
                // As kube-proxy: UDP and SCTP flows have no close to wait for (their
                // conntrack entries are cleared instead); TCP ones drain.
                if key.proto != Protocol::Tcp {
                    draining.remove(&(key, d));
                    out.push(Command::DelDest(key, dest(d, 0)));
                    continue;
                }
                if had != 0 || !draining.contains_key(&(key, d)) {
                    out.push(Command::SetDest(key, dest(d, 0)));
                }
                draining.entry((key, d)).or_insert(now);
            }
        }
    }
}

/// What the kernel holds after `cmds`, applied to `have` (wasp's record of its virtual
/// servers), so that the next partial sync starts from it.
pub fn record(have: &mut BTreeMap<VsKey, Server>, cmds: &[Command]) {
    for c in cmds {
        match c {
            Command::NewService(s) | Command::SetService(s) => {
                have.entry(s.key)
                    .and_modify(|x| x.service = s.clone())
                    .or_insert_with(|| Server::new(s.clone(), &[]));
            }
            Command::DelService(k) => {
                have.remove(k);
            }
            Command::NewDest(k, d) | Command::SetDest(k, d) => {
                if let Some(x) = have.get_mut(k) {
                    x.dests.insert((d.addr, d.port), d.weight);
                }
            }
            Command::DelDest(k, d) => {
                if let Some(x) = have.get_mut(k) {
                    x.dests.remove(&(d.addr, d.port));
                }
            }
            Command::GetServices | Command::GetDests(_) => {}
        }
    }
}

/// A command in `ipvsadm` syntax, for `wasp plan` and for errors.
pub fn line(c: &Command) -> String {
    use super::render::{dest_line, endpoint, service_line, target};
    match c {
        Command::NewService(s) => service_line(s),
        Command::SetService(s) => service_line(s).replacen("-A", "-E", 1),
        Command::DelService(k) => format!("-D {}", target(k)),
        Command::NewDest(k, d) => dest_line(k, d),
        Command::SetDest(k, d) => dest_line(k, d).replacen("-a", "-e", 1),
        Command::DelDest(k, d) => format!("-d {} -r {}", target(k), endpoint(d.addr, d.port)),
        Command::GetServices => "-L -n".into(),
        Command::GetDests(k) => format!("-L -n {}", target(k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> VsKey {
        VsKey::tuple(Protocol::Tcp, "10.96.0.10".parse().unwrap(), 80)
    }

    fn server_of(sched: &str, dests: &[(&str, u32)]) -> Server {
        let ds: Vec<Dest> = dests
            .iter()
            .map(|(a, w)| Dest {
                addr: a.parse().unwrap(),
                port: 8080,
                weight: *w,
            })
            .collect();
        Server::new(
            Service {
                key: key(),
                scheduler: sched.into(),
                flags: 0,
                timeout: 0,
            },
            &ds,
        )
    }

    fn lines(cmds: &[Command]) -> Vec<String> {
        cmds.iter().map(line).collect()
    }

    #[test]
    fn only_what_differs_is_sent_and_a_removed_server_drains() {
        let mut draining = Draining::new();
        let now = Instant::now();
        let have = server_of("wrr", &[("10.244.1.2", 1), ("10.244.1.3", 1)]);
        let want = server_of("mh", &[("10.244.1.2", 1), ("10.244.1.4", 2)]);
        let mut out = Vec::new();
        server(
            key(),
            Some(&have),
            Some(&want),
            &mut draining,
            now,
            &mut out,
        );
        assert_eq!(
            lines(&out),
            [
                "-E -t 10.96.0.10:80 -s mh",
                "-a -t 10.96.0.10:80 -r 10.244.1.4:8080 -m -w 2",
                "-e -t 10.96.0.10:80 -r 10.244.1.3:8080 -m -w 0",
            ]
        );
        assert_eq!(draining.len(), 1);
        // The next sync sends nothing for the drained server; it comes back at its weight.
        let mut recorded = BTreeMap::from([(key(), have)]);
        record(&mut recorded, &out);
        let have = recorded.remove(&key()).unwrap();
        let mut again = Vec::new();
        server(
            key(),
            Some(&have),
            Some(&want),
            &mut draining,
            now,
            &mut again,
        );
        assert!(again.is_empty(), "{again:?}");
        let back = server_of(
            "mh",
            &[("10.244.1.2", 1), ("10.244.1.3", 1), ("10.244.1.4", 2)],
        );
        let mut out = Vec::new();
        server(
            key(),
            Some(&have),
            Some(&back),
            &mut draining,
            now,
            &mut out,
        );
        assert_eq!(
            lines(&out),
            ["-e -t 10.96.0.10:80 -r 10.244.1.3:8080 -m -w 1"]
        );
        assert!(draining.is_empty());
    }

    #[test]
    fn new_and_removed_virtual_servers() {
        let mut draining = Draining::new();
        let want = server_of("wrr", &[("10.244.1.2", 1)]);
        let mut out = Vec::new();
        server(
            key(),
            None,
            Some(&want),
            &mut draining,
            Instant::now(),
            &mut out,
        );
        server(
            key(),
            Some(&want),
            None,
            &mut draining,
            Instant::now(),
            &mut out,
        );
        assert_eq!(
            lines(&out),
            [
                "-A -t 10.96.0.10:80 -s wrr",
                "-a -t 10.96.0.10:80 -r 10.244.1.2:8080 -m -w 1",
                "-D -t 10.96.0.10:80",
            ]
        );
    }
}
