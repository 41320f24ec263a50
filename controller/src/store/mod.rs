//! The store: hosts, deployments, windows, events and certificates, in
//! SQLite through sqlx.
//!
//! Windows are keyed by (deployment, stream, seq) and inserted with
//! `ON CONFLICT DO NOTHING`: an agent resends whatever was not acknowledged
//! when a connection broke, and each window is stored exactly once however
//! often it arrives. Feature vectors are stored as little-endian f64 bytes,
//! in the schema order the row names, so values stay exact.
//!
//! One file per table family: `hosts.rs`, `deployments.rs` (with the
//! deployment state and kind enums), `windows.rs`, `events.rs`, `certs.rs`;
//! `migrations.rs` holds the schema. This file opens, checks and closes the
//! database. The row types and enums name no SQLite type, so a second
//! backend could sit beside these files behind the same `Store` methods.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool};

mod certs;
mod dash;
mod deploy;
mod deploy_events;
mod deployments;
mod events;
mod fleet;
mod hosts;
mod migrations;
mod windows;

pub use certs::{CertRow, CertStatus};
pub use deploy::{DecisionRow, DeployEventRow, DeployRow, DeployState};
pub use deployments::{DeploymentKind, DeploymentRow, DeploymentState, UnknownValue};
pub use fleet::{HISTORY_RECENT_MS, HistoryOf};
pub use hosts::HostRow;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("database {url} is not usable: {reason}")]
    Unusable { url: String, reason: String },
    /// The database file (or its directory) has the wrong owner or mode,
    /// or cannot be created.
    #[error("database {url} is not usable: {source}")]
    Files { url: String, source: std::io::Error },
    /// `PRAGMA quick_check` or a migration failed.
    #[error("database {url} is not usable: {source}")]
    Damaged { url: String, source: sqlx::Error },
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
    #[error("deployment {id} does not exist")]
    NoDeployment { id: String },
    /// Another deployment runs on this host's root, or on a root inside
    /// it or around it: two at once would fight over dpkg's lock, and
    /// one's rollback would undo the other.
    #[error(
        "host {host} already runs deployment {running} on root {running_root}, which overlaps root {root}: one deployment per root (nested roots included) at a time (wait for it to end, or `backstop cancel {running}`)"
    )]
    RootBusy {
        host: String,
        /// The refused deployment's root.
        root: String,
        running: String,
        /// The running deployment's root: the same, a parent or a child.
        running_root: String,
    },
    /// A stored text column holds a value this version has no name for.
    #[error("deployment {id}: {source}")]
    BadValue { id: String, source: UnknownValue },
    /// A stored window of the current schema has the wrong number of
    /// features.
    #[error(
        "database store is not usable: window {deployment}/{stream}/{seq} has {count} features"
    )]
    WindowFeatures {
        deployment: String,
        stream: &'static str,
        seq: u64,
        count: usize,
    },
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

/// A query with its arguments bound, ready to run on the pool.
type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;

/// The default database of a data directory.
pub fn default_url(data: &Path) -> String {
    format!("sqlite://{}", data.join("backstop.db").display())
}

/// Path of an SQLite URL, for messages.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let path = url.strip_prefix("sqlite://")?;
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

impl Store {
    /// Open (creating when `create`) and migrate. A corrupt or unwritable
    /// file fails here, before the daemon binds anything.
    pub async fn open(url: &str, create: bool) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            url: url.to_string(),
            source,
        };
        let damaged = |source| StoreError::Damaged {
            url: url.to_string(),
            source,
        };
        if let Some(path) = sqlite_path(url) {
            // SQLite gives the -wal and -shm files the database file's mode,
            // so a database created 0600 keeps all three private. Blocking
            // calls: off the runtime's threads.
            tokio::task::spawn_blocking(move || crate::private::database_files(&path, create))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(|source| StoreError::Files {
                    url: url.to_string(),
                    source,
                })?;
        }
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(open_err)?
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(open_err)?;
        let store = Store { pool };
        store.check(url).await?;
        migrations::migrate(&store.pool).await.map_err(damaged)?;
        Ok(store)
    }

    /// Close every connection: SQLite then checkpoints the WAL into the
    /// database and removes it. A short-lived command calls this before it
    /// exits, so the database file alone holds the data.
    pub async fn close(self) {
        // Fold the WAL in explicitly: the last connection's close would do
        // it too, but sqlx closes SQLite connections on worker threads a
        // process about to exit may not wait for.
        let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await;
        self.pool.close().await;
    }

    /// Fail fast on a damaged file: SQLite reports corruption lazily.
    async fn check(&self, url: &str) -> Result<(), StoreError> {
        let damaged = |source| StoreError::Damaged {
            url: url.to_string(),
            source,
        };
        let row = sqlx::query("PRAGMA quick_check")
            .fetch_one(&self.pool)
            .await
            .map_err(damaged)?;
        let verdict: String = row.try_get(0).map_err(damaged)?;
        if verdict != "ok" {
            return Err(StoreError::Unusable {
                url: url.to_string(),
                reason: verdict,
            });
        }
        Ok(())
    }

    /// Run one statement on the pool.
    async fn run(&self, query: Query<'_>) -> Result<(), StoreError> {
        query.execute(&self.pool).await?;
        Ok(())
    }

    /// Every row `query` returns, each read by `one`.
    async fn list<T>(
        &self,
        query: Query<'_>,
        one: fn(&SqliteRow) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        query.fetch_all(&self.pool).await?.iter().map(one).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn corrupt_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("backstop-store-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("backstop.db"), vec![0x5a; 8192]).unwrap();
        let err = Store::open(&default_url(&dir), false)
            .await
            .err()
            .expect("garbage is not a database");
        assert!(
            err.to_string().contains("backstop.db"),
            "names the file: {err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
