//! Alerts: what the controller tells people when it rolls a host back, and
//! when a later commit of the same package makes that moot.
//!
//! A rollback must never wait on an alert: [`Alerts::fire`] only writes the
//! alert to a local, durable queue (DATA/alerts/queue/SINK/, one 0600 file
//! per alert and sink) and wakes the sink's own delivery task, which
//! retries with capped, jittered exponential backoff, survives a
//! controller restart (the files are read again), and moves what it could
//! not deliver within `max_age` to DATA/alerts/dead/. Each sink keeps its
//! queue in order, so a resolve never overtakes the alert it resolves.
//!
//! Sinks implement one small trait, [`AlertSink`]: `alertmanager.rs`
//! (Alertmanager's v2 API) and `webhook.rs` (the [`Alert`] as JSON).

pub mod alertmanager;
mod alerts;
mod http;
mod queue;
pub mod webhook;
mod worker;

use std::future::Future;

pub use alerts::{AlertCounters, Alerts};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What one alert says. The same type is the webhook's JSON body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub host: String,
    pub deployment: String,
    pub package: String,
    pub version: String,
    /// The decision's verdict as text (`rollback`, ...).
    pub decision: String,
    /// The decision's reasons, each naming its evidence.
    pub reasons: Vec<String>,
    pub state: AlertState,
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    /// Set when resolved (the resolve time), and on a firing alert sent
    /// to Alertmanager (see `AlertsConfig::firing_for`).
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub ends_at: Option<OffsetDateTime>,
    /// One line for a pager.
    pub summary: String,
    /// Where to read more (the deployment's report), if there is a place.
    #[serde(default)]
    pub link: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl Alert {
    /// A firing alert about a decision taken now.
    pub fn firing(
        host: &str,
        deployment: &str,
        package: &str,
        version: &str,
        decision: &str,
        reasons: Vec<String>,
    ) -> Alert {
        Alert {
            host: host.to_string(),
            deployment: deployment.to_string(),
            package: package.to_string(),
            version: version.to_string(),
            decision: decision.to_string(),
            summary: format!(
                "backstop: {decision} of {package} {version} on {host} ({deployment})"
            ),
            reasons,
            state: AlertState::Firing,
            starts_at: now_ms(),
            ends_at: None,
            link: None,
        }
    }

    /// This alert, resolved at `at`.
    #[must_use]
    pub fn resolved(&self, at: OffsetDateTime) -> Alert {
        Alert {
            state: AlertState::Resolved,
            ends_at: Some(at),
            ..self.clone()
        }
    }
}

/// Now, to the millisecond: Alertmanager keeps times in milliseconds, so
/// an alert read back from it compares equal to the one sent.
pub fn now_ms() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_millisecond(now.millisecond()).unwrap_or(now)
}

/// Why a delivery failed, and whether trying again may help.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// No answer: refused, reset, TLS, or the request's time limit.
    #[error("{url}")]
    Transport { url: String, source: reqwest::Error },
    /// An answer that is not 2xx.
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    /// The sink did not finish within `alerts.timeout`.
    #[error("no answer within {after:?}")]
    TimedOut { after: std::time::Duration },
}

impl DeliveryError {
    /// Transport failures, 5xx, 408 and 429 are worth another try; any
    /// other answer means the receiver refuses this alert as it is.
    pub fn retry(&self) -> bool {
        match self {
            DeliveryError::Transport { .. } | DeliveryError::TimedOut { .. } => true,
            DeliveryError::Status { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
        }
    }
}

/// `e` and its sources on one line, for logs (tracing shows only Display).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// One kind of receiver. Implementations keep their own config struct in
/// their own file; the config's `type` key picks one.
pub trait AlertSink: Send + Sync + 'static {
    fn deliver(&self, alert: &Alert) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}

/// Why an alert could not be queued or the queue not opened.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("alert queue {}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("sink {sink}: {reason}")]
    Sink { sink: String, reason: String },
    #[error("alert queue task")]
    Join { source: tokio::task::JoinError },
}
