//! Request bodies on their way in: read whole (the router may send a request
//! twice) and bounded by `router.max_body_bytes`, with the oversized rest
//! drained within `tandem_http`'s limits so that a client that writes its
//! whole body before reading still sees its 413.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;

use crate::errors;
use crate::state::RouterState;

/// A body that says in advance it is over the limit gets its 413 before any
/// routing: the answer does not depend on where it would have gone.
pub async fn refuse_oversized(s: &RouterState, req: Request) -> Result<Request, Response> {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let max = s.config.router.max_body_bytes;
    if declared.is_some_and(|n| n > max as u64) {
        let (_, body) = req.into_parts();
        return Err(read_body(s, body).await.expect_err("a body over the limit"));
    }
    Ok(req)
}

/// Read a request body, answering 413 when it is over the limit (after
/// draining the rest, within limits) and 400 when it could not be read.
#[allow(clippy::result_large_err)] // the error is the finished response, built once
pub async fn read_body(s: &RouterState, body: Body) -> Result<Bytes, Response> {
    let max = s.config.router.max_body_bytes;
    tandem_http::read_body(body, max, &s.drain).await.map_err(|e| match e {
        tandem_http::BodyError::TooLarge { .. } => errors::payload_too_large(e.to_string()),
        tandem_http::BodyError::Read(_) => {
            errors::error(axum::http::StatusCode::BAD_REQUEST, "bad_request", e.to_string())
        }
    })
}
