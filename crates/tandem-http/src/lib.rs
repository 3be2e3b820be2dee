//! The HTTP layer that the node and the router share, so that both answer
//! every error in the contract's shape (`{"error":{"code","message"}}`) and
//! hold the same limits:
//!
//! - `serve`: the accept loop (a cap on open connections, graceful shutdown)
//!   with hyper's HTTP/1 connection per socket;
//! - `conn`: the per-connection wrapper below hyper that turns the errors
//!   hyper answers by itself (400 on a malformed request, 414, 431) into JSON,
//!   answers a request head that does not arrive in time with 408, and closes
//!   idle keep-alive connections;
//! - `body`: bounded body reads that drain (within limits) the rest of an
//!   oversized body before answering 413, so clients that write their whole
//!   body before reading still see the answer;
//! - `error`: the error body itself; `auth`: constant-time secret checks;
//!   `api_keys`: the data plane's keys;
//! - `tls`: TLS 1.3 configurations from the deployment's CA, reloadable;
//!   `identity`: who a verified certificate says is calling; `client`: pooled
//!   outbound clients that verify the server by the role they expect.

pub mod api_keys;
pub mod auth;
pub mod body;
pub mod client;
mod conn;
pub mod error;
pub mod identity;
pub mod reload;
pub mod serve;
pub mod tls;

pub use auth::{bearer, secret_matches};
pub use body::{read_body, BodyError, DrainGate};
pub use error::{error_response, ErrorBody};
pub use serve::{serve, ServeLimits};
