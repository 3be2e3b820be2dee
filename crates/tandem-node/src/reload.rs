//! Rotation without a restart: on SIGHUP, and whenever one of the files
//! changed (looked at every second), the node loads its certificate, key,
//! CA and revocation list and its API keys again. Connections made after a
//! reload use the new certificate; replication streams of a certificate the
//! new revocation list names end (see `replication::sender`). A file that
//! does not load leaves the current configuration in place (logged).

use crate::api::AppState;
use crate::auth::Security;

/// Reload this region's certificates and API keys until it shuts down (see
/// `tandem_http::reload`).
pub async fn watch(node: AppState) {
    let Security::Tls { tls, api_keys } = &node.security else { return };
    let mut shutdown = node.shutdown.subscribe();
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    tandem_http::reload::watch(tls, api_keys, stop).await;
}
