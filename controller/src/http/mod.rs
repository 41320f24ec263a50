//! The controller's HTTP side (`backstop serve --http ADDR`): the routes it
//! serves on the shared server of `backstop_common::http`, which holds the
//! bind rule (loopback, or a bearer token): `/metrics`, the dashboard's
//! pages (`pages.rs`, assets built in) and its JSON under `/api/v1/...`
//! (`api.rs`). The dashboard reads the store and the report's analysis and
//! never writes either.

mod api;
mod pages;
mod query;
mod series;
pub mod views;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use backstop_common::http::{Access, HttpError, PROMETHEUS_TEXT, Reply, Router, Server};

use crate::daemon::Daemon;

/// The flags named in errors.
pub const ADDR_FLAG: &str = "--http";
pub const TOKEN_FLAG: &str = "--http-token-file";

/// What `--http` and `--http-token-file` (or the config's keys) ask for,
/// checked against the bind rule before anything starts: `None` when HTTP
/// is off.
pub fn access(
    addr: Option<SocketAddr>,
    token_file: Option<PathBuf>,
) -> Result<Option<Access>, HttpError> {
    let Some(addr) = addr else { return Ok(None) };
    let token = token_file
        .map(|p| backstop_common::http::read_token(&p, TOKEN_FLAG))
        .transpose()?;
    let access = Access {
        addr,
        token,
        addr_flag: ADDR_FLAG,
        token_flag: TOKEN_FLAG,
    };
    access.check()?;
    Ok(Some(access))
}

/// Bind and serve the controller's routes; stops when the server is dropped.
pub async fn start(daemon: Arc<Daemon>, access: Access) -> Result<Server, HttpError> {
    let metrics = daemon.clone();
    let router = Router::new().get("/metrics", move |_| {
        let daemon = metrics.clone();
        async move {
            let connected = daemon.sessions.lock().await.len();
            Reply::ok(PROMETHEUS_TEXT, crate::metrics::render(connected))
        }
    });
    let router = dashboard(router, &daemon);
    let server = Server::start(access, router).await?;
    tracing::info!(http = %server.local_addr(), "serving the dashboard and /metrics");
    // A line scripts and tests can wait for, like the QUIC one.
    eprintln!("backstop: http on {}", server.local_addr());
    Ok(server)
}

/// The dashboard's routes: the pages, their assets, and `/api/v1/...`.
fn dashboard(mut router: Router, daemon: &Arc<Daemon>) -> Router {
    router = router.get("/assets/", |r| async move { pages::asset(&r.path) });
    let d = daemon.clone();
    router = router.get("/api/v1/deployments", move |r| {
        api::deployments(d.clone(), r)
    });
    let d = daemon.clone();
    router = router.get("/api/v1/deployments/", move |r| {
        let d = d.clone();
        async move {
            let id = r
                .path
                .trim_start_matches("/api/v1/deployments/")
                .to_string();
            api::deployment(d, &id).await
        }
    });
    let d = daemon.clone();
    router = router.get("/api/v1/hosts", move |_| api::hosts(d.clone()));
    let d = daemon.clone();
    router = router.get("/api/v1/models", move |_| api::models(d.clone()));
    // Last: `/` matches every path below it, so the shell checks its own.
    router.get("/", |r| async move { pages::page(&r.path) })
}
