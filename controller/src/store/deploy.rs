//! The store's part for `backstop deploy`: one row per deployment with its
//! manifest, every event the agent reported (keyed by its seq, so a
//! redelivered event is stored once), and every decision with the
//! evidence it was made from and its time, so `backstop replay` can run
//! the correlation engine again over exactly what it saw.
//!
//! A child module of `store` (for its pool); kept in its own file so the
//! store's split can move it as a whole. Its tables are one migration,
//! [`MIGRATION`], appended to the store's list.

use backstop_common::deploy::DeployEvent;
use backstop_common::manifest::Manifest;
use sqlx::Row;

use super::{Store, StoreError, now_ms};

/// The tables of this module, as one migration.
pub(super) const MIGRATION: &str = r"
CREATE TABLE deploys (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    name TEXT NOT NULL,
    package TEXT,
    version TEXT,
    manifest TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    created_ms INTEGER NOT NULL,
    ended_ms INTEGER
);
CREATE INDEX deploys_package ON deploys(package, state);
CREATE TABLE deploy_events (
    deployment TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (deployment, seq)
);
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    reasons TEXT NOT NULL,
    evidence TEXT NOT NULL,
    acted INTEGER NOT NULL
);
CREATE INDEX decisions_deployment ON decisions(deployment, id);
";

/// Where a deployment is. Stored as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployState {
    /// Sent to the agent; installing or monitoring.
    Running,
    /// A rollback was ordered; the agent's report has not come yet.
    RollingBack,
    RolledBack,
    Committed,
    /// The agent was killed mid-install and rolled it back when it came
    /// back.
    Interrupted,
    /// Shadow-first: the shadow failed, live never ran.
    Refused,
    /// It could not start; nothing changed.
    Failed,
    /// An operator gave up on it (`backstop cancel --force`), freeing its
    /// root; backstop restored nothing unless its agent was there to be
    /// told. A report its agent sends later still moves it on.
    Abandoned,
}

