//! Rotation without a restart: on SIGHUP, and whenever one of the files
//! changed (looked at every second), the node loads its certificate, key,
//! CA and revocation list and its API keys again. Connections made after a
//! reload use the new certificate; replication streams of a certificate the
//! new revocation list names end (see `replication::sender`). A file that
//! does not load leaves the current configuration in place (logged).

use std::time::Duration;

use crate::api::AppState;
use crate::auth::Security;

/// How often the files are looked at.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

pub async fn watch(node: AppState) {
    let Security::Tls { tls, api_keys } = &node.security else { return };
    let mut shutdown = node.shutdown.subscribe();
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        let signalled = tokio::select! {
            _ = tokio::time::sleep(RELOAD_CHECK) => false,
            _ = async {
                match hangup.as_mut() {
                    Some(h) => { h.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => true,
            _ = shutdown.changed() => return,
        };
        if signalled || tls.changed_on_disk() {
            match tls.reload() {
                Ok(()) => tracing::warn!(signalled, "certificates reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "certificates could not be reloaded; the current ones stay");
                }
            }
        }
        if signalled || api_keys.changed_on_disk() {
            match api_keys.reload() {
                Ok(()) => tracing::warn!(keys = api_keys.len(), "API keys reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "API keys could not be reloaded; the current ones stay");
                }
            }
        }
    }
}
