//! The exchange with a region: the client's request sent upstream over the
//! pooled client (method, path, body, `Content-Type`, `Accept` and
//! `X-Tandem-Client-Region` pass through; `X-Tandem-Failover` marks a write
//! sent away from home), bounded by `router.upstream_timeout` and
//! `UPSTREAM_BODY_MAX_BYTES`, and the answer relayed with `X-Tandem-Region`
//! and `X-Tandem-Route`. Failed exchanges count towards marking the region
//! down, and a `misdirected_write` answer forgets the subject's cached home.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::decide::Route;
use crate::metrics::{RegionLabels, RequestLabels};
use crate::state::RouterState;
use crate::{body, data_plane, errors, fresh_read};
use crate::{CLIENT_REGION_HEADER, FAILOVER_HEADER, REGION_HEADER, ROUTE_HEADER};

/// Largest upstream response relayed (a scan page is far smaller).
pub const UPSTREAM_BODY_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Internal: set when the upstream connection was refused, never sent to clients.
pub const CONNECT_FAILED_HEADER: &str = "x-tandem-connect-failed";
/// Internal: set on a relayed `reads_halted` answer, never sent to clients.
const FRESH_REGION_HEADER: &str = "x-tandem-fresh-region";

pub async fn forward(
    s: &RouterState,
    req: Request,
    caller: &str,
    region: &str,
    route: Route,
    failover_for: Option<&str>,
) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match body::read_body(s, body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let resp = send(s, &parts, bytes.clone(), region, route, failover_for).await;
    // A region that halted reads of a lagging class names where the record is
    // fresh: read it there instead.
    let fresh =
        resp.headers().get(FRESH_REGION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(fresh) = fresh {
        let kind = data_plane::kind_of(&parts.method);
        if let Some(fresh) = fresh_read::redirect(kind, region, &fresh, &s.views(caller)) {
            tracing::info!(from = region, to = %fresh, "reads halted for a lagging class: reading where the record is fresh");
            let mut retried = send(s, &parts, bytes, fresh, Route::Home, None).await;
            retried.headers_mut().remove(FRESH_REGION_HEADER);
            return retried;
        }
    }
    let mut resp = resp;
    resp.headers_mut().remove(FRESH_REGION_HEADER);
    resp
}

/// Send one request upstream and relay the answer.
async fn send(
    s: &RouterState,
    parts: &axum::http::request::Parts,
    bytes: Bytes,
    region: &str,
    route: Route,
    failover_for: Option<&str>,
) -> Response {
    let addr = s.config.region(region).expect("decided region exists").listen;
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut builder =
        hyper::Request::builder().method(parts.method.clone()).uri(format!("http://{addr}{path}"));
    for name in [axum::http::header::CONTENT_TYPE, axum::http::header::ACCEPT] {
        if let Some(v) = parts.headers.get(&name) {
            builder = builder.header(name, v);
        }
    }
    if let Some(v) = parts.headers.get(CLIENT_REGION_HEADER) {
        builder = builder.header(CLIENT_REGION_HEADER, v);
    }
    if let Some(home) = failover_for {
        builder = builder.header(FAILOVER_HEADER, home);
    }
    let upstream = builder.body(Full::new(bytes)).expect("valid request");
    let requests = |outcome| {
        s.metrics.requests.get_or_create(&RequestLabels::new(region, route.as_str(), outcome)).inc()
    };
    let resp =
        match tokio::time::timeout(s.config.router.upstream_timeout, s.client.request(upstream))
            .await
        {
            Err(_) => {
                requests("upstream_timeout");
                return with_route(errors::upstream_timeout(region), region, route);
            }
            Ok(Err(e)) => {
                if s.region(region).failure(s.config.router.probe_failure_threshold) {
                    tracing::error!(region, "region is down (upstream errors): routing around it");
                    s.metrics
                        .region_up
                        .get_or_create(&RegionLabels { region: region.to_owned() })
                        .set(0);
                }
                requests("upstream_error");
                let mut resp = with_route(
                    errors::upstream_unavailable(format!("{region} is unreachable: {e}")),
                    region,
                    route,
                );
                if e.is_connect() {
                    // The request never reached the region: safe to send elsewhere.
                    resp.headers_mut().insert(CONNECT_FAILED_HEADER, HeaderValue::from_static("1"));
                }
                return resp;
            }
            Ok(Ok(r)) => r,
        };
    let status = resp.status();
    let content_type = resp.headers().get(axum::http::header::CONTENT_TYPE).cloned();
    let body = match http_body_util::Limited::new(resp.into_body(), UPSTREAM_BODY_MAX_BYTES)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            requests("upstream_error");
            return with_route(
                errors::upstream_unavailable(format!("{region} broke off its answer")),
                region,
                route,
            );
        }
    };
    let outcome = if status.is_success() {
        "ok"
    } else if status.is_client_error() {
        "client_error"
    } else {
        "server_error"
    };
    requests(outcome);
    if status == StatusCode::MISDIRECTED_REQUEST {
        // The subject moved: forget the cached home so the next try is fresh.
        if let Some(subject) =
            parts.uri.path().split('/').nth(4).and_then(tandem_config::subject_of)
        {
            s.cache.forget(subject);
        }
    }
    let mut out = Response::builder().status(status);
    if let Some(ct) = content_type {
        out = out.header(axum::http::header::CONTENT_TYPE, ct);
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if v["error"]["code"] == "reads_halted" {
            if let Some(fresh) = v["error"]["fresh_region"].as_str() {
                out = out.header(FRESH_REGION_HEADER, fresh);
            }
        }
    }
    with_route(out.body(Body::from(body)).expect("valid response"), region, route)
}

/// Say who served a routed response, and by which route.
fn with_route(mut resp: Response, region: &str, route: Route) -> Response {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(region) {
        h.insert(REGION_HEADER, v);
    }
    h.insert(ROUTE_HEADER, HeaderValue::from_static(route.as_str()));
    resp
}
