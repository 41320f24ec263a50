use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use backstop_controller::serve::{ServeConfig, serve};
use tokio::signal::unix::{SignalKind, signal};

use super::Exit;

pub async fn run(data: PathBuf, listen: SocketAddr, database: Option<String>) -> Result<i32> {
    std::fs::create_dir_all(&data).map_err(|e| {
        anyhow::anyhow!("creating the data directory {}: {e}", data.display()).context(Exit(2))
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
