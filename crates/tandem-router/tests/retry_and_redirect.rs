//! The router's walk of a decision against regions that misbehave on cue:
//! three scripted in-process regions (they answer `/healthz`, the subject
//! registry and records, and remember what they were sent) behind a real
//! router. A region is killed after the router's first probes, with probes
//! 30 s apart, so the router still believes it up and meets a refused
//! connection: the window the retry is for. Each test shows one rule of
//! `retry` or `fresh_read` carried out, and that the router's internal state
//! never reaches a client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// What a scripted region was sent: method, path, `X-Tandem-Failover`.
type Seen = (Method, String, Option<String>);

/// One scripted region.
#[derive(Clone)]
struct Script {
    name: &'static str,
    /// Its registry: subject → home region.
    homes: HashMap<&'static str, &'static str>,
    /// Reads of records are refused with `reads_halted` naming this region.
    halted_fresh_at: Option<&'static str>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

struct Region {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    server: JoinHandle<()>,
}

impl Region {
    async fn start(
        name: &'static str,
        homes: &[(&'static str, &'static str)],
        halted_fresh_at: Option<&'static str>,
    ) -> Region {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Script {
            name,
            homes: homes.iter().copied().collect(),
            halted_fresh_at,
            seen: seen.clone(),
        };
        let app = axum::Router::new().fallback(answer).with_state(script);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Region { addr, seen, server }
    }

