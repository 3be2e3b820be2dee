//! The data plane of DESIGN.md through the router: each handler turns a
//! request into the decision that routes it (`decide` for records and scans,
//! `registration` for `PUT /v1/subjects/{subject}`, the nearest region for
//! the rest), looks up the subject's home when the decision needs it, and
//! walks the decision: send; after a refused connection send once more where
//! `retry` says; after a `reads_halted` answer read once more where
//! `fresh_read` says.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use serde_json::Value;
use tandem_config::EntityConfig;

use crate::decide::{self, Decision, Kind, RegionView, Route};
use crate::home_lookup::lookup_home;
use crate::metrics::{FailoverLabels, RequestLabels};
use crate::retry::{self, AfterRefused};
use crate::state::RouterState;
use crate::upstream::{self, Exchange};
use crate::{body, errors, fresh_read, registration, CLIENT_REGION_HEADER};

/// `/v1/records/{entity}`: a scan crosses subjects, so it is served by the
/// nearest region to the caller.
pub async fn scan(
    State(s): State<Arc<RouterState>>,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    if let Err(e) = path {
        return errors::bad_path(e);
    }
    route_and_forward(&s, req, None, None).await
}

/// `/v1/records/{entity}/{id}` and `.../ops`.
pub async fn record(
    State(s): State<Arc<RouterState>>,
    path: Result<Path<Vec<(String, String)>>, PathRejection>,
    req: Request,
) -> Response {
    let params = match path {
        Ok(Path(p)) => p,
        Err(e) => return errors::bad_path(e),
    };
    let param = |name: &str| {
        params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default()
    };
    let (entity, id) = (param("entity"), param("id"));
    let Some(cfg) = s.config.entity(&entity).cloned() else {
        // Unknown entity: any region answers 404 unknown_entity.
        return route_and_forward(&s, req, None, None).await;
    };
    let subject =
        if cfg.subjects { tandem_config::subject_of(&id).map(str::to_owned) } else { None };
    if cfg.subjects && subject.is_none() {
        return errors::bad_subject_id(&entity, &id);
    }
    route_and_forward(&s, req, Some(cfg), subject).await
}

