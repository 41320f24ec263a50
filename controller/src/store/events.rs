//! Events: the exec, exit and OOM records of a deployment's processes, each
//! once, as JSON detail.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Store, StoreError, now_ms};

fn event(r: &SqliteRow) -> Result<(String, serde_json::Value), StoreError> {
    let detail: String = r.try_get(1)?;
    Ok((
        r.try_get(0)?,
        serde_json::from_str(&detail).unwrap_or_default(),
    ))
}

impl Store {
    pub async fn events(
        &self,
        deployment: &str,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        self.list(
            sqlx::query("SELECT kind, detail FROM events WHERE deployment = ? ORDER BY rowid")
                .bind(deployment),
            event,
        )
        .await
    }

    pub async fn add_event(
        &self,
        deployment: &str,
        kind: &str,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        // Redelivered records are ignored, as windows are.
        self.run(
            sqlx::query("INSERT INTO events (deployment, at_ms, kind, detail) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING")
                .bind(deployment)
                .bind(now_ms())
                .bind(kind)
                .bind(detail.to_string()),
        )
        .await
    }
}
