//! The subject registry: `PUT/GET /v1/subjects/{subject}`. A subject's home
//! region is an `lww` record of the reserved entity `_subject`, replicated like
//! any record. Moving a subject to a region of another jurisdiction is refused
//! (409 `cross_jurisdiction_move`): its personal data could not follow it.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tandem_config::{ConflictPolicy, EntityConfig, WritePolicy};
use tandem_merge::{MergeKind, Op};
use tandem_store::{StoredRecord, SUBJECT_ENTITY};

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

/// The home region recorded for a subject, if any.
pub fn home_region_of(rec: &StoredRecord) -> Option<String> {
    let v = rec.state.value()?;
    v.get("home_region")?.as_str().map(str::to_owned)
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
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Json<WriteResponse>, ApiError> {
    let Path(subject) = path?;
    check_subject(&subject, node.config.node.id_len_max)?;
    let bytes = read_body(body, node.config.node.max_body_bytes, &node.drain).await?;
    let req: SubjectBody = parse_json(&bytes)?;
    let Some(target_jurisdiction) = node.config.jurisdiction_of(&req.home_region) else {
        return Err(ApiError::bad_request(format!("unknown region `{}`", req.home_region)));
    };
    let target_jurisdiction = target_jurisdiction.to_owned();
    let config = node.config.clone();
    let subject_for_check = subject.clone();
    // Checked inside the write transaction, so two racing moves cannot slip past it.
    let precondition = Box::new(move |current: Option<&StoredRecord>| {
        let Some(home) = current.and_then(home_region_of) else {
            return Ok(());
        };
        let from = config.jurisdiction_of(&home).unwrap_or("");
        if from != target_jurisdiction {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "cross_jurisdiction_move",
                format!(
                    "subject `{subject_for_check}` is homed in {home} ({from}); moving it to {target_jurisdiction} would take its personal data out of {from}"
                ),
            )
            .with("home_region", home));
        }
        Ok(())
    });
    let cfg = subject_entity();
    let value = canonical(&serde_json::to_value(&req).expect("encodes"));
    write(&node, &headers, SUBJECT_ENTITY, &subject, &cfg, Op::Put(value), Some(precondition)).await
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

/// The built-in entity type of the subject registry.
pub fn subject_entity() -> EntityConfig {
    EntityConfig {
        merge: MergeKind::Lww,
        data_class: String::new(),
        personal: false,
        subjects: false,
        writes: WritePolicy::AnyRegion,
        conflicts: ConflictPolicy::Allow,
        analytics: None,
    }
}
