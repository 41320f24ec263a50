use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use backstop_controller::daemon::start::{ServeConfig, serve};
use tokio::signal::unix::{SignalKind, signal};

use super::Exit;

pub async fn run(data: PathBuf, listen: SocketAddr, database: Option<String>) -> Result<i32> {
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
