use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use backstop_controller::config::{ControllerConfig, DEFAULT_DATA, DEFAULT_LISTEN};
use backstop_controller::daemon::start::{ServeConfig, serve};
use tokio::signal::unix::{SignalKind, signal};

use super::Exit;

/// `serve`'s flags; each one given wins over the config file.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Where agents connect [default: the config's, else 0.0.0.0:7870].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Database URL (default: the config's, else sqlite://DATA/backstop.db).
    #[arg(long)]
    pub database: Option<String>,
    /// Config file (TOML; see examples/config/controller.toml). Default:
    /// /etc/backstop/controller.toml when it exists, else built-in
    /// defaults. A --config that does not exist is an error.
    #[arg(long, env = "BACKSTOP_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub http: HttpFlags,
    /// Decide without a model: the rules alone (steps, probes, the
    /// shadow, the trends, the performance check); every decision says so
    /// in a `no_model` reason. For hosts unlike the ones the model was
    /// trained on, and for tests of everything else.
    #[arg(long)]
    pub no_model: bool,
}

/// `serve --http` and its token.
#[derive(clap::Args, Debug, Clone)]
pub struct HttpFlags {
    /// Serve /metrics (Prometheus) over HTTP on ADDR [default: the
    /// config's `http`, else off]. Loopback only unless --http-token-file
    /// is given: what it serves names hosts and packages, and it has no
    /// TLS of its own (put a proxy in front).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// A file whose first line is the bearer token every HTTP request must
    /// carry (`Authorization: Bearer TOKEN`); required for a non-loopback
    /// --http [default: the config's `http_token_file`].
    #[arg(long, value_name = "FILE")]
    pub http_token_file: Option<PathBuf>,
}

/// `data`: `--data` or BACKSTOP_DATA, when given (not clap's default).
pub async fn run(data: Option<PathBuf>, flags: ServeArgs) -> Result<i32> {
    // Config first, before anything is created or bound: a bad file is
    // exit code 2 with the file and the key named.
    let explicit = flags.config.clone();
    let file = tokio::task::spawn_blocking(move || ControllerConfig::load(explicit.as_deref()))
        .await?
        .map_err(|e| anyhow::Error::new(e).context(Exit(2)))?;
    let data = data
        .or(file.data)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA));
    let listen = match flags.listen.or(file.listen) {
        Some(l) => l,
        None => DEFAULT_LISTEN.parse()?,
    };
    let database = flags.database.or(file.database);
    let http = backstop_controller::http::access(
        flags.http.http.or(file.http),
        flags.http.http_token_file.or(file.http_token_file),
    )
    .map_err(|e| anyhow::Error::new(e).context(Exit(2)))?;
    // The daemon makes nothing another local user should read: its
    // database, socket and any file it creates are born private, with no
    // window between creation and a chmod. (It runs no child processes.)
    // SAFETY: umask has no preconditions; threads other than the runtime's
    // create no files yet.
    unsafe { libc::umask(0o077) };
    let d = data.clone();
    tokio::task::spawn_blocking(move || backstop_controller::private::data_dir(&d))
        .await?
        .map_err(|e| {
            anyhow::anyhow!("the data directory {}: {e}", data.display()).context(Exit(2))
        })?;
    let mut term = signal(SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    match serve(
        ServeConfig {
            data,
            listen,
            database,
            alerts: file.alerts,
            http,
            no_model: flags.no_model,
        },
        shutdown,
    )
    .await
    {
        Ok(()) => Ok(0),
        Err(e) => {
            let code = e.exit_code();
            Err(anyhow::Error::new(e).context(Exit(code)))
        }
    }
}
