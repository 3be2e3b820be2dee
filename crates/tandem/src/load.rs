//! `tandem load`: tandem's own closed-loop HTTP load generator. It owns the
//! workload shapes (one write request per workload: `put`, `incr`, `patch`,
//! `add`), the client loop (each of `--clients` tasks keeps exactly one request
//! in flight over a pooled keep-alive connection), and the report (throughput,
//! latency percentiles from merged HDR histograms, answers by HTTP status).
//! It drives a node or the router through the public HTTP API only, so the
//! numbers it prints are what a client sees: a write is counted when the
//! region has answered 2xx, i.e. after it is durable there.
//!
//! Record ids are `load:<n>` with `n < --keys`, so the same run works against
//! entity types with subjects (subject `load`; for `writes = "home-region"`
//! types register it first with `PUT /v1/subjects/load`) and without.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

/// Most concurrent clients (each one holds a connection).
pub const CLIENTS_MAX: usize = 4096;
/// Largest `--value-bytes`: a node refuses bodies above 1 MiB by default anyway.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// Most distinct record ids.
pub const KEYS_MAX: u64 = 1 << 32;
/// Longest measured run, one day.
pub const DURATION_SECS_MAX: u64 = 24 * 60 * 60;
/// Longest warm-up, one hour.
pub const WARMUP_SECS_MAX: u64 = 60 * 60;
/// A request without an answer after this long counts as failed (status 0).
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Pause of a client after a transport error, so that a dead target does not
/// turn the loop into a busy spin of connection attempts.
const ERROR_BACKOFF_MS: u64 = 10;
/// Connect timeout of the HTTP connector.
const CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Highest latency the histograms track; slower requests are clamped to it.
/// Above the request timeout, so a recorded latency is never clamped.
const LATENCY_US_MAX: u64 = 60_000_000;
/// Significant decimal digits the histograms keep (0.1% resolution).
const LATENCY_SIGFIG: u8 = 3;
/// Longest response body quoted in a preflight error.
const ERROR_BODY_QUOTED_MAX: usize = 512;
/// Longest entity type name, as in the configuration.
const ENTITY_NAME_LEN_MAX: usize = 64;
/// The key `status_counts` uses for a request that got no HTTP answer.
pub const STATUS_NO_RESPONSE: u16 = 0;

#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Base URL of a node or router, e.g. http://127.0.0.1:7101
    #[arg(long)]
    pub target: String,
    /// Concurrent clients (each one keeps one request in flight)
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds to run (after warm-up)
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Seconds of load before measuring starts
    #[arg(long, default_value_t = 1)]
    pub warmup_secs: u64,
    /// Workload: `put` (PUT /v1/records/{entity}/{id} {"value": ...} on an lww entity), `incr` (POST .../ops {"op":"incr","by":1}), `patch` (lww-fields), `add` (or-set)
    #[arg(long, default_value = "put")]
    pub workload: String,
    /// Entity type written to; its merge type must fit the workload (in the
    /// example config: put article, incr page_views or likes, patch settings,
    /// add tags)
    #[arg(long, default_value = "article")]
    pub entity: String,
    /// Distinct record ids to spread writes over
    #[arg(long, default_value_t = 10000)]
    pub keys: u64,
    /// Size of the value written (put, patch) or the element added (add)
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Print the report as JSON instead of text
    #[arg(long)]
    pub json: bool,
    /// Target total requests per second (0: as fast as the clients go). Each
    /// client paces itself to rate/clients.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
}

/// What a run measured, over the measured window only (warm-up excluded).
#[derive(serde::Serialize, Debug)]
pub struct LoadReport {
    pub clients: usize,
    /// Length of the measured window.
    pub duration_secs: f64,
    /// Requests answered 2xx.
    pub requests_ok: u64,
    /// Requests answered otherwise, timed out, or failed in transport.
    pub requests_failed: u64,
    /// `requests_ok / duration_secs`.
    pub throughput_per_sec: f64,
    /// Latency percentiles over every request that got an answer.
    pub latency_ms_p50: f64,
    pub latency_ms_p90: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    /// Answers by HTTP status; `0` counts requests with no answer (connection
    /// error or timeout).
    pub status_counts: BTreeMap<u16, u64>,
}

/// The write a workload sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Put,
    Incr,
    Patch,
    Add,
}

