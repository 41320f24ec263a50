//! What the fleet's other deployments say about one deployment: the one
//! running on the same or a nested root (which refuses a second, see
//! `StoreError::RootBusy`), and the history of its package the
//! correlation engine weighs (`decide::History`).
//!
//! What counts, and why:
//! - a rollback is a deployment that is `rolled_back`, `rolling_back`
//!   (ordered, not yet reported) or `refused` (shadow-first: the shadow
//!   failed): each is the package failing somewhere. `interrupted` (the
//!   agent was stopped) and `failed` (it could not start) say nothing
//!   about the package and are left out;
//! - dry runs are left out: nothing was acted on, and a dry run that
//!   would have rolled back still ends `committed`;
//! - the version's outcomes count distinct other hosts, not deployments:
//!   one host with a bad disk retrying five times is one host's word, and
//!   the rule asks "on how many other hosts";
//! - the package's recent rollbacks count deployments of any version on
//!   any host (this one too) that ended in the last
//!   [`HISTORY_RECENT_MS`].
//!
//! A child module of `store` (for its pool).

use sqlx::Row;

use super::{DeployState, Store, StoreError};
use crate::decide::History;

/// "Recent" for the package's fleet-wide rollbacks: a day, so a package
/// that broke this morning's rollout still weighs in this afternoon,
/// and one fixed last week does not.
pub const HISTORY_RECENT_MS: i64 = 24 * 60 * 60 * 1000;

/// SQL: a stored deployment's root and the root bound to its five `?`
/// are one tree, or one holds the other. Two such deployments at once
/// would fight over dpkg's lock, and the outer one's restore would undo
/// the inner one's install. Roots are normalised by the manifest
/// (absolute, no `..`, no trailing `/`), so a prefix ending at a `/` is
/// a parent; a symlink between them is not followed (the agent resolves
/// nothing here).
pub(super) const ROOTS_OVERLAP: &str = "(json_extract(manifest, '$.root') = ?
     OR json_extract(manifest, '$.root') = '/' OR ? = '/'
     OR substr(?, 1, length(json_extract(manifest, '$.root')) + 1)
        = json_extract(manifest, '$.root') || '/'
     OR substr(json_extract(manifest, '$.root'), 1, length(?) + 1) = ? || '/')";

/// The deployment running (or rolling back) on `host` on a root that
/// overlaps `root`, and that root, for the refusal's message; inside the
/// transaction that found it.
pub(super) async fn running_on_root(
    tx: &mut sqlx::SqliteConnection,
    host: &str,
    root: &str,
) -> Result<(String, String), StoreError> {
    let sql = format!(
        "SELECT id, json_extract(manifest, '$.root') AS root FROM deploys
         WHERE host = ? AND state IN (?, ?) AND {ROOTS_OVERLAP} ORDER BY created_ms LIMIT 1"
    );
    let row = sqlx::query(&sql)
        .bind(host)
        .bind(DeployState::Running.as_str())
        .bind(DeployState::RollingBack.as_str())
        .bind(root)
        .bind(root)
        .bind(root)
        .bind(root)
        .bind(root)
        .fetch_optional(tx)
        .await?;
    Ok(match row {
        Some(r) => (r.try_get("id")?, r.try_get("root")?),
        // Ended between the insert and this read: still refused, since
        // the insert saw it running.
        None => ("(just ended)".to_string(), root.to_string()),
    })
}

/// The deployment this history is for.
#[derive(Debug, Clone, Copy)]
pub struct HistoryOf<'a> {
    /// Its id (left out of every count).
    pub id: &'a str,
    pub host: &'a str,
    pub package: &'a str,
    /// None: every version of the package counts as "this version".
    pub version: Option<&'a str>,
    /// Now, in ms since the epoch: the end of the recent period.
    pub now_ms: i64,
}

impl Store {
    /// The fleet's history of `of.package`, as the engine reads it.
    pub async fn history(&self, of: HistoryOf<'_>) -> Result<History, StoreError> {
        let [rolled_back, rolling_back, refused, committed] = [
            DeployState::RolledBack,
            DeployState::RollingBack,
            DeployState::Refused,
            DeployState::Committed,
        ]
        .map(DeployState::as_str);
        let row = sqlx::query(
            "SELECT
               COUNT(DISTINCT CASE WHEN host != ?1 AND (?2 IS NULL OR version = ?2)
                                    AND state = ?3 THEN host END) AS committed,
               COUNT(DISTINCT CASE WHEN host != ?1 AND (?2 IS NULL OR version = ?2)
                                    AND state IN (?4, ?5, ?6) THEN host END) AS rolled_back,
               COUNT(CASE WHEN state IN (?4, ?5, ?6)
                           AND COALESCE(ended_ms, created_ms) >= ?7 THEN 1 END) AS recent
             FROM deploys WHERE package = ?8 AND id != ?9 AND dry_run = 0",
        )
        .bind(of.host)
        .bind(of.version)
        .bind(committed)
        .bind(rolled_back)
        .bind(rolling_back)
        .bind(refused)
        .bind(of.now_ms - HISTORY_RECENT_MS)
        .bind(of.package)
        .bind(of.id)
        .fetch_one(&self.pool)
        .await?;
        let count = |col: &str| -> Result<u32, StoreError> {
            Ok(u32::try_from(row.try_get::<i64, _>(col)?).unwrap_or(u32::MAX))
        };
        Ok(History {
            version_committed: count("committed")?,
            version_rolled_back: count("rolled_back")?,
            package_recent_rollbacks: count("recent")?,
        })
    }
}

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;