/// `/v1/subjects/{subject}`: the registry is replicated everywhere, so the
/// nearest region serves reads; a registration is routed by `registration`.
pub async fn subject(
    State(s): State<Arc<RouterState>>,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    let name = match path {
        Ok(Path(p)) => p,
        Err(e) => return errors::bad_path(e),
    };
    let req = match body::refuse_oversized(&s, req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    s.wait_ready().await;
    if req.method() != Method::PUT {
        return route_and_forward(&s, req, None, None).await;
    }
    let caller = match caller_region(&s, req.headers()) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let (parts, body) = req.into_parts();
    let bytes = match body::read_body(&s, body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let requested = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["home_region"].as_str().map(str::to_owned))
        .filter(|h| s.config.region(h).is_some());
    let req = Request::from_parts(parts, Body::from(bytes));
    if requested.is_none() {
        // Malformed or unknown region: any region refuses it with a clear error.
        return route_and_forward(&s, req, None, None).await;
    }
    let regions = s.views(&caller);
    // A move goes to the subject's current home: ask afresh.
    s.cache.forget(&name);
    let current = match lookup_home(&s, &name, &regions).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let decide =
        |r: &[RegionView]| registration::decide(requested.as_deref(), current.as_deref(), r);
    send_decided(&s, req, &caller, &regions, decide, None).await
}

/// Route a request by `decide`, looking up the subject's home when the
/// decision needs it.
async fn route_and_forward(
    s: &RouterState,
    req: Request,
    entity: Option<EntityConfig>,
    subject: Option<String>,
) -> Response {
    let req = match body::refuse_oversized(s, req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    s.wait_ready().await;
    let caller = match caller_region(s, req.headers()) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let kind = kind_of(req.method());
    let regions = s.views(&caller);
    let needs_home = entity.as_ref().is_some_and(|e| decide::needs_home(kind, e));
    let home = match (&subject, needs_home) {
        (Some(subj), true) => match lookup_home(s, subj, &regions).await {
            Ok(h) => h,
            Err(resp) => return resp,
        },
        _ => None,
    };
    let request = decide::Request { kind, entity: entity.as_ref(), home_region: home.as_deref() };
    send_decided(s, req, &caller, &regions, |r| decide::decide(&request, r), subject.as_deref())
        .await
}

/// Send a request where `decide` says; after a refused connection, send it
/// where `retry` says; after a `reads_halted` answer, read where `fresh_read`
/// says. `subject` names the subject in an `unknown_subject` answer.
async fn send_decided(
    s: &RouterState,
    req: Request,
    caller: &str,
    regions: &[RegionView],
    decide: impl Fn(&[RegionView]) -> Decision,
    subject: Option<&str>,
) -> Response {
    let (mut region, mut route, mut failover_for) = match decide(regions) {
        Decision::Send { region, route, failover_for } => (region, route, failover_for),
        Decision::NoRegionAvailable { jurisdiction } => {
            s.metrics
                .requests
                .get_or_create(&RequestLabels::new("none", "none", "no_region"))
                .inc();
            return errors::no_region_available(jurisdiction.as_deref());
        }
        Decision::UnknownSubject => {
            let labels = RequestLabels::new("none", "none", "unknown_subject");
            s.metrics.requests.get_or_create(&labels).inc();
            return errors::unknown_subject(subject.unwrap_or_default());
        }
    };
    count_failover(s, failover_for.as_deref(), &region);
    // Read whole: the request may be sent more than once.
    let (parts, body) = req.into_parts();
    let bytes = match body::read_body(s, body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let mut refused: Vec<String> = Vec::new();
    loop {
        let sent =
            upstream::send(s, &parts, bytes.clone(), &region, route, failover_for.as_deref());
        match sent.await {
            Exchange::Refused(response) => {
                refused.push(region.clone());
                let names: Vec<&str> = refused.iter().map(String::as_str).collect();
                match retry::after_refused(&names, regions, &decide) {
                    AfterRefused::Retry {
                        region: next,
                        route: next_route,
                        failover_for: next_for,
                    } => {
                        tracing::info!(from = %region, to = %next, "connection refused: sending the request to the next region");
                        count_failover(s, next_for.as_deref(), &next);
                        (region, route, failover_for) = (next, next_route, next_for);
                    }
                    AfterRefused::Relay => return response,
                }
            }
            Exchange::Answered { response, fresh_region: Some(fresh) } => {
                let kind = kind_of(&parts.method);
                let Some(fresh) = fresh_read::redirect(kind, &region, &fresh, &s.views(caller))
                else {
                    return response;
                };
                tracing::info!(from = %region, to = %fresh, "reads halted for a lagging class: reading where the record is fresh");
                return match upstream::send(s, &parts, bytes, fresh, Route::Home, None).await {
                    // The fresh region never saw the read: the halted answer says why.
                    Exchange::Refused(_) => response,
                    redirected => redirected.into_response(),
                };
            }
            done => return done.into_response(),
        }
    }
}

/// `router_failovers_total{from, to}` for a write sent away from its home.
fn count_failover(s: &RouterState, failover_for: Option<&str>, to: &str) {
    if let Some(from) = failover_for {
        let labels = FailoverLabels { from: from.to_owned(), to: to.to_owned() };
        s.metrics.failovers.get_or_create(&labels).inc();
    }
}

/// The caller's region: `X-Tandem-Client-Region`, else the default.
#[allow(clippy::result_large_err)] // the error is the finished response, built once
fn caller_region(s: &RouterState, headers: &HeaderMap) -> Result<String, Response> {
    match headers.get(CLIENT_REGION_HEADER).map(|v| v.to_str()) {
        None => Ok(s.default_region.clone()),
        Some(Ok(r)) if s.config.region(r).is_some() => Ok(r.to_owned()),
        Some(_) => Err(errors::bad_client_region()),
    }
}

/// Reads are `GET` and `HEAD`; every other method writes.
fn kind_of(method: &Method) -> Kind {
    if method == Method::GET || method == Method::HEAD {
        Kind::Read
    } else {
        Kind::Write
    }
}
