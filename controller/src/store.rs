//! The store: hosts, deployments, windows and events, in SQLite through sqlx.
//!
//! Windows are keyed by (deployment, stream, seq) and inserted with
//! `ON CONFLICT DO NOTHING`: an agent resends whatever was not acknowledged
//! when a connection broke, and each window is stored exactly once however
//! often it arrives. Feature vectors are stored as little-endian f64 bytes,
//! in the schema order the row names, so values stay exact.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use backstop_common::features::FEATURES;
use backstop_common::window::{Stream, Window};
use backstop_common::wire::HostFacts;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

// `backstop deploy`'s tables and queries (see that file).
#[path = "store_deploy.rs"]
mod deploy;
pub use deploy::{DecisionRow, DeployEventRow, DeployRow, DeployState};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("database {url} is not usable: {reason}")]
    Unusable { url: String, reason: String },
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
    #[error("deployment {0} does not exist")]
    NoDeployment(String),
}

/// Each entry is applied once, in order, inside a transaction; the applied
/// version is recorded in `schema_version`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE hosts (
    name TEXT PRIMARY KEY,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    connected INTEGER NOT NULL,
    kernel TEXT NOT NULL DEFAULT '',
    os TEXT NOT NULL DEFAULT '',
    agent_version TEXT NOT NULL DEFAULT '',
    dropped_windows INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    kind TEXT NOT NULL,
    argv TEXT NOT NULL,
    state TEXT NOT NULL,
    exit_code INTEGER,
    windows INTEGER,
    lost_events INTEGER,
    reason TEXT,
    created_ms INTEGER NOT NULL,
    finished_ms INTEGER
);
CREATE INDEX deployments_host ON deployments(host, state);
CREATE TABLE windows (
    deployment TEXT NOT NULL,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    lost_events INTEGER NOT NULL,
    schema TEXT NOT NULL,
    features BLOB NOT NULL,
    stored_ms INTEGER NOT NULL,
    PRIMARY KEY (deployment, stream, seq)
);
CREATE TABLE events (
    deployment TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    UNIQUE (deployment, kind, detail)
);
"#,
    r#"
ALTER TABLE hosts ADD COLUMN identity_violations INTEGER NOT NULL DEFAULT 0;
CREATE TABLE certificates (
    serial TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    not_before_ms INTEGER NOT NULL,
    not_after_ms INTEGER NOT NULL,
    issued_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE INDEX certificates_host ON certificates(host);
"#,
    deploy::MIGRATION,
];

/// The serial of the row `revoke` records for a host none of whose
/// certificates is on record (issued before records were kept): from then
/// on, only recorded certificates of that host are accepted.
const UNRECORDED: &str = "unrecorded:";

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct HostRow {
    pub name: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub connected: bool,
    pub kernel: String,
    pub os: String,
    pub agent_version: String,
    pub dropped_windows: i64,
    /// Messages this host's certificate sent about deployments that are not
    /// its own (each closed the connection).
    pub identity_violations: i64,
}

/// An issued agent certificate, as recorded by `init` and `enroll`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertRow {
    /// Lowercase hex of the certificate's serial number.
    pub serial: String,
    pub host: String,
    pub not_before_ms: i64,
    pub not_after_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

impl CertRow {
    pub fn live(&self, now_ms: i64) -> bool {
        self.revoked_at_ms.is_none() && self.not_after_ms > now_ms
    }
}