impl DeployState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployState::Running => "running",
            DeployState::RollingBack => "rolling_back",
            DeployState::RolledBack => "rolled_back",
            DeployState::Committed => "committed",
            DeployState::Interrupted => "interrupted",
            DeployState::Refused => "refused",
            DeployState::Failed => "failed",
            DeployState::Abandoned => "abandoned",
        }
    }

    fn parse(s: &str) -> Result<DeployState, StoreError> {
        serde_json::from_value(serde_json::Value::String(s.into())).map_err(|_| {
            StoreError::Unusable {
                url: "store".into(),
                reason: format!("deploys.state holds {s:?}, which no state is called"),
            }
        })
    }

    /// No more events change it.
    pub fn ended(self) -> bool {
        !matches!(self, DeployState::Running | DeployState::RollingBack)
    }

    /// The state a final event puts a deployment in.
    pub fn after(event: &DeployEvent) -> Option<DeployState> {
        Some(match event {
            DeployEvent::RolledBack { .. } => DeployState::RolledBack,
            DeployEvent::Committed { .. } => DeployState::Committed,
            DeployEvent::Interrupted { .. } => DeployState::Interrupted,
            DeployEvent::Refused { .. } => DeployState::Refused,
            DeployEvent::Failed { .. } => DeployState::Failed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeployRow {
    pub id: String,
    pub host: String,
    pub name: String,
    pub package: Option<String>,
    pub version: Option<String>,
    pub dry_run: bool,
    pub state: DeployState,
    pub reason: Option<String>,
    pub created_ms: i64,
    pub ended_ms: Option<i64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeployEventRow {
    pub seq: u64,
    pub at_ms: i64,
    pub event: DeployEvent,
}

/// One stored decision: the verdict, its reasons (JSON, as the engine
/// gave them), the evidence it was made from (JSON), and whether it was
/// acted on (false under `--dry-run`: the time it would have fired).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DecisionRow {
    pub at_ms: i64,
    pub verdict: String,
    pub reasons: serde_json::Value,
    pub evidence: serde_json::Value,
    pub acted: bool,
}

pub(super) fn unusable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unusable {
        url: "store".into(),
        reason: format!("{what}: {e}"),
    }
}

impl Store {
    /// Record a new deployment (also as a row of `deployments`, kind
    /// `deploy`, so windows and the ownership check find it).
    pub async fn new_deploy(
        &self,
        id: &str,
        host: &str,
        manifest: &Manifest,
        dry_run: bool,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(manifest).map_err(|e| unusable("manifest", e))?;
        let root = manifest.root.display().to_string();
        let mut tx = self.pool.begin().await?;
        // One statement checks and inserts, so two deploys to one root (or
        // nested roots) at once cannot both pass (SQLite runs one writer
        // at a time): the second sees the first's row and is refused
        // (`RootBusy`).
        let sql = format!(
            "INSERT INTO deploys (id, host, name, package, version, manifest, dry_run, state, created_ms)
             SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?
             WHERE NOT EXISTS (SELECT 1 FROM deploys WHERE host = ? AND state IN (?, ?)
                               AND {})",
            super::fleet::ROOTS_OVERLAP
        );
        let inserted = sqlx::query(&sql)
            .bind(id)
            .bind(host)
            .bind(&manifest.name)
            .bind(manifest.package.as_ref().map(|p| p.name.clone()))
            .bind(manifest.package.as_ref().and_then(|p| p.version.clone()))
            .bind(json)
            .bind(dry_run)
            .bind(DeployState::Running.as_str())
            .bind(now_ms())
            .bind(host)
            .bind(DeployState::Running.as_str())
            .bind(DeployState::RollingBack.as_str())
            .bind(&root)
            .bind(&root)
            .bind(&root)
            .bind(&root)
            .bind(&root)
            .execute(&mut *tx)
            .await?;
        if inserted.rows_affected() == 0 {
            let (running, running_root) =
                super::fleet::running_on_root(&mut tx, host, &root).await?;
            return Err(StoreError::RootBusy {
                host: host.to_string(),
                root,
                running,
                running_root,
            });
        }
        sqlx::query(
            "INSERT INTO deployments (id, host, kind, argv, state, created_ms) VALUES (?, ?, 'deploy', ?, 'running', ?)",
        )
        .bind(id)
        .bind(host)
        .bind(serde_json::json!([manifest.name]).to_string())
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Store one event; false when this seq was stored already.
    pub async fn add_deploy_event(
        &self,
        id: &str,
        seq: u64,
        event: &DeployEvent,
    ) -> Result<bool, StoreError> {
        let detail = serde_json::to_string(event).map_err(|e| unusable("event", e))?;
        let r = sqlx::query(
            "INSERT INTO deploy_events (deployment, seq, at_ms, kind, detail) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(seq as i64)
        .bind(now_ms())
        .bind(event.kind())
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Move a deployment to `state`; an ended one keeps its end, but for
    /// `abandoned`: an operator gave up on it without its agent, so the
    /// agent's own final report, when one comes, says what became of the
    /// root (`daemon/abandon.rs`).
    pub async fn set_deploy_state(
        &self,
        id: &str,
        state: DeployState,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let ended = state.ended().then(now_ms);
        let moved = sqlx::query(
            "UPDATE deploys SET state = ?, reason = COALESCE(?, reason), ended_ms = ?
             WHERE id = ? AND state IN ('running', 'rolling_back', 'abandoned')",
        )
        .bind(state.as_str())
        .bind(reason)
        .bind(ended)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        // The summary row follows only a move the guard above allowed.
        if let Some(at) = ended.filter(|_| moved) {
            sqlx::query(
                "UPDATE deployments SET state = ?, reason = ?, finished_ms = ? WHERE id = ?",
            )
            .bind(state.as_str())
            .bind(reason)
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    pub async fn deploys(&self) -> Result<Vec<DeployRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, host, name, package, version, dry_run, state, reason, created_ms, ended_ms
             FROM deploys ORDER BY created_ms, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(deploy_row).collect()
    }

    pub async fn deploy(&self, id: &str) -> Result<(DeployRow, Manifest), StoreError> {
        let row = sqlx::query(
            "SELECT id, host, name, package, version, dry_run, state, reason, created_ms, ended_ms, manifest
             FROM deploys WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NoDeployment { id: id.to_string() })?;
        let manifest: String = row.try_get("manifest")?;
        let manifest =
            serde_json::from_str(&manifest).map_err(|e| unusable("deploys.manifest", e))?;
        Ok((deploy_row(&row)?, manifest))
    }

    pub async fn add_decision(&self, id: &str, d: &DecisionRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO decisions (deployment, at_ms, verdict, reasons, evidence, acted) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(d.at_ms)
        .bind(&d.verdict)
        .bind(d.reasons.to_string())
        .bind(d.evidence.to_string())
        .bind(d.acted)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A deployment's decisions, in the order they were made.
    pub async fn decisions(&self, id: &str) -> Result<Vec<DecisionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms, verdict, reasons, evidence, acted FROM decisions WHERE deployment = ? ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let json = |col: &str| -> Result<serde_json::Value, StoreError> {
                    let text: String = r.try_get(col)?;
                    serde_json::from_str(&text)
                        .map_err(|e| unusable(&format!("decisions.{col}"), e))
                };
                Ok(DecisionRow {
                    at_ms: r.try_get("at_ms")?,
                    verdict: r.try_get("verdict")?,
                    reasons: json("reasons")?,
                    evidence: json("evidence")?,
                    acted: r.try_get("acted")?,
                })
            })
            .collect()
    }
}

fn deploy_row(r: &sqlx::sqlite::SqliteRow) -> Result<DeployRow, StoreError> {
    let state: String = r.try_get("state")?;
    Ok(DeployRow {
        id: r.try_get("id")?,
        host: r.try_get("host")?,
        name: r.try_get("name")?,
        package: r.try_get("package")?,
        version: r.try_get("version")?,
        dry_run: r.try_get("dry_run")?,
        state: DeployState::parse(&state)?,
        reason: r.try_get("reason")?,
        created_ms: r.try_get("created_ms")?,
        ended_ms: r.try_get("ended_ms")?,
    })
}

#[cfg(test)]
#[path = "deploy_tests.rs"]
mod tests;
