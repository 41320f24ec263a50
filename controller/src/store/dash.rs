//! Reads the dashboard needs and no other reader did: the events each host's
//! probes could not record, summed over every window the store holds for it
//! (deployments through `backstop deploy` and through `exec`; a window is
//! counted once even when both tables name its deployment). A child
//! module of `store`, read-only.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{Store, StoreError};

impl Store {
    /// Host name -> the sum of `lost_events` over its stored windows.
    pub async fn lost_events_by_host(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT COALESCE(d.host, e.host) AS host, SUM(w.lost_events) AS lost
               FROM windows w
               LEFT JOIN deploys d ON d.id = w.deployment
               LEFT JOIN deployments e ON e.id = w.deployment
              WHERE COALESCE(d.host, e.host) IS NOT NULL
              GROUP BY COALESCE(d.host, e.host)",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = BTreeMap::new();
        for r in rows {
            let host: String = r.try_get("host")?;
            let lost: Option<i64> = r.try_get("lost")?;
            out.insert(host, lost.unwrap_or(0));
        }
        Ok(out)
    }
}
