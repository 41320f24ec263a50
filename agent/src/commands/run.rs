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
}

pub async fn run(args: Args) -> Outcome {
    let opts = RunOptions {
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
