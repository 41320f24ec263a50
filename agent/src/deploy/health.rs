//! Health probes: a command, a TCP connect, an HTTP GET. Each gives a
//! [`ProbeResult`]: whether it passed, how long it took, and what it saw.
//!
//! The HTTP GET is written here (a request line, a Host header, read the
//! status line) rather than taken from a client crate: it is one GET to a
//! service the manifest names, http:// only (a probe checks that the
//! service answers, not the network's privacy), and the only thing read is
//! the status code. hyper or reqwest would bring a connection pool, TLS
//! and redirects this does not want; a redirect is an answer, not a hop.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Cmd;

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProbeKind {
    /// Passes when the command exits 0 within the timeout.
    Command(Cmd),
    /// Passes when a TCP connect to `addr` (host:port) succeeds.
    Tcp { addr: String },
    /// Passes when `GET url` answers `expect_status`.
    Http { url: String, expect_status: u16 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeSpec {
    pub name: String,
    pub kind: ProbeKind,
    /// Time between two runs during the monitoring period.
    pub interval: Duration,
    pub timeout: Duration,
    /// A probe slower than this fails even when it answered.
    pub latency_budget: Option<Duration>,
}

pub use backstop_common::deploy::ProbeResult;

/// Run one probe; `root` is where a command probe runs (chrooted when not
/// "/", like the steps).
pub async fn probe(spec: &ProbeSpec, root: &std::path::Path) -> ProbeResult {
    let start = Instant::now();
    let outcome = match &spec.kind {
        ProbeKind::Command(cmd) => command(cmd, root, spec.timeout).await,
        ProbeKind::Tcp { addr } => tcp(addr, spec.timeout).await,
        ProbeKind::Http { url, expect_status } => http(url, *expect_status, spec.timeout).await,
    };
    let latency = start.elapsed();
    let (mut ok, mut detail) = match outcome {
        Ok((ok, detail)) => (ok, detail),
        Err(e) => (false, e),
    };
    if let Some(budget) = spec.latency_budget
        && ok
        && latency > budget
    {
        ok = false;
        detail = format!("{detail}; slower than its budget of {budget:?}");
    }
    ProbeResult {
        name: spec.name.clone(),
        ok,
        latency_ms: latency.as_secs_f64() * 1e3,
        detail,
        // Stamped by the forwarder, which sees the windows.
        window: 0,
    }
}

async fn command(
    cmd: &Cmd,
    root: &std::path::Path,
    timeout: Duration,
) -> Result<(bool, String), String> {
    let mut c = tokio::process::Command::from(super::live::std_command(&cmd.argv, root, &cmd.env));
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = c
        .spawn()
        .map_err(|e| format!("starting {:?}: {e}", cmd.argv))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(st)) => Ok((st.success(), format!("exit {st}"))),
        Ok(Err(e)) => Err(format!("waiting: {e}")),
        Err(_) => Err(format!("no exit within {timeout:?}")),
    }
}

async fn tcp(addr: &str, timeout: Duration) -> Result<(bool, String), String> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok((true, format!("connected to {addr}"))),
        Ok(Err(e)) => Err(format!("connect {addr}: {e}")),
        Err(_) => Err(format!("connect {addr}: no answer within {timeout:?}")),
    }
}

/// `http://host[:port][/path]` split into (host:port, host, path).
pub fn split_url(url: &str) -> Result<(String, String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are probed"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{url}: no host, or credentials in the URL"));
    }
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    let addr = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((addr, authority.to_string(), path.to_string()))
}

/// The status code of an HTTP/1.x status line.
pub fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

async fn http(url: &str, expect: u16, timeout: Duration) -> Result<(bool, String), String> {
    let (addr, host, path) = split_url(url)?;
    let get = async {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: backstop-agent\r\n\r\n"
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("sending to {addr}: {e}"))?;
        // Only the status line matters; 512 bytes hold it.
        let mut head = Vec::with_capacity(512);
        let mut buf = [0u8; 512];
        while !head.contains(&b'\n') && head.len() < 512 {
            let n = s
                .read(&mut buf)
                .await
                .map_err(|e| format!("reading from {addr}: {e}"))?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        status_of(&head).ok_or_else(|| format!("{url}: no HTTP status line in the answer"))
    };
    match tokio::time::timeout(timeout, get).await {
        Ok(Ok(status)) => Ok((
            status == expect,
            format!("status {status} (expected {expect})"),
        )),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("{url}: no answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: ProbeKind) -> ProbeSpec {
        ProbeSpec {
            name: "p".into(),
            kind,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            latency_budget: None,
        }
    }

    #[test]
    fn urls_split_and_only_http_is_accepted() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/health?x=1").unwrap(),
            (
                "127.0.0.1:8080".into(),
                "127.0.0.1:8080".into(),
                "/health?x=1".into()
            )
        );
        assert_eq!(split_url("http://localhost").unwrap().0, "localhost:80");
        assert_eq!(split_url("http://[::1]/").unwrap().0, "[::1]:80");
        assert!(
            split_url("https://x/")
                .unwrap_err()
                .contains("only http://")
        );
        assert!(split_url("http://u:p@x/").is_err());
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(
            status_of(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(status_of(b"HTTP/1.0 200\r\n"), Some(200));
        assert_eq!(status_of(b"SSH-2.0-OpenSSH\r\n"), None);
    }

    /// A real server on loopback answering one request with `status`.
    async fn serve_once(status: u16) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").as_bytes())
                .await;
        });
        addr.to_string()
    }

    #[tokio::test]
    async fn http_probe_compares_the_status_and_tcp_probe_connects() {
        let addr = serve_once(200).await;
        let r = probe(
            &spec(ProbeKind::Http {
                url: format!("http://{addr}/"),
                expect_status: 200,
            }),
            std::path::Path::new("/"),
        )
        .await;
        assert!(r.ok, "{r:?}");
        let addr = serve_once(500).await;
        let r = probe(
            &spec(ProbeKind::Http {
                url: format!("http://{addr}/"),
                expect_status: 200,
            }),
            std::path::Path::new("/"),
        )
        .await;
        assert!(!r.ok && r.detail.contains("status 500"), "{r:?}");
        // A port nobody listens on: bind, note it, close.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let r = probe(&spec(ProbeKind::Tcp { addr }), std::path::Path::new("/")).await;
        assert!(!r.ok, "{r:?}");
    }

    #[tokio::test]
    async fn a_command_probe_passes_on_exit_0_only() {
        let cmd = |argv: &[&str]| {
            ProbeKind::Command(Cmd {
                name: "c".into(),
                argv: argv.iter().map(std::string::ToString::to_string).collect(),
                timeout: Duration::from_secs(5),
                env: Vec::new(),
            })
        };
        let root = std::path::Path::new("/");
        assert!(probe(&spec(cmd(&["true"])), root).await.ok);
        let r = probe(&spec(cmd(&["false"])), root).await;
        assert!(!r.ok, "{r:?}");
        let mut s = spec(cmd(&["sleep", "5"]));
        s.timeout = Duration::from_millis(50);
        let r = probe(&s, root).await;
        assert!(!r.ok && r.detail.contains("no exit"), "{r:?}");
    }
}
