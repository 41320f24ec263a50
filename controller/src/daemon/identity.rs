//! An agent certificate speaks for one host only. Three checks, in the
//! order a connection meets them:
//!
//! 1. right after the handshake, the certificate's serial against the
//!    store's records (revoked, or unknown for a host that has records:
//!    refused, close code `REVOKED`);
//! 2. after Hello, the host's session slot: a second live session of the
//!    same host is refused (`DUPLICATE_SESSION`), while one whose first
//!    session has gone silent takes its place (see [`claim`]);
//! 3. every message about a deployment: the deployment must exist and
//!    belong to the certificate's host (`FOREIGN_DEPLOYMENT`), else the
//!    connection is closed, the event logged and counted per host.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use backstop_common::wire::AgentMsg;
use rustls::pki_types::CertificateDer;

use super::agents::{Ended, close};
use super::state::{Daemon, Session};
use crate::store::{CertStatus, Store};

/// How long a newcomer watches the host's current connection for a sign of
/// life. A live agent sends a QUIC keep-alive every 800 ms
/// (`quic::KEEP_ALIVE`), so a connection that received nothing in this
/// long is dead, even though its 4 s idle timeout has not yet run out.
pub const LIVENESS_PROBE: Duration = Duration::from_millis(1500);

/// The certificate a connection's peer presented (its first, the leaf).
pub(super) fn peer_cert(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    conn.peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|certs| certs.first().cloned())
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "a map_err adapter: it takes the error as map_err hands it over"
)]
fn internal(e: crate::store::StoreError) -> Ended {
    Ended::new(close::INTERNAL, format!("store: {e}"))
}

/// Check 1: the presented certificate against the records.
pub(crate) async fn check_certificate(
    store: &Store,
    host: &str,
    cert: &CertificateDer<'_>,
) -> Result<(), Ended> {
    let Some(serial) = crate::pki::serial_of(cert) else {
        return Err(Ended::new(
            close::IDENTITY,
            "certificate has no readable serial",
        ));
    };
    let refused = |why: String| Err(Ended::new(close::REVOKED, why));
    match store
        .certificate_status(host, &serial)
        .await
        .map_err(internal)?
    {
        CertStatus::Recorded => Ok(()),
        CertStatus::Unmanaged => {
            tracing::warn!(
                host,
                serial,
                "certificate not on record (issued before records were kept): accepted until `backstop revoke {host}`"
            );
            Ok(())
        }
        CertStatus::Revoked { at_ms } => refused(format!(
            "certificate {serial} of host {host} was revoked (at {at_ms} ms since the epoch)"
        )),
        CertStatus::OtherHost(owner) => refused(format!(
            "certificate {serial} is on record for host {owner}, not {host}"
        )),
        CertStatus::Unknown => refused(format!(
            "certificate {serial} is not on record for host {host} (revoked, or not issued by `backstop enroll`)"
        )),
    }
}

/// Check 2: take `host`'s session slot. A live first session keeps it and
/// the newcomer is refused; a first session that stays silent for
/// [`LIVENESS_PROBE`] is dead (its agent crashed, or lost its network and
/// reconnected from a new address) and is closed, so an agent gets back in
/// within ~2 s instead of waiting out the idle timeout.
pub(crate) async fn claim(daemon: &Arc<Daemon>, host: &str, mine: Session) -> Result<(), Ended> {
    let current = daemon
        .sessions
        .lock()
        .await
        .get(host)
        .map(|s| (s.id, s.conn.clone()));
    if let Some((old_id, old)) = current {
        if alive(&old).await {
            return Err(duplicate(host, &old));
        }
        tracing::warn!(
            host,
            old = %old.remote_address(),
            new = %mine.conn.remote_address(),
            "the host's session was silent for {} ms: replaced by its new connection",
            LIVENESS_PROBE.as_millis()
        );
        old.close(
            close::REPLACED.into(),
            b"silent while the same host reconnected: replaced",
        );
        let mut sessions = daemon.sessions.lock().await;
        if sessions.get(host).is_some_and(|s| s.id == old_id) {
            sessions.remove(host);
        }
    }
    let mut sessions = daemon.sessions.lock().await;
    if let Some(other) = sessions.get(host) {
        // Another newcomer won the slot while this one waited.
        return Err(duplicate(host, &other.conn));
    }
    sessions.insert(host.to_string(), mine);
    Ok(())
}

fn duplicate(host: &str, first: &quinn::Connection) -> Ended {
    tracing::warn!(host, first = %first.remote_address(), "second session refused: the host's first session is alive");
    Ended::new(
        close::DUPLICATE_SESSION,
        format!(
            "host {host} already has a live session (from {}); a second one is refused while it lives",
            first.remote_address()
        ),
    )
}

/// Whether `conn` receives anything within [`LIVENESS_PROBE`].
async fn alive(conn: &quinn::Connection) -> bool {
    if conn.close_reason().is_some() {
        return false;
    }
    let before = conn.stats().udp_rx.datagrams;
    tokio::select! {
        _ = conn.closed() => return false,
        () = tokio::time::sleep(LIVENESS_PROBE) => {}
    }
    conn.close_reason().is_none() && conn.stats().udp_rx.datagrams > before
}

/// Check 3, per session: the deployments already shown to be the host's.
#[derive(Default)]
pub(crate) struct Owned(HashSet<String>);

impl Owned {
    pub(crate) async fn check(
        &mut self,
        daemon: &Daemon,
        host: &str,
        msg: &AgentMsg,
    ) -> Result<(), Ended> {
        let deployment = match msg {
            // Hello and Dropped speak of the host itself, which the
            // certificate already names.
            AgentMsg::Hello { .. } | AgentMsg::Dropped { .. } => return Ok(()),
            AgentMsg::Windows { deployment, .. }
            | AgentMsg::Finished { deployment, .. }
            | AgentMsg::Failed { deployment, .. }
            | AgentMsg::Events { deployment, .. }
            | AgentMsg::Deployment { deployment, .. } => deployment,
        };
        if self.0.contains(deployment) {
            return Ok(());
        }
        let owner = daemon
            .store
            .deployment_host(deployment)
            .await
            .map_err(internal)?;
        if owner.as_deref() == Some(host) {
            self.0.insert(deployment.clone());
            return Ok(());
        }
        let why = match owner {
            Some(_) => "belongs to another host",
            None => "does not exist",
        };
        tracing::warn!(
            host,
            deployment,
            "identity violation: a message about a deployment that {why}; connection closed"
        );
        daemon
            .store
            .identity_violation(host)
            .await
            .map_err(internal)?;
        Err(Ended::new(
            close::FOREIGN_DEPLOYMENT,
            format!("deployment {deployment} {why}: host {host} may speak only for its own"),
        ))
    }
}
