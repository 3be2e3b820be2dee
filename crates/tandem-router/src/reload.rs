//! Rotation without a restart: on SIGHUP, and whenever one of the files
//! changed (looked at every second), the router loads its certificate, key,
//! CA and revocation list and the API keys again; connections made after
//! that use them. A file that does not load leaves the current ones in place.

use std::sync::Arc;
use std::time::Duration;

use crate::state::{RouterSecurity, RouterState};

const RELOAD_CHECK: Duration = Duration::from_secs(1);

pub async fn watch(s: Arc<RouterState>) {
    let RouterSecurity::Tls { tls, api_keys } = &s.security else { return };
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
