//! The schema, as an append-only list of migrations.
//!
//! Each entry is applied once, in order, inside a transaction; the applied
//! version is recorded in `schema_version`. A change to the schema is a new
//! entry at the end: an entry a database has already applied is never
//! edited, because that database would never see the edit.

use sqlx::{Row, SqlitePool};

const MIGRATIONS: &[&str] = &[
    r"
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
",
    r"
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
",
    super::deploy::MIGRATION,
    super::windows::HOST_MIGRATION,
    // A decision reads a deployment's rows stored since its last read
    // (`deployment = ? AND rowid > ?`): with only the primary keys, SQLite
    // walked every row of the deployment to find the new ones. An index
    // on the deployment alone holds the rowid in order after it.
    "CREATE INDEX windows_since ON windows(deployment);
     CREATE INDEX deploy_events_since ON deploy_events(deployment);",
];

/// Apply every migration the database has not applied yet.
pub(super) async fn migrate(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .execute(pool)
        .await?;
    let applied: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        .fetch_one(pool)
        .await?
        .try_get(0)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let mut tx = pool.begin().await?;
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_version (version) VALUES (?)")
            .bind(i as i64 + 1)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}
