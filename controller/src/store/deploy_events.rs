//! A deployment's events, read whole or from where a reader left off.
//!
//! Why both: the decider reads a deployment's events before each of its
//! decisions, and in 250 ms windows the agent sends a memory sample with
//! every window; reading and parsing them all again each time grew with
//! the deployment's age. A reader that keeps what it read asks only for
//! the rows stored since (`daemon/score_cache.rs`).

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::deploy::unusable;
use super::{DeployEventRow, Store, StoreError};

fn event_row(r: &SqliteRow) -> Result<DeployEventRow, StoreError> {
    let detail: String = r.try_get("detail")?;
    Ok(DeployEventRow {
        seq: r.try_get::<i64, _>("seq")? as u64,
        at_ms: r.try_get("at_ms")?,
        event: serde_json::from_str(&detail).map_err(|e| unusable("deploy_events.detail", e))?,
    })
}

impl Store {
    /// Every event of deployment `id`, in seq order.
    pub async fn deploy_events(&self, id: &str) -> Result<Vec<DeployEventRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at_ms, detail FROM deploy_events WHERE deployment = ? ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_row).collect()
    }

    /// The events of deployment `id` stored after row `after` (0: all),
    /// in the order they were stored (not always seq order: the agent's
    /// outbox redelivers late), and the last row read (`after` when none).
    /// Rows only grow: an event is stored once and never removed while its
    /// deployment runs.
    pub async fn deploy_events_since(
        &self,
        id: &str,
        after: i64,
    ) -> Result<(Vec<DeployEventRow>, i64), StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at_ms, detail, rowid FROM deploy_events
             WHERE deployment = ? AND rowid > ? ORDER BY rowid",
        )
        .bind(id)
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        let last = match rows.last() {
            Some(r) => r.try_get("rowid")?,
            None => after,
        };
        let events = rows.iter().map(event_row).collect::<Result<_, _>>()?;
        Ok((events, last))
    }
}
