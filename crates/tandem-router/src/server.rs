//! The router's HTTP server: the data plane of DESIGN.md proxied to the region
//! `decide` picks (with `X-Tandem-Region` and `X-Tandem-Route` on every routed
//! response, and `X-Tandem-Failover` on writes sent away from home), plus its
//! own operations plane: `/healthz`, `/metrics`, `/v1/routes` and the
//! token-protected drain/restore of a region.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tandem_config::Config;

use crate::cache::HomeCache;
use crate::decide::{self, Decision, Kind, RegionView, Route};
use crate::fresh_read;
use crate::health::{self, RegionState};
use crate::metrics::{FailoverLabels, RequestLabels, RouterMetrics};
use crate::registration;
use crate::retry::{self, AfterRefused};

/// Subjects kept in the home-region cache.
pub const HOME_CACHE_CAPACITY: usize = 100_000;
/// Concurrent client connections to the router.
pub const MAX_CONNECTIONS: usize = 4096;
/// Largest upstream response relayed (a scan page is far smaller).
pub const UPSTREAM_BODY_MAX_BYTES: usize = 16 * 1024 * 1024;

pub const CLIENT_REGION_HEADER: &str = "x-tandem-client-region";
pub const REGION_HEADER: &str = "x-tandem-region";
pub const ROUTE_HEADER: &str = "x-tandem-route";
pub const FAILOVER_HEADER: &str = "x-tandem-failover";
/// Internal: set when the upstream connection was refused, never sent to clients.
const CONNECT_FAILED_HEADER: &str = "x-tandem-connect-failed";
/// Internal: set on a relayed `reads_halted` answer, never sent to clients.
const FRESH_REGION_HEADER: &str = "x-tandem-fresh-region";

#[derive(Debug, Clone)]
pub struct RouterOptions {
    pub config: Config,
    /// Overrides `router.listen`.
    pub listen: Option<SocketAddr>,
    pub admin_token: Option<String>,
}

pub struct RouterState {
    pub config: Arc<Config>,
    pub regions: Vec<RegionState>,
    /// True once every region has answered (or timed out) its first probe.
    pub ready: tokio::sync::watch::Sender<bool>,
    pub started: Instant,
    /// Limits on draining oversized request bodies.
    pub drain: tandem_http::DrainGate,
    pub default_region: String,
    pub client: Client<HttpConnector, Full<Bytes>>,
    pub probe_client: Client<HttpConnector, Empty<Bytes>>,
    pub cache: HomeCache,
    pub metrics: RouterMetrics,
    pub admin_token: Option<String>,
}

type AppState = Arc<RouterState>;

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    tandem_http::error_response(status, code, message)
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
    fn unprobed(&self) -> Vec<&str> {
        self.regions
            .iter()
            .filter(|r| !r.probed.load(Ordering::SeqCst))
            .map(|r| r.name.as_str())
            .collect()
    }

    /// Wait until every region has been probed once, at most until one probe
    /// timeout after the start (a probe never takes longer), so a request that
    /// arrives at once is routed on what the probes found, not refused.
    async fn wait_ready(&self) {
        if *self.ready.borrow() {
            return;
        }
        let deadline = self.started + self.config.router.probe_timeout + READY_SLACK;
        let mut rx = self.ready.subscribe();
        let _ = tokio::time::timeout_at(deadline.into(), rx.wait_for(|r| *r)).await;
    }
}

/// Beyond the probe timeout, the time a first probe round may take to be recorded.
const READY_SLACK: std::time::Duration = std::time::Duration::from_millis(100);

