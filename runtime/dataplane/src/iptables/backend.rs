//! The iptables tools: which backend the host uses, and the calls that touch the kernel.

use std::collections::BTreeSet;
use std::fmt;

use super::chain;
use crate::core::Family;
use crate::exec::{self, ExecError};

/// The iptables flavour the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// iptables over nf_tables (`iptables-nft`).
    Nft,
    /// The legacy x_tables kernel interface (`iptables-legacy`).
    Legacy,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Nft => "nft",
            Self::Legacy => "legacy",
        })
    }
}

/// The hooks from the built-in chains into wasp's, as (table, chain, rule spec), in the order
/// they stand in their built-in chain (kube-proxy's).
const HOOKS: &[(&str, &str, &str)] = &[
    (
        "nat",
        "PREROUTING",
        "-m comment --comment \"wasp service portals\" -j WASP-SERVICES",
    ),
    (
        "nat",
        "OUTPUT",
        "-m comment --comment \"wasp service portals\" -j WASP-SERVICES",
    ),
    (
        "nat",
        "POSTROUTING",
        "-m comment --comment \"wasp postrouting rules\" -j WASP-POSTROUTING",
    ),
    ("filter", "INPUT", LB_FIREWALL),
    (
        "filter",
        "INPUT",
        "-m comment --comment \"wasp health check service ports\" -j WASP-NODEPORTS",
    ),
    ("filter", "INPUT", EXTERNAL),
    ("filter", "INPUT", "-j WASP-FIREWALL"),
    ("filter", "FORWARD", LB_FIREWALL),
    (
        "filter",
        "FORWARD",
        "-m comment --comment \"wasp forwarding rules\" -j WASP-FORWARD",
    ),
    (
        "filter",
        "FORWARD",
        "-m conntrack --ctstate NEW -m comment --comment \"wasp service portals\" -j WASP-SERVICES",
    ),
    ("filter", "FORWARD", EXTERNAL),
    ("filter", "OUTPUT", LB_FIREWALL),
    (
        "filter",
        "OUTPUT",
        "-m conntrack --ctstate NEW -m comment --comment \"wasp service portals\" -j WASP-SERVICES",
    ),
    ("filter", "OUTPUT", "-j WASP-FIREWALL"),
    (
        "mangle",
        "PREROUTING",
        "-m comment --comment \"wasp userspace proxy replies\" -j WASP-PROXY-REPLIES",
    ),
];

const LB_FIREWALL: &str = "-m conntrack --ctstate NEW -m comment --comment \"wasp load balancer firewall\" -j WASP-PROXY-FIREWALL";
const EXTERNAL: &str = "-m conntrack --ctstate NEW -m comment --comment \"wasp externally-visible service portals\" -j WASP-EXTERNAL-SERVICES";

