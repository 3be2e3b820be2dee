//! Admin endpoints of a node (the admin token or the operator's certificate,
//! checked by the router layer in `api`): isolate the region from its peers
//! and let it rejoin, the snapshot for backups, and an anti-entropy repair. Isolation stops every
//! replication exchange in both directions while the region keeps serving
//! local traffic.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::error::ApiError;

pub async fn isolate(State(node): State<AppState>) -> Result<Json<Value>, ApiError> {
    let was = node.replication.isolated.send_replace(true);
    if !was {
        tracing::warn!(region = %node.region, "region isolated: replication with every peer stopped");
    }
    Ok(Json(json!({ "region": node.region, "isolated": true })))
}

pub async fn rejoin(State(node): State<AppState>) -> Result<Json<Value>, ApiError> {
    let was = node.replication.isolated.send_replace(false);
    if was {
        tracing::warn!(region = %node.region, "region rejoined: replication with peers resumes");
    }
    Ok(Json(json!({ "region": node.region, "isolated": false })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotQuery {
    /// Where the caller will write the backup: checked against the
    /// jurisdiction's declared destinations before anything is read.
    destination: String,
}

/// `GET /v1/admin/snapshot?destination=URL`: a consistent snapshot of this
/// region for `tandem backup`, which encrypts it. Refused (403) unless the
/// destination is declared for this region's jurisdiction; both outcomes are
/// audited.
pub async fn snapshot(
    State(node): State<AppState>,
    query: Result<axum::extract::Query<SnapshotQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    let axum::extract::Query(q) = query?;
    let audit = |kind: &'static str, records: u64, detail: String| {
        let flow = crate::audit::Flow {
            kind,
            peer: "backup".into(),
            peer_jurisdiction: node.jurisdiction.clone(),
            records: [("*".to_string(), records)].into_iter().filter(|(_, n)| *n > 0).collect(),
            detail,
            ..Default::default()
        };
        node.audit.append(flow, node.now_ms())
    };
    if let Err(why) = node.config.backup_permitted(&node.region, &q.destination) {
        // Refused either way; a failure to audit the refusal is logged by the audit log.
        let _ = audit("backup_refused", 0, format!("destination {}: {why}", q.destination));
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "backup_destination_refused",
            why,
        ));
    }
    let store = node.store.clone();
    let region = node.region.clone();
    let snap = tokio::task::spawn_blocking(move || store.snapshot(&region))
        .await
        .expect("snapshot task")
        .map_err(|e| crate::writer::store_error(&e))?;
    // Every flow out of the region is audited: one that cannot be is not made.
    audit("backup", snap.records.len() as u64, format!("destination {}", q.destination)).map_err(
        |e| ApiError::unavailable(format!("cannot write the audit log ({e}): no backup served")),
    )?;
    use axum::response::IntoResponse;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-tandem-snapshot")],
        tandem_store::encode(&snap),
    )
        .into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairQuery {
    /// Repair from this peer only; every peer when absent.
    peer: Option<String>,
}

/// `POST /v1/admin/repair[?peer=P]`: anti-entropy from each peer (or one):
/// this region pulls and merges what differs in what both may hold
/// (`replication::repair`). Answers each peer's report, and the errors of
/// peers that could not be repaired from.
pub async fn repair(
    State(node): State<AppState>,
    query: Result<axum::extract::Query<RepairQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let axum::extract::Query(q) = query?;
    let peers: Vec<String> = match q.peer {
        Some(p) if node.replication.links.contains_key(&p) => vec![p],
        Some(p) => {
            return Err(ApiError::bad_request(format!("`{p}` is not a peer of {}", node.region)))
        }
        None => node.replication.links.keys().cloned().collect(),
    };
    let (mut reports, mut errors) = (Vec::new(), Vec::new());
    for peer in peers {
        match crate::replication::repair::repair_with(&node, &peer).await {
            Ok(r) => reports.push(r),
            Err(e) => errors.push(json!({ "peer": peer, "error": e })),
        }
    }
    Ok(Json(json!({ "region": node.region, "repairs": reports, "errors": errors })))
}
