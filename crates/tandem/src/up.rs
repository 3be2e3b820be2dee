//! `tandem up`: a whole deployment on one machine. Each region is its own OS
//! process with its own data directory, reaching its peers through latency
//! proxies (one per directed link); the router runs beside them. `up` prints
//! the endpoints, serves a small control API for fault injection (cut, heal or
//! slow a link; kill, stop or start a region), and on ctrl-c or SIGTERM stops
//! every process it started.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tandem_config::Config;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::proxy::{self, LinkControl};

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Deployment config (TOML); the built-in example when omitted.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Keep data here instead of the config's `deployment.data_dir`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address of the control API (fault injection: links and processes).
    #[arg(long, default_value = "127.0.0.1:7199")]
    pub control: SocketAddr,
    /// Do not start the router.
    #[arg(long)]
    pub no_router: bool,
    /// Restart a region whose process exits on its own.
    #[arg(long)]
    pub restart_on_crash: bool,
    /// Record every byte crossing each simulated link into DIR/<from>-<to>.bin
    /// (for residency tests that search replication traffic).
    #[arg(long)]
    pub capture_dir: Option<PathBuf>,
    /// TEST ONLY: start this region with `--unsafe-ack-before-commit` (it
    /// acknowledges writes before they are durable), to prove that the drill
    /// and the fault tests catch a lying node.
    #[arg(long, hide = true)]
    pub unsafe_ack_region: Option<String>,
    /// TEST ONLY: skew this region's clock (`REGION=MS`, repeatable).
    #[arg(long = "clock-skew", hide = true, value_parser = parse_skew)]
    pub clock_skews: Vec<(String, i64)>,
    /// Seconds to wait for every process to become healthy.
    #[arg(long, default_value_t = 60)]
    pub start_timeout_secs: u64,
}

struct Proc {
    /// Arguments after the executable.
    args: Vec<String>,
    /// Environment variables this process must not inherit (transfer keys of
    /// other jurisdictions: a region never holds another jurisdiction's key).
    env_remove: Vec<String>,
    /// Environment of this process only (its jurisdiction's pseudonym key).
    env_own: Vec<(String, String)>,
    url: String,
    child: Option<Child>,
    /// Set when the control API stopped it on purpose.
    stopped_on_purpose: bool,
}

struct Deployment {
    exe: PathBuf,
    env: Vec<(String, String)>,
    procs: Mutex<BTreeMap<String, Proc>>,
    /// Directed links (from, to): changes of `from` flowing to `to`.
    links: BTreeMap<(String, String), Arc<LinkControl>>,
}

pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(up(args))
}

fn parse_skew(s: &str) -> Result<(String, i64), String> {
    let (r, ms) = s.split_once('=').ok_or("expected REGION=MS")?;
    Ok((r.to_owned(), ms.parse().map_err(|e| format!("bad skew `{ms}`: {e}"))?))
}

/// 32 random bytes from the OS, as hex.
pub fn random_token() -> anyhow::Result<String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(hex::encode(b))
}

/// Read a secret file, or create it (mode 0600) with a fresh random token.
fn secret_file(path: &Path) -> anyhow::Result<String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        if !s.trim().is_empty() {
            return Ok(s.trim().to_owned());
        }
    }
    let token = random_token()?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(token.as_bytes())?;
    Ok(token)
}

