//! The operations plane: `/healthz`, `/metrics` (Prometheus text), `/v1/status`,
//! `/v1/digest` (a hash of materialized state, equal across regions holding the
//! same records) and `/v1/conflicts` (the newest conflicts, bounded).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tandem_store::SUBJECT_ENTITY;

use super::AppState;
use crate::error::ApiError;
use crate::writer::store_error;

/// How long a starting region waits for a peer it cannot reach before it
/// calls itself ready anyway (it cannot catch up with a peer that is down).
pub const READY_GRACE_MS: u64 = 5_000;

/// `GET /healthz`: 200 while the process serves. `ready` says whether it has
/// caught up with every peer it can reach since it started (the router routes
/// to a region only once it is ready, so a restarted region does not take
/// pinned writes before it has the writes made elsewhere while it was away).
/// While the disk is full it answers 503 with `writable: false`: the region
/// still serves reads, and the router sends writes elsewhere.
pub async fn healthz(State(node): State<AppState>) -> axum::response::Response {
    let ready = ready(&node);
    if node.disk.is_full() {
        let message = "the disk is full: writes are refused (507) until space returns; reads go on";
        let body = json!({
            "status": "storage_full",
            "region": node.region,
            "ready": ready,
            "writable": false,
            "error": { "code": "insufficient_storage", "message": message },
        });
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    Json(json!({ "status": "ok", "region": node.region, "ready": ready, "writable": true }))
        .into_response()
}

fn ready(node: &AppState) -> bool {
    use std::sync::atomic::Ordering;
    if node.ready.load(Ordering::Relaxed) {
        return true;
    }
    let now = node.now_ms();
    let started_ms = now.saturating_sub(node.started.elapsed().as_millis() as u64);
    let grace_over = now.saturating_sub(started_ms) >= READY_GRACE_MS;
    let ready = node.replication.links.values().all(|l| {
        let l = l.lock().expect("link lock");
        // Caught up at least once since this process started.
        let caught_up =
            l.last_frame_ms >= started_ms && l.caught_up_at_ms >= started_ms && l.connected;
        caught_up || grace_over
    });
    if ready {
        node.ready.store(true, Ordering::Relaxed);
    }
    ready
}

pub async fn metrics(State(node): State<AppState>) -> impl IntoResponse {
    node.metrics
        .hlc_offset_rejections
        .inner()
        .store(node.clock.offset_rejections(), std::sync::atomic::Ordering::Relaxed);
    node.metrics.storage_full.set(node.disk.is_full() as i64);
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        node.metrics.encode(),
    )
}

pub async fn status(State(node): State<AppState>) -> Result<Json<Value>, ApiError> {
    let last_seq = node.store.durable_seq().map_err(|e| store_error(&e))?;
    let entries = node.store.log_entries().map_err(|e| store_error(&e))?;
    Ok(Json(json!({
        "region": node.region,
        "jurisdiction": node.jurisdiction,
        "uptime_seconds": node.started.elapsed().as_secs_f64(),
        "hlc": node.clock.last(),
        "log": {
            "last_seq": last_seq,
            "entries": entries,
            "compacted_entries": node.metrics.log_compacted_entries.get(),
        },
        "writer": {
            "queue_depth": node.writer.queue_depth(),
            "queue_capacity": node.writer.capacity(),
        },
        "isolated": node.replication.is_isolated(),
        "storage": {
            "full": node.disk.is_full(),
            "full_since_ms": node.disk.full_since_ms(),
            "free_bytes": node.disk.free_bytes(),
            "ballast_bytes": node.disk.ballast_bytes(),
            "store_bytes": crate::compaction::store_bytes(&node),
        },
        "budgets": *node.budgets.lock().expect("budgets lock"),
        "peers": peers_status(&node),
        "stability": stability_status(&node),
        "audit": audit_status(&node),
    })))
}

/// The stability horizon: per origin, the position every region has applied
/// (`null` before a first snapshot matured), its age, and when each peer
/// last acknowledged.
fn stability_status(node: &AppState) -> Value {
    let now = node.now_ms();
    let s = node.replication.stability.lock().expect("stability lock");
    let acked: serde_json::Map<String, Value> =
        s.reported_at().map(|(p, at)| (p.to_owned(), json!(now.saturating_sub(at)))).collect();
    json!({
        "horizon": s.horizon(),
        "age_ms": s.age_ms(now),
        "pending_snapshots": s.pending(),
        "evicted": s.evicted(now),
        "resyncs": node.metrics.peer_resyncs.get(),
        "last_resyncs": node
            .replication
            .resyncs
            .lock()
            .expect("resyncs lock")
            .iter()
            .map(|(p, (r, ms))| (p.clone(), json!({ "report": r, "ms": ms })))
            .collect::<serde_json::Map<String, Value>>(),
        "acked_ms_ago": acked,
    })
}

