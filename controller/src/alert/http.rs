//! The HTTP client both sinks use: rustls with the webpki roots (no system
//! OpenSSL), plus a CA file when the receiver's certificate is private,
//! and a time limit on every request so a receiver that never answers
//! costs one attempt, not the queue.

use std::path::Path;
use std::time::Duration;

use super::{AlertError, DeliveryError};

pub(crate) fn client(
    sink: &str,
    timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<reqwest::Client, AlertError> {
    let bad = |reason: String| AlertError::Sink {
        sink: sink.to_string(),
        reason,
    };
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("backstop/", env!("CARGO_PKG_VERSION")))
        // An alert goes where the config says, never where a redirect says.
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|e| bad(format!("ca_file {}: {e}", ca.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| bad(format!("ca_file {}: {e}", ca.display())))?;
        if certs.is_empty() {
            return Err(bad(format!("ca_file {}: no certificate", ca.display())));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().map_err(|e| bad(format!("http client: {e}")))
}

/// Send `req`; a 2xx is delivered, anything else is a [`DeliveryError`]
/// with (the start of) the receiver's answer.
pub(crate) async fn send(url: &str, req: reqwest::RequestBuilder) -> Result<(), DeliveryError> {
    let transport = |source| DeliveryError::Transport {
        url: url.to_string(),
        source,
    };
    let resp = req.send().await.map_err(transport)?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let mut body = resp.text().await.unwrap_or_default();
    body.truncate(body.floor_char_boundary(200));
    Err(DeliveryError::Status {
        url: url.to_string(),
        status: status.as_u16(),
        body,
    })
}
