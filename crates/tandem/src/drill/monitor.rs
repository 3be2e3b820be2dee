//! The background monitor: every [`POLL_INTERVAL`] it reads the router's
//! `/v1/routes` and every region's `/v1/status` at once and keeps the round
//! as a [`Tick`]. TTD, the lag-over-time line, the backlog observations and
//! the catch-up wait are all read from these ticks. Bounded: each poll has a
//! short time-out, and the history is capped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::http::Http;
use super::journal::DrillClock;
use super::measure::{NodeSample, PeerSample, RouteSample, Tick};
use super::plan::Topology;

/// How often the deployment is polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Time-out of one poll.
pub const POLL_TIMEOUT: Duration = Duration::from_millis(1_000);
/// Rounds kept (a production drill polls for about 95 minutes: ~57,000 rounds);
/// beyond this the oldest are thinned out by half.
pub const TICKS_MAX: usize = 100_000;

pub struct Monitor {
    pub ticks: Arc<Mutex<Vec<Tick>>>,
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<()>,
}

/// Parse a region's `/v1/status`.
pub fn node_sample(v: &Value) -> Option<NodeSample> {
    let budgets = v.get("budgets")?.as_object()?;
    let breached = budgets
        .iter()
        .filter(|(_, b)| b["breached"].as_bool() == Some(true))
        .map(|(c, _)| c.clone())
        .collect();
    let peers = v
        .get("peers")?
        .as_array()?
        .iter()
        .filter_map(|p| {
            let lag = p["classes"]
                .as_object()
                .map(|cs| cs.values().filter_map(|c| c["lag_seconds"].as_f64()).fold(0.0, f64::max))
                .unwrap_or(0.0);
            Some(PeerSample {
                peer: p["peer"].as_str()?.to_owned(),
                connected: p["connected"].as_bool().unwrap_or(false),
                queue_depth: p["queue_depth"].as_u64().unwrap_or(0),
                lag_seconds: lag,
            })
        })
        .collect();
    Some(NodeSample { isolated: v["isolated"].as_bool().unwrap_or(false), breached, peers })
}

/// Parse the router's `/v1/routes`.
pub fn route_samples(v: &Value) -> Option<Vec<RouteSample>> {
    v.get("regions")?
        .as_array()?
        .iter()
        .map(|r| {
            Some(RouteSample {
                region: r["region"].as_str()?.to_owned(),
                up: r["up"].as_bool()?,
                drained: r["drained"].as_bool()?,
            })
        })
        .collect()
}

/// `replication_conflicts_total` of one region's `/metrics`, summed by
/// `entity_type` (Prometheus or OpenMetrics text).
pub fn conflicts_by_entity(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if name != "replication_conflicts_total" {
            continue;
        }
        let Ok(v) = value.trim().parse::<f64>() else { continue };
        let entity = labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| k.trim() == "entity_type")
            .map(|(_, v)| v.trim().trim_matches('"').to_owned())
            .unwrap_or_default();
        *out.entry(entity).or_insert(0.0) += v;
    }
    out
}

/// One round: the router and every region, concurrently.
pub async fn poll_once(http: &Http, topo: &Topology, clock: &DrillClock) -> Tick {
    let routes = async {
        let a = http.get(&format!("{}/v1/routes", topo.router_url), POLL_TIMEOUT).await.ok()?;
        a.ok().then(|| route_samples(&a.body)).flatten()
    };
    let regions = futures_util::future::join_all(topo.regions.iter().map(|r| async move {
        let url = format!("{}/v1/status", r.url);
        let sample = match http.get(&url, POLL_TIMEOUT).await {
            Ok(a) if a.ok() => node_sample(&a.body),
            _ => None,
        };
        (r.name.clone(), sample)
    }));
    let (routes, regions) = tokio::join!(routes, regions);
    Tick { t: clock.now(), routes, regions }
}

impl Monitor {
    pub fn start(http: Http, topo: Topology, clock: DrillClock) -> Monitor {
        let ticks = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (ticks.clone(), stop.clone());
        let handle = tokio::spawn(async move {
            let mut interval = tokio::time::interval(POLL_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !s.load(Ordering::Relaxed) {
                interval.tick().await;
                let tick = poll_once(&http, &topo, &clock).await;
                let mut ticks = t.lock().expect("ticks lock");
                if ticks.len() >= TICKS_MAX {
                    // Keep every other round of the older half.
                    let half = ticks.len() / 2;
                    let older: Vec<Tick> = ticks.drain(..half).step_by(2).collect();
                    ticks.splice(0..0, older);
                }
                ticks.push(tick);
            }
        });
        Monitor { ticks, stop, handle }
    }

    pub fn snapshot(&self) -> Vec<Tick> {
        self.ticks.lock().expect("ticks lock").clone()
    }

    /// Stop polling (after the round in progress) and return every round.
    pub async fn stop(&mut self) -> Vec<Tick> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = (&mut self.handle).await;
        self.snapshot()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_status_and_routes() {
        let status = json!({
            "region": "eu-central", "isolated": false,
            "budgets": {"credentials": {"breached": true}, "content": {"breached": false}},
            "peers": [{"peer": "eu-west", "connected": false, "queue_depth": 4,
                       "classes": {"credentials": {"lag_seconds": 6.5}, "content": {"lag_seconds": 1.0}}}]
        });
        let s = node_sample(&status).unwrap();
        assert_eq!(s.breached, vec!["credentials"]);
        assert_eq!(
            s.peers[0],
            PeerSample {
                peer: "eu-west".into(),
                connected: false,
                queue_depth: 4,
                lag_seconds: 6.5
            }
        );
        let routes = json!({"regions": [{"region": "eu-west", "up": false, "drained": true}]});
        assert_eq!(
            route_samples(&routes).unwrap(),
            vec![RouteSample { region: "eu-west".into(), up: false, drained: true }]
        );
        assert!(node_sample(&json!({"error": {}})).is_none());
    }

    #[test]
    fn sums_conflicts_by_entity() {
        let text = "# HELP replication_conflicts Conflicts.\n\
# TYPE replication_conflicts counter\n\
replication_conflicts_total{region=\"eu-west\",conflict_type=\"concurrent_write\",resolution=\"lww\",entity_type=\"credential\"} 2\n\
replication_conflicts_total{region=\"eu-west\",conflict_type=\"concurrent_field\",resolution=\"lww\",entity_type=\"credential\"} 1\n\
replication_conflicts_total{region=\"eu-west\",conflict_type=\"concurrent_write\",resolution=\"lww\",entity_type=\"article\"} 4\n\
replication_conflicts_created{entity_type=\"article\"} 99\n\
replication_writes_total{entity_type=\"article\"} 7\n";
        let c = conflicts_by_entity(text);
        assert_eq!(c.get("credential"), Some(&3.0));
        assert_eq!(c.get("article"), Some(&4.0));
        assert_eq!(c.len(), 2);
    }
}
