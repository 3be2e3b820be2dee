//! Health probes: each region's `/healthz` every `probe_interval`; after
//! `probe_failure_threshold` consecutive failures the region is marked down,
//! and one success marks it up again. Failed upstream connections count as
//! failures too, so a killed region is routed around quickly. A region whose
//! store is full answers its probe with `writable: false`: it stays up for
//! reads and takes no writes until it says otherwise.
//!
//! The router is ready once every region has answered its first probe or that
//! probe has timed out: before that it knows nothing about where to route, so
//! `/healthz` answers 503 and requests wait (at most one probe timeout).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::RegionLabels;
use crate::state::RouterState;

/// What the router knows of one region.
#[derive(Debug)]
pub struct RegionState {
    pub name: String,
    pub jurisdiction: String,
    pub url: String,
    pub up: AtomicBool,
    pub drained: AtomicBool,
    /// False while the region reports that its store cannot take writes.
    pub writable: AtomicBool,
    pub failures: AtomicU32,
    /// Set once its first probe has been answered or has timed out.
    pub probed: AtomicBool,
}

impl RegionState {
    /// Count a failure; returns true when this one marked the region down.
    pub fn failure(&self, threshold: u32) -> bool {
        let n = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
        n >= threshold && self.up.swap(false, Ordering::SeqCst)
    }

    /// Count a success; returns true when it marked the region up again.
    pub fn success(&self) -> bool {
        self.failures.store(0, Ordering::SeqCst);
        !self.up.swap(true, Ordering::SeqCst)
    }
}

/// What one probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Up { writable: bool },
    Down,
}

/// Read a probe's answer. Up means serving and ready: a region that restarted
/// is routed to only once it has caught up with the peers it can reach. A 503
/// that says `writable: false` (and not `ready: false`) is a region whose
/// store is full: up for reads.
pub fn probe_outcome(status: u16, body: &serde_json::Value) -> Probe {
    let ready = body.get("ready").and_then(serde_json::Value::as_bool).unwrap_or(true);
    let writable = body.get("writable").and_then(serde_json::Value::as_bool).unwrap_or(true);
    match status {
        200..=299 if ready => Probe::Up { writable },
        503 if ready && !writable => Probe::Up { writable: false },
        _ => Probe::Down,
    }
}

/// Probe once; the whole exchange is bounded by the probe timeout.
async fn probe(state: &RouterState, name: &str, uri: &hyper::Uri) -> Probe {
    use http_body_util::BodyExt;
    let exchange = async {
        let resp = state.probe_client(name).get(uri.clone()).await.ok()?;
        let status = resp.status().as_u16();
        let body =
            http_body_util::Limited::new(resp.into_body(), 64 * 1024).collect().await.ok()?;
        let v: serde_json::Value = serde_json::from_slice(&body.to_bytes()).unwrap_or_default();
        Some(probe_outcome(status, &v))
    };
    tokio::time::timeout(state.config.router.probe_timeout, exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(Probe::Down)
}

pub async fn probe_loop(state: Arc<RouterState>, index: usize) {
    let cfg = &state.config.router;
    let region = &state.regions[index];
    let uri: hyper::Uri = format!("{}/healthz", region.url).parse().expect("valid URL");
    loop {
        match probe(&state, &region.name, &uri).await {
            Probe::Up { writable } => {
                if region.writable.swap(writable, Ordering::SeqCst) != writable {
                    tracing::warn!(region = %region.name, writable, "region's store changed writability");
                }
                if region.success() {
                    tracing::warn!(region = %region.name, "region is up");
                }
            }
            Probe::Down => {
                if region.failure(cfg.probe_failure_threshold) {
                    tracing::error!(region = %region.name, "region is down: routing around it");
                }
            }
        }
        if !region.probed.swap(true, Ordering::SeqCst) {
            state.on_first_probe();
        }
        let up = region.up.load(Ordering::SeqCst);
        state
            .metrics
            .region_up
            .get_or_create(&RegionLabels { region: region.name.clone() })
            .set(up as i64);
        tokio::time::sleep(cfg.probe_interval.max(Duration::from_millis(10))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_answers() {
        use serde_json::json;
        assert_eq!(probe_outcome(200, &json!({"status": "ok"})), Probe::Up { writable: true });
        assert_eq!(probe_outcome(200, &json!({"ready": false})), Probe::Down);
        assert_eq!(
            probe_outcome(503, &json!({"ready": true, "writable": false})),
            Probe::Up { writable: false }
        );
        assert_eq!(probe_outcome(503, &json!({"ready": false, "writable": false})), Probe::Down);
        assert_eq!(probe_outcome(503, &json!({})), Probe::Down);
        assert_eq!(probe_outcome(500, &serde_json::Value::Null), Probe::Down);
    }

    #[test]
    fn threshold_then_recovery() {
        let r = RegionState {
            name: "eu-west".into(),
            jurisdiction: "EU".into(),
            url: String::new(),
            up: AtomicBool::new(true),
            drained: AtomicBool::new(false),
            writable: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            probed: AtomicBool::new(false),
        };
        assert!(!r.failure(3));
        assert!(!r.failure(3));
        assert!(r.failure(3), "third failure marks it down");
        assert!(!r.failure(3), "already down");
        assert!(!r.up.load(Ordering::SeqCst));
        assert!(r.success());
        assert!(r.up.load(Ordering::SeqCst));
    }
}
