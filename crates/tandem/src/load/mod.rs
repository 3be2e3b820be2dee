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
//!
//! Layout: this module holds the arguments and the run (the tasks started
//! together, their tallies merged); `plan` (pure) the workload shapes and
//! the validated plan, `client` the HTTP client, one task's closed loop and
//! the preflight request, `report` the tallies and the printed report.

mod client;
mod plan;
mod report;

use anyhow::Context;
use tokio::time::Instant;

use client::{client_loop, http_client, preflight};
use plan::Plan;
use report::Tally;
pub use report::{print, LoadReport};

#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Base URL of a node or router, e.g. https://127.0.0.1:7100 (http:// for
    /// a deployment run with `--insecure`)
    #[arg(long)]
    pub target: String,
    /// Deployment config (TOML), for its data directory (certificates, API
    /// keys) and its processes' names; the built-in example when omitted.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub connect: crate::connect::ConnectArgs,
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
    let mut plan = Plan::from_args(args)?;
    let config = crate::config_cmd::load_or_example(args.config.as_deref())?;
    let tls = plan.base.starts_with("https://");
    if tls && args.connect.insecure {
        anyhow::bail!("--insecure: the target {} is https", plan.base);
    }
    let connect = crate::connect::ConnectArgs { insecure: !tls, ..args.connect.clone() };
    let connection =
        crate::connect::Connection::open(&connect, &config, &config.deployment.data_dir)?;
    plan.auth = connection
        .data_auth
        .clone()
        .or_else(|| args.connect.api_key.as_ref().map(|k| format!("Bearer {}", k.trim())));
    let plan = std::sync::Arc::new(plan);
    let client = http_client(&connection, plan.clients);
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

#[cfg(test)]
mod tests {
    use super::plan::tests::args;
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::{Request, StatusCode};

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
