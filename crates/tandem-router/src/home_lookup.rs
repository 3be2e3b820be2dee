//! The home-region lookup: a subject's home region from the cache, else asked
//! of the regions in turn, nearest first (the registry is replicated to every
//! region). A region that does not know the subject is not the last word: the
//! registry replicates asynchronously, so a subject registered a moment ago
//! at its home may not have reached it yet, and the next region is asked.

use std::time::Instant;

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::decide::RegionView;
use crate::errors;
use crate::metrics::RequestLabels;
use crate::state::RouterState;

/// Largest registry answer read.
const ANSWER_MAX_BYTES: usize = 64 * 1024;

/// The subject's home region: from the cache, else asked of the nearest
/// region that is up. `Ok(None)` when it is not registered; 503 when no
/// region answered.
#[allow(clippy::result_large_err)] // the error is the finished response, built once
pub async fn lookup_home(
    s: &RouterState,
    subject: &str,
    regions: &[RegionView],
) -> Result<Option<String>, Response> {
    let now = Instant::now();
    if let Some(h) = s.cache.get(subject, now) {
        s.metrics.home_lookups.get_or_create(&RequestLabels::new("cache", "cache", "hit")).inc();
        return Ok(Some(h));
    }
    let mut unknown = false;
    for r in lookup_order(regions) {
        let url = format!("{}/v1/subjects/{subject}", s.base_url(&r.name));
        let req = hyper::Request::get(url).body(Full::new(Bytes::new())).expect("valid request");
        let lookups = |outcome| {
            s.metrics
                .home_lookups
                .get_or_create(&RequestLabels::new(&r.name, "lookup", outcome))
                .inc()
        };
        let answer =
            tokio::time::timeout(s.config.router.upstream_timeout, s.client(&r.name).request(req));
        let Ok(Ok(resp)) = answer.await else {
            lookups("error");
            continue;
        };
        let status = resp.status();
        let Ok(body) = http_body_util::Limited::new(resp.into_body(), ANSWER_MAX_BYTES)
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
        else {
            continue;
        };
        if status == StatusCode::NOT_FOUND {
            lookups("unknown");
            unknown = true;
            continue;
        }
        if status.is_success() {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if let Some(h) = v["home_region"].as_str() {
                lookups("ok");
                s.cache.put(subject, h, now);
                return Ok(Some(h.to_owned()));
            }
        }
    }
    if unknown {
        return Ok(None);
    }
    Err(errors::home_lookup_failed())
}

/// The regions asked, in turn: every region believed up, drained or not (a
/// drained region still holds the registry), nearest first; ties go to the
/// smaller name.
pub fn lookup_order(regions: &[RegionView]) -> Vec<&RegionView> {
    let mut order: Vec<&RegionView> = regions.iter().filter(|r| r.up).collect();
    order.sort_by(|a, b| (a.distance_ms, &a.name).cmp(&(b.distance_ms, &b.name)));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_up_region_first_drained_ones_too() {
        let region = |name: &str, up, drained, distance_ms| RegionView {
            name: name.into(),
            jurisdiction: "EU".into(),
            up,
            drained,
            writable: true,
            distance_ms,
        };
        let regions = [
            region("us-east", true, false, 40),
            region("eu-west", true, true, 0),
            region("eu-north", false, false, 5),
            region("eu-central", true, false, 10),
            region("ap-south", true, false, 10),
        ];
        let names: Vec<&str> = lookup_order(&regions).iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["eu-west", "ap-south", "eu-central", "us-east"]);
        assert!(lookup_order(&[region("eu-west", false, false, 0)]).is_empty());
    }
}
