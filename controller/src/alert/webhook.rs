//! A generic JSON webhook: `POST {url}` with the [`Alert`] itself as the
//! body (`state` says firing or resolved), an optional bearer token and
//! extra headers from the config.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::{Alert, AlertError, AlertSink, DeliveryError};

/// `[[alerts.sink]] type = "webhook"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    #[serde(default = "default_name")]
    pub name: String,
    pub url: String,
    /// Sent as `Authorization: Bearer ...`. Keep the config file 0600.
    pub bearer_token: Option<String>,
    /// A file holding the token (trailing whitespace ignored), so the
    /// config itself can stay world-readable.
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub ca_file: Option<PathBuf>,
}

fn default_name() -> String {
    "webhook".to_string()
}

pub struct WebhookSink {
    url: String,
    client: reqwest::Client,
    headers: HeaderMap,
}

impl WebhookSink {
    pub fn new(cfg: &WebhookConfig, timeout: Duration) -> Result<WebhookSink, AlertError> {
        let bad = |reason: String| AlertError::Sink {
            sink: cfg.name.clone(),
            reason,
        };
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| bad(format!("headers: {k:?}: {e}")))?;
            let value = HeaderValue::from_str(v).map_err(|e| bad(format!("headers.{k}: {e}")))?;
            headers.insert(name, value);
        }
        let token = match (&cfg.bearer_token, &cfg.bearer_token_file) {
            (Some(_), Some(_)) => {
                return Err(bad("bearer_token and bearer_token_file: give one".into()));
            }
            (Some(t), None) => Some(t.clone()),
            (None, Some(p)) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| bad(format!("bearer_token_file {}: {e}", p.display())))?
                    .trim_end()
                    .to_string(),
            ),
            (None, None) => None,
        };
        if let Some(t) = token {
            let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|e| bad(format!("bearer_token: {e}")))?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        Ok(WebhookSink {
            url: cfg.url.clone(),
            client: super::http::client(&cfg.name, timeout, cfg.ca_file.as_deref())?,
            headers,
        })
    }
}

impl AlertSink for WebhookSink {
    async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        let req = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .json(alert);
        super::http::send(&self.url, req).await
    }
}
