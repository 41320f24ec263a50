//! The reach of the controller: a real QUIC/TLS handshake with this host's
//! identity (its bundle), the one `backstop-agent run` makes, and then a
//! clean close. No Hello is sent, so the controller never counts the
//! doctor as the host's agent.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use backstop_common::quic;

use super::{Check, Options};

const NAME: &str = "controller";
/// How long the handshake may take before the controller counts as away.
const HANDSHAKE: Duration = Duration::from_secs(5);
/// In TLS 1.3 the server checks the client's certificate after the
/// client's side of the handshake is done: a refused certificate shows as
/// a close right after (the controller also checks its records of
/// revoked certificates then). Waiting this long catches either.
const REFUSAL: Duration = Duration::from_secs(2);

pub async fn check(opts: &Options) -> Check {
    let Some(addr) = opts.controller else {
        return Check::warn(
            NAME,
            "not checked: no controller given",
            "pass --controller ADDR --bundle FILE (or set them in /etc/backstop/agent.toml)",
        );
    };
    let Some(bundle) = &opts.bundle else {
        return Check::fail(
            NAME,
            format!("{addr}: no bundle, so no identity to present"),
            "pass --bundle with this host's bundle from `backstop init` or `backstop enroll`",
        );
    };
    match handshake(addr, bundle, &opts.server_name).await {
        Ok(()) => Check::ok(
            NAME,
            format!("{addr}: QUIC/TLS handshake as this host's identity accepted"),
        ),
        Err(e) => Check::fail(
            NAME,
            format!("{addr}: {e}"),
            "check the address, that `backstop serve` runs there, UDP reach, and that the bundle is this host's and not revoked",
        ),
    }
}

async fn handshake(
    addr: SocketAddr,
    bundle: &std::path::Path,
    server_name: &str,
) -> Result<(), String> {
    let b = quic::read_bundle(bundle).map_err(|e| format!("bundle {}: {e}", bundle.display()))?;
    let client = quic::client_config(b.ca, Some((b.cert, b.key)))
        .map_err(|e| format!("TLS configuration: {e}"))?;
    let bind: SocketAddr = if addr.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let endpoint = quinn::Endpoint::client(bind)
        .map_err(|e| format!("binding a UDP socket on {bind}: {e}"))?;
    let connecting = endpoint
        .connect_with(client, addr, server_name)
        .map_err(|e| format!("connecting: {e}"))?;
    let conn = match tokio::time::timeout(HANDSHAKE, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(format!("handshake: {e}")),
        Err(_) => return Err(format!("no answer within {} s", HANDSHAKE.as_secs())),
    };
    if let Ok(reason) = tokio::time::timeout(REFUSAL, conn.closed()).await {
        return Err(format!("the controller closed the connection: {reason}"));
    }
    conn.close(0u32.into(), b"doctor");
    endpoint.wait_idle().await;
    Ok(())
}