async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let mut config = crate::config_cmd::load_or_example(args.config.as_deref())?;
    // Bind first: a busy port fails the start before any process is spawned.
    let control = tokio::net::TcpListener::bind(args.control)
        .await
        .with_context(|| format!("binding the control API on {}", args.control))?;
    if let Some(d) = &args.data_dir {
        config.deployment.data_dir = d.clone();
    }
    // Every fixed port must be free: otherwise a health check could find some
    // other process and call this deployment running.
    let mut ports: Vec<SocketAddr> = config.regions.iter().map(|r| r.listen).collect();
    if !args.no_router {
        ports.push(config.router.listen);
    }
    for addr in ports {
        std::net::TcpListener::bind(addr)
            .with_context(|| format!("{addr} is already in use: is another deployment running?"))?;
    }
    let data_dir = config.deployment.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    config.deployment.data_dir = data_dir.clone();
    // The processes read one file: the effective config, written next to the data.
    let config_path = data_dir.join("deployment.toml");
    std::fs::write(&config_path, toml_of(&config)?)?;

    let token_path = data_dir.join("admin.token");
    let token_from_env = std::env::var("TANDEM_ADMIN_TOKEN").ok().filter(|t| !t.trim().is_empty());
    let admin_token = match &token_from_env {
        Some(t) => t.trim().to_owned(),
        None => secret_file(&token_path)?,
    };
    let secret = match (&config.replication.secret, std::env::var("TANDEM_REPLICATION_SECRET")) {
        (Some(s), _) => s.clone(),
        (None, Ok(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => secret_file(&data_dir.join("replication.secret"))?,
    };

    // One pseudonym key per jurisdiction, generated once and kept next to the
    // data; each region gets only its own jurisdiction's.
    let mut pseudonym_keys: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (j, jc) in &config.jurisdictions {
        let Some(var) = &jc.pseudonym_key_env else { continue };
        let key = match std::env::var(var) {
            Ok(k) if !k.trim().is_empty() => k.trim().to_owned(),
            _ => secret_file(&data_dir.join(format!("pseudonym-{j}.key")))?,
        };
        pseudonym_keys.insert(j.clone(), (var.clone(), key));
    }
    let mut links = BTreeMap::new();
    let mut procs = BTreeMap::new();
    for region in &config.regions {
        let mut node_args = vec![
            "node".to_string(),
            "--config".into(),
            config_path.display().to_string(),
            "--region".into(),
            region.name.clone(),
        ];
        if args.unsafe_ack_region.as_deref() == Some(region.name.as_str()) {
            node_args.push("--unsafe-ack-before-commit".into());
        }
        for (r, ms) in &args.clock_skews {
            if *r == region.name {
                node_args.push(format!("--clock-skew-ms={ms}"));
            }
        }
        for peer in config.regions.iter().filter(|p| p.name != region.name) {
            let capture = match &args.capture_dir {
                Some(dir) => {
                    std::fs::create_dir_all(dir)?;
                    Some(std::fs::File::create(
                        dir.join(format!("{}-{}.bin", peer.name, region.name)),
                    )?)
                }
                None => None,
            };
            let control = LinkControl::with_capture(
                config.link_latency_ms(&region.name, &peer.name),
                capture,
            );
            let addr = proxy::start(peer.listen, control.clone()).await?;
            links.insert((peer.name.clone(), region.name.clone()), control);
            node_args.push("--peer-url".into());
            node_args.push(format!("{}=http://{addr}", peer.name));
        }
        let mut env_remove: Vec<String> = config
            .transfers
            .iter()
            .filter(|t| t.from != region.jurisdiction)
            .map(|t| t.key_env.clone())
            .collect();
        let mut env_own = Vec::new();
        for (j, (var, key)) in &pseudonym_keys {
            if *j == region.jurisdiction {
                env_own.push((var.clone(), key.clone()));
            } else {
                env_remove.push(var.clone());
            }
        }
        procs.insert(
            region.name.clone(),
            Proc {
                args: node_args,
                env_remove,
                env_own,
                url: format!("http://{}", region.listen),
                child: None,
                stopped_on_purpose: false,
            },
        );
    }
    if !args.no_router {
        procs.insert(
            "router".to_string(),
            Proc {
                args: vec!["router".into(), "--config".into(), config_path.display().to_string()],
                env_remove: config
                    .transfers
                    .iter()
                    .map(|t| t.key_env.clone())
                    .chain(pseudonym_keys.values().map(|(v, _)| v.clone()))
                    .collect(),
                env_own: Vec::new(),
                url: format!("http://{}", config.router.listen),
                child: None,
                stopped_on_purpose: false,
            },
        );
    }
    let deployment = Arc::new(Deployment {
        exe: std::env::current_exe()?,
        env: vec![
            ("TANDEM_ADMIN_TOKEN".into(), admin_token),
            ("TANDEM_REPLICATION_SECRET".into(), secret),
        ],
        procs: Mutex::new(procs),
        links,
    });
    let names: Vec<String> = deployment.procs.lock().expect("procs").keys().cloned().collect();
    // The signal handler is installed before any process starts, so a ctrl-c
    // or SIGTERM during start-up stops what was started instead of orphaning it.
    let shutdown = crate::node_cmd::shutdown_signal();
    tokio::pin!(shutdown);
    let started = async {
        for name in &names {
            start_proc(&deployment, name)?;
        }
        let client = reqwest_like_client();
        for name in &names {
            let url = deployment.procs.lock().expect("procs")[name].url.clone();
            wait_ours(
                &deployment,
                &client,
                name,
                &url,
                Duration::from_secs(args.start_timeout_secs),
            )
            .await
            .with_context(|| format!("{name} did not become healthy at {url}"))?;
        }
        anyhow::Ok(())
    };
    let outcome = tokio::select! {
        r = started => r,
        _ = &mut shutdown => Err(anyhow::anyhow!("interrupted during start-up")),
    };
    if let Err(e) = outcome {
        stop_all(&deployment).await;
        return Err(e);
    }

    let control_addr = control.local_addr()?;
    let app = control_router(deployment.clone());
    tokio::spawn(async move {
        let _ = axum::serve(control, app).await;
    });

    let summary = json!({
        "config": config_path,
        "data_dir": data_dir,
        "admin_token_file": if token_from_env.is_some() { Value::Null } else { json!(token_path) },
        "control": format!("http://{control_addr}"),
        "router": (!args.no_router).then(|| format!("http://{}", config.router.listen)),
        "regions": config.regions.iter().map(|r| (r.name.clone(), json!({
            "url": format!("http://{}", r.listen),
            "jurisdiction": r.jurisdiction,
        }))).collect::<serde_json::Map<_, _>>(),
    });
    // Written whole, then renamed: a reader never sees half a file.
    let tmp = data_dir.join("up.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&summary)?)?;
    std::fs::rename(&tmp, data_dir.join("up.json"))?;
    print_summary(&config, &summary, &args);

    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => supervise(&deployment, args.restart_on_crash),
        }
    }
    println!("tandem up: stopping every process");
    stop_all(&deployment).await;
    Ok(ExitCode::SUCCESS)
}