/// Adds to restore input an `-I` for each hook `snap` did not see, in the same transaction as
/// the chains they jump to, so a deleted hook is repaired by the next full sync. (One
/// iptables-save and one restore beat a `-C` and `-I` per hook: with iptables-legacy every
/// call reads and writes the whole table.)
pub fn with_missing_hooks(text: &str, snap: &Snapshot) -> String {
    let mut out = String::with_capacity(text.len() + 512);
    let mut table = "";
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = HOOKS.iter().find(|h| h.0 == t).map_or("", |h| h.0);
        }
        if line == "COMMIT" {
            // Each goes in first, so the last inserted stands first: insert in reverse.
            for (i, (t, chain, spec)) in HOOKS.iter().enumerate().rev() {
                if *t == table && !snap.hooks.contains(&i) {
                    out.push_str(&format!("-I {chain} 1 {spec}\n"));
                }
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// What a full sync reads before it writes.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The WASP- chains in nat.
    pub nat_chains: BTreeSet<String>,
    /// The indices (in the hook list) of the hooks present.
    hooks: Vec<usize>,
}

/// One family's tools on one backend.
#[derive(Debug, Clone)]
pub struct Tables {
    /// The backend.
    pub backend: Backend,
    /// IPv4 (`iptables`) or IPv6 (`ip6tables`).
    pub family: Family,
}

impl Tables {
    /// The tool of this family and backend: `iptables-legacy-save` for `-save`, say.
    pub fn tool(&self, suffix: &str) -> String {
        let base = match self.family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        format!("{base}-{}{suffix}", self.backend)
    }

    /// Whether this family's tools are installed.
    pub fn available(&self) -> bool {
        exec::available(&self.tool("-restore"))
    }

    /// Applies restore input without flushing other chains; atomic per table.
    ///
    /// # Errors
    /// Fails when iptables-restore rejects the input; the kernel keeps the previous rules.
    pub fn restore(&self, input: &str) -> Result<(), ExecError> {
        exec::run(
            &self.tool("-restore"),
            &["-w", "5", "--noflush"],
            Some(input),
        )
        .map(|_| ())
    }

    /// The WASP- chains now in `table`.
    ///
    /// # Errors
    /// Fails when iptables-save fails.
    pub fn chains(&self, table: &str) -> Result<BTreeSet<String>, ExecError> {
        let out = exec::run(&self.tool("-save"), &["-t", table], None)?;
        Ok(chains_in_save(&out))
    }

    /// Reads nat, filter and mangle once: the WASP- chains in nat and the hooks that are
    /// present.
    ///
    /// # Errors
    /// Fails when iptables-save fails.
    pub fn snapshot(&self) -> Result<Snapshot, ExecError> {
        let nat = exec::run(&self.tool("-save"), &["-t", "nat"], None)?;
        let filter = exec::run(&self.tool("-save"), &["-t", "filter"], None)?;
        let mangle = exec::run(&self.tool("-save"), &["-t", "mangle"], None)?;
        let present = |table: &str, text: &str, out: &mut Vec<usize>| {
            for (i, (t, chain, spec)) in HOOKS.iter().enumerate() {
                let line = format!("-A {chain} {spec}");
                if *t == table && text.lines().any(|l| l == line) {
                    out.push(i);
                }
            }
        };
        let mut hooks = Vec::new();
        present("nat", &nat, &mut hooks);
        present("filter", &filter, &mut hooks);
        present("mangle", &mangle, &mut hooks);
        Ok(Snapshot {
            nat_chains: chains_in_save(&nat),
            hooks,
        })
    }

    /// Removes the hooks and every WASP- chain in nat, filter and mangle.
    ///
    /// # Errors
    /// Fails when the tables cannot be read or written.
    pub fn cleanup(&self) -> Result<(), ExecError> {
        let tool = self.tool("");
        for (table, chain, spec) in HOOKS {
            let args = split(spec);
            let mut delete = vec!["-w", "5", "-t", table, "-D", chain];
            delete.extend(args.iter().map(String::as_str));
            while exec::run(&tool, &delete, None).is_ok() {}
        }
        let mut input = String::new();
        for table in ["filter", "nat", "mangle"] {
            let chains = self.chains(table)?;
            input.push_str(&format!("*{table}\n"));
            for c in &chains {
                input.push_str(&format!(":{c} - [0:0]\n"));
            }
            for c in &chains {
                input.push_str(&format!("-X {c}\n"));
            }
            input.push_str("COMMIT\n");
        }
        self.restore(&input)
    }

    /// Counts the rules and chains of this backend, for detection.
    fn footprint(&self) -> (usize, bool, bool) {
        let Ok(out) = exec::run(&self.tool("-save"), &[], None) else {
            return (0, false, false);
        };
        let rules = out.lines().filter(|l| l.starts_with("-A ")).count();
        let ours = out
            .lines()
            .any(|l| l.starts_with(&format!(":{}", chain::PREFIX)));
        let kubelet = out
            .lines()
            .any(|l| l.starts_with(":KUBE-IPTABLES-HINT") || l.starts_with(":KUBE-KUBELET-CANARY"));
        (rules, ours, kubelet)
    }
}

/// Chooses the backend as kube-proxy's iptables wrapper does, preferring the one wasp already
/// programmed, then the one kubelet uses, then the one with more rules; nft when in doubt.
pub fn detect(family: Family) -> Backend {
    let nft = Tables {
        backend: Backend::Nft,
        family,
    };
    let legacy = Tables {
        backend: Backend::Legacy,
        family,
    };
    if !legacy.available() {
        return Backend::Nft;
    }
    if !nft.available() {
        return Backend::Legacy;
    }
    let (n_rules, n_ours, n_kubelet) = nft.footprint();
    let (l_rules, l_ours, l_kubelet) = legacy.footprint();
    match () {
        _ if n_ours != l_ours => {
            if l_ours {
                Backend::Legacy
            } else {
                Backend::Nft
            }
        }
        _ if n_kubelet != l_kubelet => {
            if l_kubelet {
                Backend::Legacy
            } else {
                Backend::Nft
            }
        }
        _ if l_rules > n_rules => Backend::Legacy,
        _ => Backend::Nft,
    }
}

/// The iptables mode's WASP- chains declared in iptables-save output (not the ipvs mode's
/// `WASP-IPVS-` helper chains).
pub fn chains_in_save(out: &str) -> BTreeSet<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| c.starts_with(chain::PREFIX) && !c.starts_with("WASP-IPVS-"))
        .map(str::to_string)
        .collect()
}

/// Splits a rule spec into arguments, honouring double quotes.
pub fn split(spec: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in spec.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_honours_quotes() {
        assert_eq!(
            split("-m comment --comment \"a b\" -j X"),
            ["-m", "comment", "--comment", "a b", "-j", "X"]
        );
    }

    #[test]
    fn chains_are_read_from_save_output() {
        let save = "*nat\n:PREROUTING ACCEPT [0:0]\n:WASP-SERVICES - [0:0]\n:WASP-SVC-ABC - [0:0]\n:KUBE-SERVICES - [0:0]\n-A WASP-SERVICES -j WASP-SVC-ABC\nCOMMIT\n";
        assert_eq!(
            chains_in_save(save).into_iter().collect::<Vec<_>>(),
            ["WASP-SERVICES", "WASP-SVC-ABC"]
        );
    }
}
