//! What the router holds while it runs: the config, what it knows of each
//! region (`health::RegionState`), the upstream clients, the home-region
//! cache, the metrics and the admin token; and its readiness: it routes only
//! once every region has answered (or timed out) its first probe, and a
//! request that arrives before waits for that, at most one probe timeout.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Empty, Full};
use tandem_config::Config;
use tandem_http::client::{Clients, HttpClient};

use crate::cache::HomeCache;
use crate::decide::RegionView;
use crate::health::RegionState;
use crate::metrics::RouterMetrics;

/// Beyond the probe timeout, the time a first probe round may take to be recorded.
const READY_SLACK: Duration = Duration::from_millis(100);

pub struct RouterState {
    pub config: Arc<Config>,
    pub regions: Vec<RegionState>,
    /// True once every region has answered (or timed out) its first probe.
    pub ready: tokio::sync::watch::Sender<bool>,
    pub started: Instant,
    /// Limits on draining oversized request bodies.
    pub drain: tandem_http::DrainGate,
    pub default_region: String,
    /// Pooled upstream clients, one per region, over TLS with the router's
    /// certificate (each verifies its region by name).
    pub clients: Clients<Full<Bytes>>,
    pub probe_clients: Clients<Empty<Bytes>>,
    pub cache: HomeCache,
    pub metrics: RouterMetrics,
    pub admin_token: Option<String>,
    pub security: RouterSecurity,
}

/// How the router authenticates: TLS and API keys, or `--insecure`.
pub enum RouterSecurity {
    Insecure,
    Tls { tls: Arc<tandem_http::tls::Tls>, api_keys: Arc<tandem_http::api_keys::ApiKeys> },
}

impl RouterSecurity {
    pub fn tls(&self) -> Option<Arc<tandem_http::tls::Tls>> {
        match self {
            RouterSecurity::Tls { tls, .. } => Some(tls.clone()),
            RouterSecurity::Insecure => None,
        }
    }
}

impl RouterState {
    /// Called once per region, after its first probe.
    pub fn on_first_probe(&self) {
        if self.regions.iter().all(|r| r.probed.load(Ordering::SeqCst)) {
            self.ready.send_replace(true);
            tracing::info!("every region has been probed once: routing");
        }
    }

    /// Regions whose first probe has not finished.
    pub fn unprobed(&self) -> Vec<&str> {
        self.regions
            .iter()
            .filter(|r| !r.probed.load(Ordering::SeqCst))
            .map(|r| r.name.as_str())
            .collect()
    }

    /// Wait until every region has been probed once, at most until one probe
    /// timeout after the start (a probe never takes longer), so a request that
    /// arrives at once is routed on what the probes found, not refused.
    pub async fn wait_ready(&self) {
        if *self.ready.borrow() {
            return;
        }
        let deadline = self.started + self.config.router.probe_timeout + READY_SLACK;
        let mut rx = self.ready.subscribe();
        let _ = tokio::time::timeout_at(deadline.into(), rx.wait_for(|r| *r)).await;
    }

    /// The upstream client for `region`.
    pub fn client(&self, region: &str) -> HttpClient<Full<Bytes>> {
        self.clients.get(&tandem_http::identity::region_server_name(region))
    }

    /// The probe client for `region`.
    pub fn probe_client(&self, region: &str) -> HttpClient<Empty<Bytes>> {
        self.probe_clients.get(&tandem_http::identity::region_server_name(region))
    }

    /// `scheme://address` of a region.
    pub fn base_url(&self, region: &str) -> String {
        let addr = self.config.region(region).expect("a region of the deployment").listen;
        format!("{}://{addr}", self.clients.scheme())
    }

    /// What the router knows of a region of the deployment.
    pub fn region(&self, name: &str) -> &RegionState {
        self.regions.iter().find(|r| r.name == name).expect("a region of the deployment")
    }

    /// A snapshot of every region as the decisions see it from `caller`'s region.
    pub fn views(&self, caller: &str) -> Vec<RegionView> {
        self.regions
            .iter()
            .map(|r| RegionView {
                name: r.name.clone(),
                jurisdiction: r.jurisdiction.clone(),
                up: r.up.load(Ordering::SeqCst),
                drained: r.drained.load(Ordering::SeqCst),
                writable: r.writable.load(Ordering::SeqCst),
                distance_ms: if r.name == caller {
                    0
                } else {
                    self.config.link_latency_ms(caller, &r.name).max(1)
                },
            })
            .collect()
    }
}
