//! Alertmanager's v2 API: `POST {url}/api/v2/alerts` with a JSON array of
//! postable alerts (labels, annotations, startsAt, endsAt, generatorURL),
//! as prometheus/alertmanager's api/v2/openapi.yaml defines them.
//!
//! Labels are the alert's identity in Alertmanager (its fingerprint):
//! alertname, host, deployment, package, decision. The deployment id is a
//! label so that two rollbacks of one package are two alerts an SRE can
//! tell apart; a resolve therefore cannot be built from the package name
//! alone, so `Alerts` keeps each firing alert (DATA/alerts/firing/) and
//! resolves it by resending exactly its labels with endsAt set to the
//! resolve time. The version, reasons and summary are annotations: they
//! describe the alert and may change without making it another one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Alert, AlertError, AlertSink, AlertState, DeliveryError};

/// Every alert backstop sends has this alertname.
pub const ALERTNAME: &str = "BackstopRollback";

/// `[[alerts.sink]] type = "alertmanager"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    #[serde(default = "default_name")]
    pub name: String,
    /// The Alertmanager's base URL (`http://am:9093`); `/api/v2/alerts`
    /// is appended.
    pub url: String,
    /// PEM CA bundle for an https Alertmanager with a private CA; added
    /// to the webpki roots.
    pub ca_file: Option<PathBuf>,
}

fn default_name() -> String {
    "alertmanager".to_string()
}

/// One element of the POST body (the API's `postableAlert`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub ends_at: OffsetDateTime,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

impl PostableAlert {
    /// `firing_for`: how long Alertmanager keeps a firing alert without
    /// hearing of it again (its endsAt).
    pub fn from_alert(a: &Alert, firing_for: Duration) -> PostableAlert {
        let labels = BTreeMap::from([
            ("alertname".to_string(), ALERTNAME.to_string()),
            ("host".to_string(), a.host.clone()),
            ("deployment".to_string(), a.deployment.clone()),
            ("package".to_string(), a.package.clone()),
            ("decision".to_string(), a.decision.clone()),
        ]);
        let annotations = BTreeMap::from([
            ("summary".to_string(), a.summary.clone()),
            ("reasons".to_string(), a.reasons.join("\n")),
            ("version".to_string(), a.version.clone()),
        ]);
        let ends_at = match (a.state, a.ends_at) {
            (AlertState::Resolved, Some(t)) => t,
            (AlertState::Resolved, None) => OffsetDateTime::now_utc(),
            (AlertState::Firing, _) => a.starts_at + firing_for,
        };
        PostableAlert {
            labels,
            annotations,
            starts_at: a.starts_at,
            ends_at,
            generator_url: a.link.clone(),
        }
    }
}

pub struct AlertmanagerSink {
    endpoint: String,
    client: reqwest::Client,
    firing_for: Duration,
}

impl AlertmanagerSink {
    pub fn new(
        cfg: &AlertmanagerConfig,
        timeout: Duration,
        firing_for: Duration,
    ) -> Result<AlertmanagerSink, AlertError> {
        Ok(AlertmanagerSink {
            endpoint: format!("{}/api/v2/alerts", cfg.url.trim_end_matches('/')),
            client: super::http::client(&cfg.name, timeout, cfg.ca_file.as_deref())?,
            firing_for,
        })
    }
}

impl AlertSink for AlertmanagerSink {
    async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        let body = [PostableAlert::from_alert(alert, self.firing_for)];
        let req = self.client.post(&self.endpoint).json(&body);
        super::http::send(&self.endpoint, req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resolve_carries_exactly_the_firing_labels_and_an_end_in_the_past() {
        let a = Alert::firing("web-1", "d01", "nginx", "1.2", "rollback", vec!["x".into()]);
        let day = Duration::from_hours(24);
        let fire = PostableAlert::from_alert(&a, day);
        assert!(
            fire.ends_at > OffsetDateTime::now_utc(),
            "firing: endsAt ahead"
        );
        let later = OffsetDateTime::now_utc();
        let res = PostableAlert::from_alert(&a.resolved(later), day);
        assert_eq!(
            res.labels, fire.labels,
            "same labels, same Alertmanager alert"
        );
        assert_eq!(res.starts_at, fire.starts_at);
        assert_eq!(res.ends_at, later);
        let json = serde_json::to_value([&fire]).unwrap();
        assert_eq!(json[0]["labels"]["alertname"], ALERTNAME);
        assert!(json[0].get("generatorURL").is_none(), "no link, no key");
    }
}
