//! The node's audit upkeep loop: every `interval(retention)` it exports the
//! sealed audit segments not exported yet (with `[audit] export`, to the first
//! backup destination of the region's jurisdiction), drops those past
//! `[audit] retention` (`audit::retention`), and keeps the audit gauges
//! current. A failed round is logged, counted and retried at the next one;
//! writes and replication never wait for it.

use std::sync::Arc;
use std::time::Duration;

use crate::audit::retention::ExportTarget;
use crate::node::Node;

/// How often upkeep runs: a quarter of the retention, between 250 ms and a
/// minute.
pub fn interval(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_millis(250), Duration::from_secs(60))
}

pub async fn run(node: Arc<Node>) {
    if !node.audit.enabled() {
        return;
    }
    let audit = node.config.audit.clone();
    let target = if audit.export {
        match ExportTarget::for_region(&node.config, &node.region) {
            Ok(t) => Some(t),
            Err(e) => {
                // Nothing is dropped unexported: segments stay until fixed.
                tracing::error!(error = %e, "audit export destination unusable; sealed segments are kept");
                node.metrics.audit_upkeep_failures.inc();
                None
            }
        }
    } else {
        None
    };
    let retention_ms = u64::try_from(audit.retention.as_millis()).unwrap_or(u64::MAX);
    let mut shutdown = node.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval(audit.retention)) => {}
            _ = shutdown.changed() => return,
        }
        if let Some(t) = &target {
            match node.audit.export_sealed(t).await {
                Ok(n) => {
                    node.metrics.audit_segments_exported.inc_by(n);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "audit segment export failed; retried later");
                    node.metrics.audit_upkeep_failures.inc();
                }
            }
        }
        if !audit.export || target.is_some() {
            let n = node.clone();
            let dropped = tokio::task::spawn_blocking(move || {
                n.audit.drop_expired(n.now_ms(), retention_ms, n.config.audit.export)
            })
            .await;
            match dropped {
                Ok(Ok(d)) => {
                    node.metrics.audit_segments_dropped.inc_by(d);
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "dropping audit segments failed; retried later");
                    node.metrics.audit_upkeep_failures.inc();
                }
                Err(e) => tracing::error!(error = %e, "audit upkeep panicked"),
            }
        }
        let (bytes, segments) = node.audit.disk_usage();
        node.metrics.audit_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        node.metrics.audit_segments.set(i64::try_from(segments).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upkeep_runs_at_a_quarter_of_the_retention_within_bounds() {
        assert_eq!(interval(Duration::from_secs(2)), Duration::from_millis(500));
        assert_eq!(interval(Duration::from_millis(100)), Duration::from_millis(250));
        assert_eq!(interval(Duration::from_secs(30 * 24 * 3600)), Duration::from_secs(60));
    }
}
