//! The accept loop: one task per connection, HTTP/1.1 through hyper, the
//! token checked before any handler runs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    AUTHORIZATION, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE,
    X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{Access, HttpError, Reply, Request, Router, same};

/// A bound server; dropping it stops accepting.
pub struct Server {
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// Check the bind rule, bind, and serve `router` in the background.
    pub async fn start(access: Access, router: Router) -> Result<Server, HttpError> {
        access.check()?;
        let listener = TcpListener::bind(access.addr)
            .await
            .map_err(|source| HttpError::Bind {
                addr: access.addr,
                addr_flag: access.addr_flag,
                source,
            })?;
        let local = listener.local_addr().unwrap_or(access.addr);
        let shared = Arc::new((access.token, router));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move {
                            Ok::<_, Infallible>(answer(shared.0.as_deref(), &shared.1, req).await)
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = conn.await {
                        tracing::debug!("http connection: {e}");
                    }
                });
            }
        });
        Ok(Server { local, task })
    }

    /// The address it listens on (the port chosen for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    token: Option<&str>,
    router: &Router,
    req: hyper::Request<Incoming>,
) -> Response<Full<Bytes>> {
    if let Some(token) = token {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
            let mut r = respond(Reply::text(401, "a bearer token is required\n"));
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(Reply::text(405, "only GET is served\n"));
    }
    let request = Request {
        path: req.uri().path().to_string(),
        query: req.uri().query().map(String::from),
    };
    match router.find(&request.path) {
        Some(h) => respond(h(request).await),
        None => respond(Reply::text(404, "not found\n")),
    }
}

fn respond(reply: Reply) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(reply.body)));
    *r.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    // Every reply, pages and JSON alike: scripts only from this server's
    // own files (no inline script, no CDN), so text an agent or a manifest
    // sent can never run as script even if a page misplaced it.
    r.headers_mut()
        .insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    r.headers_mut()
        .insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// The Content-Security-Policy of every reply.
pub const POLICY: &str = "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";
