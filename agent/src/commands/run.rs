//! `backstop-agent run`: the host's agent, connected to the controller
//! until SIGINT or SIGTERM. Each flag given wins over the config file
//! (/etc/backstop/agent.toml when it exists, or `--config`).

use std::path::PathBuf;

use backstop_agent::config::AgentConfig;
use backstop_agent::probes::ProbeOptions;
use backstop_agent::run::RunOptions;

use super::Outcome;

#[derive(clap::Args)]
pub struct Args {
    /// The controller's QUIC address (backstop serve --listen); else the config's `controller`.
    #[arg(long)]
    controller: Option<std::net::SocketAddr>,
    /// This host's bundle from `backstop init` or `backstop enroll`; else the config's `bundle`.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// The name on the controller's certificate [default: backstop-controller].
    #[arg(long)]
    server_name: Option<String>,
    /// Data directory (the outbox lives under DATA/agent/) [default: /var/lib/backstop].
    #[arg(long, env = "BACKSTOP_DATA")]
    data: Option<PathBuf>,
    /// The outbox's cap in bytes [default: 256 MiB].
    #[arg(long)]
    outbox_max_bytes: Option<u64>,
    /// Forward the probes' own diagnostics (aya-log) to the log.
    #[arg(long)]
    probe_log: bool,
    /// Config file (default /etc/backstop/agent.toml when it exists).
    #[arg(long, env = "BACKSTOP_AGENT_CONFIG")]
    config: Option<PathBuf>,
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
    // Config first, before anything is created or bound.
    let file = match AgentConfig::load(args.config.as_deref()) {
        Ok(f) => f,
        Err(e) => return Ok(super::config_error(&e)),
    };
    let (Some(controller), Some(bundle)) = (
        args.controller.or(file.controller),
        args.bundle.or(file.bundle),
    ) else {
        eprintln!(
            "backstop-agent: run needs the controller and this host's bundle: --controller ADDR --bundle FILE, or `controller` and `bundle` in {}",
            backstop_agent::config::DEFAULT_PATH
        );
        return Ok(2);
    };
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
        controller,
        server_name: args
            .server_name
            .or(file.server_name)
            .unwrap_or_else(|| super::DEFAULT_SERVER_NAME.to_string()),
        bundle,
        data: args
            .data
            .or(file.data)
            .unwrap_or_else(|| PathBuf::from(super::DEFAULT_DATA)),
        outbox_max_bytes: args
            .outbox_max_bytes
            .or(file.outbox_max_bytes)
            .unwrap_or(backstop_agent::outbox::DEFAULT_MAX_BYTES),
        probes: ProbeOptions {
            probe_log: args.probe_log || file.probe_log.unwrap_or(false),
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
