//! `backstop serve`: start-up in the order an SRE can trust. Config and the
//! store are checked before anything binds; a bad database or missing PKI
//! is an error with its own exit code, not a half-started daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use backstop_common::quic::{read_pem, server_config};

use crate::pki::Pki;
use crate::server::{Daemon, accept_loop, close};
use crate::store::{Store, default_url};

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data: PathBuf,
    pub listen: SocketAddr,
    /// Defaults to SQLite at DATA/backstop.db.
    pub database: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The daemon cannot start with this configuration (exit code 2).
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Runtime(String),
}

impl ServeError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ServeError::Config(_) => 2,
            ServeError::Runtime(_) => 1,
        }
    }
}

/// Run until `shutdown` resolves.
pub async fn serve(
    cfg: ServeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let config = |m: String| ServeError::Config(m);
    let url = cfg
        .database
        .clone()
        .unwrap_or_else(|| default_url(&cfg.data));
    let store = Store::open(&url, true)
        .await
        .map_err(|e| config(e.to_string()))?;
    // The first write: an unwritable database fails here, before binding.
    store
        .all_disconnected()
        .await
        .map_err(|e| config(format!("database {url} is not writable: {e}")))?;

    let data = cfg.data.clone();
    let server = tokio::task::spawn_blocking(move || tls_config(&data))
        .await
        .map_err(|e| ServeError::Runtime(e.to_string()))??;

    let endpoint = quinn::Endpoint::server(server, cfg.listen)
        .map_err(|e| config(format!("listening on {}: {e}", cfg.listen)))?;
    let control = crate::control::bind(&cfg.data)
        .await
        .map_err(|e| config(format!("control socket in {}: {e}", cfg.data.display())))?;

    let daemon = Daemon::new(store);
    let local = endpoint
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(listen = %local, data = %cfg.data.display(), database = %url, "backstop serving");
    // A line scripts and tests can wait for.
    eprintln!("backstop: listening on {local}");

    let agents = tokio::spawn(accept_loop(daemon.clone(), endpoint.clone()));
    let controls = tokio::spawn(crate::control::accept_loop(daemon.clone(), control));
    shutdown.await;
    tracing::info!("shutting down");
    controls.abort();
    endpoint.close(close::SHUTDOWN.into(), b"controller shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(5), endpoint.wait_idle()).await;
    agents.abort();
    let sock = crate::control::socket_path(&cfg.data);
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(sock)).await;
    drop(daemon);
    Ok(())
}

/// The endpoint's TLS: the CA, the controller's chain and key, read from
/// DATA/pki (blocking file reads).
fn tls_config(data: &std::path::Path) -> Result<quinn::ServerConfig, ServeError> {
    let config = |m: String| ServeError::Config(m);
    let pki = Pki::new(data);
    let (ca, _) = read_pem(&pki.ca_cert()).map_err(|e| {
        config(format!(
            "{e} (run `backstop init --data {}`)",
            data.display()
        ))
    })?;
    let ca = ca
        .into_iter()
        .next()
        .ok_or_else(|| config(format!("{}: no certificate", pki.ca_cert().display())))?;
    let (chain, _) = read_pem(&pki.server_cert()).map_err(|e| config(e.to_string()))?;
    let (_, key) = read_pem(&pki.server_key()).map_err(|e| config(e.to_string()))?;
    let key =
        key.ok_or_else(|| config(format!("{}: no private key", pki.server_key().display())))?;
    server_config(ca, chain, key).map_err(|e| config(e.to_string()))
}
