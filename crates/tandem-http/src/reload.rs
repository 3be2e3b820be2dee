//! Rotation without a restart, for node and router alike: on SIGHUP, and
//! whenever one of the files changed (looked at every second), load the
//! certificate, key, CA and revocation list and the API keys again.
//! Connections made after a reload use the new material; a file that does
//! not load leaves the current one in place (logged).

use std::future::Future;
use std::time::Duration;

use crate::api_keys::ApiKeys;
use crate::tls::Tls;

/// How often the files are looked at.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Reload `tls` and `api_keys` when they change or on SIGHUP, until `stop`
/// completes.
pub async fn watch(tls: &Tls, api_keys: &ApiKeys, stop: impl Future<Output = ()>) {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    tokio::pin!(stop);
    loop {
        let signalled = tokio::select! {
            _ = tokio::time::sleep(RELOAD_CHECK) => false,
            _ = async {
                match hangup.as_mut() {
                    Some(h) => { h.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => true,
            () = &mut stop => return,
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
