//! `backstop-agent run`: the host's agent, connected to the controller
//! until SIGINT or SIGTERM.

use std::path::PathBuf;

use backstop_agent::probes::ProbeOptions;
use backstop_agent::run::RunOptions;

use super::Outcome;

#[derive(clap::Args)]
pub struct Args {
    /// The controller's QUIC address (backstop serve --listen).
    #[arg(long)]
    controller: std::net::SocketAddr,
    /// This host's bundle from `backstop init` or `backstop enroll`.
    #[arg(long)]
    bundle: PathBuf,
    /// The name on the controller's certificate.
    #[arg(long, default_value = "backstop-controller")]
    server_name: String,
    /// Data directory (the outbox lives under DATA/agent/).
    #[arg(long, env = "BACKSTOP_DATA", default_value = "/var/lib/backstop")]
    data: PathBuf,
    #[arg(long, default_value_t = backstop_agent::outbox::DEFAULT_MAX_BYTES)]
    outbox_max_bytes: u64,
    /// Forward the probes' own diagnostics (aya-log) to the log.
    #[arg(long)]
    probe_log: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics, and keep the
    /// kernel's BPF run statistics on meanwhile (for the probes' own run
    /// counts). Loopback only unless --metrics-token-file is given: it has
    /// no TLS, and what it serves describes this host.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// A file whose first line is the bearer token every metrics request
    /// must carry (`Authorization: Bearer TOKEN`); required for a
    /// non-loopback --metrics.
    #[arg(long, value_name = "FILE", requires = "metrics")]
    metrics_token_file: Option<PathBuf>,
}

pub async fn run(args: Args) -> Outcome {
    use backstop_agent::metrics::{ADDR_FLAG, TOKEN_FLAG};
    // Refused before anything is locked or loaded: a config error.
    let metrics = match args.metrics {
        Some(addr) => {
            let token = args
                .metrics_token_file
                .map(|p| backstop_common::http::read_token(&p, TOKEN_FLAG))
                .transpose()
                .map_err(backstop_agent::AgentError::from)?;
            let access = backstop_common::http::Access {
                addr,
                token,
                addr_flag: ADDR_FLAG,
                token_flag: TOKEN_FLAG,
            };
            access.check().map_err(backstop_agent::AgentError::from)?;
            Some(access)
        }
        None => None,
    };
    let opts = RunOptions {
        metrics,
        controller: args.controller,
        server_name: args.server_name,
        bundle: args.bundle,
        data: args.data,
        outbox_max_bytes: args.outbox_max_bytes,
        probes: ProbeOptions {
            probe_log: args.probe_log,
        },
    };
    backstop_agent::run::run(opts, shutdown()).await?;
    Ok(0)
}

/// Resolves on SIGINT or SIGTERM; never, if SIGTERM cannot be watched.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