impl Workload {
    fn parse(name: &str) -> anyhow::Result<Workload> {
        match name {
            "put" => Ok(Workload::Put),
            "incr" => Ok(Workload::Incr),
            "patch" => Ok(Workload::Patch),
            "add" => Ok(Workload::Add),
            other => bail!("--workload: unknown workload {other:?}; use put, incr, patch or add"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Incr => "incr",
            Workload::Patch => "patch",
            Workload::Add => "add",
        }
    }

    fn method(self) -> Method {
        match self {
            Workload::Put => Method::PUT,
            Workload::Patch => Method::PATCH,
            Workload::Incr | Workload::Add => Method::POST,
        }
    }

    /// What follows `/v1/records/{entity}/{id}` in the path.
    fn path_suffix(self) -> &'static str {
        match self {
            Workload::Put | Workload::Patch => "",
            Workload::Incr | Workload::Add => "/ops",
        }
    }

    /// The request body: the same for every request of a run, so that the
    /// generator spends its time waiting on the target, not serializing.
    fn body(self, value_bytes: usize) -> Bytes {
        let value = "x".repeat(value_bytes);
        let body = match self {
            Workload::Put => serde_json::json!({ "value": value }),
            Workload::Incr => serde_json::json!({ "op": "incr", "by": 1 }),
            Workload::Patch => serde_json::json!({ "fields": { "v": value } }),
            Workload::Add => serde_json::json!({ "op": "add", "elements": [value] }),
        };
        Bytes::from(serde_json::to_vec(&body).expect("a JSON value serializes"))
    }
}

/// A validated run: everything a client task needs, derived from `LoadArgs`.
#[derive(Debug, Clone)]
struct Plan {
    workload: Workload,
    /// `scheme://authority` of the target, without a trailing `/`.
    base: String,
    entity: String,
    keys: u64,
    body: Bytes,
    clients: usize,
    warmup: Duration,
    duration: Duration,
    /// Pause between one client's request starts, when a rate is set.
    interval: Option<Duration>,
}

impl Plan {
    fn from_args(args: &LoadArgs) -> anyhow::Result<Plan> {
        let workload = Workload::parse(&args.workload)?;
        let base = parse_target(&args.target)?;
        if args.clients == 0 || args.clients > CLIENTS_MAX {
            bail!("--clients: {} is out of range; use 1 to {CLIENTS_MAX}", args.clients);
        }
        if args.duration_secs == 0 || args.duration_secs > DURATION_SECS_MAX {
            bail!(
                "--duration-secs: {} is out of range; use 1 to {DURATION_SECS_MAX}",
                args.duration_secs
            );
        }
        if args.warmup_secs > WARMUP_SECS_MAX {
            bail!(
                "--warmup-secs: {} is out of range; use 0 to {WARMUP_SECS_MAX}",
                args.warmup_secs
            );
        }
        if args.keys == 0 || args.keys > KEYS_MAX {
            bail!("--keys: {} is out of range; use 1 to {KEYS_MAX}", args.keys);
        }
        if args.value_bytes > VALUE_BYTES_MAX {
            bail!(
                "--value-bytes: {} is out of range; use 0 to {VALUE_BYTES_MAX} (1 MiB)",
                args.value_bytes
            );
        }
        let entity_ok = !args.entity.is_empty()
            && args.entity.len() <= ENTITY_NAME_LEN_MAX
            && args
                .entity
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !entity_ok {
            bail!(
                "--entity: invalid entity name {:?}; use 1 to {ENTITY_NAME_LEN_MAX} of a-z, 0-9 and '_'",
                args.entity
            );
        }
        let interval = (args.rate > 0)
            .then(|| Duration::from_secs_f64(args.clients as f64 / args.rate as f64));
        Ok(Plan {
            interval,
            workload,
            base,
            entity: args.entity.clone(),
            keys: args.keys,
            body: workload.body(args.value_bytes),
            clients: args.clients,
            warmup: Duration::from_secs(args.warmup_secs),
            duration: Duration::from_secs(args.duration_secs),
        })
    }

    fn uri(&self, key: u64) -> Uri {
        let uri = format!(
            "{}/v1/records/{}/load:{key}{}",
            self.base,
            self.entity,
            self.workload.path_suffix()
        );
        // The base and entity were validated and the id is `load:<digits>`.
        uri.parse().expect("a validated plan makes valid URIs")
    }

    fn request(&self, key: u64) -> Request<Full<Bytes>> {
        Request::builder()
            .method(self.workload.method())
            .uri(self.uri(key))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(self.body.clone()))
            .expect("a validated plan makes valid requests")
    }
}

