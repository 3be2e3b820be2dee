//! Record endpoints: PUT (lww), PATCH (lww-fields), POST ops (counters, or-set),
//! DELETE, GET and scan. The shape of every write is validated (entity, id,
//! body, bounds) before it is queued; the engine decides the rest in the
//! writer's batch, and the write is answered only once its batch is durable.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Extension;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tandem_clock::{Hlc, VersionVector};
use tandem_engine::write::LocalWrite;
use tandem_engine::StoredRecord;
use tandem_http::identity::Peer;
use tandem_merge::Op;

use super::AppState;
use crate::error::ApiError;
use crate::validate::{parse_json, read_body};
use crate::writer::store_error;

/// Most elements in one or-set operation.
pub const OP_ELEMENTS_MAX: usize = 1000;
/// Longest or-set element and field name, in bytes.
pub const ELEMENT_LEN_MAX: usize = 1024;
/// Most fields in one patch.
pub const PATCH_FIELDS_MAX: usize = 1000;
/// Default scan page size.
pub const SCAN_LIMIT_DEFAULT: usize = 100;

#[derive(Debug, Serialize)]
pub struct WriteResponse {
    pub region: String,
    pub hlc: Hlc,
    pub version: VersionVector,
}

#[derive(Debug, Serialize)]
pub struct RecordView {
    pub entity: String,
    pub id: String,
    pub value: Value,
    pub version: VersionVector,
    pub hlc: Hlc,
    pub origin: String,
}

