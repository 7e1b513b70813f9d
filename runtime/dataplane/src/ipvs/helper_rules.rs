//! What writes the helper's rules: the nftables table ([`super::helper`], `nft -f` and one
//! nfnetlink batch of element changes), or, where the host has no nftables, iptables chains
//! ([`super::helper_ipt`], one `iptables-restore --noflush` per family and sync).

use std::collections::BTreeSet;

use super::plan::Plan;
use super::render::Elem;
use super::{elements, helper, helper_ipt, io_error};
use crate::core::{Family, RenderConfig};
use crate::exec::{self, ExecError};
use crate::iptables::{Backend, Tables};
use crate::mode::{BackendChoice, RulesChoice};
use crate::nftables::socket::Socket;

/// The helper's writer.
#[derive(Debug)]
pub(super) enum Helper {
    /// The `wasp-ipvs` tables; the socket for element changes, once opened.
    Nftables(Option<Socket>),
    /// `WASP-IPVS-` chains on this backend.
    Iptables(Backend),
}

/// Whether the host can run the nftables helper: the `nft` tool, and a kernel that lists
/// its tables (or refuses only for want of privilege, as to a dry run as a user).
fn nftables_works() -> bool {
    if !exec::available("nft") {
        return false;
    }
    match exec::run("nft", &["list", "tables"], None) {
        Ok(_) => true,
        Err(e) => e.to_string().contains("Operation not permitted"),
    }
}

impl Helper {
    /// The writer `choice` asks for; with `Auto`, nftables where it works, else iptables
    /// (on the legacy backend unless one was given: iptables-nft needs nftables too).
    pub(super) fn choose(choice: RulesChoice, backend: BackendChoice) -> Self {
        match choice {
            RulesChoice::Nftables => Self::Nftables(None),
            RulesChoice::Iptables => Self::Iptables(backend.resolve()),
            RulesChoice::Auto if nftables_works() => Self::Nftables(None),
            RulesChoice::Auto => {
                let backend = backend.without_nftables();
                tracing::warn!(%backend, "ipvs mode: no nftables on this host; the helper rules are iptables chains");
                Self::Iptables(backend)
            }
        }
    }

    /// Whether it writes iptables chains.
    pub(super) fn is_iptables(&self) -> bool {
        matches!(self, Self::Iptables(_))
    }

    /// The tools of family `f`, when they are installed.
    fn tables(backend: Backend, f: Family) -> Option<Tables> {
        let t = Tables { backend, family: f };
        (f == Family::V4 || t.available()).then_some(t)
    }

