//! The `wasp` command line.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use wasp::daemon;
use wasp::options::{Flags, LogFormat, Settings, parse_duration};
use wasp::planning::Planning;
use wasp_dataplane::{Mode, SyncRequest};
use wasp_model::ProxyState;

/// wasp, the WebAssembly Service Proxy: Kubernetes Services on one node.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The log format: text (control characters escaped) or json [default: the config
    /// file's logging.format, else text].
    #[arg(long, global = true, value_enum)]
    logging_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: watch the source and keep the kernel in step.
    Run {
        #[command(flatten)]
        flags: Flags,
    },
    /// Print exactly what `run` would apply now, changing nothing.
    Plan {
        #[command(flatten)]
        flags: Flags,
    },
    /// Check the source's objects; print every error and exit non-zero if there is one.
    Validate {
        #[command(flatten)]
        flags: Flags,
    },
    /// Remove everything wasp installed for a mode, and nothing else.
    Cleanup {
        /// The dataplane mode.
        #[arg(long, default_value = "nftables")]
        mode: Mode,
        /// The iptables backend.
        #[arg(long, value_enum, default_value = "auto")]
        iptables_backend: wasp::options::BackendFlag,
        /// The userspace mode's capture rules (auto: nftables, and iptables where a start
        /// fell back to them).
        #[arg(long, value_enum, default_value = "auto")]
        userspace_rules: wasp::options::RulesFlag,
    },
    /// Run the article's walk-through in throw-away network namespaces (as root).
    Demo {
        /// The dataplane mode.
        #[arg(long, default_value = "nftables")]
        mode: Mode,
    },
    /// Show what the running daemon serves: each Service port with its addresses, balancer
    /// and endpoints (readiness and health), the last sync, and the config errors.
    Status {
        /// The daemon's metrics address (`--metrics-bind-address`), where it answers.
        #[arg(long, default_value = "127.0.0.1:10249")]
        address: SocketAddr,
        /// A table, or the same data as JSON.
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Serve "Hello from NAME" over TCP and UDP (a demo and test pod).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        name: String,
        #[arg(long)]
        tcp: Vec<u16>,
        #[arg(long)]
        udp: Vec<u16>,
    },
    /// Make COUNT fresh connections and print one outcome per line (a demo and test client).
    #[command(hide = true)]
    Probe {
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        timeout: Duration,
        /// The source address to connect from.
        #[arg(long)]
        source: Option<std::net::IpAddr>,
        /// tcp or udp.
        proto: String,
        addr: SocketAddr,
    },
}

/// `wasp status --output`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Output {
    Table,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command, cli.logging_format) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wasp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// The settings of `run`, `plan` and `validate`, with the log set up as they ask.
fn settings(flags: &Flags, format: Option<LogFormat>) -> anyhow::Result<Settings> {
    let s = Settings::new(flags)?;
    wasp::logging::init(format.or(s.log_format).unwrap_or_default());
    for w in &s.warnings {
        tracing::warn!("{w}");
    }
    Ok(s)
}

fn run(cmd: Command, format: Option<LogFormat>) -> anyhow::Result<ExitCode> {
    if !matches!(
        cmd,
        Command::Run { .. } | Command::Plan { .. } | Command::Validate { .. }
    ) {
        wasp::logging::init(format.unwrap_or_default());
    }
    match cmd {
        Command::Run { flags } => {
            let settings = settings(&flags, format)?;
            runtime()?.block_on(daemon::run(settings))?;
        }
        Command::Plan { flags } => plan(&settings(&flags, format)?)?,
        Command::Validate { flags } => return validate(&settings(&flags, format)?),
        Command::Cleanup {
            mode,
            iptables_backend,
            userspace_rules,
        } => {
            let flags = Flags {
                mode: Some(mode),
                iptables_backend: Some(iptables_backend),
                userspace_rules: Some(userspace_rules),
                config_dir: Some(".".into()),
                ..Flags::default()
            };
            Settings::new(&flags)?.dataplane().cleanup()?;
            println!("removed wasp's {mode} rules");
        }
        Command::Demo { mode } => {
            let cancel = Arc::new(AtomicBool::new(false));
            let c = cancel.clone();
            let rt = runtime()?;
            rt.spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    c.store(true, Ordering::SeqCst);
                }
            });
            wasp::demo::run(&mode.to_string(), cancel)?;
        }
        Command::Status { address, output } => {
            let s = wasp::status::fetch(address)?;
            match output {
                Output::Table => print!("{}", wasp::status::table(&s)),
                Output::Json => println!("{}", serde_json::to_string_pretty(&s)?),
            }
        }
        Command::Serve { name, tcp, udp } => {
            runtime()?.block_on(wasp::echo::serve(name, tcp, udp))?
        }
        Command::Probe {
            count,
            timeout,
            source,
            proto,
            addr,
        } => {
            let udp = match proto.as_str() {
                "tcp" => false,
                "udp" => true,
                p => anyhow::bail!("unknown protocol {p:?}: use tcp or udp"),
            };
            runtime()?.block_on(wasp::echo::probe(udp, addr, source, count, timeout));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `wasp plan`: the daemon's planning path from an empty node (everything is new), and the
/// dataplane's dry run of the full sync.
fn plan(settings: &Settings) -> anyhow::Result<()> {
    let loaded = runtime()?.block_on(wasp::load::load(settings))?;
    for e in &loaded.errors {
        eprintln!("error: {e}");
    }
    let mut planning = Planning::new(settings.planner()?);
    let previous = ProxyState::default();
    planning.update(&loaded.state, &previous.diff(&loaded.state));
    for s in planning.planner().status() {
        eprintln!("warning: {s}");
    }
    let req = SyncRequest {
        state: &loaded.state,
        previous: &previous,
        selections: planning.selections(),
        diff: None,
    };
    print!("{}", settings.dataplane().preview(req)?);
    Ok(())
}

/// `wasp validate`: every error, a summary, and a failing exit status if there is an error.
fn validate(settings: &Settings) -> anyhow::Result<ExitCode> {
    let loaded = runtime()?.block_on(wasp::load::load(settings))?;
    for e in &loaded.errors {
        println!("{e}");
    }
    println!(
        "{} objects, {} service ports, {} endpoints, {} errors",
        loaded.store.len(),
        loaded.state.ports.len(),
        loaded.state.endpoint_count(),
        loaded.errors.len()
    );
    Ok(if loaded.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
