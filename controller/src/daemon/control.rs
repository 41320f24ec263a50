//! The local control channel: a Unix socket in the data directory, mode
//! 0600, so only root (or the data directory's owner) can drive the daemon.
//! One JSON request per connection, answered with JSON lines. A Unix socket
//! rather than QUIC: the CLI runs on the controller's host, and file
//! permissions are the simplest authentication there is.
//!
//! The requests and replies, and the line protocol they follow, are
//! `backstop_common::control`'s; this file binds the socket and answers.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backstop_common::control::{Reply, Request};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::state::Daemon;

pub fn socket_path(data: &Path) -> PathBuf {
    data.join("control.sock")
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
    let req: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => return send(&mut w, Reply::error(format!("bad request: {e}"))).await,
    };
    match req {
        Request::Revoked { host } => {
            let closed = daemon.recheck_certificate(&host).await;
            send(&mut w, Reply::Revoked { closed }).await
        }
        Request::Deploy(req) => super::deploy::answer(&daemon, req, &mut w).await,
        Request::Cancel { id, force } => {
            let reply = match super::abandon::cancel(&daemon, &id, force).await {
                Ok(r) => r,
                Err(e) => Reply::error(e.to_string()),
            };
            send(&mut w, reply).await
        }
        Request::Ping => send(&mut w, Reply::Pong).await,
        Request::Exec {
            host,
            argv,
            window_ms,
        } => match daemon.exec(&host, argv, window_ms).await {
            Err(e) => send(&mut w, Reply::error(e.to_string())).await,
            Ok((deployment, end)) => {
                let started = Reply::Started {
                    deployment: deployment.clone(),
                };
                send(&mut w, started).await?;
                let last = match end.await {
                    Ok(end) => Reply::Ended { deployment, end },
                    Err(_) => Reply::error("the daemon stopped before the deployment ended"),
                };
                send(&mut w, last).await
            }
        },
    }
}

pub(super) async fn send(
    w: &mut (impl AsyncWriteExt + Unpin),
    reply: Reply,
) -> std::io::Result<()> {
    w.write_all(reply.line().as_bytes()).await
}