    /// Stop listening: from now on connections to it are refused.
    async fn kill(&self) {
        self.server.abort();
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(self.addr).await.is_ok() {
            assert!(Instant::now() < deadline, "{} still accepts connections", self.addr);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The record requests it was sent (not probes or registry reads).
    fn records_seen(&self) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|(_, path, _)| path.starts_with("/v1/records/")).cloned().collect()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn answer(State(script): State<Script>, req: Request) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let failover = req.headers().get("x-tandem-failover").map(|v| v.to_str().unwrap().to_owned());
    if path == "/healthz" {
        return Json(json!({ "status": "ok" })).into_response();
    }
    script.seen.lock().unwrap().push((method.clone(), path.clone(), failover));
    if let Some(subject) = path.strip_prefix("/v1/subjects/") {
        if method == Method::PUT {
            return Json(json!({ "subject": subject, "region": script.name })).into_response();
        }
        return match script.homes.get(subject) {
            Some(home) => Json(json!({ "subject": subject, "home_region": home })).into_response(),
            None => (
                StatusCode::NOT_FOUND,
                Json(json!({ "error": { "code": "not_found", "message": "no such subject" } })),
            )
                .into_response(),
        };
    }
    if let (Some(fresh), &Method::GET) = (script.halted_fresh_at, &method) {
        let error = json!({ "code": "reads_halted", "message": "lagging", "fresh_region": fresh });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": error }))).into_response();
    }
    Json(json!({ "region": script.name })).into_response()
}

/// The example deployment on these regions, probed every 30 s, and a router
/// that has probed them once.
async fn router(west: &Region, central: &Region, east: &Region) -> SocketAddr {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let toml = tandem_config::EXAMPLE_TOML
        .replace("127.0.0.1:7101", &west.addr.to_string())
        .replace("127.0.0.1:7102", &central.addr.to_string())
        .replace("127.0.0.1:7103", &east.addr.to_string())
        .replace("127.0.0.1:7100", &format!("127.0.0.1:{port}"))
        .replace("resp_listen = \"127.0.0.1:7110\"", "")
        .replace("probe_interval = \"200ms\"", "probe_interval = \"30s\"");
    assert!(toml.contains("probe_interval = \"30s\""), "the example's probe interval moved");
    let config = tandem_config::Config::from_toml_str(&toml).unwrap();
    let opts = tandem_router::RouterOptions {
        config,
        listen: None,
        admin_token: None,
        security: tandem_router::RouterSecurity::Insecure,
    };
    tokio::spawn(tandem_router::run(opts, std::future::pending()));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((StatusCode::OK, _, _)) =
            try_call(addr, Method::GET, "/healthz", None, None).await
        {
            return addr;
        }
        assert!(Instant::now() < deadline, "the router did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn try_call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Value>,
    caller: Option<&str>,
) -> Result<(StatusCode, HeaderMap, Value), String> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::builder().method(method).uri(format!("http://{addr}{path}"));
    if let Some(c) = caller {
        req = req.header("x-tandem-client-region", c);
    }
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let req = req.header("content-type", "application/json").body(Full::new(body)).unwrap();
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Value>,
    caller: Option<&str>,
) -> (StatusCode, HeaderMap, Value) {
    let (status, headers, body) = try_call(addr, method, path, body, caller).await.unwrap();
    for internal in ["x-tandem-connect-failed", "x-tandem-fresh-region"] {
        assert!(headers.get(internal).is_none(), "internal header {internal} leaked: {headers:?}");
    }
    (status, headers, body)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

/// Every region's registry knows alice, homed in eu-west.
const ALICE: &[(&str, &str)] = &[("alice", "eu-west")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_write_refused_at_home_fails_over_once_inside_the_jurisdiction() {
    let west = Region::start("eu-west", ALICE, None).await;
    let central = Region::start("eu-central", ALICE, None).await;
    let east = Region::start("us-east", ALICE, None).await;
    let router = router(&west, &central, &east).await;
    west.kill().await;

    let path = "/v1/records/credential/alice:pw";
    let write = json!({ "value": { "hash": "h1" } });
    let (status, headers, body) =
        call(router, Method::PUT, path, Some(write.clone()), Some("eu-west")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(header(&headers, "x-tandem-region"), "eu-central");
    assert_eq!(header(&headers, "x-tandem-route"), "failover");
    assert_eq!(central.records_seen(), [(Method::PUT, path.to_owned(), Some("eu-west".into()))]);

    // With eu-central gone too, the second refusal is relayed: never to the US.
    central.kill().await;
    let (status, headers, body) =
        call(router, Method::PUT, path, Some(write), Some("eu-west")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "upstream_unavailable", "{body}");
    assert_eq!(header(&headers, "x-tandem-region"), "eu-central", "the last region tried");
    assert_eq!(east.records_seen(), [], "a write of an EU subject reached us-east");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_refused_at_its_home_is_retried_in_its_jurisdiction() {
    let west = Region::start("eu-west", &[], None).await;
    let central = Region::start("eu-central", &[], None).await;
    let east = Region::start("us-east", &[], None).await;
    let router = router(&west, &central, &east).await;
    west.kill().await;

    let body = json!({ "home_region": "eu-west" });
    let (status, headers, answer) =
        call(router, Method::PUT, "/v1/subjects/bob", Some(body), None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["region"], "eu-central", "{answer}");
    assert_eq!(header(&headers, "x-tandem-route"), "failover");
    let registrations: Vec<Seen> =
        central.seen().into_iter().filter(|(m, _, _)| m == Method::PUT).collect();
    assert_eq!(
        registrations,
        [(Method::PUT, "/v1/subjects/bob".to_owned(), None)],
        "the registry takes writes anywhere: no failover marker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_read_is_read_once_where_it_is_fresh() {
    let west = Region::start("eu-west", ALICE, None).await;
    let central = Region::start("eu-central", ALICE, Some("eu-west")).await;
    let east = Region::start("us-east", ALICE, None).await;
    let router = router(&west, &central, &east).await;
    let path = "/v1/records/credential/alice:pw";

    let (status, headers, body) = call(router, Method::GET, path, None, Some("eu-central")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(header(&headers, "x-tandem-region"), "eu-west");
    assert_eq!(header(&headers, "x-tandem-route"), "home");
    assert_eq!(central.records_seen().len(), 1, "asked the nearest region first");

    // Writes are never redirected: they were not halted in the first place.
    let write = json!({ "value": { "hash": "h2" } });
    let (status, headers, _) =
        call(router, Method::PUT, path, Some(write), Some("eu-central")).await;
    assert_eq!((status, header(&headers, "x-tandem-region")), (StatusCode::OK, "eu-west"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_read_whose_fresh_region_refuses_relays_reads_halted() {
    let west = Region::start("eu-west", ALICE, None).await;
    let central = Region::start("eu-central", ALICE, Some("eu-west")).await;
    let east = Region::start("us-east", ALICE, None).await;
    let router = router(&west, &central, &east).await;
    west.kill().await;

    let path = "/v1/records/credential/alice:pw";
    let (status, headers, body) = call(router, Method::GET, path, None, Some("eu-central")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "reads_halted", "{body}");
    assert_eq!(body["error"]["fresh_region"], "eu-west", "{body}");
    assert_eq!(header(&headers, "x-tandem-region"), "eu-central", "the region that answered");
    assert_eq!(central.records_seen().len(), 1, "not sent again to the region that answered");
    assert_eq!(east.records_seen(), []);
}
