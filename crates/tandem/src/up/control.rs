//! The control API of `tandem up`, for fault injection by tests and
//! operators: `GET /v1/deployment` (processes and links),
//! `POST /v1/links/{from}/{to}/{cut|heal|latency}` and
//! `POST /v1/processes/{name}/{kill|stop|start}`. Every call needs the
//! admin token (`Authorization: Bearer`) unless the deployment runs with
//! `--insecure`: whoever reaches it can kill processes and cut links.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::deployment::{start_proc, stop_proc, Deployment};
use super::health::wait_healthy;
use crate::proxy::LinkControl;

pub(super) fn control_router(d: Arc<Deployment>) -> Router {
    Router::new()
        .route("/v1/deployment", get(describe))
        .route("/v1/links/{from}/{to}/{action}", post(link_action))
        .route("/v1/processes/{name}/{action}", post(process_action))
        .layer(axum::middleware::from_fn_with_state(d.clone(), require_token))
        .with_state(d)
}

/// 401 `unauthorized` without the admin token (when one is required).
async fn require_token(
    State(d): State<Arc<Deployment>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Some(token) = &d.control_token {
        let presented = tandem_http::bearer(req.headers()).unwrap_or("");
        if !tandem_http::secret_matches(presented, token) {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": {"code": "unauthorized", "message": "the control API needs the admin token (Authorization: Bearer)"}})),
            )
                .into_response();
        }
    }
    next.run(req).await
}

async fn describe(State(d): State<Arc<Deployment>>) -> Json<Value> {
    let procs: serde_json::Map<String, Value> = d
        .procs
        .lock()
        .expect("procs")
        .iter()
        .map(|(n, p)| {
            (n.clone(), json!({ "url": p.url, "running": p.child.is_some(), "pid": p.child.as_ref().and_then(tokio::process::Child::id) }))
        })
        .collect();
    let links: Vec<Value> = d
        .links
        .iter()
        .map(|((from, to), c)| json!({ "from": from, "to": to, "latency_ms": c.latency_ms.load(Ordering::Relaxed), "cut": c.is_cut() }))
        .collect();
    Json(json!({ "processes": procs, "links": links }))
}

#[derive(serde::Deserialize, Default)]
struct LinkBody {
    latency_ms: Option<u64>,
}

/// `POST /v1/links/{from}/{to}/{cut|heal|latency}`; `*` matches every region.
async fn link_action(
    State(d): State<Arc<Deployment>>,
    UrlPath((from, to, action)): UrlPath<(String, String, String)>,
    body: Option<Json<LinkBody>>,
) -> (StatusCode, Json<Value>) {
    let matching: Vec<&Arc<LinkControl>> = d
        .links
        .iter()
        .filter(|((f, t), _)| (from == "*" || *f == from) && (to == "*" || *t == to))
        .map(|(_, c)| c)
        .collect();
    if matching.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "not_found", "message": "no such link"}})),
        );
    }
    for c in &matching {
        match action.as_str() {
            "cut" => c.cut(),
            "heal" => c.heal(),
            "latency" => match body.as_ref().and_then(|b| b.latency_ms) {
                Some(ms) if ms <= 60_000 => c.latency_ms.store(ms, Ordering::Relaxed),
                _ => {
                    return (
                        StatusCode::BAD_REQUEST,
                        Json(
                            json!({"error": {"code": "bad_request", "message": "body must be {\"latency_ms\": 0..60000}"}}),
                        ),
                    )
                }
            },
            _ => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(
                        json!({"error": {"code": "bad_request", "message": "action must be cut, heal or latency"}}),
                    ),
                )
            }
        }
    }
    (StatusCode::OK, Json(json!({ "links": matching.len(), "action": action })))
}

/// `POST /v1/processes/{name}/{kill|stop|start}`.
async fn process_action(
    State(d): State<Arc<Deployment>>,
    UrlPath((name, action)): UrlPath<(String, String)>,
) -> (StatusCode, Json<Value>) {
    if !d.procs.lock().expect("procs").contains_key(&name) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "not_found", "message": "no such process"}})),
        );
    }
    let result = match action.as_str() {
        "kill" => stop_proc(&d, &name, nix::sys::signal::Signal::SIGKILL).await,
        "stop" => stop_proc(&d, &name, nix::sys::signal::Signal::SIGTERM).await,
        "start" => match start_proc(&d, &name) {
            // Answer once the process serves, so callers need not poll.
            Ok(()) => {
                let url = d.procs.lock().expect("procs")[&name].url.clone();
                wait_healthy(&d.health_client(&name), &url, Duration::from_secs(60)).await
            }
            Err(e) => Err(e),
        },
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(
                    json!({"error": {"code": "bad_request", "message": "action must be kill, stop or start"}}),
                ),
            )
        }
    };
    match result {
        Ok(()) => (StatusCode::OK, Json(json!({ "process": name, "action": action }))),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": {"code": "internal", "message": format!("{e:#}")}})),
        ),
    }
}