fn toml_of(config: &Config) -> anyhow::Result<String> {
    Ok(toml::to_string(config)?)
}

fn print_summary(config: &Config, summary: &Value, args: &UpArgs) {
    println!("tandem up: deployment `{}` is running", config.deployment.name);
    for r in &config.regions {
        println!("  region {:<12} {:<4} http://{}", r.name, r.jurisdiction, r.listen);
    }
    if !args.no_router {
        println!("  router                   http://{}", config.router.listen);
    }
    for l in &config.links {
        println!("  link   {} <-> {}: {} ms one way", l.between[0], l.between[1], l.latency_ms);
    }
    println!("  control API              {}", summary["control"].as_str().unwrap_or(""));
    match summary["admin_token_file"].as_str() {
        Some(f) => println!("  admin token              {f}"),
        None => println!("  admin token              $TANDEM_ADMIN_TOKEN"),
    }
    println!("  data                     {}", config.deployment.data_dir.display());
    println!("press ctrl-c to stop");
}

fn start_proc(d: &Deployment, name: &str) -> anyhow::Result<()> {
    let mut procs = d.procs.lock().expect("procs");
    let p = procs.get_mut(name).with_context(|| format!("no process `{name}`"))?;
    if p.child.is_some() {
        return Ok(());
    }
    let mut cmd = Command::new(&d.exe);
    cmd.args(&p.args).envs(d.env.iter().cloned()).envs(p.env_own.iter().cloned());
    for k in &p.env_remove {
        cmd.env_remove(k);
    }
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    for (stream, is_err) in [
        (
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            false,
        ),
        (
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            true,
        ),
    ] {
        let Some(stream) = stream else { continue };
        let prefix = format!("[{name}]");
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if is_err {
                    eprintln!("{prefix} {line}");
                } else {
                    println!("{prefix} {line}");
                }
            }
        });
    }
    p.child = Some(child);
    p.stopped_on_purpose = false;
    Ok(())
}

