//! The daemon's start-up and shutdown (`backstop serve`): start-up in the order an SRE can trust. Config and the
//! store are checked before anything binds; a bad database or missing PKI
//! is an error with its own exit code, not a half-started daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use backstop_common::quic::{TlsError, read_pem, server_config};

use super::agents::{accept_loop, close};
use super::control;
use super::state::Daemon;
use crate::alert::Alerts;
use crate::pki::Pki;
use crate::store::{Store, StoreError, default_url};

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data: PathBuf,
    pub listen: SocketAddr,
    /// Defaults to SQLite at DATA/backstop.db.
    pub database: Option<String>,
    /// The config file's `[alerts]` (sinks and retry policy).
    pub alerts: crate::config::AlertsConfig,
    /// Where `/metrics` is served, if anywhere (checked by the caller).
    pub http: Option<backstop_common::http::Access>,
    /// Decide without a model (`serve --no-model`).
    pub no_model: bool,
}

/// Why the daemon did not start (or stopped). Each message is one line the
/// CLI prints as is: the inner errors already name their own causes, so
/// they are shown in the message rather than chained as sources (a chain
/// would print them twice).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database cannot be opened or migrated.
    #[error("{error}")]
    OpenStore { error: StoreError },
    /// The database opened but refuses the first write.
    #[error("database {url} is not writable: {error}")]
    StoreNotWritable { url: String, error: StoreError },
    /// DATA/pki is missing or unreadable: `backstop init` has not run.
    #[error("{error} (run `backstop init --data {}`)", data.display())]
    NoPki { data: PathBuf, error: TlsError },
    #[error("{}: no certificate", path.display())]
    NoCaCertificate { path: PathBuf },
    #[error("{}: no private key", path.display())]
    NoPrivateKey { path: PathBuf },
    /// The controller's certificate or key cannot be read or used.
    #[error("{error}")]
    Tls { error: TlsError },
    #[error("listening on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// The alert queue cannot be opened or a sink cannot be built (its CA
    /// or token file).
    #[error("{}", crate::alert::chain(error))]
    Alerts { error: crate::alert::AlertError },
    #[error("control socket in {}: {error}", data.display())]
    ControlSocket {
        data: PathBuf,
        error: std::io::Error,
    },
    /// The HTTP address is refused or cannot be bound.
    #[error("{error}")]
    Http {
        error: backstop_common::http::HttpError,
    },
    /// A blocking start-up task panicked or was cancelled.
    #[error("{error}")]
    Join { error: tokio::task::JoinError },
}

impl ServeError {
    /// 2: the daemon cannot start with this configuration (the README's
    /// "bad config, database or PKI"); 1: anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            ServeError::Join { .. } => 1,
            _ => 2,
        }
    }
}

/// Run until `shutdown` resolves.
pub async fn serve(
    cfg: ServeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let url = cfg
        .database
        .clone()
        .unwrap_or_else(|| default_url(&cfg.data));
    let store = Store::open(&url, true)
        .await
        .map_err(|error| ServeError::OpenStore { error })?;
    // The first write: an unwritable database fails here, before binding.
    store
        .all_disconnected()
        .await
        .map_err(|error| ServeError::StoreNotWritable {
            url: url.clone(),
            error,
        })?;

    let data = cfg.data.clone();
    let server = tokio::task::spawn_blocking(move || tls_config(&data))
        .await
        .map_err(|error| ServeError::Join { error })??;

    // Before binding: a sink whose CA file is missing is bad config.
    let alerts = Alerts::start(&cfg.data, &cfg.alerts)
        .await
        .map_err(|error| ServeError::Alerts { error })?;

    let endpoint =
        quinn::Endpoint::server(server, cfg.listen).map_err(|error| ServeError::Listen {
            addr: cfg.listen,
            error,
        })?;
    let control = control::bind(&cfg.data)
        .await
        .map_err(|error| ServeError::ControlSocket {
            data: cfg.data.clone(),
            error,
        })?;

    let daemon = Daemon::new(store, alerts);
    if cfg.no_model {
        daemon.model.off("turned off (backstop serve --no-model)");
    } else {
        daemon.model.load(&cfg.data);
    }
    let _http = match cfg.http.clone() {
        Some(access) => Some(
            crate::http::start(daemon.clone(), access)
                .await
                .map_err(|error| ServeError::Http { error })?,
        ),
        None => None,
    };
    let local = endpoint
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(listen = %local, data = %cfg.data.display(), database = %url, "backstop serving");
    // A line scripts and tests can wait for.
    eprintln!("backstop: listening on {local}");

    let agents = tokio::spawn(accept_loop(daemon.clone(), endpoint.clone()));
    let controls = tokio::spawn(control::accept_loop(daemon.clone(), control));
    shutdown.await;
    tracing::info!("shutting down");
    controls.abort();
    endpoint.close(close::SHUTDOWN.into(), b"controller shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(5), endpoint.wait_idle()).await;
    agents.abort();
    let sock = control::socket_path(&cfg.data);
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(sock)).await;
    drop(daemon);
    Ok(())
}

/// The endpoint's TLS: the CA, the controller's chain and key, read from
/// DATA/pki (blocking file reads).
fn tls_config(data: &std::path::Path) -> Result<quinn::ServerConfig, ServeError> {
    let tls = |error| ServeError::Tls { error };
    let pki = Pki::new(data);
    let (ca, _) = read_pem(&pki.ca_cert()).map_err(|error| ServeError::NoPki {
        data: data.to_path_buf(),
        error,
    })?;
    let ca = ca
        .into_iter()
        .next()
        .ok_or_else(|| ServeError::NoCaCertificate {
            path: pki.ca_cert(),
        })?;
    let (chain, _) = read_pem(&pki.server_cert()).map_err(tls)?;
    let (_, key) = read_pem(&pki.server_key()).map_err(tls)?;
    let key = key.ok_or_else(|| ServeError::NoPrivateKey {
        path: pki.server_key(),
    })?;
    server_config(ca, chain, key).map_err(tls)
}