pub async fn run(
    opts: RouterOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = Arc::new(opts.config);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(config.router.probe_timeout));
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build(connector.clone());
    let probe_client = Client::builder(TokioExecutor::new()).build(connector);
    let regions = config
        .regions
        .iter()
        .map(|r| RegionState {
            name: r.name.clone(),
            jurisdiction: r.jurisdiction.clone(),
            url: format!("http://{}", r.listen),
            up: AtomicBool::new(false),
            drained: AtomicBool::new(false),
            writable: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            probed: AtomicBool::new(false),
        })
        .collect();
    let default_region =
        config.router.default_region.clone().unwrap_or_else(|| config.regions[0].name.clone());
    let state = Arc::new(RouterState {
        cache: HomeCache::new(config.router.home_cache_ttl, HOME_CACHE_CAPACITY),
        config: config.clone(),
        regions,
        ready: tokio::sync::watch::channel(false).0,
        started: Instant::now(),
        drain: tandem_http::DrainGate::default(),
        default_region,
        client,
        probe_client,
        metrics: RouterMetrics::new(),
        admin_token: opts.admin_token,
    });
    let probes: Vec<_> = (0..state.regions.len())
        .map(|i| tokio::spawn(health::probe_loop(state.clone(), i)))
        .collect();

    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/routes", get(routes))
        .route("/v1/admin/regions/{region}/{action}", post(admin))
        .route("/v1/records/{entity}", any(scan))
        .route("/v1/records/{entity}/{id}", any(record))
        .route("/v1/records/{entity}/{id}/ops", any(record))
        .route("/v1/subjects/{subject}", any(subject))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .with_state(state.clone());
    let addr = opts.listen.unwrap_or(config.router.listen);
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    println!("tandem router listening on http://{local}");
    tracing::info!(%local, "router listening");
    let limits = tandem_http::ServeLimits {
        connections_max: MAX_CONNECTIONS,
        head_timeout: config.router.header_read_timeout,
        idle_timeout: config.router.idle_timeout,
        ..Default::default()
    };
    tandem_http::serve(listener, app, limits, shutdown).await?;
    for p in probes {
        p.abort();
    }
    Ok(())
}

/// `GET /healthz`: 503 until every region has been probed once, then 200.
async fn healthz(State(s): State<AppState>) -> Response {
    if *s.ready.borrow() {
        return Json(json!({ "status": "ok", "role": "router" })).into_response();
    }
    let waiting = s.unprobed().join(", ");
    let message = format!("starting: waiting for the first health probe of {waiting}");
    let body = json!({
        "status": "starting",
        "role": "router",
        "reason": message,
        "error": { "code": "starting", "message": message },
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn routes(State(s): State<AppState>) -> Json<Value> {
    let regions: Vec<Value> = s
        .regions
        .iter()
        .map(|r| {
            json!({
                "region": r.name,
                "jurisdiction": r.jurisdiction,
                "url": r.url,
                "up": r.up.load(Ordering::SeqCst),
                "drained": r.drained.load(Ordering::SeqCst),
                "writable": r.writable.load(Ordering::SeqCst),
                "consecutive_failures": r.failures.load(Ordering::SeqCst),
            })
        })
        .collect();
    let entities: serde_json::Map<String, Value> = s
        .config
        .entities
        .iter()
        .map(|(n, e)| {
            (
                n.clone(),
                json!({ "personal": e.personal, "writes": e.writes, "subjects": e.subjects }),
            )
        })
        .collect();
    Json(json!({
        "default_region": s.default_region,
        "regions": regions,
        "entities": entities,
        "home_cache": { "entries": s.cache.len(), "ttl_seconds": s.config.router.home_cache_ttl.as_secs_f64() },
    }))
}

async fn admin(
    State(s): State<AppState>,
    Path((region, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = match (presented, s.admin_token.as_deref()) {
        (Some(p), Some(t)) => tandem_http::secret_matches(p, t),
        _ => false,
    };
    if !ok {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong bearer token");
    }
    let Some(r) = s.regions.iter().find(|r| r.name == region) else {
        return error(StatusCode::NOT_FOUND, "not_found", format!("no region `{region}`"));
    };
    let drained = match action.as_str() {
        "drain" => true,
        "restore" => false,
        _ => return error(StatusCode::NOT_FOUND, "not_found", "action must be drain or restore"),
    };
    r.drained.store(drained, Ordering::SeqCst);
    tracing::warn!(region = %region, drained, "region drain state changed");
    Json(json!({ "region": region, "drained": drained })).into_response()
}

/// The caller's region: `X-Tandem-Client-Region`, else the default.
#[allow(clippy::result_large_err)] // the error is the finished response, built once
fn caller_region(s: &RouterState, headers: &HeaderMap) -> Result<String, Response> {
    match headers.get(CLIENT_REGION_HEADER).map(|v| v.to_str()) {
        None => Ok(s.default_region.clone()),
        Some(Ok(r)) if s.config.region(r).is_some() => Ok(r.to_owned()),
        Some(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "X-Tandem-Client-Region must name a region of the deployment",
        )),
    }
}

fn views(s: &RouterState, caller: &str) -> Vec<RegionView> {
    s.regions
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
                s.config.link_latency_ms(caller, &r.name).max(1)
            },
        })
        .collect()
}

fn kind_of(method: &Method) -> Kind {
    if method == Method::GET || method == Method::HEAD {
        Kind::Read
    } else {
        Kind::Write
    }
}

async fn scan(
    State(s): State<AppState>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    req: Request,
) -> Response {
    if let Err(e) = path {
        return bad_path(e);
    }
    // A scan crosses subjects: it is served by the nearest region to the caller.
    route_and_forward(&s, req, None, None).await
}

async fn record(
    State(s): State<AppState>,
    path: Result<Path<Vec<(String, String)>>, axum::extract::rejection::PathRejection>,
    req: Request,
) -> Response {
    let params = match path {
        Ok(Path(p)) => p,
        Err(e) => return bad_path(e),
    };
    let entity =
        params.iter().find(|(k, _)| k == "entity").map(|(_, v)| v.clone()).unwrap_or_default();
    let id = params.iter().find(|(k, _)| k == "id").map(|(_, v)| v.clone()).unwrap_or_default();
    let Some(cfg) = s.config.entity(&entity).cloned() else {
        // Unknown entity: any region answers 404 unknown_entity.
        return route_and_forward(&s, req, None, None).await;
    };
    let subject =
        if cfg.subjects { tandem_config::subject_of(&id).map(str::to_owned) } else { None };
    if cfg.subjects && subject.is_none() {
        // Answered like a node would: the id itself is malformed.
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("`{entity}` records belong to a subject: the id must be `<subject>` or `<subject>:<name>` with a non-empty subject, got `{id}`"),
        );
    }
    route_and_forward(&s, req, Some(cfg), subject).await
}