    /// The hooks (by index in [`helper_ipt::HOOKS`]) already in family `f`'s tables; none
    /// when they cannot be read (a dry run as a user).
    fn hooks(t: &Tables) -> Vec<usize> {
        let tool = t.tool("-save");
        let save = |table: &str| exec::run(&tool, &["-t", table], None).unwrap_or_default();
        let (filter, nat) = (save("filter"), save("nat"));
        (helper_ipt::HOOKS.iter().enumerate())
            .filter(|(_, (table, chain, spec))| {
                let text = if *table == "nat" { &nat } else { &filter };
                let line = format!("-A {chain} {spec}");
                text.lines().any(|l| l == line)
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// The whole helper of family `f`, replacing what is there.
    pub(super) fn full(&self, cfg: &RenderConfig, f: Family, all: &BTreeSet<&Elem>) -> String {
        match self {
            Self::Nftables(_) => helper::full(cfg, f, all),
            Self::Iptables(b) => match Self::tables(*b, f) {
                Some(t) => helper_ipt::full(cfg, f, all, &Self::hooks(&t)),
                None => String::new(),
            },
        }
    }

    /// Family `f`'s firewall rewritten with `all`'s source ranges.
    pub(super) fn firewall(&self, f: Family, all: &BTreeSet<&Elem>) -> String {
        match self {
            Self::Nftables(_) => helper::firewall(f, all),
            Self::Iptables(_) => helper_ipt::firewall(f, all),
        }
    }

    /// What [`Helper::apply`] sends for `plan`, as the tools' input.
    pub(super) fn preview(&self, cfg: &RenderConfig, plan: &Plan) -> String {
        let mut out = String::new();
        match self {
            Self::Nftables(_) => {
                out += "# nft -f -\n";
                for (_, text) in &plan.helper {
                    out += text;
                }
                for f in Family::ALL {
                    out += &helper::elements(f, "delete", plan.removed.iter());
                    out += &helper::elements(f, "add", plan.added.iter());
                }
            }
            Self::Iptables(_) => {
                for f in Family::ALL {
                    out += match f {
                        Family::V4 => "# iptables-restore --noflush\n",
                        Family::V6 => "# ip6tables-restore --noflush\n",
                    };
                    out += &Self::input(cfg, f, plan);
                }
            }
        }
        out
    }

    /// Family `f`'s restore input for `plan`.
    fn input(cfg: &RenderConfig, f: Family, plan: &Plan) -> String {
        let mut text: String = (plan.helper.iter())
            .filter(|(g, _)| *g == f)
            .map(|(_, t)| t.as_str())
            .collect();
        text += &helper_ipt::changes(cfg, f, &plan.removed, &plan.added);
        text
    }

    /// Writes `plan`'s helper changes.
    ///
    /// # Errors
    /// Fails when the tool or the kernel rejects them.
    pub(super) fn apply(&mut self, cfg: &RenderConfig, plan: &Plan) -> Result<(), ExecError> {
        match self {
            Self::Nftables(socket) => {
                let text: String = plan.helper.iter().map(|(_, t)| t.as_str()).collect();
                if !text.is_empty() {
                    exec::run("nft", &["-f", "-"], Some(&text))?;
                }
                send_elements(socket, &plan.removed, &plan.added)
            }
            Self::Iptables(b) => {
                for f in Family::ALL {
                    let text = Self::input(cfg, f, plan);
                    match Self::tables(*b, f) {
                        Some(t) if !text.is_empty() => t.restore(&text)?,
                        _ => {}
                    }
                }
                Ok(())
            }
        }
    }

    /// Removes the helper's rules of every kind there are: the tables, and the chains on
    /// either iptables backend. The errors of the kind in use are returned.
    pub(super) fn cleanup(&self) -> Vec<ExecError> {
        let mut errors = Vec::new();
        if exec::available("nft")
            && let Err(e) = exec::run("nft", &["-f", "-"], Some(&helper::delete()))
            && !self.is_iptables()
        {
            errors.push(e);
        }
        for backend in [Backend::Nft, Backend::Legacy] {
            for f in Family::ALL {
                let t = Tables { backend, family: f };
                if t.available() && chains_in(&t) {
                    errors.extend(remove_chains(&t).err());
                }
            }
        }
        errors
    }

    /// Whether any helper rules are left, of either kind.
    pub(super) fn left_behind() -> bool {
        let tables = exec::available("nft")
            && Family::ALL.iter().any(|f| {
                exec::run("nft", &["list", "table", f.nft_name(), helper::TABLE], None).is_ok()
            });
        tables
            || [Backend::Nft, Backend::Legacy].into_iter().any(|backend| {
                Family::ALL.into_iter().any(|family| {
                    let t = Tables { backend, family };
                    t.available() && chains_in(&t)
                })
            })
    }
}

/// Whether `t`'s filter or nat table holds a helper chain.
fn chains_in(t: &Tables) -> bool {
    let tool = t.tool("-save");
    ["filter", "nat"]
        .iter()
        .any(|table| exec::run(&tool, &["-t", table], None).is_ok_and(|s| helper_ipt::present(&s)))
}

/// Removes the hooks, then the chains.
fn remove_chains(t: &Tables) -> Result<(), ExecError> {
    let tool = t.tool("");
    for (table, chain, spec) in helper_ipt::HOOKS {
        let mut delete = vec!["-w", "5", "-t", table, "-D", chain];
        let args = crate::iptables::backend::split(spec);
        delete.extend(args.iter().map(String::as_str));
        while exec::run(&tool, &delete, None).is_ok() {}
    }
    t.restore(&helper_ipt::delete())
}

/// Sends the helper table's element changes in one netlink batch.
fn send_elements(
    socket: &mut Option<Socket>,
    removed: &[Elem],
    added: &[Elem],
) -> Result<(), ExecError> {
    let groups = elements::groups(removed, added);
    if groups.is_empty() {
        return Ok(());
    }
    if socket.is_none() {
        let s = Socket::open().map_err(io_error("cannot open a netfilter netlink socket"))?;
        *socket = Some(s);
    }
    let socket = socket.as_mut().expect("just opened");
    let batch = elements::batch(&groups, socket.next_seq());
    match socket.apply_batch(&batch) {
        Ok(_) => Ok(()),
        Err(Ok(r)) => {
            let g = r.op.and_then(|i| groups.get(i));
            let what = g.map_or("the helper table's elements".to_string(), |g| {
                format!(
                    "{} {} elements of {} {}",
                    if g.2 { "adding" } else { "deleting" },
                    g.3.len(),
                    g.0.nft_name(),
                    g.1
                )
            });
            Err(ExecError::Ipvs {
                what: format!("the kernel rejected {what} in table {}", helper::TABLE),
                source: r.error,
            })
        }
        Err(Err(e)) => Err(io_error("the netfilter socket failed")(e)),
    }
}
