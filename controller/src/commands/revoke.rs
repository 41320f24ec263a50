use std::path::Path;

use anyhow::Result;
use backstop_common::control::{Reply, Request};
use backstop_controller::daemon::control::socket_path;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Revoke every certificate of `host` in the store; the daemon refuses
/// them from the next handshake on. If the daemon runs, it is asked to
/// close the host's live session now.
pub async fn run(data: &Path, host: &str) -> Result<i32> {
    backstop_controller::pki::valid_host(host)?;
    let store = super::open_store(data, None, false).await?;
    let n = store.revoke_host(host).await?;
    store.close().await;
    println!("revoked {n} live certificate(s) of {host}");
    match tell_daemon(data, host).await {
        Ok(true) => println!("closed {host}'s live session"),
        Ok(false) => {}
        // The records are what counts; a daemon that is down reads them at
        // the next handshake.
        Err(e) => tracing::debug!("telling the daemon: {e}"),
    }
    Ok(0)
}

async fn tell_daemon(data: &Path, host: &str) -> std::io::Result<bool> {
    let stream = tokio::net::UnixStream::connect(socket_path(data)).await?;
    let (r, mut w) = stream.into_split();
    let req = Request::Revoked {
        host: host.to_string(),
    };
    w.write_all(req.line().as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await?;
    Ok(matches!(
        serde_json::from_str(&line),
        Ok(Reply::Revoked { closed: true })
    ))
}