async fn subject(
    State(s): State<AppState>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    req: Request,
) -> Response {
    let _subject = match path {
        Ok(Path(p)) => p,
        Err(e) => return bad_path(e),
    };
    let req = match refuse_oversized(&s, req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    s.wait_ready().await;
    // The registry is replicated everywhere, so the nearest region serves
    // reads. A registration goes to the subject's (new) home region, like a
    // pinned write, so that home knows the subject before its first write.
    if req.method() != Method::PUT {
        return route_and_forward(&s, req, None, None).await;
    }
    let caller = match caller_region(&s, req.headers()) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let (parts, body) = req.into_parts();
    let max = s.config.router.max_body_bytes;
    let bytes = match read_body(&s, body, max).await {
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
    let regions = views(&s, &caller);
    // A move goes to the subject's current home: ask afresh.
    s.cache.forget(&_subject);
    let current = match lookup_home(&s, &_subject, &regions).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let decide =
        |r: &[RegionView]| registration::decide(requested.as_deref(), current.as_deref(), r);
    send_decided(&s, req, &caller, &regions, decide, None).await
}

async fn route_and_forward(
    s: &AppState,
    req: Request,
    entity: Option<tandem_config::EntityConfig>,
    subject: Option<String>,
) -> Response {
    let req = match refuse_oversized(s, req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    s.wait_ready().await;
    let caller = match caller_region(s, req.headers()) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let kind = kind_of(req.method());
    let regions = views(s, &caller);
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

/// Send a request where `decide` says, and once more (decided again without
/// the region) if the connection to that region was refused. `subject` names
/// the subject in an `unknown_subject` answer.
async fn send_decided(
    s: &AppState,
    req: Request,
    caller: &str,
    regions: &[RegionView],
    decide: impl Fn(&[RegionView]) -> Decision,
    subject: Option<&str>,
) -> Response {
    match decide(regions) {
        Decision::Send { region, route, failover_for } => {
            if let Some(from) = &failover_for {
                s.metrics
                    .failovers
                    .get_or_create(&FailoverLabels { from: from.clone(), to: region.clone() })
                    .inc();
            }
            // Keep the request so it can be sent once more if the connection
            // to the chosen region is refused (the region never saw it).
            let (parts, body) = req.into_parts();
            let max = s.config.router.max_body_bytes;
            let bytes = match read_body(s, body, max).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let again = Request::from_parts(parts.clone(), Body::from(bytes.clone()));
            let mut resp = forward(s, again, caller, &region, route, failover_for.as_deref()).await;
            if resp.headers_mut().remove(CONNECT_FAILED_HEADER).is_none() {
                return resp;
            }
            let again = retry::after_refused(&[&region], regions, &decide);
            if let AfterRefused::Retry { region: other, route, failover_for } = again {
                tracing::info!(from = %region, to = %other, "connection refused: sending the request to the next region");
                if let Some(from) = &failover_for {
                    s.metrics
                        .failovers
                        .get_or_create(&FailoverLabels { from: from.clone(), to: other.clone() })
                        .inc();
                }
                let req = Request::from_parts(parts, Body::from(bytes));
                let mut resp =
                    forward(s, req, caller, &other, route, failover_for.as_deref()).await;
                resp.headers_mut().remove(CONNECT_FAILED_HEADER);
                return resp;
            }
            resp
        }
        Decision::NoRegionAvailable { jurisdiction } => {
            s.metrics.requests.get_or_create(&label("none", "none", "no_region")).inc();
            let where_ = jurisdiction.map(|j| format!(" in {j}")).unwrap_or_default();
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_region_available",
                format!("no healthy region{where_} may serve this request"),
            )
        }
        Decision::UnknownSubject => {
            s.metrics.requests.get_or_create(&label("none", "none", "unknown_subject")).inc();
            let subj = subject.unwrap_or_default();
            error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_subject",
                format!("subject `{subj}` is not registered; PUT /v1/subjects/{subj} first"),
            )
        }
    }
}

/// A path axum could not decode (not UTF-8 once percent-decoded), answered
/// like a node answers it.
fn bad_path(e: axum::extract::rejection::PathRejection) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", format!("bad path: {}", e.body_text()))
}

/// A body that says in advance it is over the limit gets its 413 before any
/// routing: the answer does not depend on where it would have gone.
async fn refuse_oversized(s: &RouterState, req: Request) -> Result<Request, Response> {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let max = s.config.router.max_body_bytes;
    if declared.is_some_and(|n| n > max as u64) {
        let (_, body) = req.into_parts();
        return Err(read_body(s, body, max).await.expect_err("a body over the limit"));
    }
    Ok(req)
}

/// Read a request body, answering 413 when it is over the limit (after
/// draining the rest, within limits) and 400 when it could not be read.
#[allow(clippy::result_large_err)] // the error is the finished response, built once
async fn read_body(s: &RouterState, body: Body, max: usize) -> Result<Bytes, Response> {
    tandem_http::read_body(body, max, &s.drain).await.map_err(|e| match e {
        tandem_http::BodyError::TooLarge { .. } => {
            let mut resp = error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", e.to_string());
            resp.headers_mut()
                .insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
        tandem_http::BodyError::Read(_) => {
            error(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
        }
    })
}

fn label(region: &str, route: &str, outcome: &str) -> RequestLabels {
    RequestLabels { region: region.into(), route: route.into(), outcome: outcome.into() }
}

/// The subject's home region: from the cache, else asked of the nearest healthy
/// region (the registry is everywhere). `Ok(None)` when it is not registered.
#[allow(clippy::result_large_err)] // the error is the finished response, built once
async fn lookup_home(
    s: &AppState,
    subject: &str,
    regions: &[RegionView],
) -> Result<Option<String>, Response> {
    let now = Instant::now();
    if let Some(h) = s.cache.get(subject, now) {
        s.metrics.home_lookups.get_or_create(&label("cache", "cache", "hit")).inc();
        return Ok(Some(h));
    }
    let mut candidates: Vec<&RegionView> = regions.iter().filter(|r| r.up).collect();
    let mut unknown = false;
    candidates.sort_by(|a, b| (a.distance_ms, &a.name).cmp(&(b.distance_ms, &b.name)));
    for r in candidates {
        let url = format!(
            "http://{}/v1/subjects/{subject}",
            s.config.region(&r.name).expect("known").listen
        );
        let req = hyper::Request::get(url).body(Full::new(Bytes::new())).expect("valid request");
        let resp =
            match tokio::time::timeout(s.config.router.upstream_timeout, s.client.request(req))
                .await
            {
                Ok(Ok(resp)) => resp,
                _ => {
                    s.metrics.home_lookups.get_or_create(&label(&r.name, "lookup", "error")).inc();
                    continue;
                }
            };
        let status = resp.status();
        let body = match Limited(resp.into_body()).collect_bytes(64 * 1024).await {
            Some(b) => b,
            None => continue,
        };
        if status == StatusCode::NOT_FOUND {
            // The registry replicates asynchronously: a subject registered a
            // moment ago at its home may not have reached this region yet, so
            // ask the others before calling it unknown.
            s.metrics.home_lookups.get_or_create(&label(&r.name, "lookup", "unknown")).inc();
            unknown = true;
            continue;
        }
        if status.is_success() {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if let Some(h) = v["home_region"].as_str() {
                s.metrics.home_lookups.get_or_create(&label(&r.name, "lookup", "ok")).inc();
                s.cache.put(subject, h, now);
                return Ok(Some(h.to_owned()));
            }
        }
    }
    if unknown {
        return Ok(None);
    }
    Err(error(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_region_available",
        "cannot look up the subject's home region",
    ))
}

struct Limited(hyper::body::Incoming);

impl Limited {
    async fn collect_bytes(self, max: usize) -> Option<Bytes> {
        http_body_util::Limited::new(self.0, max).collect().await.ok().map(|c| c.to_bytes())
    }
}

async fn forward(
    s: &AppState,
    req: Request,
    caller: &str,
    region: &str,
    route: Route,
    failover_for: Option<&str>,
) -> Response {
    let (parts, body) = req.into_parts();
    let max = s.config.router.max_body_bytes;
    let bytes = match read_body(s, body, max).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let resp = forward_bytes(s, &parts, bytes.clone(), region, route, failover_for).await;
    // A region that halted reads of a lagging class names where the record is
    // fresh: read it there instead.
    let fresh =
        resp.headers().get(FRESH_REGION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(fresh) = fresh {
        let kind = kind_of(&parts.method);
        if let Some(fresh) = fresh_read::redirect(kind, region, &fresh, &views(s, caller)) {
            tracing::info!(from = region, to = %fresh, "reads halted for a lagging class: reading where the record is fresh");
            let mut retried = forward_bytes(s, &parts, bytes, fresh, Route::Home, None).await;
            retried.headers_mut().remove(FRESH_REGION_HEADER);
            return retried;
        }
    }
    let mut resp = resp;
    resp.headers_mut().remove(FRESH_REGION_HEADER);
    resp
}

/// Send one request upstream and relay the answer.
async fn forward_bytes(
    s: &AppState,
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
    let region_state = s.regions.iter().find(|r| r.name == region).expect("known region");
    let resp =
        match tokio::time::timeout(s.config.router.upstream_timeout, s.client.request(upstream))
            .await
        {
            Err(_) => {
                s.metrics
                    .requests
                    .get_or_create(&label(region, route.as_str(), "upstream_timeout"))
                    .inc();
                return with_route(
                    error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream_timeout",
                        format!("{region} did not answer in time"),
                    ),
                    region,
                    route,
                );
            }
            Ok(Err(e)) => {
                if region_state.failure(s.config.router.probe_failure_threshold) {
                    tracing::error!(region, "region is down (upstream errors): routing around it");
                    s.metrics
                        .region_up
                        .get_or_create(&crate::metrics::RegionLabels { region: region.to_owned() })
                        .set(0);
                }
                let connect_failed = e.is_connect();
                s.metrics
                    .requests
                    .get_or_create(&label(region, route.as_str(), "upstream_error"))
                    .inc();
                let mut resp = with_route(
                    error(
                        StatusCode::BAD_GATEWAY,
                        "upstream_unavailable",
                        format!("{region} is unreachable: {e}"),
                    ),
                    region,
                    route,
                );
                if connect_failed {
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
            s.metrics
                .requests
                .get_or_create(&label(region, route.as_str(), "upstream_error"))
                .inc();
            return with_route(
                error(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unavailable",
                    format!("{region} broke off its answer"),
                ),
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
    s.metrics.requests.get_or_create(&label(region, route.as_str(), outcome)).inc();
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

fn with_route(mut resp: Response, region: &str, route: Route) -> Response {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(region) {
        h.insert(REGION_HEADER, v);
    }
    h.insert(ROUTE_HEADER, HeaderValue::from_static(route.as_str()));
    resp
}
