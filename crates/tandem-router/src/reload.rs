//! Rotation without a restart: on SIGHUP, and whenever one of the files
//! changed (looked at every second), the router loads its certificate, key,
//! CA and revocation list and the API keys again; connections made after
//! that use them. A file that does not load leaves the current ones in place.

use std::sync::Arc;

use crate::state::{RouterSecurity, RouterState};

/// Reload the router's certificate and the API keys for as long as it runs
/// (see `tandem_http::reload`).
pub async fn watch(s: Arc<RouterState>) {
    let RouterSecurity::Tls { tls, api_keys } = &s.security else { return };
    tandem_http::reload::watch(tls, api_keys, std::future::pending()).await;
}
