//! Admin endpoints of a node (bearer token): isolate the region from its peers
//! and let it rejoin. Isolation stops every replication exchange in both
//! directions while the region keeps serving local traffic.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::error::ApiError;
use crate::replication::secret_matches;

/// Check `Authorization: Bearer <admin token>`.
pub fn require_admin(node: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (presented, node.admin_token.as_deref()) {
        (Some(p), Some(expected)) if secret_matches(p, expected) => Ok(()),
        _ => Err(ApiError::unauthorized()),
    }
}

pub async fn isolate(
    State(node): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_admin(&node, &headers)?;
    let was = node.replication.isolated.send_replace(true);
    if !was {
        tracing::warn!(region = %node.region, "region isolated: replication with every peer stopped");
    }
    Ok(Json(json!({ "region": node.region, "isolated": true })))
}

pub async fn rejoin(
    State(node): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_admin(&node, &headers)?;
    let was = node.replication.isolated.send_replace(false);
    if was {
        tracing::warn!(region = %node.region, "region rejoined: replication with peers resumes");
    }
    Ok(Json(json!({ "region": node.region, "isolated": false })))
}
