//! The exchange with a region: the client's request sent upstream over the
//! pooled client (method, path, body, `Content-Type`, `Accept` and
//! `X-Tandem-Client-Region` pass through; `X-Tandem-Failover` marks a write
//! sent away from home), bounded by `router.upstream_timeout` and
//! `UPSTREAM_BODY_MAX_BYTES`, and the answer relayed with `X-Tandem-Region`
//! and `X-Tandem-Route`. How it ended is typed (`Exchange`), so that the
//! walk of the decision can tell a refused connection (the region never saw
//! the request) from everything else. An unreachable region counts towards
//! being marked down, and a `misdirected_write` answer forgets the subject's
//! cached home.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::decide::Route;
use crate::errors;
use crate::metrics::{RegionLabels, RequestLabels};
use crate::state::RouterState;
use crate::{CLIENT_REGION_HEADER, FAILOVER_HEADER, REGION_HEADER, ROUTE_HEADER};

/// Largest upstream response relayed (a scan page is far smaller).
pub const UPSTREAM_BODY_MAX_BYTES: usize = 16 * 1024 * 1024;

/// How one exchange with a region ended; each carries the response to relay.
#[derive(Debug)]
pub enum Exchange {
    /// The region answered; `fresh_region` when it answered `reads_halted`
    /// naming where the record is fresh.
    Answered { response: Response, fresh_region: Option<String> },
    /// The connection was refused: the region never saw the request (502).
    Refused(Response),
    /// It timed out (504), or failed or broke off after the request may have
    /// reached the region (502).
    Failed(Response),
}

impl Exchange {
    pub fn into_response(self) -> Response {
        match self {
            Exchange::Answered { response, .. }
            | Exchange::Refused(response)
            | Exchange::Failed(response) => response,
        }
    }
}

/// Send one request upstream and take its answer.
pub async fn send(
    s: &RouterState,
    parts: &Parts,
    bytes: Bytes,
    region: &str,
    route: Route,
    failover_for: Option<&str>,
) -> Exchange {
    let base = s.base_url(region);
    let path = parts.uri.path_and_query().map(axum::http::uri::PathAndQuery::as_str).unwrap_or("/");
    let mut builder =
        hyper::Request::builder().method(parts.method.clone()).uri(format!("{base}{path}"));
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
    let resp = match tokio::time::timeout(
        s.config.router.upstream_timeout,
        s.client(region).request(upstream),
    )
    .await
    {
        Err(_) => {
            requests("upstream_timeout");
            return Exchange::Failed(with_route(errors::upstream_timeout(region), region, route));
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
            let resp = with_route(
                errors::upstream_unavailable(format!("{region} is unreachable: {e}")),
                region,
                route,
            );
            // A refused connection never reached the region: safe to send elsewhere.
            return if e.is_connect() { Exchange::Refused(resp) } else { Exchange::Failed(resp) };
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
            return Exchange::Failed(with_route(
                errors::upstream_unavailable(format!("{region} broke off its answer")),
                region,
                route,
            ));
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
    let fresh_region = (status == StatusCode::SERVICE_UNAVAILABLE)
        .then(|| serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null))
        .filter(|v| v["error"]["code"] == "reads_halted")
        .and_then(|v| v["error"]["fresh_region"].as_str().map(str::to_owned));
    let response = with_route(out.body(Body::from(body)).expect("valid response"), region, route);
    Exchange::Answered { response, fresh_region }
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
