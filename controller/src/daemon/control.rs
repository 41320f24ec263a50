//! The local control channel: a Unix socket in the data directory, mode
//! 0600, so only root (or the data directory's owner) can drive the daemon.
//! One JSON request per connection, answered with JSON lines. A Unix socket
//! rather than QUIC: the CLI runs on the controller's host, and file
//! permissions are the simplest authentication there is.
//!
//! Requests:
//! - `{"op":"exec","host":H,"argv":[..],"window_ms":N}` answers
//!   `{"deployment":ID}` at once, then `{"outcome":{...}}` when the command ends.
//!   The outcome is `finished`, `failed`, or `interrupted` when the host
//!   went away for good (see `daemon::HOST_GONE_GRACE`).
//! - `{"op":"deploy","host":H,"manifest":TOML,"base":DIR,"window_ms":N,
//!   "dry_run":B,"wait":B}` answers `{"deployment":ID}`, then with `wait`
//!   one progress line per event until the final one; `{"op":"cancel",
//!   "id":ID}` answers `{"cancelled":ID}` (see `deploy.rs`).
//! - `{"op":"ping"}` answers `{"ok":true}`.
//! - `{"op":"revoked","host":H}` (sent by `backstop revoke`): the daemon
//!   closes H's live session if its certificate is no longer good, and
//!   answers `{"closed":BOOL}`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::state::Daemon;

pub fn socket_path(data: &Path) -> PathBuf {
    data.join("control.sock")
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Exec {
        host: String,
        argv: Vec<String>,
        #[serde(default = "default_window_ms")]
        window_ms: u32,
    },
    Ping,
    Revoked {
        host: String,
    },
    /// `backstop deploy` (see `deploy.rs`).
    Deploy(super::deploy::DeployRequest),
    /// `backstop cancel ID`: order a rollback.
    Cancel {
        id: String,
    },
}

fn default_window_ms() -> u32 {
    1000
}

/// Bind the socket. A socket file left by a dead daemon is replaced; one
/// that answers belongs to a live daemon and is an error.
///
/// bind(2) creates the socket file with the process umask applied to
/// 0777, and a chmod afterwards would leave a window in which any local
/// user may connect. So the bind runs under umask 077 (the file is born
/// 0600 at most), and the daemon keeps the directory 0700 as well.
pub async fn bind(data: &Path) -> std::io::Result<UnixListener> {
    let path = socket_path(data);
    if path.exists() {
        if UnixStream::connect(&path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "{} answers: another daemon uses this data directory",
                    path.display()
                ),
            ));
        }
        let p = path.clone();
        tokio::task::spawn_blocking(move || std::fs::remove_file(p))
            .await
            .map_err(std::io::Error::other)??;
    }
    let listener = {
        let _umask = crate::private::Umask::set(0o077);
        UnixListener::bind(&path)?
    };
    tokio::task::spawn_blocking(move || {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok(listener)
}

/// Back-off after a failed accept: from the first step, doubling to the
/// last. accept fails with EMFILE or ENFILE when descriptors run out, and
/// retrying at once would spin a core while nothing frees one.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));

pub async fn accept_loop(daemon: Arc<Daemon>, listener: UnixListener) {
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF.0;
                stream
            }
            Err(e) => {
                tracing::warn!(
                    "control socket: accept failed: {e}; retrying in {} ms",
                    backoff.as_millis()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        let d = daemon.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(d, stream).await {
                tracing::debug!("control connection: {e}");
            }
        });
    }
}

/// Answer one control connection: one request, then its reply lines.
async fn answer(daemon: Arc<Daemon>, stream: UnixStream) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await?;
    let reply = |v: serde_json::Value| format!("{v}\n");
    let req: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            w.write_all(
                reply(serde_json::json!({"error": format!("bad request: {e}")})).as_bytes(),
            )
            .await?;
            return Ok(());
        }
    };
    match req {
        Request::Revoked { host } => {
            let closed = daemon.recheck_certificate(&host).await;
            w.write_all(reply(serde_json::json!({ "closed": closed })).as_bytes())
                .await?
        }
        Request::Deploy(req) => super::deploy::answer(&daemon, req, &mut w).await?,
        Request::Cancel { id } => {
            let v = match daemon.cancel(&id).await {
                Ok(()) => serde_json::json!({"cancelled": id}),
                Err(e) => serde_json::json!({"error": e.to_string()}),
            };
            w.write_all(reply(v).as_bytes()).await?
        }
        Request::Ping => {
            w.write_all(reply(serde_json::json!({"ok": true})).as_bytes())
                .await?
        }
        Request::Exec {
            host,
            argv,
            window_ms,
        } => match daemon.exec(&host, argv, window_ms).await {
            Err(e) => {
                w.write_all(reply(serde_json::json!({"error": e.to_string()})).as_bytes())
                    .await?
            }
            Ok((id, outcome)) => {
                w.write_all(reply(serde_json::json!({"deployment": id})).as_bytes())
                    .await?;
                match outcome.await {
                    Ok(o) => {
                        w.write_all(reply(serde_json::json!({"outcome": o})).as_bytes())
                            .await?
                    }
                    Err(_) => {
                        w.write_all(
                            reply(serde_json::json!({"error": "the daemon stopped before the deployment ended"}))
                                .as_bytes(),
                        )
                        .await?
                    }
                }
            }
        },
    }
    Ok(())
}