/// The audit log's chain head and what it keeps on disk.
fn audit_status(node: &AppState) -> Value {
    let (bytes, segments) = node.audit.disk_usage();
    json!({
        "head_seq": node.audit.head().seq,
        "segments": segments,
        "bytes": bytes,
        "exported_segments": node.metrics.audit_segments_exported.get(),
        "dropped_segments": node.metrics.audit_segments_dropped.get(),
    })
}

fn peers_status(node: &AppState) -> Vec<Value> {
    let now = node.now_ms();
    let timeout_ms = node.replication.timings.link_timeout.as_millis() as u64;
    node.replication
        .links
        .iter()
        .map(|(peer, link)| {
            let link = link.lock().expect("link lock");
            let lag: serde_json::Map<String, Value> = node
                .config
                .data_classes
                .iter()
                .map(|(class, dc)| {
                    let lag = link.lag_seconds(class, now, timeout_ms);
                    (
                        class.clone(),
                        json!({
                            "lag_seconds": lag,
                            "max_lag_seconds": dc.max_lag.as_secs_f64(),
                            "on_breach": dc.on_breach.as_str(),
                            "breached": lag > dc.max_lag.as_secs_f64(),
                        }),
                    )
                })
                .collect();
            json!({
                "peer": peer,
                "connected": link.healthy(now, timeout_ms),
                "cursor": link.cursor,
                "peer_last_seq": link.sender_last_seq,
                "queue_depth": link.queue_depth(),
                "rtt_ms": link.rtt_ms,
                "applied": link.applied_total,
                "forwarded": link.forwarded_total,
                "lag_ms_p50": link.percentile_ms(0.5),
                "lag_ms_p99": link.percentile_ms(0.99),
                "lag_ms_max": link.hist_ms.max(),
                "commit_to_apply_ms_p50": link.commit_to_apply_percentile_ms(0.5),
                "commit_to_apply_ms_p99": link.commit_to_apply_percentile_ms(0.99),
                "commit_to_apply_samples": link.commit_to_apply_ms.len(),
                "classes": lag,
                "last_error": link.last_error,
            })
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestQuery {
    entity: Option<String>,
}

pub async fn digest(
    State(node): State<AppState>,
    query: Result<Query<DigestQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query?;
    if let Some(e) = &q.entity {
        if e != SUBJECT_ENTITY && e != tandem_engine::seal::SEALED_ENTITY {
            node.entity(e)?;
        }
    }
    let store = node.store.clone();
    let filter = q.entity.clone();
    let now_ms = node.now_ms();
    let (hash, records) = tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        let mut records = 0u64;
        store.for_each(&mut |entity, id, rec| {
            if filter.as_deref().is_some_and(|f| f != entity) {
                return;
            }
            // Absent (deleted or expired) records hash like records never
            // written, so regions agree around an expiry within their clocks'
            // offset.
            let Some(value) = rec.state.value_json().filter(|_| rec.state.is_live_at(now_ms))
            else {
                return;
            };
            records += 1;
            for part in [entity, id, value.as_str()] {
                hasher.update((part.len() as u64).to_le_bytes());
                hasher.update(part.as_bytes());
            }
        })?;
        Ok::<_, tandem_store::StoreError>((hex::encode(hasher.finalize()), records))
    })
    .await
    .expect("digest task")
    .map_err(|e| store_error(&e))?;
    Ok(Json(
        json!({ "region": node.region, "entity": q.entity, "digest": hash, "records": records }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConflictsQuery {
    limit: Option<usize>,
}

pub async fn conflicts(
    State(node): State<AppState>,
    query: Result<Query<ConflictsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query?;
    let cap = node.conflicts.capacity();
    let limit = q.limit.unwrap_or(100.min(cap));
    if limit == 0 || limit > cap {
        return Err(ApiError::bad_request(format!("limit must be 1 to {cap}")));
    }
    Ok(Json(json!({ "conflicts": node.conflicts.newest(limit), "kept_max": cap })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

/// Most audit entries in one answer.
pub const AUDIT_PAGE_MAX: usize = 1000;

pub async fn audit(
    State(node): State<AppState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > AUDIT_PAGE_MAX {
        return Err(ApiError::bad_request(format!("limit must be 1 to {AUDIT_PAGE_MAX}")));
    }
    let after = q.after.unwrap_or(0);
    let node2 = node.clone();
    let entries = tokio::task::spawn_blocking(move || node2.audit.read(after, limit))
        .await
        .expect("audit read");
    let head = node.audit.head();
    Ok(Json(json!({ "region": node.region, "head": head, "entries": entries })))
}
