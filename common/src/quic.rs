//! QUIC and mutual TLS settings both ends must agree on: ALPN, TLS 1.3
//! only, the crypto provider, idle timeout and keep-alive, and how PEM files
//! are read. Kept here so the agent and the controller cannot drift.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub const ALPN: &[u8] = b"backstop/1";

/// A connection with no traffic for this long is dead. The agent sends
/// keep-alives well inside it, so a killed peer is noticed within seconds.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
pub const KEEP_ALIVE: Duration = Duration::from_millis(800);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Certificates (in file order) and the private key, if any, of a PEM file.
pub fn read_pem(
    path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, Option<PrivateKeyDer<'static>>), TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let bad = |reason: String| TlsError::Pem {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("bad certificate: {e}")))?;
    let key = match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(k) => Some(k),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => None,
        Err(e) => return Err(bad(format!("bad private key: {e}"))),
    };
    Ok((certs, key))
}

/// An agent bundle: CA certificate, agent certificate, agent key.
pub struct Bundle {
    pub ca: CertificateDer<'static>,
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
}

pub fn read_bundle(path: &Path) -> Result<Bundle, TlsError> {
    let (certs, key) = read_pem(path)?;
    let bad = |reason: &str| TlsError::Pem {
        path: path.display().to_string(),
        reason: reason.to_string(),
    };
    let [ca, cert]: [_; 2] = certs
        .try_into()
        .map_err(|_| bad("expected two certificates: the CA's, then the agent's"))?;
    let key = key.ok_or_else(|| bad("no private key"))?;
    Ok(Bundle { ca, cert, key })
}

fn transport(keep_alive: bool) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(IDLE_TIMEOUT).expect("idle timeout fits"),
    ));
    if keep_alive {
        t.keep_alive_interval(Some(KEEP_ALIVE));
    }
    Arc::new(t)
}

fn config_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

/// The controller's endpoint config: its certificate, and client
/// certificates required and verified against `ca`.
pub fn server_config(
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<quinn::ServerConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).map_err(config_err)?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(config_err)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(config_err)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(config_err)?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(transport(false));
    Ok(cfg)
}

/// An agent's client config: trust only `ca`, present the agent's
/// certificate (or none, for tests of refusal).
pub fn client_config(
    ca: CertificateDer<'static>,
    identity: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).map_err(config_err)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_err)?
        .with_root_certificates(roots);
    let mut tls = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(vec![cert], key)
            .map_err(config_err)?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(config_err)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(transport(true));
    Ok(cfg)
}

/// Why reading a frame from a stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer finished its stream between frames: a clean end.
    #[error("stream finished")]
    Finished,
    #[error(transparent)]
    Frame(#[from] crate::wire::FrameError),
    #[error("connection: {0}")]
    Connection(String),
}

/// Read one frame and decode it.
pub async fn read_frame<T: for<'de> serde::Deserialize<'de>>(
    recv: &mut quinn::RecvStream,
) -> Result<T, ReadError> {
    use crate::wire::{FrameError, check_len, decode};
    let mut prefix = [0u8; 4];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Err(ReadError::Finished),
        Err(quinn::ReadExactError::FinishedEarly(got)) => {
            return Err(FrameError::Truncated { got, want: 4 }.into());
        }
        Err(quinn::ReadExactError::ReadError(e)) => {
            return Err(ReadError::Connection(e.to_string()));
        }
    }
    let len = check_len(prefix)?;
    let mut body = vec![0u8; len];
    match recv.read_exact(&mut body).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(got)) => {
            return Err(FrameError::Truncated { got, want: len }.into());
        }
        Err(quinn::ReadExactError::ReadError(e)) => {
            return Err(ReadError::Connection(e.to_string()));
        }
    }
    Ok(decode(&body)?)
}

/// Encode and write one frame.
pub async fn write_frame<T: serde::Serialize>(
    send: &mut quinn::SendStream,
    msg: &T,
) -> Result<(), quinn::WriteError> {
    send.write_all(&crate::wire::encode(msg)).await
}

/// Why an agent's opening of a session failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("connecting: {0}")]
    Connect(String),
    #[error("{0}")]
    Refused(String),
}

/// The agent's side of a session: connect, open the stream, say Hello and
/// wait for Welcome. A refusal reports the controller's close reason when
/// it gave one (TLS 1.3 judges the client certificate after the client's
/// handshake, so a refused certificate shows up here, not at connect).
pub async fn open_session(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    addr: std::net::SocketAddr,
    server_name: &str,
    hello: &crate::wire::AgentMsg,
) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream), HandshakeError> {
    use crate::wire::ControllerMsg;
    let connect = |e: &dyn std::fmt::Display| HandshakeError::Connect(e.to_string());
    let conn = endpoint
        .connect_with(config, addr, server_name)
        .map_err(|e| connect(&e))?
        .await
        .map_err(|e| connect(&e))?;
    let refused = |e: &dyn std::fmt::Display| {
        HandshakeError::Refused(close_reason(&conn).unwrap_or_else(|| e.to_string()))
    };
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| refused(&e))?;
    write_frame(&mut send, hello)
        .await
        .map_err(|e| refused(&e))?;
    match tokio::time::timeout(
        Duration::from_secs(10),
        read_frame::<ControllerMsg>(&mut recv),
    )
    .await
    {
        Ok(Ok(ControllerMsg::Welcome { .. })) => Ok((conn, send, recv)),
        Ok(Ok(other)) => Err(refused(&format!("expected Welcome, got {other:?}"))),
        Ok(Err(e)) => Err(refused(&e)),
        Err(_) => Err(refused(&"no Welcome within 10 s")),
    }
}

/// The peer's close reason, when it closed the connection with one.
pub fn close_reason(conn: &quinn::Connection) -> Option<String> {
    match conn.close_reason()? {
        quinn::ConnectionError::ApplicationClosed(c) => Some(format!(
            "closed by the peer (code {}): {}",
            c.error_code,
            String::from_utf8_lossy(&c.reason)
        )),
        other => Some(other.to_string()),
    }
}