fn supervise(d: &Deployment, restart: bool) {
    let mut crashed = Vec::new();
    {
        let mut procs = d.procs.lock().expect("procs");
        for (name, p) in procs.iter_mut() {
            let Some(child) = p.child.as_mut() else { continue };
            if let Ok(Some(status)) = child.try_wait() {
                p.child = None;
                if !p.stopped_on_purpose {
                    eprintln!("tandem up: {name} exited on its own ({status})");
                    crashed.push(name.clone());
                }
            }
        }
    }
    if restart {
        for name in crashed {
            eprintln!("tandem up: restarting {name}");
            if let Err(e) = start_proc(d, &name) {
                eprintln!("tandem up: cannot restart {name}: {e:#}");
            }
        }
    }
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
    }
}

/// SIGTERM a process and wait for it (SIGKILL after 10 s).
async fn stop_proc(
    d: &Deployment,
    name: &str,
    sig: nix::sys::signal::Signal,
) -> anyhow::Result<()> {
    let child = {
        let mut procs = d.procs.lock().expect("procs");
        let p = procs.get_mut(name).with_context(|| format!("no process `{name}`"))?;
        p.stopped_on_purpose = true;
        p.child.take()
    };
    let Some(mut child) = child else { return Ok(()) };
    signal(&child, sig);
    if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
    Ok(())
}

async fn stop_all(d: &Deployment) {
    let names: Vec<String> = d.procs.lock().expect("procs").keys().cloned().collect();
    // The router first, so no request is routed to a region that is stopping.
    let (router, regions): (Vec<_>, Vec<_>) = names.into_iter().partition(|n| n == "router");
    for n in router {
        let _ = stop_proc(d, &n, nix::sys::signal::Signal::SIGTERM).await;
    }
    let stops = regions.iter().map(|n| stop_proc(d, n, nix::sys::signal::Signal::SIGTERM));
    futures_util::future::join_all(stops).await;
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

fn reqwest_like_client() -> HttpClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new())
}

