//! `tandem node`: run one region until SIGTERM or ctrl-c, then finish in-flight
//! batches and exit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use tandem_node::{NodeOptions, StoreBackend};

#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// Deployment config (TOML); the built-in example when omitted.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The region this process is.
    #[arg(long)]
    pub region: String,
    /// Listen here instead of the region's configured address (port 0: any free port).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Keep data here instead of the config's `deployment.data_dir`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Skew this node's clock by this many milliseconds (tests of clock skew).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub clock_skew_ms: i64,
    /// Keep everything in memory (nothing survives a restart).
    #[arg(long)]
    pub in_memory: bool,
    /// Reach a peer at this URL instead of its configured address
    /// (`REGION=URL`, repeatable; `tandem up` points these at its latency proxies).
    #[arg(long = "peer-url", value_parser = parse_peer_url)]
    pub peer_urls: Vec<(String, String)>,
    /// No TLS and no authentication of clients (regions authenticate with the
    /// shared replication secret): for local experiments only.
    #[arg(long)]
    pub insecure: bool,
    /// Where this region's certificate, key, the CA and the revocation list
    /// are (default `<data_dir>/certs`).
    #[arg(long)]
    pub certs_dir: Option<PathBuf>,
    /// TEST ONLY: acknowledge writes before they are durable.
    #[arg(long, hide = true)]
    pub unsafe_ack_before_commit: bool,
}

pub fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let config = crate::config_cmd::load_or_example(args.config.as_deref())?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| config.deployment.data_dir.clone());
    let admin_token = admin_token(&data_dir);
    let security = security(&config, &data_dir, args.insecure, args.certs_dir.as_deref());
    let opts = NodeOptions {
        config,
        region: args.region,
        listen: args.listen,
        data_dir: Some(data_dir),
        clock_skew_ms: args.clock_skew_ms,
        backend: if args.in_memory { StoreBackend::Memory } else { StoreBackend::Redb },
        admin_token,
        security,
        peer_urls: args.peer_urls.into_iter().collect(),
        unsafe_ack_before_commit: args.unsafe_ack_before_commit,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(tandem_node::run(opts, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// The admin token: `TANDEM_ADMIN_TOKEN`, else `<data_dir>/admin.token`.
pub fn admin_token(data_dir: &std::path::Path) -> Option<String> {
    if let Ok(t) = std::env::var("TANDEM_ADMIN_TOKEN") {
        if !t.trim().is_empty() {
            return Some(t.trim().to_owned());
        }
    }
    std::fs::read_to_string(data_dir.join("admin.token"))
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// The replication secret: `[replication] secret`, else
/// `TANDEM_REPLICATION_SECRET`, else `<data_dir>/replication.secret`.
pub fn replication_secret(
    config: &tandem_config::Config,
    data_dir: &std::path::Path,
) -> Option<String> {
    if let Some(s) = &config.replication.secret {
        return Some(s.clone());
    }
    if let Ok(s) = std::env::var("TANDEM_REPLICATION_SECRET") {
        if !s.trim().is_empty() {
            return Some(s.trim().to_owned());
        }
    }
    std::fs::read_to_string(data_dir.join("replication.secret"))
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

fn parse_peer_url(s: &str) -> Result<(String, String), String> {
    let (region, url) = s.split_once('=').ok_or("expected REGION=URL")?;
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(format!(
            "peer URL `{url}` must start with https:// (or http:// with --insecure)"
        ));
    }
    Ok((region.to_owned(), url.to_owned()))
}

/// TLS with the deployment's certificates and API keys, or (`--insecure`,
/// with a warning) plaintext with the replication secret.
pub fn security(
    config: &tandem_config::Config,
    data_dir: &std::path::Path,
    insecure: bool,
    certs_dir: Option<&std::path::Path>,
) -> tandem_node::SecurityOptions {
    if insecure {
        warn_insecure();
        return tandem_node::SecurityOptions::Insecure {
            replication_secret: replication_secret(config, data_dir),
        };
    }
    tandem_node::SecurityOptions::Tls {
        certs_dir: certs_dir
            .map_or_else(|| crate::certs_cmd::certs_dir(data_dir), std::path::Path::to_owned),
        api_keys: api_keys_file(data_dir),
    }
}

/// The data plane's API keys: `<data_dir>/api-keys`.
pub fn api_keys_file(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("api-keys")
}

/// Said at the start of every process run with `--insecure`.
pub fn warn_insecure() {
    eprintln!("tandem: WARNING: --insecure: no TLS and no authentication of clients; for local experiments only");
    tracing::warn!("--insecure: plaintext connections, no API keys");
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("ctrl-c: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}
