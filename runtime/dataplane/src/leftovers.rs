//! What the other mode left behind. As kube-proxy cleans up other modes' rules at start, a
//! node switched from one mode to the other must not keep serving Services with both.

use crate::core::{Family, RenderConfig};
use crate::iptables::{Backend, Iptables, Tables};
use crate::ipvs::{Ipvs, link::DEVICE};
use crate::mode::{Dataplane, Mode};
use crate::nftables::{Nftables, socket::Socket};

/// Removes the rules of the modes other than `running`'s (once probed: the userspace mode
/// writes either the nftables mode's tables or the iptables mode's chains); returns what was
/// removed. Failures are reported in the list too: they never stop the daemon.
pub fn remove_other_modes(running: &dyn Dataplane, cfg: &RenderConfig) -> Vec<String> {
    let mode = running.mode();
    let mut done = Vec::new();
    if mode != Mode::Userspace {
        done.extend(crate::userspace::remove_reply_routing());
    }
    if !running.writes_nftables_tables() {
        done.extend(nftables_tables(cfg));
    }
    if !running.writes_iptables_chains() {
        done.extend(iptables_chains(cfg));
    }
    if mode != Mode::Ipvs {
        let mut ipvs = Ipvs::new(cfg.clone(), std::time::Duration::ZERO);
        if ipvs.left_behind() {
            done.push(match ipvs.cleanup() {
                Ok(()) => format!(
                    "removed the ipvs mode's virtual servers, {DEVICE} and its helper table"
                ),
                Err(e) => format!("cannot remove the ipvs mode's leftovers: {e}"),
            });
        }
    }
    done
}

fn iptables_chains(cfg: &RenderConfig) -> Vec<String> {
    let mut done = Vec::new();
    for backend in [Backend::Nft, Backend::Legacy] {
        let ours = Family::ALL.into_iter().any(|family| {
            let t = Tables { backend, family };
            t.available()
                && ["nat", "filter", "mangle"]
                    .iter()
                    .any(|table| t.chains(table).is_ok_and(|c| !c.is_empty()))
        });
        if ours {
            done.push(match Iptables::new(backend, cfg.clone()).cleanup() {
                Ok(()) => format!("removed the iptables mode's WASP- chains (iptables-{backend})"),
                Err(e) => format!(
                    "cannot remove the iptables mode's WASP- chains (iptables-{backend}): {e}"
                ),
            });
        }
    }
    done
}

fn nftables_tables(cfg: &RenderConfig) -> Option<String> {
    let ours = Socket::open().is_ok_and(|mut s| {
        Family::ALL
            .into_iter()
            .any(|f| s.names(f, false).is_ok_and(|c| !c.is_empty()))
    });
    ours.then(|| match Nftables::new(cfg.clone()).cleanup() {
        Ok(()) => "removed the nftables mode's tables (ip wasp, ip6 wasp)".to_string(),
        Err(e) => format!("cannot remove the nftables mode's tables: {e}"),
    })
}
