//! The router's own operations plane: `GET /healthz` (503 until every region
//! has been probed once), `GET /metrics` (OpenMetrics text), `GET /v1/routes`
//! (what the router knows of each region and entity type) and the
//! token-protected `POST /v1/admin/regions/{region}/drain|restore`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::errors;
use crate::state::RouterState;

/// `GET /healthz`: 503 until every region has been probed once, then 200.
pub async fn healthz(State(s): State<Arc<RouterState>>) -> Response {
    if *s.ready.borrow() {
        return Json(json!({ "status": "ok", "role": "router" })).into_response();
    }
    let waiting = s.unprobed().join(", ");
    let message = format!("starting: waiting for the first health probe of {waiting}");
    let body = json!({
        "status": "starting",
        "role": "router",
        "reason": message,
        "error": { "code": "starting", "message": message },
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// `GET /metrics`.
pub async fn metrics(State(s): State<Arc<RouterState>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// `GET /v1/routes`: each region's state, each entity type's routing policy,
/// the home cache.
pub async fn routes(State(s): State<Arc<RouterState>>) -> Json<Value> {
    let regions: Vec<Value> = s
        .regions
        .iter()
        .map(|r| {
            json!({
                "region": r.name,
                "jurisdiction": r.jurisdiction,
                "url": r.url,
                "up": r.up.load(Ordering::SeqCst),
                "drained": r.drained.load(Ordering::SeqCst),
                "writable": r.writable.load(Ordering::SeqCst),
                "consecutive_failures": r.failures.load(Ordering::SeqCst),
            })
        })
        .collect();
    let entities: serde_json::Map<String, Value> = s
        .config
        .entities
        .iter()
        .map(|(n, e)| {
            (
                n.clone(),
                json!({ "personal": e.personal, "writes": e.writes, "subjects": e.subjects }),
            )
        })
        .collect();
    Json(json!({
        "default_region": s.default_region,
        "regions": regions,
        "entities": entities,
        "home_cache": { "entries": s.cache.len(), "ttl_seconds": s.config.router.home_cache_ttl.as_secs_f64() },
    }))
}

/// `POST /v1/admin/regions/{region}/drain|restore`, with the admin token or
/// the operator's certificate.
pub async fn admin(
    State(s): State<Arc<RouterState>>,
    Path((region, action)): Path<(String, String)>,
    headers: HeaderMap,
    peer: Option<axum::Extension<tandem_http::identity::Peer>>,
) -> Response {
    let operator = peer.is_some_and(|p| p.identity == tandem_http::identity::Identity::Operator);
    let ok = operator
        || match (tandem_http::bearer(&headers), s.admin_token.as_deref()) {
            (Some(p), Some(t)) => tandem_http::secret_matches(p, t),
            _ => false,
        };
    if !ok {
        return errors::unauthorized();
    }
    let Some(r) = s.regions.iter().find(|r| r.name == region) else {
        return errors::not_found(format!("no region `{region}`"));
    };
    let drained = match action.as_str() {
        "drain" => true,
        "restore" => false,
        _ => return errors::not_found("action must be drain or restore"),
    };
    r.drained.store(drained, Ordering::SeqCst);
    tracing::warn!(region = %region, drained, "region drain state changed");
    Json(json!({ "region": region, "drained": drained })).into_response()
}
