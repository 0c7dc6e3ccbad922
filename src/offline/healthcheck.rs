//! `churn-alert healthcheck`: asks the admin server of a service on this
//! host whether it is ready, for container healthchecks that have no shell
//! tools (Debian's slim image has no curl, and its `/bin/sh` is dash,
//! which has no `/dev/tcp`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct HealthcheckOptions {
    /// The path to ask: /readyz (ready to take events: partitions restored,
    /// dependencies reached) or /healthz (alive).
    #[arg(long, default_value = "/readyz")]
    pub path: String,
    /// The admin address to ask; defaults to `admin.listen` of the config,
    /// with an unspecified host (0.0.0.0, ::) asked on loopback.
    #[arg(long)]
    pub addr: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout_seconds: u64,
}

/// Why the check failed; any of these exits 1 (not healthy).
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    #[error("{addr}{path} answered {status}")]
    Status {
        addr: SocketAddr,
        path: String,
        status: String,
    },
    #[error("{0}")]
    Unreachable(String),
}

/// Where `admin.listen` is reached from this host.
fn local_addr(listen: &str) -> Result<SocketAddr, Unhealthy> {
    let mut addr = listen
        .to_socket_addrs()
        .map_err(|e| Unhealthy::Unreachable(format!("admin address {listen:?}: {e}")))?
        .next()
        .ok_or_else(|| Unhealthy::Unreachable(format!("admin address {listen:?}: no address")))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(addr)
}

/// Prints the status line and returns Ok for a 200 answer.
pub fn run(opts: HealthcheckOptions, config: &Config) -> anyhow::Result<()> {
    let addr = local_addr(opts.addr.as_deref().unwrap_or(&config.admin.listen))?;
    let timeout = Duration::from_secs(opts.timeout_seconds.max(1));
    let unreachable = |e: std::io::Error| Unhealthy::Unreachable(format!("{addr}: {e}"));
    let mut conn = TcpStream::connect_timeout(&addr, timeout).map_err(unreachable)?;
    conn.set_read_timeout(Some(timeout)).map_err(unreachable)?;
    conn.set_write_timeout(Some(timeout)).map_err(unreachable)?;
    write!(
        conn,
        "GET {} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
        opts.path
    )
    .map_err(unreachable)?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).map_err(unreachable)?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.lines().next().unwrap_or("").trim().to_string();
    if status.split_whitespace().nth(1) == Some("200") {
        println!("{addr}{}: {status}", opts.path);
        Ok(())
    } else {
        Err(Unhealthy::Status {
            addr,
            path: opts.path,
            status: if status.is_empty() {
                "nothing".into()
            } else {
                status
            },
        }
        .into())
    }
}
