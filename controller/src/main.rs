//! `backstop`: flags in, library call, exit code out.

mod commands;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "backstop",
    version,
    about = "backstop's controller daemon and CLI",
    long_about = "backstop's controller daemon and CLI.\n\n\
        First time: `backstop init` makes the fleet's CA, the controller's certificate and a first \
        agent bundle; `backstop serve` runs the daemon agents connect to; `backstop-agent run \
        --controller ADDR --bundle FILE` on each host. Then `backstop exec --host H -- CMD` runs a \
        command under the probes there and stores its windows."
)]
struct Cli {
    /// Data directory: PKI, database, control socket.
    #[arg(
        long,
        global = true,
        env = "BACKSTOP_DATA",
        default_value = "/var/lib/backstop"
    )]
    data: PathBuf,
    /// Log filter for diagnostics on stderr (e.g. info, debug).
    #[arg(long, global = true, env = "BACKSTOP_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the CA, the controller's certificate and a first agent bundle in DATA/pki.
    Init {
        /// Host name of the first agent bundle (default: this host's name).
        #[arg(long)]
        host: Option<String>,
        /// Extra DNS names or IPs agents may use to reach the controller.
        #[arg(long = "name")]
        names: Vec<String>,
    },
    /// Make an agent bundle (CA cert, agent cert, key; mode 0600) for one
    /// more host, and record its certificate. A host that already has a
    /// live (unexpired, unrevoked) certificate is refused (exit code 3).
    Enroll {
        #[arg(long)]
        host: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 825)]
        valid_days: i64,
        /// Replace the host's live certificates: they are revoked.
        #[arg(long)]
        force: bool,
    },
    /// Revoke every certificate of HOST: the daemon refuses them from the
    /// next handshake on, and closes HOST's live session if it runs.
    Revoke { host: String },
    /// Run the controller daemon: QUIC with mutual TLS for agents, a Unix
    /// socket (DATA/control.sock, 0600) for this CLI. Flags override the
    /// config file.
    Serve {
        /// Where agents connect [default: the config's, else 0.0.0.0:7870].
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Database URL (default: the config's, else sqlite://DATA/backstop.db).
        #[arg(long)]
        database: Option<String>,
        /// Config file (TOML; see examples/config/controller.toml). Default:
        /// /etc/backstop/controller.toml when it exists, else built-in
        /// defaults. A --config that does not exist is an error.
        #[arg(long, env = "BACKSTOP_CONFIG", value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Run CMD under the probes on HOST's agent; prints the deployment id
    /// and exits with CMD's exit code (124: --timeout ran out; 125: the
    /// host went away for good first).
    Exec {
        #[arg(long)]
        host: String,
        /// Stop waiting after SECS seconds (exit code 124); the deployment
        /// goes on on the host.
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
        #[arg(long, default_value_t = backstop_common::window::DEFAULT_WINDOW_MS)]
        window_ms: u32,
        #[arg(long)]
        json: bool,
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Carry the deployment manifest FILE out on HOST: snapshot, live and
    /// shadow installs, probes, then commit or roll back. Prints the
    /// deployment id; with --wait, one progress line per event and exit 1
    /// unless it was committed. An invalid manifest exits 2, naming the field.
    Deploy {
        file: PathBuf,
        #[arg(long)]
        host: String,
        #[arg(long)]
        wait: bool,
        /// Predict and decide, but never act: the decision is only recorded.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 1000)]
        window_ms: u32,
    },
    /// One deployment of `backstop deploy`: state, events, decisions.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        database: Option<String>,
    },
    /// Order a running deployment rolled back.
    Cancel { id: String },
    /// Run the correlation engine again over every stored decision of a
    /// deployment; exit 1 unless each is reproduced.
    Replay {
        id: String,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        database: Option<String>,
    },
    /// The post-rollback analysis of one deployment: timeline, the
    /// features that deviated most from the package's healthy history, the
    /// first failing step, live against shadow. Exit 1 for an unknown id.
    Report {
        id: String,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        database: Option<String>,
    },
    /// Hosts that have connected: first/last seen, connected, kernel, OS.
    Hosts {
        #[arg(long)]
        json: bool,
        #[arg(long)]
        database: Option<String>,
    },
    /// Deployments, oldest first.
    Deployments {
        #[arg(long)]
        json: bool,
        #[arg(long)]
        database: Option<String>,
    },
    /// The stored windows of one deployment.
    Windows {
        id: String,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        database: Option<String>,
    },
    /// The lifecycle records (exec, exit, OOM kill) of one deployment's tree.
    Events {
        id: String,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        database: Option<String>,
    },
    /// Train a model on corpus directories (from `backstop corpus run`),
    /// split by package and fault variant; calibrate its threshold on the
    /// validation split; evaluate it against the baselines on the test
    /// split. Writes MODEL_DIR/model.safetensors and model.json (schema,
    /// normalization, threshold, corpus digest, evaluation). Deterministic
    /// for a seed.
    ///
    /// Example: backstop train --corpus /var/lib/backstop/corpus --out /var/lib/backstop/models/m1
    Train {
        /// A corpus directory (repeatable); deployments of all are pooled.
        #[arg(long = "corpus", required = true, value_name = "DIR")]
        corpus: Vec<PathBuf>,
        /// Where the model goes (created; a model there is replaced).
        #[arg(long, value_name = "MODEL_DIR")]
        out: PathBuf,
        #[command(flatten)]
        training: commands::learn::TrainingFlags,
        /// Print the evaluation on the test split as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cross-validate: deal the corpus's packages and fault variants into
    /// folds, train one model per fold on the others (calibrated on the
    /// fold before its own), and test each on its fold, so that every
    /// deployment is tested once by a model that never saw its package or
    /// variant. Prints the pooled figures of the model and the baselines,
    /// each at its own thresholds and at equal false positives. Slow: it
    /// trains FOLDS models. Nothing is written.
    ///
    /// Example: backstop crossval --corpus /var/lib/backstop/corpus --folds 5
    Crossval {
        /// A corpus directory (repeatable); deployments of all are pooled.
        #[arg(long = "corpus", required = true, value_name = "DIR")]
        corpus: Vec<PathBuf>,
        /// How many folds (3 to 20); each trains on all but two of them.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(3..=20))]
        folds: u8,
        #[command(flatten)]
        training: commands::learn::TrainingFlags,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a model and the three baselines (exit codes and health
    /// probes; static thresholds; a Mann-Whitney judge against healthy
    /// history) on the test split of a corpus: ROC AUC, recall, false
    /// positives on healthy installs, precision, lead time before onset.
    Eval {
        #[arg(long, value_name = "MODEL_DIR")]
        model: PathBuf,
        #[arg(long = "corpus", required = true, value_name = "DIR")]
        corpus: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Corpora for training: run a catalog of real installs, or write a
    /// generated corpus (to try the tools).
    Corpus {
        #[command(subcommand)]
        action: commands::corpus::Action,
    },
    /// The model in use (DATA/models/current, else the built-in default):
    /// where it is from, its schema, threshold, corpus and evaluation.
    Model {
        #[arg(long)]
        json: bool,
    },
    /// Benchmark inference: µs per window on one core, and the model's size.
    #[command(hide = true)]
    BenchPredict {
        #[arg(long, value_name = "MODEL_DIR")]
        model: PathBuf,
        #[arg(long, default_value_t = 10000)]
        calls: usize,
    },
    /// Benchmark a window's way to a decision: scoring and `decide`, per window.
    #[command(hide = true)]
    BenchDecide {
        #[arg(long, value_name = "MODEL_DIR")]
        model: PathBuf,
        #[arg(long, default_value_t = 40)]
        installs: usize,
    },
    /// Deployment manifests: `check FILE` validates one as `deploy` would.
    Manifest {
        #[command(subcommand)]
        action: commands::manifest::Action,
    },
    /// Print the feature schema: every window value's name, unit and meaning, in order.
    Schema {
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    // The model's matrix products are small: one thread is much faster
    // than candle's pool (and the inference target is per core).
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    }
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    // `serve` lets its config file set DATA unless a flag or
    // BACKSTOP_DATA did: only clap knows whether the default was used.
    let data_given = matches
        .value_source("data")
        .is_some_and(|s| s != clap::parser::ValueSource::DefaultValue);
    let cli =
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if !matches!(cli.command, Command::Serve { .. }) {
        // A report piped into `head` ends quietly, as other Unix tools do,
        // instead of panicking in println!. The daemon keeps Rust's
        // default (ignored), so a dropped database connection is an error.
        // SAFETY: no other thread exists yet; SIG_DFL is a valid handler.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: logs kept in files stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("backstop: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(dispatch(cli.data, data_given, cli.command));
    exit_code(result)
}

/// The one dispatch: each verb is a file in `commands/`.
async fn dispatch(data: PathBuf, data_given: bool, command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Init { host, names } => commands::init::run(&data, host, &names).await,
        Command::Enroll {
            host,
            out,
            valid_days,
            force,
        } => commands::enroll::run(&data, &host, &out, valid_days, force).await,
        Command::Revoke { host } => commands::revoke::run(&data, &host).await,
        Command::Serve {
            listen,
            database,
            config,
        } => {
            let flags = commands::serve::Flags {
                data: data_given.then_some(data),
                listen,
                database,
                config,
            };
            commands::serve::run(flags).await
        }
        Command::Exec {
            host,
            timeout,
            window_ms,
            json,
            cmd,
        } => commands::exec::run(&data, &host, cmd, window_ms, json, timeout).await,
        Command::Deploy {
            file,
            host,
            wait,
            dry_run,
            json,
            window_ms,
        } => {
            let args = commands::deploy::DeployArgs {
                file: &file,
                host: &host,
                wait,
                dry_run,
                json,
                window_ms,
            };
            commands::deploy::run(&data, args).await
        }
        Command::Show { id, json, database } => {
            commands::deploy::show(&data, database, &id, json).await
        }
        Command::Cancel { id } => commands::deploy::cancel(&data, &id).await,
        Command::Replay { id, json, database } => {
            commands::replay::run(&data, database, &id, json).await
        }
        Command::Report { id, json, database } => {
            commands::report::run(&data, database, &id, json).await
        }
        Command::Hosts { json, database } => commands::read::hosts(&data, database, json).await,
        Command::Deployments { json, database } => {
            commands::read::deployments(&data, database, json).await
        }
        Command::Windows { id, json, database } => {
            commands::read::windows(&data, database, &id, json).await
        }
        Command::Events { id, json, database } => {
            commands::read::events(&data, database, &id, json).await
        }
        Command::Train {
            corpus,
            out,
            training,
            json,
        } => commands::train::run(&corpus, &out, &training.config()?, json),
        Command::Crossval {
            corpus,
            folds,
            training,
            json,
        } => commands::crossval::run(&corpus, &training.config()?, folds, json),
        Command::Eval {
            model,
            corpus,
            json,
        } => commands::eval::run(&model, &corpus, json),
        Command::Corpus { action } => commands::corpus::run(action),
        Command::BenchPredict { model, calls } => commands::bench_predict::run(&model, calls),
        Command::BenchDecide { model, installs } => commands::bench_decide::run(&model, installs),
        Command::Model { json } => commands::model::run(&data, json),
        Command::Schema { json } => commands::schema::run(json),
        Command::Manifest { action } => commands::manifest::run(action),
    }
}

/// The exit code of a verb's result; an error is printed as one line.
fn exit_code(result: anyhow::Result<i32>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            // One line: the context chain. An exit-code marker is always
            // the outermost context and carries no words of its own.
            let exit = e.downcast_ref::<commands::Exit>().map(|x| x.0);
            let msg: Vec<String> = e
                .chain()
                .skip(usize::from(exit.is_some()))
                .map(std::string::ToString::to_string)
                .collect();
            eprintln!("backstop: {}", msg.join(": "));
            ExitCode::from(exit.unwrap_or(1).clamp(0, 255) as u8)
        }
    }
}
