//! Windows: each agent window once, keyed by (deployment, stream, seq),
//! its features as little-endian f64 bytes so values stay exact, and the
//! host's levels beside them (JSON; NULL in rows from before schema v3).

use backstop_common::features::{FEATURES, SCHEMA_VERSION};
use backstop_common::hostlevels::HostLevels;
use backstop_common::window::{Stream, Window};
use sqlx::Row;

use super::{Store, StoreError, now_ms};

/// The features as stored: each value's 8 little-endian bytes, in order.
fn encode(features: &[f64]) -> Vec<u8> {
    features.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn decode(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("chunks_exact(8) yields 8 bytes")))
        .collect()
}

/// Feature schema v3 keeps the host's levels apart from the features.
pub(super) const HOST_MIGRATION: &str = "ALTER TABLE windows ADD COLUMN host TEXT;";

fn host_json(h: &HostLevels) -> String {
    serde_json::to_string(h).expect("plain numbers serialize")
}

impl Store {
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
                let r = sqlx::query(
                    "INSERT INTO windows (deployment, stream, seq, start_ns, end_ns, lost_events, schema, features, stored_ms, host)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                )
                .bind(deployment)
                .bind(w.stream.as_str())
                .bind(w.seq as i64)
                .bind(w.start_ns as i64)
                .bind(w.end_ns as i64)
                .bind(w.lost_events as i64)
                .bind(&w.schema)
                .bind(encode(&w.features))
                .bind(stored)
                .bind(host_json(&w.host))
                .execute(&mut *tx)
                .await?;
                new += r.rows_affected();
            }
        }
        tx.commit().await?;
        Ok(new)
    }

    /// Windows of a deployment in (stream, seq) order.
    pub async fn windows(&self, deployment: &str) -> Result<Vec<Window>, StoreError> {
        let rows = sqlx::query("SELECT stream, seq, start_ns, end_ns, lost_events, schema, features, host FROM windows WHERE deployment = ? ORDER BY stream, seq")
            .bind(deployment)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| window(deployment, r)).collect()
    }

    /// The windows of a deployment stored after row `after` (0: all), in
    /// the order they were stored, and the last row read (`after` when
    /// none): what a reader that holds the earlier ones needs. Rows only
    /// grow (a window is stored once and a running deployment's are never
    /// removed), so every window stored after `after` has a row above it.
    pub async fn windows_since(
        &self,
        deployment: &str,
        after: i64,
    ) -> Result<(Vec<Window>, i64), StoreError> {
        let rows = sqlx::query("SELECT stream, seq, start_ns, end_ns, lost_events, schema, features, host, rowid FROM windows WHERE deployment = ? AND rowid > ? ORDER BY rowid")
            .bind(deployment)
            .bind(after)
            .fetch_all(&self.pool)
            .await?;
        let last = match rows.last() {
            Some(r) => r.try_get(8)?,
            None => after,
        };
        let ws = rows
            .iter()
            .map(|r| window(deployment, r))
            .collect::<Result<_, _>>()?;
        Ok((ws, last))
    }
}

/// One stored window row (stream, seq, start_ns, end_ns, lost_events,
/// schema, features, host, in that order).
fn window(deployment: &str, r: &sqlx::sqlite::SqliteRow) -> Result<Window, StoreError> {
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
    w.features = decode(&bytes);
    let host: Option<String> = r.try_get(7)?;
    w.host = host
        .and_then(|h| serde_json::from_str(&h).ok())
        .unwrap_or_default();
    if w.features.len() != FEATURES.len() && w.schema == SCHEMA_VERSION {
        return Err(StoreError::WindowFeatures {
            deployment: deployment.to_string(),
            stream: w.stream.as_str(),
            seq: w.seq,
            count: w.features.len(),
        });
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use backstop_common::wire::HostFacts;

    use super::*;
    use crate::store::{DeploymentKind, DeploymentState, default_url};

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
            .new_deployment("d1", "web-1", DeploymentKind::Exec, &["true".into()])
            .await
            .unwrap();
        let mut ws: Vec<Window> = (0..3)
            .map(|s| Window::new(Stream::Live, s, s * 10, s * 10 + 10))
            .collect();
        ws[1].features[0] = 16_777_217.0;
        ws[2].host.disk_free_bytes = 9_007_199_254_740_993.0;
        ws[2].host.load1 = 0.37;
        assert_eq!(store.insert_windows("d1", &ws).await.unwrap(), 3);
        assert_eq!(
            store.insert_windows("d1", &ws[1..]).await.unwrap(),
            0,
            "redelivery stores nothing"
        );
        assert_eq!(store.windows("d1").await.unwrap(), ws);
        // Read since a row: the windows stored after it alone, a late one
        // (an earlier seq) included; a redelivery is no new row.
        let (all, first) = store.windows_since("d1", 0).await.unwrap();
        assert_eq!(all, ws);
        let more = vec![
            Window::new(Stream::Shadow, 0, 0, 10),
            Window::new(Stream::Live, 7, 70, 80),
        ];
        store.insert_windows("d1", &more).await.unwrap();
        store.insert_windows("d1", &ws[..1]).await.unwrap();
        let (new, last) = store.windows_since("d1", first).await.unwrap();
        assert_eq!(new, more);
        assert!(last > first);
        assert_eq!(
            store.windows_since("d1", last).await.unwrap(),
            (vec![], last)
        );
        assert!(store.windows_since("d2", 0).await.unwrap().0.is_empty());
        store.host_disconnected("web-1").await.unwrap();
        assert_eq!(store.deployment("d1").await.unwrap().state, "interrupted");
        assert!(!store.hosts().await.unwrap()[0].connected);
        store.host_connected("web-1", &facts, 0).await.unwrap();
        assert_eq!(store.deployment("d1").await.unwrap().state, "running");
        store
            .finish_deployment(
                "d1",
                DeploymentState::Finished,
                Some(0),
                Some(3),
                Some(0),
                None,
            )
            .await
            .unwrap();
        drop(store);
        // Reopening runs no migration twice.
        let store = Store::open(&url, false).await.unwrap();
        assert_eq!(store.deployment("d1").await.unwrap().exit_code, Some(0));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
