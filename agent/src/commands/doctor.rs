//! `backstop-agent doctor`: check this host can run the agent, and say what
//! is missing and how to fix it. Exit code 1 if any check fails, 2 for a
//! bad config file, 0 otherwise (warnings included).

use std::net::SocketAddr;
use std::path::PathBuf;

use backstop_agent::config::AgentConfig;
use backstop_agent::doctor::{self, Options};

use super::Outcome;

#[derive(clap::Args)]
pub struct Args {
    /// The controller to try a QUIC/TLS handshake with (else the config's).
    #[arg(long)]
    controller: Option<SocketAddr>,
    /// This host's bundle, the identity the handshake presents (else the config's).
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// The name on the controller's certificate.
    #[arg(long)]
    server_name: Option<String>,
    /// Data directory whose filesystem holds the snapshots.
    #[arg(long, env = "BACKSTOP_DATA")]
    data: Option<PathBuf>,
    /// The root shadows mirror.
    #[arg(long, default_value = "/")]
    target: PathBuf,
    /// Config file (default /etc/backstop/agent.toml when it exists).
    #[arg(long, env = "BACKSTOP_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// One JSON object: {"verdict", "checks": [{"name", "status", "detail", "fix"}]}.
    #[arg(long)]
    json: bool,
}

pub async fn doctor(args: Args) -> Outcome {
    let file = match AgentConfig::load(args.config.as_deref()) {
        Ok(f) => f,
        Err(e) => return Ok(super::config_error(&e)),
    };
    let opts = Options {
        data: args
            .data
            .or(file.data)
            .unwrap_or_else(|| PathBuf::from(super::DEFAULT_DATA)),
        target: args.target,
        controller: args.controller.or(file.controller),
        bundle: args.bundle.or(file.bundle),
        server_name: args
            .server_name
            .or(file.server_name)
            .unwrap_or_else(|| super::DEFAULT_SERVER_NAME.to_string()),
    };
    let report = doctor::run(&opts).await;
    if args.json {
        let line =
            serde_json::to_string(&report).map_err(|e| backstop_agent::AgentError::Failed {
                context: "encoding the report".into(),
                source: Box::new(e),
            })?;
        println!("{line}");
    } else {
        print!("{}", report.render());
    }
    Ok(i32::from(report.failed()))
}
