//! The running deployment as the drill's own calls reach it (the workload
//! has its own path through the router): its shape, the HTTP client, a
//! region's status and health, the router's routes, the conflicts each region
//! counted and reported, and the admin actions on the target region at the
//! router, at the node and through the `tandem up` control API. Every call is
//! bounded by [`CALL_TIMEOUT`]; a read that gets no usable answer is `None`,
//! an action that fails is an error (it stops the drill).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::http::Http;
use super::measure::ConflictSeen;
use super::monitor;
use super::plan::Topology;

/// Time-out of the drill's own calls (status, admin, control, read-back).
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// `replication_conflicts_total` of each region, by entity type.
pub(super) type ConflictCounts = BTreeMap<String, BTreeMap<String, f64>>;

pub(super) struct Deployment {
    pub(super) http: Http,
    pub(super) topo: Topology,
    /// The region the drill takes out.
    pub(super) target: String,
    /// The bearer token of the admin calls.
    pub(super) admin_token: Option<String>,
    /// Base URL of the `tandem up` control API.
    pub(super) control: Option<String>,
}

impl Deployment {
    pub(super) fn survivors(&self) -> Vec<String> {
        self.topo.survivors(&self.target)
    }

    pub(super) fn region_url(&self, region: &str) -> String {
        self.topo.region(region).map(|r| r.url.clone()).unwrap_or_default()
    }

    pub(super) async fn get_json(&self, url: &str) -> Option<Value> {
        match self.http.get(url, CALL_TIMEOUT).await {
            Ok(a) if a.ok() => Some(a.body),
            _ => None,
        }
    }

    pub(super) async fn status(&self, region: &str) -> Option<Value> {
        self.get_json(&format!("{}/v1/status", self.region_url(region))).await
    }

    pub(super) async fn healthy(&self, region: &str) -> bool {
        self.get_json(&format!("{}/healthz", self.region_url(region))).await.is_some()
    }

    /// The control API's `GET /v1/deployment` (it wants the admin token).
    pub(super) async fn control_deployment(&self) -> Option<Value> {
        let url = format!("{}/v1/deployment", self.control.as_deref()?);
        let auth = self.admin_token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.as_deref().map(|a| vec![("authorization", a)]).unwrap_or_default();
        match self.http.call(hyper::Method::GET, &url, &headers, None, CALL_TIMEOUT).await {
            Ok(a) if a.ok() => Some(a.body),
            _ => None,
        }
    }

    pub(super) async fn routes(&self) -> Option<Value> {
        self.get_json(&format!("{}/v1/routes", self.topo.router_url)).await
    }

    /// An admin call that must succeed; its failure stops the drill.
    async fn admin(&self, url: &str, what: &str) -> anyhow::Result<Value> {
        let a = self
            .http
            .admin_post(url, self.admin_token.as_deref(), CALL_TIMEOUT)
            .await
            .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        if !a.ok() {
            anyhow::bail!("{what}: {url} answered {}: {}", a.status, a.body);
        }
        Ok(a.body)
    }

    /// `drain` or `restore` the target at the router.
    pub(super) async fn router_action(&self, action: &str) -> anyhow::Result<Value> {
        let url = format!("{}/v1/admin/regions/{}/{action}", self.topo.router_url, self.target);
        self.admin(&url, &format!("{action} {} at the router", self.target)).await
    }

    /// `isolate` or `rejoin` the target's replication.
    pub(super) async fn node_action(&self, action: &str) -> anyhow::Result<Value> {
        let url = format!("{}/v1/admin/{action}", self.region_url(&self.target));
        self.admin(&url, &format!("{action} {}", self.target)).await
    }

    /// `kill` or `start` the target's process through the control API.
    pub(super) async fn control_action(&self, action: &str) -> anyhow::Result<Value> {
        let control = self.control.as_deref().ok_or_else(|| anyhow::anyhow!("no control API"))?;
        let url = format!("{control}/v1/processes/{}/{action}", self.target);
        self.admin(&url, &format!("{action} the process of {}", self.target)).await
    }

    /// The conflicts counted so far by each of `regions` that answers.
    pub(super) async fn conflicts_by_region(&self, regions: &[String]) -> ConflictCounts {
        let mut out = BTreeMap::new();
        for r in regions {
            let url = format!("{}/metrics", self.region_url(r));
            if let Ok(text) = self.http.get_text(&url, CALL_TIMEOUT).await {
                out.insert(r.clone(), monitor::conflicts_by_entity(&text));
            }
        }
        out
    }

    /// Conflicts detected at `regions` since `since_ms`.
    pub(super) async fn conflicts_since(
        &self,
        regions: &[String],
        since_ms: u64,
    ) -> Vec<ConflictSeen> {
        let mut out = Vec::new();
        for r in regions {
            let url = format!("{}/v1/conflicts?limit=1000", self.region_url(r));
            let Some(v) = self.get_json(&url).await else { continue };
            for e in v["conflicts"].as_array().into_iter().flatten() {
                if let Some(c) = ConflictSeen::from_json(r, e) {
                    if c.detected_at_ms >= since_ms {
                        out.push(c);
                    }
                }
            }
        }
        out
    }
}
