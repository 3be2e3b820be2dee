//! The subject registry: `PUT/GET /v1/subjects/{subject}`. A subject's home
//! region is an `lww` record of the reserved entity `_subject`, replicated like
//! any record. Moving a subject to a region of another jurisdiction is refused
//! (409 `cross_jurisdiction_move`): its personal data could not follow it.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use tandem_engine::write::home_region_of;
use tandem_engine::SUBJECT_ENTITY;
use tandem_merge::Op;

use super::records::{canonical, write, WriteResponse};
use super::AppState;
use crate::error::ApiError;
use crate::validate::{check_id, parse_json, read_body};

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SubjectBody {
    home_region: String,
}

#[derive(Serialize)]
pub struct SubjectView {
    subject: String,
    home_region: String,
    jurisdiction: String,
}

fn check_subject(subject: &str, len_max: usize) -> Result<(), ApiError> {
    check_id("subject", subject, len_max)?;
    if subject.contains(':') {
        return Err(ApiError::bad_request("a subject must not contain ':'"));
    }
    Ok(())
}

pub async fn put_subject(
    State(node): State<AppState>,
    headers: axum::http::HeaderMap,
    peer: Option<axum::Extension<tandem_http::identity::Peer>>,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Json<WriteResponse>, ApiError> {
    let Path(subject) = path?;
    check_subject(&subject, node.config.node.id_len_max)?;
    let bytes = read_body(body, node.config.node.max_body_bytes, &node.drain).await?;
    let req: SubjectBody = parse_json(&bytes)?;
    if node.config.region(&req.home_region).is_none() {
        return Err(ApiError::bad_request(format!("unknown region `{}`", req.home_region)));
    }
    // A move out of the subject's jurisdiction is refused by the engine,
    // inside the write batch, so two racing moves cannot slip past it.
    let value = canonical(&serde_json::to_value(&req).expect("encodes"));
    let peer = peer.map(|axum::Extension(p)| p).unwrap_or_default();
    write(&node, &headers, &peer, SUBJECT_ENTITY, &subject, Op::Put(value)).await
}

pub async fn get_subject(
    State(node): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<SubjectView>, ApiError> {
    let Path(subject) = path?;
    check_subject(&subject, node.config.node.id_len_max)?;
    let rec =
        node.store.get(SUBJECT_ENTITY, &subject).map_err(|e| crate::writer::store_error(&e))?;
    let home = rec
        .as_ref()
        .and_then(home_region_of)
        .ok_or_else(|| ApiError::not_found(format!("no subject `{subject}`")))?;
    let jurisdiction = node.config.jurisdiction_of(&home).unwrap_or("").to_owned();
    Ok(Json(SubjectView { subject, home_region: home, jurisdiction }))
}
