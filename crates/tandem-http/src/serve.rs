//! The accept loop: at most `connections_max` connections are served at once
//! (more wait in the kernel's accept backlog), each socket gets its TLS
//! handshake (when TLS is on; within the head timeout) and then hyper's HTTP/1
//! connection under `ConnIo`, and every request passes the URI and header
//! limits before the application sees it, carrying the connection's `Peer`
//! (the client certificate's identity) in its extensions. On shutdown the
//! listener closes, idle connections close, and in-flight requests finish.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::Router;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::conn::{AnswerGuard, ConnIo, ConnShared};
use crate::error::{error_response, protocol_error};
use crate::identity::{identity_of_certificate, Peer};
use crate::tls::Tls;

/// The limits of one listener.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// Connections served at once.
    pub connections_max: usize,
    /// A request head that has begun must be complete within this (then 408).
    pub head_timeout: Duration,
    /// A keep-alive connection idle for this long is closed.
    pub idle_timeout: Duration,
    /// Longest request URI (then 414).
    pub uri_bytes_max: usize,
    /// Largest request header section (then 431).
    pub header_bytes_max: usize,
}

/// hyper's read buffer: a request head larger than this is refused (431)
/// before it is parsed.
pub const HEAD_BUFFER_BYTES_MAX: usize = 128 * 1024;

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            connections_max: 1024,
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            uri_bytes_max: 8 * 1024,
            header_bytes_max: 32 * 1024,
        }
    }
}

/// Serve `app` on `listener` until `shutdown` resolves, then let in-flight
/// requests finish. With `tls`, every connection is TLS 1.3 (a plaintext
/// client fails the handshake and is closed).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    assert!(limits.connections_max > 0, "a connection limit must be positive");
    assert!(
        limits.uri_bytes_max > 0 && limits.header_bytes_max > 0,
        "header limits must be positive"
    );
    let permits = Arc::new(Semaphore::new(limits.connections_max));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(HEAD_BUFFER_BYTES_MAX).header_read_timeout(None).keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, _addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of descriptors, typically: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (app, limits, http, watcher) =
            (app.clone(), limits.clone(), http.clone(), graceful.watcher());
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let shared = Arc::new(ConnShared::default());
            let result = match tls {
                None => {
                    let io = ConnIo::new(
                        stream,
                        shared.clone(),
                        limits.head_timeout,
                        limits.idle_timeout,
                    );
                    let service = Tracked { app, shared, limits, peer: Peer::default() };
                    let conn =
                        http.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
                    watcher.watch(conn).await
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server());
                    let stream =
                        match tokio::time::timeout(limits.head_timeout, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "TLS handshake refused");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!("TLS handshake did not finish in time");
                                return;
                            }
                        };
                    let peer = peer_of(&stream);
                    let io = ConnIo::new(
                        stream,
                        shared.clone(),
                        limits.head_timeout,
                        limits.idle_timeout,
                    );
                    let service = Tracked { app, shared, limits, peer };
                    let conn =
                        http.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The identity a TLS connection's client certificate proves.
fn peer_of(stream: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Peer {
    let (_, session) = stream.get_ref();
    let (identity, serial) = match session.peer_certificates().and_then(|c| c.first()) {
        Some(cert) => identity_of_certificate(cert),
        None => (crate::identity::Identity::Anonymous, None),
    };
    Peer { identity, serial, tls: true }
}

/// The application, as one connection sees it: counts requests and answers
/// for `ConnIo`, refuses URIs and header sections over the limits, and hands
/// every request the connection's `Peer`.
#[derive(Clone)]
struct Tracked {
    app: Router,
    shared: Arc<ConnShared>,
    limits: ServeLimits,
    peer: Peer,
}

impl tower::Service<Request<Incoming>> for Tracked {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let guard = self.shared.request_started();
        let refused = over_limits(&req, &self.limits);
        req.extensions_mut().insert(self.peer.clone());
        let app = self.app.clone();
        Box::pin(async move {
            let resp = match refused {
                Some(resp) => resp,
                None => match app.oneshot(req.map(Body::new)).await {
                    Ok(r) => r,
                    Err(e) => match e {},
                },
            };
            Ok(resp.map(|inner| TrackedBody { inner, _guard: guard }))
        })
    }
}

fn over_limits<B>(req: &Request<B>, limits: &ServeLimits) -> Option<Response<Body>> {
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let status = if uri_len > limits.uri_bytes_max {
        StatusCode::URI_TOO_LONG
    } else if req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum::<usize>()
        > limits.header_bytes_max
    {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    } else {
        return None;
    };
    let (code, message) = protocol_error(status);
    Some(error_response(status, code, message))
}

/// A response body that tells the connection when hyper is done with it.
struct TrackedBody {
    inner: Body,
    _guard: AnswerGuard,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