/// Wait until `name` serves at `url` and it is really that process: its
/// `/healthz` names the region (or says it is the router), and the child has
/// not exited (another process holding the port must not pass for it).
async fn wait_ours(
    d: &Deployment,
    client: &HttpClient,
    name: &str,
    url: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    let deadline = tokio::time::Instant::now() + timeout;
    let uri: hyper::Uri = format!("{url}/healthz").parse()?;
    loop {
        {
            let mut procs = d.procs.lock().expect("procs");
            let p = procs.get_mut(name).expect("known process");
            if let Some(status) = p.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                p.child = None;
                anyhow::bail!("{name} exited during start-up ({status}); see its log lines above");
            }
        }
        if let Ok(Ok(resp)) =
            tokio::time::timeout(Duration::from_secs(1), client.get(uri.clone())).await
        {
            if resp.status().is_success() {
                let body =
                    resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let ours =
                    if name == "router" { v["role"] == "router" } else { v["region"] == name };
                if !ours {
                    anyhow::bail!("{url} answers, but it is not {name}: is another deployment using the port?");
                }
                // Usable, not just alive: a region has caught up with its
                // peers, and the router sees every region up.
                let usable = if name == "router" {
                    router_sees_all_up(client, url).await
                } else {
                    v["ready"] != Value::Bool(false)
                };
                if usable {
                    return Ok(());
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("not healthy after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn router_sees_all_up(client: &HttpClient, url: &str) -> bool {
    use http_body_util::BodyExt;
    let Ok(uri) = format!("{url}/v1/routes").parse::<hyper::Uri>() else { return false };
    let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(1), client.get(uri)).await else {
        return false;
    };
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    v["regions"].as_array().is_some_and(|rs| rs.iter().all(|r| r["up"] == true))
}

/// Wait until a process serves and, for a region, is ready (caught up).
async fn wait_healthy(client: &HttpClient, url: &str, timeout: Duration) -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    let deadline = tokio::time::Instant::now() + timeout;
    let uri: hyper::Uri = format!("{url}/healthz").parse()?;
    loop {
        if let Ok(Ok(resp)) =
            tokio::time::timeout(Duration::from_secs(1), client.get(uri.clone())).await
        {
            if resp.status().is_success() {
                let body =
                    resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if v["ready"] != Value::Bool(false) {
                    return Ok(());
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("not healthy after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn control_router(d: Arc<Deployment>) -> Router {
    Router::new()
        .route("/v1/deployment", get(describe))
        .route("/v1/links/{from}/{to}/{action}", post(link_action))
        .route("/v1/processes/{name}/{action}", post(process_action))
        .with_state(d)
}

async fn describe(State(d): State<Arc<Deployment>>) -> Json<Value> {
    let procs: serde_json::Map<String, Value> = d
        .procs
        .lock()
        .expect("procs")
        .iter()
        .map(|(n, p)| {
            (n.clone(), json!({ "url": p.url, "running": p.child.is_some(), "pid": p.child.as_ref().and_then(|c| c.id()) }))
        })
        .collect();
    let links: Vec<Value> = d
        .links
        .iter()
        .map(|((from, to), c)| json!({ "from": from, "to": to, "latency_ms": c.latency_ms.load(Ordering::Relaxed), "cut": c.is_cut() }))
        .collect();
    Json(json!({ "processes": procs, "links": links }))
}

#[derive(serde::Deserialize, Default)]
struct LinkBody {
    latency_ms: Option<u64>,
}

/// `POST /v1/links/{from}/{to}/{cut|heal|latency}`; `*` matches every region.
async fn link_action(
    State(d): State<Arc<Deployment>>,
    UrlPath((from, to, action)): UrlPath<(String, String, String)>,
    body: Option<Json<LinkBody>>,
) -> (StatusCode, Json<Value>) {
    let matching: Vec<&Arc<LinkControl>> = d
        .links
        .iter()
        .filter(|((f, t), _)| (from == "*" || *f == from) && (to == "*" || *t == to))
        .map(|(_, c)| c)
        .collect();
    if matching.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "not_found", "message": "no such link"}})),
        );
    }
    for c in &matching {
        match action.as_str() {
            "cut" => c.cut(),
            "heal" => c.heal(),
            "latency" => match body.as_ref().and_then(|b| b.latency_ms) {
                Some(ms) if ms <= 60_000 => c.latency_ms.store(ms, Ordering::Relaxed),
                _ => {
                    return (
                        StatusCode::BAD_REQUEST,
                        Json(
                            json!({"error": {"code": "bad_request", "message": "body must be {\"latency_ms\": 0..60000}"}}),
                        ),
                    )
                }
            },
            _ => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(
                        json!({"error": {"code": "bad_request", "message": "action must be cut, heal or latency"}}),
                    ),
                )
            }
        }
    }
    (StatusCode::OK, Json(json!({ "links": matching.len(), "action": action })))
}

/// `POST /v1/processes/{name}/{kill|stop|start}`.
async fn process_action(
    State(d): State<Arc<Deployment>>,
    UrlPath((name, action)): UrlPath<(String, String)>,
) -> (StatusCode, Json<Value>) {
    if !d.procs.lock().expect("procs").contains_key(&name) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "not_found", "message": "no such process"}})),
        );
    }
    let result = match action.as_str() {
        "kill" => stop_proc(&d, &name, nix::sys::signal::Signal::SIGKILL).await,
        "stop" => stop_proc(&d, &name, nix::sys::signal::Signal::SIGTERM).await,
        "start" => match start_proc(&d, &name) {
            // Answer once the process serves, so callers need not poll.
            Ok(()) => {
                let url = d.procs.lock().expect("procs")[&name].url.clone();
                wait_healthy(&reqwest_like_client(), &url, Duration::from_secs(60)).await
            }
            Err(e) => Err(e),
        },
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(
                    json!({"error": {"code": "bad_request", "message": "action must be kill, stop or start"}}),
                ),
            )
        }
    };
    match result {
        Ok(()) => (StatusCode::OK, Json(json!({ "process": name, "action": action }))),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": {"code": "internal", "message": format!("{e:#}")}})),
        ),
    }
}
