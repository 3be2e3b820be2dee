//! The HTTP surface of a node: the data plane (records, subjects) and the
//! operations plane (health, metrics, status, digest, conflicts), with the
//! limits every request passes through (body size, time-out, connection cap in
//! `server`). Unknown paths and methods answer in the same JSON error format.

mod admin;
mod ops;
pub mod records;
pub mod subjects;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;

use tandem_http::identity::Peer;

use crate::error::ApiError;
use crate::metrics::RequestLabels;
use crate::node::Node;

pub type AppState = Arc<Node>;

pub fn router(node: AppState) -> Router {
    let timeout = node.config.node.request_timeout;
    // Clients: an API key, or the router's certificate (see `auth`).
    let data_plane = Router::new()
        .route("/v1/records/{entity}", get(records::scan))
        .route(
            "/v1/records/{entity}/{id}",
            get(records::get_record)
                .put(records::put_record)
                .patch(records::patch_record)
                .delete(records::delete_record),
        )
        .route("/v1/records/{entity}/{id}/ops", post(records::post_ops))
        .route("/v1/subjects/{subject}", put(subjects::put_subject).get(subjects::get_subject))
        .route_layer(axum::middleware::from_fn_with_state(node.clone(), guard_data_plane));
    // Operators: the admin token or the operator's certificate. The conflicts
    // and the audit log hold record values and ids.
    let operators = Router::new()
        .route("/v1/conflicts", get(ops::conflicts))
        .route("/v1/audit", get(ops::audit))
        .route("/v1/admin/isolate", post(admin::isolate))
        .route("/v1/admin/rejoin", post(admin::rejoin))
        .route("/v1/admin/snapshot", get(admin::snapshot))
        .route("/v1/admin/repair", post(admin::repair))
        .route_layer(axum::middleware::from_fn_with_state(node.clone(), guard_admin));
    // Open: health and metrics for probes and Prometheus, counts and digests;
    // replication authenticates the peer region itself.
    let open = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/status", get(ops::status))
        .route("/v1/digest", get(ops::digest))
        .route("/v1/replication/stream", get(crate::replication::sender::stream))
        .route("/v1/replication/forward", post(crate::replication::sender::forward))
        .route("/v1/replication/ack", post(crate::replication::ack::receive))
        .route("/v1/replication/digests", post(crate::replication::repair::digests))
        .route("/v1/replication/states", post(crate::replication::repair::states));
    Router::new()
        .merge(data_plane)
        .merge(operators)
        .merge(open)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(axum::middleware::from_fn_with_state(node.clone(), count_requests))
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(|_: tower::BoxError| async {
                    ApiError::overloaded("the request did not complete within the request timeout")
                }))
                .layer(tower::timeout::TimeoutLayer::new(timeout)),
        )
        .with_state(node)
}

/// The connection's peer, as the HTTP layer recorded it.
pub fn peer_of(req: &Request) -> Peer {
    req.extensions().get::<Peer>().cloned().unwrap_or_default()
}

async fn guard_data_plane(State(node): State<AppState>, req: Request, next: Next) -> Response {
    match crate::auth::data_plane(&node, req.headers(), &peer_of(&req)) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn guard_admin(State(node): State<AppState>, req: Request, next: Next) -> Response {
    match crate::auth::admin(&node, req.headers(), &peer_of(&req)) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn count_requests(State(node): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let res = next.run(req).await;
    node.metrics
        .http_requests
        .get_or_create(&RequestLabels { method, status: res.status().as_u16().to_string() })
        .inc();
    res
}
