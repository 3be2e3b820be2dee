//! The error body of the contract: `{"error": {"code", "message", ...}}`,
//! built once here for handlers (`error_response`) and for the raw answers the
//! connection layer writes itself (`raw_response`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

/// An error as the contract renders it: a stable code, a message, and extra
/// members (e.g. `home_region`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    pub extra: Vec<(String, String)>,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorBody { code: code.into(), message: message.into(), extra: Vec::new() }
    }

    pub fn to_json(&self) -> Value {
        let mut error = Map::new();
        error.insert("code".into(), Value::String(self.code.clone()));
        error.insert("message".into(), Value::String(self.message.clone()));
        for (k, v) in &self.extra {
            error.insert(k.clone(), Value::String(v.clone()));
        }
        json!({ "error": error })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_json()).expect("a JSON value always serializes")
    }
}

/// A JSON error response.
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody::new(code, message);
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body.to_bytes())
        .into_response()
}

/// A whole HTTP/1.1 response with a JSON error body that closes the
/// connection, for answers written below hyper.
pub fn raw_response(status: StatusCode, code: &str, message: &str) -> Vec<u8> {
    let body = ErrorBody::new(code, message).to_bytes();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// The code and message of the answers the connection layer gives itself.
pub fn protocol_error(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::URI_TOO_LONG => ("uri_too_long", "the request URI is longer than the limit"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            ("headers_too_large", "the request headers are larger than the limit")
        }
        StatusCode::REQUEST_TIMEOUT => {
            ("request_timeout", "the request head did not arrive within the time limit")
        }
        _ => ("bad_request", "malformed HTTP request"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_responses_are_complete_and_json() {
        let r = raw_response(StatusCode::URI_TOO_LONG, "uri_too_long", "too \"long\"");
        let text = String::from_utf8(r).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "uri_too_long");
        assert_eq!(v["error"]["message"], "too \"long\"");
    }

    #[test]
    fn extra_members_sit_beside_code_and_message() {
        let mut e = ErrorBody::new("misdirected_write", "go home");
        e.extra.push(("home_region".into(), "eu-west".into()));
        let v = e.to_json();
        assert_eq!(v["error"]["home_region"], "eu-west");
        assert_eq!(v["error"]["code"], "misdirected_write");
    }
}
