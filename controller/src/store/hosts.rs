//! Hosts: one row per agent that has connected, with its facts, whether it
//! is connected now, and the losses and violations it has caused.
//!
//! A host's connection and its deployments move together: a lost
//! connection interrupts what the host was running, and a new one resumes
//! it, in one transaction.

use backstop_common::wire::HostFacts;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::deployments::DeploymentState::{Interrupted, Running};
use super::deployments::move_deployments;
use super::{Store, StoreError, now_ms};

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

impl HostRow {
    fn from_row(r: &SqliteRow) -> Result<Self, StoreError> {
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
    }
}

impl Store {
    /// A connected agent's newer count of dropped windows.
    pub async fn host_dropped(&self, name: &str, dropped_windows: u64) -> Result<(), StoreError> {
        self.run(
            sqlx::query("UPDATE hosts SET dropped_windows = ?2 WHERE name = ?1")
                .bind(name)
                .bind(dropped_windows as i64),
        )
        .await
    }

    pub async fn host_connected(
        &self,
        name: &str,
        facts: &HostFacts,
        dropped_windows: u64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO hosts (name, first_seen_ms, last_seen_ms, connected, kernel, os, agent_version, dropped_windows)
             VALUES (?1, ?2, ?2, 1, ?3, ?4, ?5, ?6)
             ON CONFLICT (name) DO UPDATE SET last_seen_ms = ?2, connected = 1, kernel = ?3, os = ?4,
                 agent_version = ?5, dropped_windows = ?6",
        )
        .bind(name)
        .bind(now_ms())
        .bind(&facts.kernel)
        .bind(&facts.os)
        .bind(&facts.agent_version)
        .bind(dropped_windows as i64)
        .execute(&mut *tx)
        .await?;
        // A deployment interrupted by a lost connection resumes with it.
        move_deployments(&mut tx, Some(name), Interrupted, Running).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn host_seen(&self, name: &str) -> Result<(), StoreError> {
        self.run(
            sqlx::query("UPDATE hosts SET last_seen_ms = ? WHERE name = ?")
                .bind(now_ms())
                .bind(name),
        )
        .await
    }

    /// The host's connection is gone: it is disconnected, and what it was
    /// running is interrupted until it comes back.
    pub async fn host_disconnected(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE hosts SET connected = 0, last_seen_ms = ? WHERE name = ?")
            .bind(now_ms())
            .bind(name)
            .execute(&mut *tx)
            .await?;
        move_deployments(&mut tx, Some(name), Running, Interrupted).await?;
        tx.commit().await?;
        Ok(())
    }

    /// At daemon start no host is connected yet, whatever the last run left.
    pub async fn all_disconnected(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE hosts SET connected = 0")
            .execute(&mut *tx)
            .await?;
        move_deployments(&mut tx, None, Running, Interrupted).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Count one message of `host` about a deployment not its own.
    pub async fn identity_violation(&self, host: &str) -> Result<(), StoreError> {
        self.run(
            sqlx::query(
                "UPDATE hosts SET identity_violations = identity_violations + 1 WHERE name = ?",
            )
            .bind(host),
        )
        .await
    }

    pub async fn hosts(&self) -> Result<Vec<HostRow>, StoreError> {
        self.list(
            sqlx::query("SELECT name, first_seen_ms, last_seen_ms, connected, kernel, os, agent_version, dropped_windows, identity_violations FROM hosts ORDER BY name"),
            HostRow::from_row,
        )
        .await
    }
}
