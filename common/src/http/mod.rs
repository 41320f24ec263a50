//! The small HTTP server `backstop serve --http` and `backstop-agent run
//! --metrics` share: a router of exact paths (and path prefixes ending in
//! `/`, for the dashboard's `/api/v1/...` later), GET only, one rule for
//! who may listen where.
//!
//! Why the rule: what is served (deployment names, hosts, package names,
//! the fleet's failures) tells an attacker where to aim, and the server has
//! no TLS of its own. So it binds loopback by default, where only local
//! users reach it (and a reverse proxy can add TLS); any other address is
//! refused unless a bearer token is configured, and then every request must
//! carry it. hyper 1 does the protocol; this module does only the policy.

mod serve;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

pub use serve::Server;

/// What a handler answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status: 200,
            content_type,
            body: body.into(),
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }
}

/// The Prometheus text format's content type.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a handler is told of the request: its path and query.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub query: Option<String>,
}

type Handler = Arc<dyn Fn(Request) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// Paths to handlers. A route ending in `/` matches every path below it.
#[derive(Clone, Default)]
pub struct Router {
    routes: Vec<(String, Handler)>,
}

impl Router {
    pub fn new() -> Self {
        Router::default()
    }

    /// Answer GET `path` with `handler`.
    #[must_use]
    pub fn get<F, Fut>(mut self, path: &str, handler: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let h: Handler = Arc::new(move |r| Box::pin(handler(r)));
        self.routes.push((path.to_string(), h));
        self
    }

    fn find(&self, path: &str) -> Option<&Handler> {
        self.routes
            .iter()
            .find(|(p, _)| p == path || (p.ends_with('/') && path.starts_with(p.as_str())))
            .map(|(_, h)| h)
    }
}

/// Who may listen where, and the flags to name when refusing.
#[derive(Debug, Clone)]
pub struct Access {
    pub addr: SocketAddr,
    /// The bearer token every request must carry, if any.
    pub token: Option<String>,
    /// The flag that set `addr` (e.g. `--http`), for errors.
    pub addr_flag: &'static str,
    /// The flag that gives the token file (e.g. `--http-token-file`).
    pub token_flag: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "{addr_flag} {addr} is not a loopback address: serving it needs a bearer token \
         ({token_flag} FILE), or bind 127.0.0.1 and put a TLS proxy in front"
    )]
    NeedsToken {
        addr: SocketAddr,
        addr_flag: &'static str,
        token_flag: &'static str,
    },
    #[error("{token_flag} {}: {source}", path.display())]
    TokenFile {
        path: PathBuf,
        token_flag: &'static str,
        source: std::io::Error,
    },
    #[error("{token_flag} {}: the token is empty", path.display())]
    EmptyToken {
        path: PathBuf,
        token_flag: &'static str,
    },
    #[error("{addr_flag} {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        addr_flag: &'static str,
        source: std::io::Error,
    },
}

impl Access {
    /// The bind rule: loopback, or a token.
    pub fn check(&self) -> Result<(), HttpError> {
        if self.addr.ip().is_loopback() || self.token.is_some() {
            return Ok(());
        }
        Err(HttpError::NeedsToken {
            addr: self.addr,
            addr_flag: self.addr_flag,
            token_flag: self.token_flag,
        })
    }
}

/// Read a token file: its first line, trimmed; an empty token is refused
/// (it would let every request in).
pub fn read_token(path: &Path, token_flag: &'static str) -> Result<String, HttpError> {
    let text = std::fs::read_to_string(path).map_err(|source| HttpError::TokenFile {
        path: path.to_path_buf(),
        token_flag,
        source,
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(HttpError::EmptyToken {
            path: path.to_path_buf(),
            token_flag,
        });
    }
    Ok(token)
}

/// Compare without an early exit, so the time taken says nothing about how
/// much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(addr: &str, token: Option<&str>) -> Access {
        Access {
            addr: addr.parse().unwrap(),
            token: token.map(String::from),
            addr_flag: "--http",
            token_flag: "--http-token-file",
        }
    }

    #[test]
    fn loopback_needs_no_token_and_anything_else_does() {
        assert!(access("127.0.0.1:0", None).check().is_ok());
        assert!(access("[::1]:0", None).check().is_ok());
        let e = access("0.0.0.0:0", None).check().unwrap_err().to_string();
        assert!(
            e.contains("--http 0.0.0.0:0") && e.contains("--http-token-file"),
            "{e}"
        );
        assert!(access("0.0.0.0:0", Some("t")).check().is_ok());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
