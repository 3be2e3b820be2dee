//! Who may call what on a node (DESIGN.md, Security). With TLS (the default):
//!
//! - the data plane needs an API key (`Authorization: Bearer <key>`, from
//!   `<data_dir>/api-keys`), or the router's certificate: the router has
//!   checked the client's key, and calls with its own identity;
//! - admin calls and the operations endpoints that return record values
//!   (`/v1/conflicts`, `/v1/audit`) need the admin token or the operator's
//!   certificate;
//! - replication is served only to a region's certificate: the peer's name
//!   and jurisdiction are the certificate's, never a header's. A header that
//!   names another region is refused (403 `peer_identity_mismatch`), counted
//!   and audited;
//! - `X-Tandem-Failover` is honoured only on the router's connection.
//!
//! With `--insecure` there is no TLS and no API key; regions prove
//! themselves with the shared replication secret and name themselves by the
//! `X-Tandem-Peer` header, and the failover header is taken as sent. Every
//! refusal counts `tandem_auth_refusals_total{reason}`.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use tandem_engine::protocol::{FAILOVER_HEADER, PEER_HEADER};
use tandem_http::identity::{Identity, Peer};
use tandem_http::{bearer, secret_matches};

use crate::error::ApiError;
use crate::node::Node;

/// How this region authenticates its callers.
pub enum Security {
    /// `--insecure`: plaintext, no API keys.
    Insecure {
        /// Authenticates regions to each other; `None` on a lone region.
        replication_secret: Option<String>,
    },
    /// TLS 1.3 on every connection, identities from certificates.
    Tls { tls: Arc<tandem_http::tls::Tls>, api_keys: Arc<tandem_http::api_keys::ApiKeys> },
}

impl Security {
    pub fn is_tls(&self) -> bool {
        matches!(self, Security::Tls { .. })
    }

    pub fn tls(&self) -> Option<Arc<tandem_http::tls::Tls>> {
        match self {
            Security::Tls { tls, .. } => Some(tls.clone()),
            Security::Insecure { .. } => None,
        }
    }
}

fn refuse(node: &Node, reason: &'static str, error: ApiError) -> ApiError {
    node.metrics
        .auth_refusals
        .get_or_create(&crate::metrics::ReasonLabels { reason: reason.into() })
        .inc();
    error
}

/// The data plane: an API key, or the router's certificate.
pub fn data_plane(node: &Node, headers: &HeaderMap, peer: &Peer) -> Result<(), ApiError> {
    let Security::Tls { api_keys, .. } = &node.security else { return Ok(()) };
    if peer.identity == Identity::Router {
        return Ok(());
    }
    match bearer(headers) {
        None => Err(refuse(
            node,
            "missing_api_key",
            ApiError::unauthorized_with("an API key is needed: Authorization: Bearer <key>"),
        )),
        Some(key) if api_keys.check(key).is_some() => Ok(()),
        Some(_) => Err(refuse(
            node,
            "wrong_api_key",
            ApiError::unauthorized_with("the API key is not one of this deployment's"),
        )),
    }
}

/// Admin calls and value-bearing operations endpoints: the admin token, or
/// the operator's certificate.
pub fn admin(node: &Node, headers: &HeaderMap, peer: &Peer) -> Result<(), ApiError> {
    if peer.identity == Identity::Operator {
        return Ok(());
    }
    match (bearer(headers), node.admin_token.as_deref()) {
        (Some(p), Some(expected)) if secret_matches(p, expected) => Ok(()),
        _ => Err(refuse(
            node,
            "not_admin",
            ApiError::unauthorized_with(
                "this call needs the admin token or the operator certificate",
            ),
        )),
    }
}

/// The region calling a replication endpoint, as its certificate proves (or,
/// with `--insecure`, as the shared secret and its header say).
pub fn peer_region(node: &Node, headers: &HeaderMap, peer: &Peer) -> Result<String, ApiError> {
    let claimed = match headers.get(PEER_HEADER) {
        None => None,
        Some(v) => {
            Some(v.to_str().map_err(|_| ApiError::bad_request("X-Tandem-Peer is not UTF-8"))?)
        }
    };
    let name = match &node.security {
        Security::Insecure { replication_secret } => {
            let Some(expected) = replication_secret.as_deref() else {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "replication_disabled",
                    "this region has no replication secret configured",
                ));
            };
            match bearer(headers) {
                Some(p) if secret_matches(p, expected) => {}
                _ => return Err(refuse(node, "wrong_secret", ApiError::unauthorized())),
            }
            claimed.ok_or_else(|| ApiError::bad_request("missing X-Tandem-Peer header"))?.to_owned()
        }
        Security::Tls { .. } => {
            let Identity::Region { name, jurisdiction } = &peer.identity else {
                let why = format!(
                    "replication is served to regions only, not to {}",
                    peer.identity.describe()
                );
                let reason = if peer.identity == Identity::Anonymous {
                    "no_certificate"
                } else {
                    "not_a_region"
                };
                return Err(refuse(node, reason, ApiError::unauthorized_with(why)));
            };
            if node.config.jurisdiction_of(name) != Some(jurisdiction.as_str()) {
                return Err(refuse(
                    node,
                    "unknown_region",
                    forbidden(format!("the certificate names {name} ({jurisdiction}), which is not a region of this deployment")),
                ));
            }
            if let Some(c) = claimed.filter(|c| c != name) {
                node.audit_identity_refused(name, c);
                return Err(refuse(
                    node,
                    "peer_identity_mismatch",
                    forbidden(format!("the certificate is {name}'s; it cannot speak for {c}"))
                        .with("certificate_region", name.as_str()),
                ));
            }
            name.clone()
        }
    };
    if name == node.region || node.config.region(&name).is_none() {
        return Err(ApiError::bad_request(format!("`{name}` is not a peer region")));
    }
    Ok(name)
}

/// The home region a write stands in for, when the router sent it.
pub fn failover_for(node: &Node, headers: &HeaderMap, peer: &Peer) -> Option<String> {
    let trusted = !node.security.is_tls() || peer.identity == Identity::Router;
    let header = headers.get(FAILOVER_HEADER).and_then(|v| v.to_str().ok())?;
    if !trusted {
        // Only the router may mark a failover: a client's marker is ignored.
        return None;
    }
    Some(header.to_owned())
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "peer_identity_mismatch", message)
}