/// What the records say about a certificate presented by an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertStatus {
    /// Recorded for this host and not revoked.
    Recorded,
    Revoked {
        at_ms: i64,
    },
    /// Recorded, but for another host than the one its name claims.
    OtherHost(String),
    /// Not on record, for a host that has records (or was revoked as a
    /// whole): refused.
    Unknown,
    /// Not on record, for a host that has none: issued before records were
    /// kept, accepted (with a warning) until the host is revoked.
    Unmanaged,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeploymentRow {
    pub id: String,
    pub host: String,
    pub kind: String,
    pub argv: Vec<String>,
    pub state: String,
    pub exit_code: Option<i64>,
    pub windows: Option<i64>,
    pub lost_events: Option<i64>,
    pub reason: Option<String>,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

/// The default database of a data directory.
pub fn default_url(data: &Path) -> String {
    format!("sqlite://{}", data.join("backstop.db").display())
}

impl Store {
    /// Open (creating when `create`) and migrate. A corrupt or unwritable
    /// file fails here, before the daemon binds anything.
    pub async fn open(url: &str, create: bool) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            url: url.to_string(),
            source,
        };
        if let Some(path) = sqlite_path(url) {
            // SQLite gives the -wal and -shm files the database file's mode,
            // so a database created 0600 keeps all three private. Blocking
            // calls: off the runtime's threads.
            tokio::task::spawn_blocking(move || crate::private::database_files(&path, create))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r)
                .map_err(|e| StoreError::Unusable {
                    url: url.to_string(),
                    reason: e.to_string(),
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
        store.migrate().await.map_err(|e| StoreError::Unusable {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
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
        let unusable = |reason: String| StoreError::Unusable {
            url: url.to_string(),
            reason,
        };
        let row = sqlx::query("PRAGMA quick_check")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| unusable(e.to_string()))?;
        let verdict: String = row.try_get(0).map_err(|e| unusable(e.to_string()))?;
        if verdict != "ok" {
            return Err(unusable(verdict));
        }
        Ok(())
    }

    async fn migrate(&self) -> Result<(), sqlx::Error> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            .execute(&self.pool)
            .await?;
        let applied: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
            let mut tx = self.pool.begin().await?;
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_version (version) VALUES (?)")
                .bind(i as i64 + 1)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// A connected agent's newer count of dropped windows.
    pub async fn host_dropped(&self, name: &str, dropped_windows: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE hosts SET dropped_windows = ?2 WHERE name = ?1")
            .bind(name)
            .bind(dropped_windows as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn host_connected(
        &self,
        name: &str,
        facts: &HostFacts,
        dropped_windows: u64,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO hosts (name, first_seen_ms, last_seen_ms, connected, kernel, os, agent_version, dropped_windows)
             VALUES (?1, ?2, ?2, 1, ?3, ?4, ?5, ?6)
             ON CONFLICT (name) DO UPDATE SET last_seen_ms = ?2, connected = 1, kernel = ?3, os = ?4,
                 agent_version = ?5, dropped_windows = ?6",
        )
        .bind(name)
        .bind(now)
        .bind(&facts.kernel)
        .bind(&facts.os)
        .bind(&facts.agent_version)
        .bind(dropped_windows as i64)
        .execute(&self.pool)
        .await?;
        // A deployment interrupted by a lost connection resumes with it.
        sqlx::query(
            "UPDATE deployments SET state = 'running' WHERE host = ? AND state = 'interrupted'",
        )
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn host_seen(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE hosts SET last_seen_ms = ? WHERE name = ?")
            .bind(now_ms())
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The host's connection is gone: it is disconnected, and what it was
    /// running is interrupted until it comes back.
    pub async fn host_disconnected(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE hosts SET connected = 0, last_seen_ms = ? WHERE name = ?")
            .bind(now_ms())
            .bind(name)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "UPDATE deployments SET state = 'interrupted' WHERE host = ? AND state = 'running'",
        )
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// At daemon start no host is connected yet, whatever the last run left.
    pub async fn all_disconnected(&self) -> Result<(), StoreError> {
        sqlx::query("UPDATE hosts SET connected = 0")
            .execute(&self.pool)
            .await?;
        sqlx::query("UPDATE deployments SET state = 'interrupted' WHERE state = 'running'")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn new_deployment(
        &self,
        id: &str,
        host: &str,
        kind: &str,
        argv: &[String],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO deployments (id, host, kind, argv, state, created_ms) VALUES (?, ?, ?, ?, 'running', ?)",
        )
        .bind(id)
        .bind(host)
        .bind(kind)
        .bind(serde_json::to_string(argv).unwrap_or_default())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Store windows; returns how many were new (the rest were redeliveries).
    pub async fn insert_windows(
        &self,
        deployment: &str,
        windows: &[Window],
    ) -> Result<u64, StoreError> {
        self.insert_window_batches(&[(deployment, windows)]).await
    }

    /// Store several deployments' windows in one transaction: one commit
    /// (one fsync of the WAL) for everything that arrived meanwhile.
    pub async fn insert_window_batches(
        &self,
        batches: &[(&str, &[Window])],
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let stored = now_ms();
        let mut new = 0;
        for &(deployment, windows) in batches {
            for w in windows {
                let features: Vec<u8> = w.features.iter().flat_map(|v| v.to_le_bytes()).collect();
                let r = sqlx::query(
                "INSERT INTO windows (deployment, stream, seq, start_ns, end_ns, lost_events, schema, features, stored_ms)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(deployment)
            .bind(w.stream.as_str())
            .bind(w.seq as i64)
            .bind(w.start_ns as i64)
            .bind(w.end_ns as i64)
            .bind(w.lost_events as i64)
            .bind(&w.schema)
            .bind(features)
            .bind(stored)
            .execute(&mut *tx)
            .await?;
                new += r.rows_affected();
            }
        }
        tx.commit().await?;
        Ok(new)
    }

    pub async fn finish_deployment(
        &self,
        id: &str,
        state: &str,
        exit_code: Option<i32>,
        windows: Option<u64>,
        lost_events: Option<u64>,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE deployments SET state = ?, exit_code = ?, windows = ?, lost_events = ?, reason = ?, finished_ms = ? WHERE id = ?",
        )
        .bind(state)
        .bind(exit_code)
        .bind(windows.map(|w| w as i64))
        .bind(lost_events.map(|w| w as i64))
        .bind(reason)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn hosts(&self) -> Result<Vec<HostRow>, StoreError> {
        let rows = sqlx::query("SELECT name, first_seen_ms, last_seen_ms, connected, kernel, os, agent_version, dropped_windows, identity_violations FROM hosts ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(HostRow {
                    name: r.try_get(0)?,
                    first_seen_ms: r.try_get(1)?,
                    last_seen_ms: r.try_get(2)?,
                    connected: r.try_get::<i64, _>(3)? != 0,
                    kernel: r.try_get(4)?,
                    os: r.try_get(5)?,
                    agent_version: r.try_get(6)?,
                    dropped_windows: r.try_get(7)?,
                    identity_violations: r.try_get(8)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    pub async fn deployments(&self) -> Result<Vec<DeploymentRow>, StoreError> {
        let rows = sqlx::query("SELECT id, host, kind, argv, state, exit_code, windows, lost_events, reason, created_ms, finished_ms FROM deployments ORDER BY created_ms, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let argv: String = r.try_get(3)?;
                Ok(DeploymentRow {
                    id: r.try_get(0)?,
                    host: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    argv: serde_json::from_str(&argv).unwrap_or_default(),
                    state: r.try_get(4)?,
                    exit_code: r.try_get(5)?,
                    windows: r.try_get(6)?,
                    lost_events: r.try_get(7)?,
                    reason: r.try_get(8)?,
                    created_ms: r.try_get(9)?,
                    finished_ms: r.try_get(10)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    pub async fn deployment(&self, id: &str) -> Result<DeploymentRow, StoreError> {
        self.deployments()
            .await?
            .into_iter()
            .find(|d| d.id == id)
            .ok_or_else(|| StoreError::NoDeployment(id.to_string()))
    }

    /// Windows of a deployment in (stream, seq) order.
    pub async fn windows(&self, deployment: &str) -> Result<Vec<Window>, StoreError> {
        let rows = sqlx::query("SELECT stream, seq, start_ns, end_ns, lost_events, schema, features FROM windows WHERE deployment = ? ORDER BY stream, seq")
            .bind(deployment)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let stream: String = r.try_get(0)?;
            let bytes: Vec<u8> = r.try_get(6)?;
            let mut w = Window::new(
                if stream == "shadow" {
                    Stream::Shadow
                } else {
                    Stream::Live
                },
                r.try_get::<i64, _>(1)? as u64,
                r.try_get::<i64, _>(2)? as u64,
                r.try_get::<i64, _>(3)? as u64,
            );
            w.lost_events = r.try_get::<i64, _>(4)? as u64;
            w.schema = r.try_get(5)?;
            w.features = bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            if w.features.len() != FEATURES.len()
                && w.schema == backstop_common::features::SCHEMA_VERSION
            {
                return Err(StoreError::Unusable {
                    url: "store".into(),
                    reason: format!(
                        "window {deployment}/{}/{} has {} features",
                        w.stream.as_str(),
                        w.seq,
                        w.features.len()
                    ),
                });
            }
            out.push(w);
        }
        Ok(out)
    }

    pub async fn events(
        &self,
        deployment: &str,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let rows =
            sqlx::query("SELECT kind, detail FROM events WHERE deployment = ? ORDER BY rowid")
                .bind(deployment)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let detail: String = r.try_get(1)?;
                Ok((
                    r.try_get(0)?,
                    serde_json::from_str(&detail).unwrap_or_default(),
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    pub async fn add_event(
        &self,
        deployment: &str,
        kind: &str,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        // Redelivered records are ignored, as windows are.
        sqlx::query("INSERT INTO events (deployment, at_ms, kind, detail) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING")
            .bind(deployment)
            .bind(now_ms())
            .bind(kind)
            .bind(detail.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl Store {
    /// The host a deployment belongs to, or None when there is no such
    /// deployment.
    pub async fn deployment_host(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT host FROM deployments WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Count one message of `host` about a deployment not its own.
    pub async fn identity_violation(&self, host: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE hosts SET identity_violations = identity_violations + 1 WHERE name = ?",
        )
        .bind(host)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every recorded certificate of `host`, oldest first.
    pub async fn certificates(&self, host: &str) -> Result<Vec<CertRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT serial, host, not_before_ms, not_after_ms, revoked_at_ms FROM certificates
             WHERE host = ? ORDER BY issued_ms, serial",
        )
        .bind(host)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CertRow {
                    serial: r.try_get(0)?,
                    host: r.try_get(1)?,
                    not_before_ms: r.try_get(2)?,
                    not_after_ms: r.try_get(3)?,
                    revoked_at_ms: r.try_get(4)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Record an issued certificate; with `revoke_others`, every other
    /// certificate of its host is revoked in the same transaction.
    pub async fn record_certificate(
        &self,
        cert: &CertRow,
        revoke_others: bool,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        if revoke_others {
            sqlx::query(
                "UPDATE certificates SET revoked_at_ms = ? WHERE host = ? AND revoked_at_ms IS NULL",
            )
            .bind(now)
            .bind(&cert.host)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO certificates (serial, host, not_before_ms, not_after_ms, issued_ms, revoked_at_ms)
             VALUES (?, ?, ?, ?, ?, NULL)",
        )
        .bind(&cert.serial)
        .bind(&cert.host)
        .bind(cert.not_before_ms)
        .bind(cert.not_after_ms)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revoke every certificate of `host`; returns how many were live.
    /// A host with none on record gets a marker row, so that its
    /// unrecorded (older) certificates are refused from now on too.
    pub async fn revoke_host(&self, host: &str) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let n = sqlx::query(
            "UPDATE certificates SET revoked_at_ms = ? WHERE host = ? AND revoked_at_ms IS NULL",
        )
        .bind(now)
        .bind(host)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "INSERT INTO certificates (serial, host, not_before_ms, not_after_ms, issued_ms, revoked_at_ms)
             SELECT ?1, ?2, 0, 0, ?3, ?3 WHERE NOT EXISTS (SELECT 1 FROM certificates WHERE host = ?2)",
        )
        .bind(format!("{UNRECORDED}{host}"))
        .bind(host)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// What the records say about the certificate `serial` presented as
    /// `host`.
    pub async fn certificate_status(
        &self,
        host: &str,
        serial: &str,
    ) -> Result<CertStatus, StoreError> {
        let row = sqlx::query("SELECT host, revoked_at_ms FROM certificates WHERE serial = ?")
            .bind(serial)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(r) = row {
            let owner: String = r.try_get(0)?;
            let revoked: Option<i64> = r.try_get(1)?;
            return Ok(match revoked {
                _ if owner != host => CertStatus::OtherHost(owner),
                Some(at_ms) => CertStatus::Revoked { at_ms },
                None => CertStatus::Recorded,
            });
        }
        let any: i64 = sqlx::query("SELECT COUNT(*) FROM certificates WHERE host = ?")
            .bind(host)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        Ok(if any > 0 {
            CertStatus::Unknown
        } else {
            CertStatus::Unmanaged
        })
    }
}

/// Path of an SQLite URL, for messages.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let path = url.strip_prefix("sqlite://")?;
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn windows_are_stored_once_and_read_back_exactly() {
        let dir = std::env::temp_dir().join(format!("backstop-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = default_url(&dir);
        let store = Store::open(&url, true).await.unwrap();
        let facts = HostFacts {
            kernel: "k".into(),
            os: "o".into(),
            agent_version: "v".into(),
        };
        store.host_connected("web-1", &facts, 0).await.unwrap();
        store
            .new_deployment("d1", "web-1", "exec", &["true".into()])
            .await
            .unwrap();
        let mut ws: Vec<Window> = (0..3)
            .map(|s| Window::new(Stream::Live, s, s * 10, s * 10 + 10))
            .collect();
        ws[1].features[0] = 16_777_217.0;
        assert_eq!(store.insert_windows("d1", &ws).await.unwrap(), 3);
        assert_eq!(
            store.insert_windows("d1", &ws[1..]).await.unwrap(),
            0,
            "redelivery stores nothing"
        );
        assert_eq!(store.windows("d1").await.unwrap(), ws);
        store.host_disconnected("web-1").await.unwrap();
        assert_eq!(store.deployment("d1").await.unwrap().state, "interrupted");
        assert!(!store.hosts().await.unwrap()[0].connected);
        store.host_connected("web-1", &facts, 0).await.unwrap();
        assert_eq!(store.deployment("d1").await.unwrap().state, "running");
        store
            .finish_deployment("d1", "finished", Some(0), Some(3), Some(0), None)
            .await
            .unwrap();
        drop(store);
        // Reopening runs no migration twice.
        let store = Store::open(&url, false).await.unwrap();
        assert_eq!(store.deployment("d1").await.unwrap().exit_code, Some(0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn certificates_are_judged_by_their_records() {
        let dir = std::env::temp_dir().join(format!("backstop-store-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&default_url(&dir), true).await.unwrap();
        let cert = |serial: &str, host: &str| CertRow {
            serial: serial.into(),
            host: host.into(),
            not_before_ms: 0,
            not_after_ms: now_ms() + 86_400_000,
            revoked_at_ms: None,
        };
        // A host without records: its (older) certificates are unmanaged
        // until it is revoked as a whole.
        assert_eq!(
            store.certificate_status("old", "aa").await.unwrap(),
            CertStatus::Unmanaged
        );
        assert_eq!(store.revoke_host("old").await.unwrap(), 0);
        assert_eq!(
            store.certificate_status("old", "aa").await.unwrap(),
            CertStatus::Unknown
        );

        store
            .record_certificate(&cert("01", "a"), false)
            .await
            .unwrap();
        assert_eq!(
            store.certificate_status("a", "01").await.unwrap(),
            CertStatus::Recorded
        );
        assert_eq!(
            store.certificate_status("b", "01").await.unwrap(),
            CertStatus::OtherHost("a".into())
        );
        assert_eq!(
            store.certificate_status("a", "02").await.unwrap(),
            CertStatus::Unknown
        );
        // --force: the new one is live, the old one revoked.
        store
            .record_certificate(&cert("02", "a"), true)
            .await
            .unwrap();
        assert!(matches!(
            store.certificate_status("a", "01").await.unwrap(),
            CertStatus::Revoked { .. }
        ));
        let live: Vec<_> = store
            .certificates("a")
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.live(now_ms()))
            .map(|c| c.serial)
            .collect();
        assert_eq!(live, ["02"]);
        assert_eq!(store.revoke_host("a").await.unwrap(), 1);
        assert!(
            store
                .certificates("a")
                .await
                .unwrap()
                .iter()
                .all(|c| !c.live(now_ms()))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

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