/// `http://host:port[/]` to `http://host:port`. Only plain HTTP: tandem's
/// data plane is HTTP, and the connector does not speak TLS.
fn parse_target(target: &str) -> anyhow::Result<String> {
    let uri: Uri = target.parse().with_context(|| format!("--target: {target:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        bail!("--target: {target:?} must start with http://");
    }
    let Some(authority) = uri.authority() else {
        bail!("--target: {target:?} has no host");
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        bail!("--target: {target:?} must be a base URL without a path, e.g. http://127.0.0.1:7101");
    }
    Ok(format!("http://{authority}"))
}

/// xorshift64*: a tiny deterministic generator for picking keys. Each client
/// task has its own, seeded from its index, so a run's key sequence per task
/// is reproducible and tasks do not walk the same keys in lockstep.
#[derive(Debug, Clone)]
struct XorShift(u64);

impl XorShift {
    fn for_task(task: usize) -> XorShift {
        // splitmix64 of the task index: well-spread seeds, never zero (a zero
        // state would make xorshift return zero forever).
        let mut z = (task as u64).wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        XorShift(if z == 0 { 0x9E37_79B9_7F4A_7C15 } else { z })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A key in `0..keys` (the modulo bias is irrelevant for spreading load).
    fn key(&mut self, keys: u64) -> u64 {
        assert!(keys > 0, "keys must be positive");
        self.next_u64() % keys
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// What one client task measured after warm-up.
#[derive(Debug)]
struct Tally {
    latency_us: Histogram<u64>,
    requests_ok: u64,
    requests_failed: u64,
    status_counts: BTreeMap<u16, u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency_us: new_histogram(),
            requests_ok: 0,
            requests_failed: 0,
            status_counts: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: &Tally) {
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms made by new_histogram share bounds");
        self.requests_ok += other.requests_ok;
        self.requests_failed += other.requests_failed;
        for (status, count) in &other.status_counts {
            *self.status_counts.entry(*status).or_insert(0) += count;
        }
    }

    fn record_answer(&mut self, status: StatusCode, latency: Duration) {
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(latency_us.max(1));
        if status.is_success() {
            self.requests_ok += 1;
        } else {
            self.requests_failed += 1;
        }
        *self.status_counts.entry(status.as_u16()).or_insert(0) += 1;
    }

    fn record_no_answer(&mut self) {
        self.requests_failed += 1;
        *self.status_counts.entry(STATUS_NO_RESPONSE).or_insert(0) += 1;
    }

    /// The report over a measured window of length `window`.
    fn report(&self, clients: usize, window: Duration) -> LoadReport {
        let duration_secs = window.as_secs_f64();
        assert!(duration_secs > 0.0, "the measured window is never empty");
        let ms = |us: u64| us as f64 / 1000.0;
        let quantile = |q: f64| {
            if self.latency_us.is_empty() {
                0.0
            } else {
                ms(self.latency_us.value_at_quantile(q))
            }
        };
        LoadReport {
            clients,
            duration_secs,
            requests_ok: self.requests_ok,
            requests_failed: self.requests_failed,
            throughput_per_sec: self.requests_ok as f64 / duration_secs,
            latency_ms_p50: quantile(0.50),
            latency_ms_p90: quantile(0.90),
            latency_ms_p99: quantile(0.99),
            latency_ms_max: if self.latency_us.is_empty() {
                0.0
            } else {
                ms(self.latency_us.max())
            },
            status_counts: self.status_counts.clone(),
        }
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client(clients: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    // One small request at a time per connection: Nagle would only add delay.
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_millis(CONNECT_TIMEOUT_MS)));
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(clients).build(connector)
}

/// Sends one request and reads the whole answer (so the connection goes
/// back to the pool). `Ok((status, body))`, or the transport error.
async fn send(
    client: &HttpClient,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let response = client.request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// One closed-loop client: send, wait for the answer, send the next, until
/// `deadline`. A request still in flight at the deadline is abandoned and not
/// counted, so the measured window is exactly `measure_from..deadline`.
async fn client_loop(
    client: HttpClient,
    plan: std::sync::Arc<Plan>,
    task: usize,
    measure_from: Instant,
    deadline: Instant,
) -> Tally {
    let mut rng = XorShift::for_task(task);
    let mut tally = Tally::new();
    let request_timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
    loop {
        let started = Instant::now();
        if started >= deadline {
            break;
        }
        let request = plan.request(rng.key(plan.keys));
        let give_up_at = deadline.min(started + request_timeout);
        let outcome = tokio::time::timeout_at(give_up_at, send(&client, request)).await;
        let finished = Instant::now();
        let measured = finished >= measure_from;
        match outcome {
            Err(_elapsed) if finished >= deadline => break,
            Err(_elapsed) => {
                if measured {
                    tally.record_no_answer();
                }
            }
            Ok(Err(_transport)) => {
                if measured {
                    tally.record_no_answer();
                }
                tokio::time::sleep(Duration::from_millis(ERROR_BACKOFF_MS)).await;
            }
            Ok(Ok((status, _body))) => {
                if measured {
                    tally.record_answer(status, finished - started);
                }
            }
        }
        if let Some(interval) = plan.interval {
            tokio::time::sleep_until((started + interval).min(deadline)).await;
        }
    }
    tally
}

/// One request before the run, so that an unreachable target or a workload
/// the entity type does not take (409 `wrong_merge_type`, 404
/// `unknown_entity`, 422 `unknown_subject`) fails the command at once with the
/// server's own message instead of producing a report full of errors.
async fn preflight(client: &HttpClient, plan: &Plan) -> anyhow::Result<()> {
    let request = plan.request(0);
    let uri = request.uri().clone();
    let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
    let (status, body) = tokio::time::timeout(timeout, send(client, request))
        .await
        .with_context(|| format!("no answer from {uri} within {REQUEST_TIMEOUT_MS} ms"))?
        .with_context(|| format!("cannot reach {}", plan.base))?;
    if !status.is_success() {
        let body = String::from_utf8_lossy(&body);
        let quoted: String = body.chars().take(ERROR_BODY_QUOTED_MAX).collect();
        bail!(
            "{} {uri} answered {status}: {quoted} (does --workload {:?} fit --entity {:?}?)",
            plan.workload.method(),
            plan.workload.name(),
            plan.entity
        );
    }
    Ok(())
}

/// `tandem load`: runs on its own tokio runtime (the `tandem` binary's `main`
/// is synchronous), prints the report, and exits 0 once the run completed;
/// bad arguments, an unreachable target or a refused first request are errors.
pub fn command(args: &LoadArgs) -> anyhow::Result<std::process::ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let report = runtime.block_on(run(args))?;
    print(&report, args.json);
    Ok(std::process::ExitCode::SUCCESS)
}

/// Runs the load described by `args` and reports what it measured.
pub async fn run(args: &LoadArgs) -> anyhow::Result<LoadReport> {
    let plan = std::sync::Arc::new(Plan::from_args(args)?);
    let client = http_client(plan.clients);
    preflight(&client, &plan).await?;

    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let deadline = measure_from + plan.duration;
    let tasks: Vec<_> = (0..plan.clients)
        .map(|task| {
            tokio::spawn(client_loop(client.clone(), plan.clone(), task, measure_from, deadline))
        })
        .collect();
    let mut total = Tally::new();
    for task in tasks {
        let tally = task.await.context("a load client task failed")?;
        total.merge(&tally);
    }
    Ok(total.report(plan.clients, plan.duration))
}

/// The report as text, or as one JSON object on stdout when `json`.
pub fn print(report: &LoadReport, json: bool) {
    if json {
        let text = serde_json::to_string_pretty(report).expect("a report serializes");
        println!("{text}");
    } else {
        print!("{}", render_text(report));
    }
}

fn render_text(report: &LoadReport) -> String {
    let statuses: Vec<String> = report
        .status_counts
        .iter()
        .map(|(status, count)| match *status {
            STATUS_NO_RESPONSE => format!("no answer: {count}"),
            status => format!("{status}: {count}"),
        })
        .collect();
    format!(
        "clients      {}\n\
         duration     {:.1} s\n\
         requests     {} ok, {} failed\n\
         throughput   {:.1} req/s\n\
         latency ms   p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}\n\
         statuses     {}\n",
        report.clients,
        report.duration_secs,
        report.requests_ok,
        report.requests_failed,
        report.throughput_per_sec,
        report.latency_ms_p50,
        report.latency_ms_p90,
        report.latency_ms_p99,
        report.latency_ms_max,
        if statuses.is_empty() { "none".to_string() } else { statuses.join(", ") },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(target: &str) -> LoadArgs {
        LoadArgs {
            target: target.to_string(),
            clients: 16,
            duration_secs: 10,
            warmup_secs: 1,
            workload: "put".to_string(),
            entity: "article".to_string(),
            keys: 10_000,
            value_bytes: 100,
            json: false,
            rate: 0,
        }
    }

    fn refused(args: &LoadArgs, needle: &str) {
        let err = Plan::from_args(args).expect_err("should be refused");
        let text = format!("{err:#}");
        assert!(text.contains(needle), "{text:?} does not name {needle:?}");
    }

    // ---- argument validation ---------------------------------------------

    #[test]
    fn defaults_make_a_plan() {
        let plan = Plan::from_args(&args("http://127.0.0.1:7101")).unwrap();
        assert_eq!(plan.workload, Workload::Put);
        assert_eq!(plan.base, "http://127.0.0.1:7101");
        assert_eq!(plan.clients, 16);
        assert_eq!(plan.duration, Duration::from_secs(10));
        assert_eq!(plan.warmup, Duration::from_secs(1));
    }

    #[test]
    fn clap_defaults_match_the_contract() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            load: LoadArgs,
        }
        let cli = Cli::try_parse_from(["load", "--target", "http://127.0.0.1:1"]).unwrap();
        let load = cli.load;
        assert_eq!(load.clients, 16);
        assert_eq!(load.duration_secs, 10);
        assert_eq!(load.warmup_secs, 1);
        assert_eq!(load.workload, "put");
        assert_eq!(load.entity, "article");
        assert_eq!(load.keys, 10_000);
        assert_eq!(load.value_bytes, 100);
        assert!(!load.json);
        let cli = Cli::try_parse_from([
            "load",
            "--target",
            "http://x:1",
            "--clients",
            "64",
            "--duration-secs",
            "3",
            "--value-bytes",
            "7",
            "--json",
        ])
        .unwrap();
        assert_eq!(cli.load.clients, 64);
        assert_eq!(cli.load.duration_secs, 3);
        assert_eq!(cli.load.value_bytes, 7);
        assert!(cli.load.json);
    }

    #[test]
    fn target_trailing_slash_is_dropped() {
        let plan = Plan::from_args(&args("http://localhost:7100/")).unwrap();
        assert_eq!(plan.base, "http://localhost:7100");
    }

    #[test]
    fn refuses_bad_targets() {
        refused(&args("127.0.0.1:7101"), "must start with http://");
        refused(&args("https://127.0.0.1:7101"), "must start with http://");
        refused(&args("http://127.0.0.1:7101/v1"), "without a path");
        refused(&args("not a url"), "not a URL");
    }

    #[test]
    fn refuses_out_of_range_numbers() {
        let mut a = args("http://127.0.0.1:7101");
        a.clients = 0;
        refused(&a, "--clients");
        a.clients = CLIENTS_MAX + 1;
        refused(&a, "--clients");
        a.clients = CLIENTS_MAX;
        Plan::from_args(&a).unwrap();

        let mut a = args("http://127.0.0.1:7101");
        a.value_bytes = VALUE_BYTES_MAX + 1;
        refused(&a, "--value-bytes");
        a.value_bytes = VALUE_BYTES_MAX;
        Plan::from_args(&a).unwrap();

        let mut a = args("http://127.0.0.1:7101");
        a.duration_secs = 0;
        refused(&a, "--duration-secs");
        a.duration_secs = DURATION_SECS_MAX + 1;
        refused(&a, "--duration-secs");

        let mut a = args("http://127.0.0.1:7101");
        a.warmup_secs = WARMUP_SECS_MAX + 1;
        refused(&a, "--warmup-secs");
        a.warmup_secs = 0;
        Plan::from_args(&a).unwrap();

        let mut a = args("http://127.0.0.1:7101");
        a.keys = 0;
        refused(&a, "--keys");
        a.keys = KEYS_MAX + 1;
        refused(&a, "--keys");
    }

    #[test]
    fn refuses_unknown_workloads_and_bad_entities() {
        let mut a = args("http://127.0.0.1:7101");
        a.workload = "get".to_string();
        refused(&a, "--workload");
        let mut a = args("http://127.0.0.1:7101");
        for bad in ["", "Article", "a/b", "a b", &"a".repeat(65)] {
            a.entity = bad.to_string();
            refused(&a, "--entity");
        }
    }

    // ---- requests per workload -------------------------------------------

    fn body_json(workload: Workload, value_bytes: usize) -> serde_json::Value {
        serde_json::from_slice(&workload.body(value_bytes)).unwrap()
    }

    #[test]
    fn bodies_follow_the_http_api() {
        let value = "x".repeat(5);
        assert_eq!(body_json(Workload::Put, 5), serde_json::json!({ "value": value }));
        assert_eq!(body_json(Workload::Incr, 5), serde_json::json!({ "op": "incr", "by": 1 }));
        assert_eq!(body_json(Workload::Patch, 5), serde_json::json!({ "fields": { "v": value } }));
        assert_eq!(
            body_json(Workload::Add, 5),
            serde_json::json!({ "op": "add", "elements": [value] })
        );
    }

    #[test]
    fn put_body_carries_value_bytes() {
        let body = Workload::Put.body(100);
        // {"value":"<100 x>"}
        assert_eq!(body.len(), 100 + r#"{"value":""}"#.len());
        assert_eq!(Workload::Put.body(0).as_ref(), br#"{"value":""}"#);
    }

    #[test]
    fn requests_per_workload() {
        let cases = [
            ("put", Method::PUT, "/v1/records/article/load:42"),
            ("patch", Method::PATCH, "/v1/records/article/load:42"),
            ("incr", Method::POST, "/v1/records/article/load:42/ops"),
            ("add", Method::POST, "/v1/records/article/load:42/ops"),
        ];
        for (workload, method, path) in cases {
            let mut a = args("http://127.0.0.1:7101/");
            a.workload = workload.to_string();
            let plan = Plan::from_args(&a).unwrap();
            let request = plan.request(42);
            assert_eq!(request.method(), method, "{workload}");
            assert_eq!(request.uri().path(), path, "{workload}");
            assert_eq!(request.uri().authority().unwrap().as_str(), "127.0.0.1:7101");
            assert_eq!(request.headers()[hyper::header::CONTENT_TYPE], "application/json");
        }
    }

    // ---- key choice ------------------------------------------------------

    #[test]
    fn keys_are_deterministic_in_range_and_differ_per_task() {
        let take = |task: usize| -> Vec<u64> {
            let mut rng = XorShift::for_task(task);
            (0..1000).map(|_| rng.key(100)).collect()
        };
        assert_eq!(take(0), take(0));
        assert_ne!(take(0), take(1));
        assert!(take(3).iter().all(|k| *k < 100));
        // Spread: 1000 draws over 100 keys hit most of them.
        let mut seen = take(7);
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.len() > 90, "only {} distinct keys", seen.len());
        for task in 0..CLIENTS_MAX {
            assert_ne!(XorShift::for_task(task).0, 0);
        }
    }

    // ---- report ----------------------------------------------------------

    #[test]
    fn report_from_a_tally() {
        let mut tally = Tally::new();
        // 100 answers: 1 ms .. 100 ms, the last 10 of them 503s.
        for ms in 1..=100u64 {
            let status = if ms > 90 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
            tally.record_answer(status, Duration::from_millis(ms));
        }
        tally.record_no_answer();
        let report = tally.report(4, Duration::from_secs(2));
        assert_eq!(report.clients, 4);
        assert_eq!(report.duration_secs, 2.0);
        assert_eq!(report.requests_ok, 90);
        assert_eq!(report.requests_failed, 11);
        assert_eq!(report.throughput_per_sec, 45.0);
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 1e-9;
        assert!(near(report.latency_ms_p50, 50.0), "{}", report.latency_ms_p50);
        assert!(near(report.latency_ms_p90, 90.0), "{}", report.latency_ms_p90);
        assert!(near(report.latency_ms_p99, 99.0), "{}", report.latency_ms_p99);
        assert!(near(report.latency_ms_max, 100.0), "{}", report.latency_ms_max);
        let want: BTreeMap<u16, u64> = [(0, 1), (200, 90), (503, 10)].into_iter().collect();
        assert_eq!(report.status_counts, want);
    }

    #[test]
    fn merged_tallies_add_up() {
        let mut a = Tally::new();
        let mut b = Tally::new();
        a.record_answer(StatusCode::OK, Duration::from_micros(300));
        b.record_answer(StatusCode::OK, Duration::from_micros(700));
        b.record_answer(StatusCode::CONFLICT, Duration::from_micros(500));
        a.merge(&b);
        let report = a.report(2, Duration::from_secs(1));
        assert_eq!(report.requests_ok, 2);
        assert_eq!(report.requests_failed, 1);
        assert_eq!(report.status_counts[&200], 2);
        assert_eq!(report.status_counts[&409], 1);
        assert!((report.latency_ms_max - 0.7).abs() < 0.001);
    }

    #[test]
    fn empty_report_has_zero_latencies_and_sub_microsecond_is_one() {
        let report = Tally::new().report(1, Duration::from_secs(1));
        assert_eq!(report.requests_ok, 0);
        assert_eq!(report.latency_ms_p50, 0.0);
        assert_eq!(report.latency_ms_max, 0.0);
        assert_eq!(report.throughput_per_sec, 0.0);

        let mut tally = Tally::new();
        tally.record_answer(StatusCode::OK, Duration::from_nanos(10));
        tally.record_answer(StatusCode::OK, Duration::from_secs(3600));
        let report = tally.report(1, Duration::from_secs(1));
        assert_eq!(report.latency_ms_p50, 0.001);
        // Clamped to the histogram's top, within its precision.
        let top_ms = LATENCY_US_MAX as f64 / 1000.0;
        assert!((report.latency_ms_max - top_ms).abs() <= top_ms * 0.001);
    }

    #[test]
    fn report_serializes_with_the_contract_names() {
        let mut tally = Tally::new();
        tally.record_answer(StatusCode::OK, Duration::from_millis(1));
        let json = serde_json::to_value(tally.report(16, Duration::from_secs(10))).unwrap();
        for key in [
            "clients",
            "duration_secs",
            "requests_ok",
            "requests_failed",
            "throughput_per_sec",
            "latency_ms_p50",
            "latency_ms_p90",
            "latency_ms_p99",
            "latency_ms_max",
        ] {
            assert!(json.get(key).is_some(), "no {key} in {json}");
        }
        assert_eq!(json["status_counts"]["200"], 1);
        let text = render_text(&tally.report(16, Duration::from_secs(10)));
        assert!(text.contains("200: 1"), "{text}");
    }

    // ---- against a real server on a random loopback port -------------------

    /// A tiny HTTP/1 server answering every request with `status` and
    /// counting what it saw (method and path of the first request).
    async fn serve(status: StatusCode) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen_tx, seen_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen_tx = seen_tx.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let seen_tx = seen_tx.clone();
                        async move {
                            let line = format!("{} {}", request.method(), request.uri().path());
                            let body = request.into_body().collect().await?.to_bytes();
                            let _ = seen_tx.send(format!("{line} {}", body.len()));
                            let answer = hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(
                                    br#"{"error":{"code":"wrong_merge_type","message":"no"}}"#,
                                )))
                                .unwrap();
                            Ok::<_, hyper::Error>(answer)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (format!("http://{addr}"), seen_rx)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_against_a_real_server() {
        let (target, mut seen) = serve(StatusCode::OK).await;
        let mut a = args(&target);
        a.clients = 4;
        a.duration_secs = 1;
        a.warmup_secs = 0;
        a.keys = 10;
        let report = run(&a).await.unwrap();
        assert!(report.requests_ok > 10, "{report:?}");
        assert_eq!(report.requests_failed, 0, "{report:?}");
        assert_eq!(report.status_counts.keys().collect::<Vec<_>>(), vec![&200]);
        assert!(report.latency_ms_p50 > 0.0);
        assert!(report.latency_ms_p50 <= report.latency_ms_p99);
        assert!(report.latency_ms_p99 <= report.latency_ms_max);
        let first = seen.recv().await.unwrap();
        assert_eq!(first, "PUT /v1/records/article/load:0 112");
    }

    #[tokio::test]
    async fn preflight_quotes_the_servers_error() {
        let (target, _seen) = serve(StatusCode::CONFLICT).await;
        let mut a = args(&target);
        a.workload = "incr".to_string();
        let err = run(&a).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("409"), "{text}");
        assert!(text.contains("wrong_merge_type"), "{text}");
        assert!(text.contains("--workload \"incr\""), "{text}");
    }

    #[tokio::test]
    async fn preflight_names_an_unreachable_target() {
        // Bind and drop a listener: the port is very likely closed now.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let err = run(&args(&format!("http://127.0.0.1:{port}"))).await.unwrap_err();
        assert!(format!("{err:#}").contains("cannot reach"), "{err:#}");
    }
}
