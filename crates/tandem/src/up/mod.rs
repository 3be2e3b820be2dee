//! `tandem up`: a whole deployment on one machine. Each region is its own OS
//! process with its own data directory, reaching its peers through latency
//! proxies (one per directed link); the router runs beside them. `up` prints
//! the endpoints, serves a small control API for fault injection (cut, heal or
//! slow a link; kill, stop or start a region), and on ctrl-c or SIGTERM stops
//! every process it started.
//!
//! Layout: this module holds the arguments and the start-up in order (ports
//! checked, the effective config written, every process started and awaited,
//! `up.json` and the printout, the supervision loop); `secrets` the admin
//! token, replication secret and pseudonym keys; `deployment` the processes,
//! the link proxies and the process lifecycle; `health` the waits until a
//! process serves and is usable; `control` the control API.

mod control;
mod deployment;
mod health;
mod secrets;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use tandem_config::Config;

use control::control_router;
use deployment::{start_proc, stop_all, supervise, Deployment};
use health::wait_ours;
pub use secrets::random_token;
use secrets::Secrets;

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
    /// No TLS and no authentication anywhere (regions authenticate with the
    /// shared replication secret): for local experiments only.
    #[arg(long)]
    pub insecure: bool,
    /// Seconds to wait for every process to become healthy.
    #[arg(long, default_value_t = 60)]
    pub start_timeout_secs: u64,
}

pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(up(args))
}

fn parse_skew(s: &str) -> Result<(String, i64), String> {
    let (r, ms) = s.split_once('=').ok_or("expected REGION=MS")?;
    Ok((r.to_owned(), ms.parse().map_err(|e| format!("bad skew `{ms}`: {e}"))?))
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

    let secrets = Secrets::resolve(&config, &data_dir)?;
    let operator_tls = if args.insecure {
        crate::node_cmd::warn_insecure();
        None
    } else {
        Some(Arc::new(credentials(&config, &data_dir)?))
    };
    if !args.insecure && !args.control.ip().is_loopback() {
        anyhow::bail!("the control API listens on loopback addresses only (got {})", args.control);
    }
    let deployment =
        Arc::new(Deployment::plan(&config, &config_path, &args, &secrets, operator_tls).await?);
    let names: Vec<String> = deployment.procs.lock().expect("procs").keys().cloned().collect();
    // The signal handler is installed before any process starts, so a ctrl-c
    // or SIGTERM during start-up stops what was started instead of orphaning it.
    let shutdown = crate::node_cmd::shutdown_signal();
    tokio::pin!(shutdown);
    let started = async {
        for name in &names {
            start_proc(&deployment, name)?;
        }
        for name in &names {
            let url = deployment.procs.lock().expect("procs")[name].url.clone();
            wait_ours(&deployment, name, &url, Duration::from_secs(args.start_timeout_secs))
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

    let scheme = if args.insecure { "http" } else { "https" };
    let certs = crate::certs_cmd::certs_dir(&data_dir);
    let summary = json!({
        "config": config_path,
        "data_dir": data_dir,
        "admin_token_file": secrets.admin_token_file,
        "insecure": args.insecure,
        "ca_file": (!args.insecure).then(|| certs.join("ca.pem")),
        "certs_dir": (!args.insecure).then(|| certs.clone()),
        "api_keys_file": (!args.insecure).then(|| crate::node_cmd::api_keys_file(&data_dir)),
        "control": format!("http://{control_addr}"),
        "router": (!args.no_router).then(|| format!("{scheme}://{}", config.router.listen)),
        "regions": config.regions.iter().map(|r| (r.name.clone(), json!({
            "url": format!("{scheme}://{}", r.listen),
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

/// The deployment's certificates (`tandem certs init` when the directory is
/// empty) and API keys (created with the key `default` when missing); the
/// operator's TLS identity for the health waits.
fn credentials(
    config: &Config,
    data_dir: &std::path::Path,
) -> anyhow::Result<tandem_http::tls::Tls> {
    let certs = crate::certs_cmd::certs_dir(data_dir);
    if crate::certs_cmd::is_empty(&certs) {
        crate::certs_cmd::init(config, &certs, crate::certs_cmd::DAYS_DEFAULT)?;
        println!("tandem up: created the deployment's CA and certificates in {}", certs.display());
    }
    secrets::api_keys(&crate::node_cmd::api_keys_file(data_dir))?;
    tandem_http::tls::Tls::load(tandem_http::tls::TlsFiles::new(&certs, "operator"))
        .with_context(|| format!("the operator's certificate in {}", certs.display()))
}

fn print_summary(config: &Config, summary: &Value, args: &UpArgs) {
    let scheme = if args.insecure { "http" } else { "https" };
    println!("tandem up: deployment `{}` is running", config.deployment.name);
    for r in &config.regions {
        println!("  region {:<12} {:<4} {scheme}://{}", r.name, r.jurisdiction, r.listen);
    }
    if !args.no_router {
        println!("  router                   {scheme}://{}", config.router.listen);
    }
    for l in &config.links {
        println!("  link   {} <-> {}: {} ms one way", l.between[0], l.between[1], l.latency_ms);
    }
    println!("  control API              {}", summary["control"].as_str().unwrap_or(""));
    match summary["admin_token_file"].as_str() {
        Some(f) => println!("  admin token              {f}"),
        None => println!("  admin token              $TANDEM_ADMIN_TOKEN"),
    }
    if let (Some(ca), Some(keys)) = (summary["ca_file"].as_str(), summary["api_keys_file"].as_str())
    {
        println!("  CA certificate           {ca}");
        println!("  API keys                 {keys} (key `default`)");
    } else {
        println!("  WARNING: --insecure: plaintext, no API keys");
    }
    println!("  data                     {}", config.deployment.data_dir.display());
    println!("press ctrl-c to stop");
}
