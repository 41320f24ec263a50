//! Deployments: one row per command the controller asked an agent to run,
//! with its kind and its state as enums stored under fixed names.

use std::fmt;
use std::str::FromStr;

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::{Store, StoreError, now_ms};

/// A stored text column's value that this version has no name for: written
/// by a newer controller, or by hand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{column} is {value:?}, which this version does not know")]
pub struct UnknownValue {
    /// `table.column`.
    pub column: &'static str,
    pub value: String,
}

/// An enum stored as text: each variant's name is fixed here, read back
/// with `FromStr`, printed (padding honoured) and serialised as that name,
/// and compares equal to it.
macro_rules! stored_enum {
    ($(#[$meta:meta])* $name:ident in $column:literal {
        $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &[Self] = &[$(Self::$variant),+];

            /// The name stored in the database and shown to users.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownValue {
                        column: $column,
                        value: s.to_string(),
                    })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

stored_enum! {
    /// Where a deployment is in its life.
    DeploymentState in "deployments.state" {
        /// Its agent is running it.
        Running = "running",
        /// Its agent's connection is gone; it resumes when the agent
        /// reconnects.
        Interrupted = "interrupted",
        /// The command ran and exited (whatever its exit code).
        Finished = "finished",
        /// The command could not be started.
        Failed = "failed",
        /// A manifest deployment (kind `deploy`): a rollback was ordered.
        RollingBack = "rolling_back",
        /// A manifest deployment the agent rolled back.
        RolledBack = "rolled_back",
        /// A manifest deployment kept after its monitoring period.
        Committed = "committed",
        /// A shadow-first deployment whose shadow failed: live never ran.
        Refused = "refused",
    }
}

stored_enum! {
    /// What a deployment runs.
    DeploymentKind in "deployments.kind" {
        /// A command run as a tracked tree (`backstop exec`).
        Exec = "exec",
        /// A simulated agent's stream from `backstop-loadgen` (the ingest
        /// benchmark), which runs nothing.
        Load = "load",
        /// A manifest carried through the steps (`backstop deploy`); its
        /// details are in `deploys`.
        Deploy = "deploy",
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeploymentRow {
    pub id: String,
    pub host: String,
    pub kind: DeploymentKind,
    pub argv: Vec<String>,
    pub state: DeploymentState,
    pub exit_code: Option<i64>,
    pub windows: Option<i64>,
    pub lost_events: Option<i64>,
    pub reason: Option<String>,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
}

impl DeploymentRow {
    fn from_row(r: &SqliteRow) -> Result<Self, StoreError> {
        let id: String = r.try_get(0)?;
        let argv: String = r.try_get(3)?;
        let bad = |source| StoreError::BadValue {
            id: id.clone(),
            source,
        };
        let kind = r.try_get::<String, _>(2)?.parse().map_err(bad)?;
        let state = r.try_get::<String, _>(4)?.parse().map_err(bad)?;
        Ok(DeploymentRow {
            id,
            host: r.try_get(1)?,
            kind,
            argv: serde_json::from_str(&argv).unwrap_or_default(),
            state,
            exit_code: r.try_get(5)?,
            windows: r.try_get(6)?,
            lost_events: r.try_get(7)?,
            reason: r.try_get(8)?,
            created_ms: r.try_get(9)?,
            finished_ms: r.try_get(10)?,
        })
    }
}

/// Move the deployments of `host` (of every host when None) that are in
/// state `from` to `to`, inside the caller's transaction.
pub(super) async fn move_deployments(
    conn: &mut SqliteConnection,
    host: Option<&str>,
    from: DeploymentState,
    to: DeploymentState,
) -> Result<(), sqlx::Error> {
    // Two statements rather than `(?3 IS NULL OR host = ?3)`, so that the
    // per-host one can use the (host, state) index.
    let query = match host {
        Some(host) => sqlx::query("UPDATE deployments SET state = ? WHERE state = ? AND host = ?")
            .bind(to.as_str())
            .bind(from.as_str())
            .bind(host),
        None => sqlx::query("UPDATE deployments SET state = ? WHERE state = ?")
            .bind(to.as_str())
            .bind(from.as_str()),
    };
    query.execute(conn).await?;
    Ok(())
}

impl Store {
    pub async fn new_deployment(
        &self,
        id: &str,
        host: &str,
        kind: DeploymentKind,
        argv: &[String],
    ) -> Result<(), StoreError> {
        self.run(
            sqlx::query(
                "INSERT INTO deployments (id, host, kind, argv, state, created_ms) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(id)
            .bind(host)
            .bind(kind.as_str())
            .bind(serde_json::to_string(argv).unwrap_or_default())
            .bind(DeploymentState::Running.as_str())
            .bind(now_ms()),
        )
        .await
    }

    pub async fn finish_deployment(
        &self,
        id: &str,
        state: DeploymentState,
        exit_code: Option<i32>,
        windows: Option<u64>,
        lost_events: Option<u64>,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        self.run(
            sqlx::query(
                "UPDATE deployments SET state = ?, exit_code = ?, windows = ?, lost_events = ?, reason = ?, finished_ms = ? WHERE id = ?",
            )
            .bind(state.as_str())
            .bind(exit_code)
            .bind(windows.map(|w| w as i64))
            .bind(lost_events.map(|w| w as i64))
            .bind(reason)
            .bind(now_ms())
            .bind(id),
        )
        .await
    }

    pub async fn deployments(&self) -> Result<Vec<DeploymentRow>, StoreError> {
        self.list(
            sqlx::query("SELECT id, host, kind, argv, state, exit_code, windows, lost_events, reason, created_ms, finished_ms FROM deployments ORDER BY created_ms, id"),
            DeploymentRow::from_row,
        )
        .await
    }

    pub async fn deployment(&self, id: &str) -> Result<DeploymentRow, StoreError> {
        self.deployments()
            .await?
            .into_iter()
            .find(|d| d.id == id)
            .ok_or_else(|| StoreError::NoDeployment { id: id.to_string() })
    }

    /// The host a deployment belongs to, or None when there is no such
    /// deployment.
    pub async fn deployment_host(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT host FROM deployments WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_read_back_as_the_same_variant() {
        for s in DeploymentState::ALL {
            assert_eq!(s.as_str().parse::<DeploymentState>(), Ok(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(format!("{s:<12}|"), format!("{:<12}|", s.as_str()));
        }
        for k in DeploymentKind::ALL {
            assert_eq!(k.as_str().parse::<DeploymentKind>(), Ok(*k));
        }
        // The names on disk are the ones databases already hold.
        let names: Vec<_> = DeploymentState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "running",
                "interrupted",
                "finished",
                "failed",
                "rolling_back",
                "rolled_back",
                "committed",
                "refused"
            ]
        );
        let kinds: Vec<_> = DeploymentKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(kinds, ["exec", "load", "deploy"]);
    }

    #[tokio::test]
    async fn an_unknown_stored_state_is_an_error_naming_the_column() {
        let dir = std::env::temp_dir().join(format!("backstop-store-enum-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&super::super::default_url(&dir), true)
            .await
            .unwrap();
        store
            .new_deployment("d1", "h", DeploymentKind::Exec, &[])
            .await
            .unwrap();
        sqlx::query("UPDATE deployments SET state = 'paused' WHERE id = 'd1'")
            .execute(&store.pool)
            .await
            .unwrap();
        let err = store.deployments().await.unwrap_err().to_string();
        assert!(
            err.contains("d1") && err.contains("deployments.state") && err.contains("paused"),
            "names the deployment, the column and the value: {err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
