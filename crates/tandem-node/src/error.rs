//! The API's error type: a stable code, an HTTP status and a message, rendered as
//! `{"error": {"code", "message", ...}}`. Codes are part of the public contract
//! (DESIGN.md); every refusal of bad input goes through here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra members of the error object (e.g. `home_region` for 421).
    pub extra: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), extra: Vec::new() }
    }

    pub fn with(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.extra.push((key, value.into()));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong bearer token")
    }

    pub fn unauthorized_with(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unknown_entity(entity: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_entity",
            format!("unknown entity type `{entity}`"),
        )
    }

    pub fn wrong_merge_type(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "wrong_merge_type", message)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than the limit of {limit} bytes"),
        )
    }

    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
    }

    /// 507: the store has no room; nothing of the write was kept.
    pub fn insufficient_storage(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = tandem_http::ErrorBody::new(self.code, self.message);
        body.extra = self.extra.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let mut resp = (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body.to_bytes(),
        )
            .into_response();
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body may not have been read: do not reuse the connection.
            resp.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        resp
    }
}

impl From<tandem_engine::Refusal> for ApiError {
    fn from(r: tandem_engine::Refusal) -> Self {
        let (status, code) = r.status_and_code();
        let status = StatusCode::from_u16(status).expect("a valid status");
        let e = ApiError::new(status, code, r.to_string());
        match r.home_region() {
            Some(home) => e.with("home_region", home),
            None => e,
        }
    }
}

impl From<tandem_http::BodyError> for ApiError {
    fn from(e: tandem_http::BodyError) -> Self {
        match e {
            tandem_http::BodyError::TooLarge { limit, .. } => ApiError::payload_too_large(limit),
            tandem_http::BodyError::Read(_) => ApiError::bad_request(e.to_string()),
        }
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(e: axum::extract::rejection::PathRejection) -> Self {
        ApiError::bad_request(format!("bad path: {}", e.body_text()))
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::bad_request(format!("bad query string: {}", e.body_text()))
    }
}
