//! Input checks shared by the handlers: record ids and subjects (a limited
//! alphabet and length, so ids are safe in paths, logs and keys) and the body
//! limit. Each failure is a typed `ApiError` naming the problem.

use axum::body::Body;

use crate::error::ApiError;

/// Characters allowed in record ids and subjects.
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@')
}

pub fn check_id(what: &str, id: &str, len_max: usize) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(ApiError::bad_request(format!("{what} must not be empty")));
    }
    if id.len() > len_max {
        return Err(ApiError::bad_request(format!(
            "{what} is {} bytes long; the limit is {len_max}",
            id.len()
        )));
    }
    if let Some(c) = id.chars().find(|c| !is_id_char(*c)) {
        return Err(ApiError::bad_request(format!(
            "{what} contains {c:?}; allowed are ASCII letters, digits and - _ . : @"
        )));
    }
    Ok(())
}

/// Read a whole body, refusing more than `limit` bytes with 413 (after
/// draining the rest, within the gate's limits).
pub async fn read_body(
    body: Body,
    limit: usize,
    gate: &tandem_http::DrainGate,
) -> Result<bytes::Bytes, ApiError> {
    Ok(tandem_http::read_body(body, limit, gate).await?)
}

/// Parse a JSON body into `T`, with a message that says what was wrong.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request("request body is empty; a JSON object is expected"));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?;
    // serde's derived structs also accept arrays; the contract is objects only.
    if !value.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("bad request body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(check_id("id", "alice:cart-1", 64).is_ok());
        assert!(check_id("id", "a@b.c_d", 64).is_ok());
        assert!(check_id("id", "", 64).is_err());
        assert!(check_id("id", "a/b", 64).is_err());
        assert!(check_id("id", "a b", 64).is_err());
        assert!(check_id("id", "é", 64).is_err());
        assert!(check_id("id", &"x".repeat(65), 64).is_err());
        assert!(check_id("id", &"x".repeat(64), 64).is_ok());
    }
}
