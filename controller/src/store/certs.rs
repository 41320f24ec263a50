//! Certificates: every agent certificate `init` and `enroll` issued, and
//! when it was revoked, so that a certificate speaks for one host only and
//! a revoked one is refused.

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::{Store, StoreError, now_ms};

/// The serial of the row `revoke` records for a host none of whose
/// certificates is on record (issued before records were kept): from then
/// on, only recorded certificates of that host are accepted.
const UNRECORDED: &str = "unrecorded:";

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

    fn from_row(r: &SqliteRow) -> Result<Self, StoreError> {
        Ok(CertRow {
            serial: r.try_get(0)?,
            host: r.try_get(1)?,
            not_before_ms: r.try_get(2)?,
            not_after_ms: r.try_get(3)?,
            revoked_at_ms: r.try_get(4)?,
        })
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

/// Revoke every live certificate of `host` at `now`, inside the caller's
/// transaction; returns how many were live.
async fn revoke_live(conn: &mut SqliteConnection, host: &str, now: i64) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE certificates SET revoked_at_ms = ? WHERE host = ? AND revoked_at_ms IS NULL",
    )
    .bind(now)
    .bind(host)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

impl Store {
    /// Every recorded certificate of `host`, oldest first.
    pub async fn certificates(&self, host: &str) -> Result<Vec<CertRow>, StoreError> {
        self.list(
            sqlx::query(
                "SELECT serial, host, not_before_ms, not_after_ms, revoked_at_ms FROM certificates
                 WHERE host = ? ORDER BY issued_ms, serial",
            )
            .bind(host),
            CertRow::from_row,
        )
        .await
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
            revoke_live(&mut tx, &cert.host, now).await?;
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
        let n = revoke_live(&mut tx, host, now).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::default_url;

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
}