impl RecordView {
    /// `None` when the record is absent (deleted, empty, or expired at
    /// `now_ms`).
    pub fn new(entity: &str, id: &str, rec: &StoredRecord, now_ms: u64) -> Option<RecordView> {
        if !rec.state.is_live_at(now_ms) {
            return None;
        }
        let value = rec.state.value()?;
        let stamp = rec.state.stamp();
        Some(RecordView {
            entity: entity.to_owned(),
            id: id.to_owned(),
            value,
            version: rec.state.version(),
            hlc: stamp.hlc,
            origin: stamp.origin,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    value: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    fields: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum OpBody {
    Incr { by: u64 },
    Decr { by: u64 },
    Add { elements: Vec<String> },
    Remove { elements: Vec<String> },
}

pub async fn put_record(
    State(node): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<Peer>>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Result<Json<WriteResponse>, ApiError> {
    let Path((entity, id)) = path?;
    let peer = peer.map(|Extension(p)| p).unwrap_or_default();
    node.target(&entity, &id)?;
    let bytes = read_body(body, node.config.node.max_body_bytes, &node.drain).await?;
    let put: PutBody = parse_json(&bytes)?;
    let op = Op::Put(canonical(&put.value));
    write(&node, &headers, &peer, &entity, &id, op).await
}

pub async fn patch_record(
    State(node): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<Peer>>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Result<Json<WriteResponse>, ApiError> {
    let Path((entity, id)) = path?;
    let peer = peer.map(|Extension(p)| p).unwrap_or_default();
    node.target(&entity, &id)?;
    let bytes = read_body(body, node.config.node.max_body_bytes, &node.drain).await?;
    let patch: PatchBody = parse_json(&bytes)?;
    if patch.fields.is_empty() {
        return Err(ApiError::bad_request("`fields` must name at least one field"));
    }
    if patch.fields.len() > PATCH_FIELDS_MAX {
        return Err(ApiError::bad_request(format!(
            "a patch may change at most {PATCH_FIELDS_MAX} fields"
        )));
    }
    for name in patch.fields.keys() {
        if name.is_empty() || name.len() > ELEMENT_LEN_MAX {
            return Err(ApiError::bad_request(format!(
                "field names must be 1 to {ELEMENT_LEN_MAX} bytes"
            )));
        }
    }
    let changes = patch
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), (!v.is_null()).then(|| canonical(v))))
        .collect();
    write(&node, &headers, &peer, &entity, &id, Op::Patch(changes)).await
}

pub async fn post_ops(
    State(node): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<Peer>>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Result<Json<WriteResponse>, ApiError> {
    let Path((entity, id)) = path?;
    let peer = peer.map(|Extension(p)| p).unwrap_or_default();
    node.target(&entity, &id)?;
    let bytes = read_body(body, node.config.node.max_body_bytes, &node.drain).await?;
    let parsed: OpBody = parse_json(&bytes)?;
    let op = match parsed {
        OpBody::Incr { by } => Op::Incr(check_by(by)?),
        OpBody::Decr { by } => Op::Decr(check_by(by)?),
        OpBody::Add { elements } => Op::Add(check_elements(elements)?),
        OpBody::Remove { elements } => Op::Remove(check_elements(elements)?),
    };
    write(&node, &headers, &peer, &entity, &id, op).await
}

pub async fn delete_record(
    State(node): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<Peer>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<WriteResponse>, ApiError> {
    let Path((entity, id)) = path?;
    let peer = peer.map(|Extension(p)| p).unwrap_or_default();
    node.target(&entity, &id)?;
    write(&node, &headers, &peer, &entity, &id, Op::Delete).await
}

pub async fn get_record(
    State(node): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<RecordView>, ApiError> {
    let Path((entity, id)) = path?;
    node.target(&entity, &id)?;
    let rec = node.read_point(&entity, &id).map_err(|e| store_error(&e))?;
    let view = rec
        .as_ref()
        .and_then(|r| RecordView::new(&entity, &id, r, node.now_ms()))
        .ok_or_else(|| ApiError::not_found(format!("no record {entity}/{id}")))?;
    let cfg = node.entity(&entity)?;
    node.check_read_fresh(cfg, &view.origin)?;
    Ok(Json(view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanQuery {
    after: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
pub struct ScanResponse {
    records: Vec<RecordView>,
    /// Pass as `after` for the next page; `null` when the scan is complete.
    next: Option<String>,
}

pub async fn scan(
    State(node): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ScanQuery>, QueryRejection>,
) -> Result<Json<ScanResponse>, ApiError> {
    let Path(entity) = path?;
    let Query(q) = query?;
    node.entity(&entity)?;
    let limit_max = node.config.node.scan_limit_max;
    let limit = q.limit.unwrap_or(SCAN_LIMIT_DEFAULT.min(limit_max));
    if limit == 0 || limit > limit_max {
        return Err(ApiError::bad_request(format!("limit must be 1 to {limit_max}")));
    }
    if let Some(after) = &q.after {
        crate::validate::check_id("after", after, node.config.node.id_len_max)?;
    }
    let store = node.store.clone();
    let e = entity.clone();
    let page = tokio::task::spawn_blocking(move || store.scan(&e, q.after.as_deref(), limit))
        .await
        .expect("scan task")
        .map_err(|e| store_error(&e))?;
    let next = (page.len() == limit).then(|| page.last().map(|(id, _)| id.clone())).flatten();
    let now_ms = node.now_ms();
    let records =
        page.iter().filter_map(|(id, r)| RecordView::new(&entity, id, r, now_ms)).collect();
    Ok(Json(ScanResponse { records, next }))
}

/// Queue a validated write and wait for it to be durable. The engine decides
/// whether this region may take it (merge type, projection, residency and
/// pinning) inside the writer's batch.
pub async fn write(
    node: &AppState,
    headers: &HeaderMap,
    peer: &Peer,
    entity: &str,
    id: &str,
    op: Op,
) -> Result<Json<WriteResponse>, ApiError> {
    let failover_for = crate::auth::failover_for(node, headers, peer);
    let w = LocalWrite { failover_for, ..LocalWrite::new(entity, id, op) };
    let ack = node.writer.write(w).await?;
    Ok(Json(WriteResponse { region: node.region.clone(), hlc: ack.hlc, version: ack.version }))
}

/// JSON text in one canonical form (serde_json sorts object keys).
pub fn canonical(v: &Value) -> String {
    serde_json::to_string(v).expect("a Value always encodes")
}

fn check_by(by: u64) -> Result<u64, ApiError> {
    if by == 0 || by > i64::MAX as u64 {
        return Err(ApiError::bad_request(format!("`by` must be 1 to {}", i64::MAX)));
    }
    Ok(by)
}

fn check_elements(elements: Vec<String>) -> Result<Vec<String>, ApiError> {
    if elements.is_empty() || elements.len() > OP_ELEMENTS_MAX {
        return Err(ApiError::bad_request(format!(
            "`elements` must hold 1 to {OP_ELEMENTS_MAX} strings"
        )));
    }
    if elements.iter().any(|e| e.is_empty() || e.len() > ELEMENT_LEN_MAX) {
        return Err(ApiError::bad_request(format!(
            "each element must be 1 to {ELEMENT_LEN_MAX} bytes"
        )));
    }
    Ok(elements)
}
