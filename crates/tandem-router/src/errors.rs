//! The answers the router gives itself, in the contract's error shape
//! (`{"error": {"code", "message"}}`): each code it can return, with its
//! status, built in one place. Answers relayed from a region are not here:
//! they pass through as the region wrote them.

use axum::extract::rejection::PathRejection;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;

/// An error answer in the contract's shape.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    tandem_http::error_response(status, code, message)
}

/// 400: a path axum could not decode (not UTF-8 once percent-decoded),
/// answered like a node answers it.
pub fn bad_path(e: PathRejection) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", format!("bad path: {}", e.body_text()))
}

/// 400: an id without the subject its type requires, answered like a node would.
pub fn bad_subject_id(entity: &str, id: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        format!("`{entity}` records belong to a subject: the id must be `<subject>` or `<subject>:<name>` with a non-empty subject, got `{id}`"),
    )
}

/// 400: `X-Tandem-Client-Region` names no region of the deployment.
pub fn bad_client_region() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "X-Tandem-Client-Region must name a region of the deployment",
    )
}

/// 413, closing the connection (the rest of the body is not read).
pub fn payload_too_large(message: String) -> Response {
    let mut resp = error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message);
    resp.headers_mut().insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// 422: the request needs a subject that is not registered.
pub fn unknown_subject(subject: &str) -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_subject",
        format!("subject `{subject}` is not registered; PUT /v1/subjects/{subject} first"),
    )
}

/// 503: no region that may serve the request is available.
pub fn no_region_available(jurisdiction: Option<&str>) -> Response {
    let where_ = jurisdiction.map(|j| format!(" in {j}")).unwrap_or_default();
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_region_available",
        format!("no healthy region{where_} may serve this request"),
    )
}

/// 503: no region answered the home-region lookup.
pub fn home_lookup_failed() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_region_available",
        "cannot look up the subject's home region",
    )
}

/// 502: the region could not be reached, or broke off its answer.
pub fn upstream_unavailable(message: String) -> Response {
    error(StatusCode::BAD_GATEWAY, "upstream_unavailable", message)
}

/// 504: the region did not answer within `router.upstream_timeout`.
pub fn upstream_timeout(region: &str) -> Response {
    error(
        StatusCode::GATEWAY_TIMEOUT,
        "upstream_timeout",
        format!("{region} did not answer in time"),
    )
}

/// 401: an admin call without the right bearer token.
pub fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong bearer token")
}

/// 401 with a message that says what is needed.
pub fn unauthorized_with(message: &str) -> Response {
    error(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// 404: no such endpoint, region or action.
pub fn not_found(message: impl Into<String>) -> Response {
    error(StatusCode::NOT_FOUND, "not_found", message)
}

/// 405: the endpoint exists but not for that method.
pub fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}
