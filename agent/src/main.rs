//! `backstop-agent`: flags in, library call, exit code out.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use backstop_agent::probes::ProbeOptions;
use backstop_agent::watch::{WatchOptions, watch};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "backstop-agent",
    version,
    about = "backstop's host agent: watches installs in the kernel with eBPF",
    long_about = "backstop's host agent: loads eBPF probes, follows an install's process tree \
                  and folds what it does (syscalls, block I/O, scheduling, process life, network) \
                  into feature windows.\n\nNeeds root. Exit code 2 means it cannot run here \
                  (not root, BPF refused, probes not built)."
)]
struct Cli {
    /// Log filter for the agent's own diagnostics on stderr (e.g. info, debug, backstop_agent=trace).
    #[arg(long, global = true, env = "BACKSTOP_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run CMD as a tracked process tree and print one window per interval.
    ///
    /// Everything CMD and its descendants do is counted; nothing else on the
    /// host is. The agent exits with CMD's exit code (128+N if a signal N
    /// killed it). SIGINT and SIGTERM are passed on to CMD.
    ///
    /// Example: backstop-agent watch --json -- dpkg -i ./hello.deb
    Watch {
        /// Window length in milliseconds.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
        window_ms: u64,
        /// One JSON object per window on stdout, then a summary line; CMD's
        /// stdout goes to stderr so stdout stays machine-readable.
        #[arg(long)]
        json: bool,
        /// Also print exec, exit and OOM-kill records of the tree.
        #[arg(long)]
        events: bool,
        /// Path whose filesystem's free space `host_disk_free_bytes` reports.
        #[arg(long, default_value = "/")]
        scope: PathBuf,
        /// Forward the probes' own diagnostics (aya-log) to the log. Off by default.
        #[arg(long)]
        probe_log: bool,
        /// Seconds CMD gets after a forwarded SIGINT/SIGTERM before SIGKILL.
        #[arg(long, default_value_t = 10)]
        kill_grace_secs: u64,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<OsString>,
    },
    /// Run as the host's agent: keep a connection to the controller, run
    /// what it asks for under the probes, deliver every window.
    ///
    /// Windows go through an on-disk outbox (DATA/agent/outbox) first, so a
    /// controller that is away or restarts loses nothing below
    /// --outbox-max-bytes; above it the oldest are dropped and counted.
    Run {
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
        #[arg(long, default_value_t = backstop_agent::spool::DEFAULT_MAX_BYTES)]
        outbox_max_bytes: u64,
        /// Forward the probes' own diagnostics (aya-log) to the log.
        #[arg(long)]
        probe_log: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("backstop-agent: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(async {
        match cli.command {
            Command::Watch {
                window_ms,
                json,
                events,
                scope,
                probe_log,
                kill_grace_secs,
                cmd,
            } => {
                let opts = WatchOptions {
                    window: Duration::from_millis(window_ms),
                    json,
                    events,
                    scope,
                    probes: ProbeOptions { probe_log },
                    kill_grace: Duration::from_secs(kill_grace_secs),
                };
                let mut out = std::io::stdout();
                match watch(&cmd, &opts, &mut out).await {
                    Ok(summary) => summary.exit_code,
                    Err(e) => {
                        eprintln!("backstop-agent: {e}");
                        e.exit_code()
                    }
                }
            }
            Command::Run {
                controller,
                bundle,
                server_name,
                data,
                outbox_max_bytes,
                probe_log,
            } => {
                let opts = backstop_agent::run::RunOptions {
                    controller,
                    server_name,
                    bundle,
                    data,
                    spool_max_bytes: outbox_max_bytes,
                    probes: ProbeOptions { probe_log },
                };
                let shutdown = async {
                    let mut term = match tokio::signal::unix::signal(
                        tokio::signal::unix::SignalKind::terminate(),
                    ) {
                        Ok(t) => t,
                        Err(_) => return std::future::pending().await,
                    };
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                };
                match backstop_agent::run::run(opts, shutdown).await {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("backstop-agent: {e}");
                        e.exit_code()
                    }
                }
            }
        }
    });
    ExitCode::from(code.clamp(0, 255) as u8)
}
