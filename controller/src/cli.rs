//! The controller binary's flags: one clap type per verb, kept apart from
//! `main.rs` so the verb list reads as one piece and main stays a dispatch.

use std::path::PathBuf;

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
        command under the probes there and stores its windows; `backstop deploy app.toml --host H` \
        carries a manifest through snapshot, shadow, live install, decision and rollback."
)]
pub(crate) struct Cli {
    /// Data directory: PKI, database, control socket.
    #[arg(
        long,
        global = true,
        env = "BACKSTOP_DATA",
        default_value = "/var/lib/backstop"
    )]
    pub(crate) data: PathBuf,
    /// Log filter for diagnostics on stderr (e.g. info, debug).
    #[arg(long, global = true, env = "BACKSTOP_LOG", default_value = "info")]
    pub(crate) log: String,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
    Serve(crate::commands::serve::ServeArgs),
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
        /// Window length in ms. Default: the length the daemon's model was
        /// trained on (`backstop model`), where its false-alarm rate and
        /// lead were measured; without a model, 1000. A decision notes a
        /// length unlike the model's. The disk and memory trend rules read
        /// at most one window a second, whatever the length.
        #[arg(long, value_parser = clap::value_parser!(u32).range(i64::from(backstop_common::window::MIN_WINDOW_MS)..))]
        window_ms: Option<u32>,
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
    ///
    /// With --force: mark it `abandoned` at once, which frees its root for
    /// the next deployment, whether or not its agent is there (an agent
    /// gone for good, or reinstalled and knowing nothing of it). The
    /// rollback order is still sent if the agent is connected; if not,
    /// backstop restores nothing: an agent that comes back rolls back
    /// what it finds unfinished and its report is stored.
    Cancel {
        id: String,
        /// Mark it `abandoned` at once (frees its root when its agent is
        /// gone for good); see the verb's --help.
        #[arg(long)]
        force: bool,
    },
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
        training: crate::commands::learn::TrainingFlags,
        /// Refuse, before training, a corpus whose digest is not this one
        /// (what a model's model.json records as corpus_digest).
        #[arg(long, value_name = "SHA256")]
        expect_digest: Option<String>,
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
    /// With --by-family: leave one fault family out at a time instead (one
    /// model per family, trained and calibrated without any of it, tested
    /// on all of it and on the healthy installs of a package fold it never
    /// saw): recall on kinds of failure the model never met, build-up
    /// faults caught before onset, tells on silent ones.
    ///
    /// Example: backstop crossval --corpus /var/lib/backstop/corpus --folds 5
    Crossval {
        /// A corpus directory (repeatable); deployments of all are pooled.
        #[arg(long = "corpus", required = true, value_name = "DIR")]
        corpus: Vec<PathBuf>,
        /// How many folds (3 to 20); each trains on all but two of them.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(3..=20))]
        folds: u8,
        /// Leave one fault family out at a time (one model per family).
        #[arg(long)]
        by_family: bool,
        #[command(flatten)]
        training: crate::commands::learn::TrainingFlags,
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
        /// Score the lockbox (a fixed tenth of the packages that train and
        /// crossval never see) instead of the test split: once, after
        /// every choice is made.
        #[arg(long, conflicts_with = "all")]
        lockbox: bool,
        /// Score every deployment of the corpus, with no split: for a
        /// corpus recorded elsewhere (a fleet's own history), none of which
        /// the model trained on. The static-threshold and Mann-Whitney
        /// baselines are then tuned on the corpus itself (their best
        /// case); the model keeps its own threshold.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Corpora for training: run a catalog of real installs, or write a
    /// generated corpus (to try the tools).
    Corpus {
        #[command(subcommand)]
        action: crate::commands::corpus::Action,
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
        action: crate::commands::manifest::Action,
    },
    /// Print the feature schema: every window value's name, unit and meaning, in order.
    Schema {
        #[arg(long)]
        json: bool,
    },
}
