//! `backstop-agent`: flags in, one library call per verb, exit code out.
//! Each verb's flags and its call live in `commands/`; what it prints lives
//! in `render`.

mod commands;
mod render;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::{deploy, doctor, room, run, shadow, shadow_exec, snapshot, watch};

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
    #[arg(
        long,
        global = true,
        env = "BACKSTOP_LOG",
        default_value = "warn,libcgroups=error"
    )]
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
    Watch(watch::Args),
    /// Shadows: run an install in a youki container whose root is an
    /// overlay over the target's root (DATA/agent/shadows).
    Shadow(shadow::Args),
    /// Known-good state: content-addressed snapshots of a scope, and exact
    /// restore (DATA/agent/snapshots).
    Snapshot(snapshot::Args),
    /// Run as the host's agent: keep a connection to the controller, run
    /// what it asks for under the probes, deliver every window.
    ///
    /// Windows go through an on-disk outbox (DATA/agent/outbox) first, so a
    /// controller that is away or restarts loses nothing below
    /// --outbox-max-bytes; above it the oldest are dropped and counted.
    Run(run::Args),
    /// Run one deployment from a manifest on this host, without a
    /// controller: snapshot, live install in its own cgroup (and the
    /// shadow), health probes, then commit, or roll back on a hard failure.
    ///
    /// Exit codes: 0 committed, 3 rolled back, 2 invalid manifest, 1 error.
    ///
    /// Example: backstop-agent deploy examples/hello.toml
    Deploy(deploy::Args),
    /// Check this host can run the agent (kernel, BTF, tracefs, the probes'
    /// tracepoints, BPF permission, cgroup v2, what shadows need, disk room,
    /// the controller's reach): ok / warn / fail per check, with the fix.
    ///
    /// Exit codes: 0 no check failed, 1 some check failed, 2 bad config.
    ///
    /// Example: backstop-agent doctor --controller 10.0.0.5:7870 --bundle /etc/backstop/agent.pem
    Doctor(doctor::Args),
    /// Will these .debs fit where they unpack? The room check a deployment
    /// runs before its snapshot: bytes and inodes per filesystem, with
    /// dpkg's own writes (its control area, its status file's copy).
    ///
    /// Exit codes: 0 it fits, 3 refused, 2 the check cannot run here.
    ///
    /// Example: backstop-agent room --root / ./hello_2.10-3_amd64.deb
    Room(room::Args),
    /// The agent's own single-threaded child that creates a shadow's
    /// container (see agent/src/shadow/creator.rs); not for people.
    #[command(name = "shadow-exec", hide = true)]
    ShadowExec(shadow_exec::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal: supervisors and
        // log files get plain lines.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Before any runtime or thread: the creator must be single-threaded.
    let command = match cli.command {
        Command::ShadowExec(args) => return shadow_exec::shadow_exec(&args),
        other => other,
    };
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
    let result = rt.block_on(async {
        match command {
            Command::ShadowExec(_) => unreachable!("run above, before the runtime"),
            Command::Watch(args) => watch::watch(args).await,
            Command::Shadow(args) => shadow::shadow(args).await,
            Command::Snapshot(args) => snapshot::snapshot(args),
            Command::Run(args) => run::run(args).await,
            Command::Deploy(args) => deploy::deploy(args).await,
            Command::Doctor(args) => doctor::doctor(args).await,
            Command::Room(args) => Ok(room::room(&args)),
        }
    });
    let code = result.unwrap_or_else(|e| {
        eprintln!("backstop-agent: {e}");
        e.exit_code()
    });
    ExitCode::from(code.clamp(0, 255) as u8)
}
