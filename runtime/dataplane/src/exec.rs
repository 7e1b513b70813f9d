//! Running the kernel tools, with errors that say which command failed and what it printed.

use std::io::Write;
use std::process::{Command, Stdio};

use thiserror::Error;

/// A kernel tool failed.
#[derive(Debug, Error)]
pub enum ExecError {
    /// The tool could not be started.
    #[error("cannot run {cmd}")]
    Spawn {
        /// The command.
        cmd: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The kernel rejected a netlink transaction, or the socket failed.
    #[error("nftables: {what}")]
    Netlink {
        /// What was being done: the rejected operation in nft syntax.
        what: String,
        /// The kernel's error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel rejected an IPVS, rtnetlink or helper-table change of the ipvs mode, or
    /// its socket failed.
    #[error("ipvs: {what}")]
    Ipvs {
        /// What was being done: the rejected command in ipvsadm syntax.
        what: String,
        /// The kernel's error.
        #[source]
        source: std::io::Error,
    },
    /// The userspace proxy could not start.
    #[error("userspace proxy")]
    Proxy(#[source] std::io::Error),
    /// The tool exited non-zero.
    #[error("{cmd} failed ({status}): {stderr}")]
    Failed {
        /// The command.
        cmd: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// Runs `cmd args`, feeding `stdin`; returns stdout.
///
/// # Errors
/// Fails when the command cannot start or exits non-zero.
pub fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<String, ExecError> {
    let line = format!("{cmd} {}", args.join(" "));
    let spawn = |source| ExecError::Spawn {
        cmd: line.clone(),
        source,
    };
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A tool that exits early closes its end; its exit status says why.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(spawn)?;
    if !out.status.success() {
        return Err(ExecError::Failed {
            cmd: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `cmd` can be found on PATH.
pub fn available(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}
