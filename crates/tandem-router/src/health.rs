//! Health probes: each region's `/healthz` every `probe_interval`; after
//! `probe_failure_threshold` consecutive failures the region is marked down,
//! and one success marks it up again. Failed upstream connections count as
//! failures too, so a killed region is routed around quickly.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::RegionLabels;
use crate::server::RouterState;

/// What the router knows of one region.
#[derive(Debug)]
pub struct RegionState {
    pub name: String,
    pub jurisdiction: String,
    pub url: String,
    pub up: AtomicBool,
    pub drained: AtomicBool,
    pub failures: AtomicU32,
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

pub async fn probe_loop(state: Arc<RouterState>, index: usize) {
    let cfg = &state.config.router;
    let region = &state.regions[index];
    let uri: hyper::Uri = format!("{}/healthz", region.url).parse().expect("valid URL");
    loop {
        // Up means serving and ready: a region that restarted is routed to
        // only once it has caught up with the peers it can reach.
        let ok = match tokio::time::timeout(cfg.probe_timeout, state.probe_client.get(uri.clone()))
            .await
        {
            Ok(Ok(resp)) if resp.status().is_success() => {
                use http_body_util::BodyExt;
                let body =
                    tokio::time::timeout(cfg.probe_timeout, resp.into_body().collect()).await;
                let v: serde_json::Value = match body {
                    Ok(Ok(b)) => serde_json::from_slice(&b.to_bytes()).unwrap_or_default(),
                    _ => serde_json::Value::Null,
                };
                v.get("ready").and_then(|r| r.as_bool()).unwrap_or(true)
            }
            _ => false,
        };
        if ok {
            if region.success() {
                tracing::warn!(region = %region.name, "region is up");
            }
        } else if region.failure(cfg.probe_failure_threshold) {
            tracing::error!(region = %region.name, "region is down: routing around it");
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
    fn threshold_then_recovery() {
        let r = RegionState {
            name: "eu-west".into(),
            jurisdiction: "EU".into(),
            url: String::new(),
            up: AtomicBool::new(true),
            drained: AtomicBool::new(false),
            failures: AtomicU32::new(0),
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
