//! `tandem router`: the global routing layer in front of the regions.
//!
//! Secure by default: the router serves HTTPS with `router.pem`, reaches the
//! regions with the same certificate (so a node can tell the router's
//! failover header from anyone else's) and wants an API key on every
//! data-plane call. `--insecure` turns all of that off, with a warning.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct RouterArgs {
    /// Deployment config (TOML); the built-in example when omitted.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Listen here instead of `router.listen` (port 0: any free port).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// No TLS and no API keys: for local experiments only.
    #[arg(long)]
    pub insecure: bool,
    /// Where `router.pem`, `router.key`, `ca.pem` and `crl.pem` are
    /// (default `<data_dir>/certs`).
    #[arg(long)]
    pub certs_dir: Option<PathBuf>,
}

pub fn run(args: RouterArgs) -> anyhow::Result<ExitCode> {
    let config = crate::config_cmd::load_or_example(args.config.as_deref())?;
    let data_dir = config.deployment.data_dir.clone();
    let admin_token = crate::node_cmd::admin_token(&data_dir);
    let security = if args.insecure {
        crate::node_cmd::warn_insecure();
        tandem_router::RouterSecurity::Insecure
    } else {
        let certs_dir = args.certs_dir.unwrap_or_else(|| crate::certs_cmd::certs_dir(&data_dir));
        security(&certs_dir, &crate::node_cmd::api_keys_file(&data_dir))?
    };
    let opts = tandem_router::RouterOptions { config, listen: args.listen, admin_token, security };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(tandem_router::run(opts, crate::node_cmd::shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// The router's certificate (it must name the router) and the API keys; the
/// router refuses to start without either, since it could serve no one.
fn security(certs_dir: &Path, api_keys: &Path) -> anyhow::Result<tandem_router::RouterSecurity> {
    let files = tandem_http::tls::TlsFiles::new(certs_dir, "router");
    let tls = tandem_http::tls::Tls::load(files).with_context(|| {
        format!(
            "the router needs its certificate in {} (run `tandem certs init`, or pass --insecure)",
            certs_dir.display()
        )
    })?;
    let own = tls.own_identity();
    if own != tandem_http::identity::Identity::Router {
        return Err(crate::Refused(format!(
            "{}: router.pem names {} instead of the router",
            certs_dir.display(),
            own.describe()
        ))
        .into());
    }
    let keys = tandem_http::api_keys::ApiKeys::load(api_keys).with_context(|| {
        format!("the router needs API keys in {} (one `name key` per line)", api_keys.display())
    })?;
    if keys.is_empty() {
        return Err(crate::Refused(format!(
            "{}: no API keys, so no client could be served",
            api_keys.display()
        ))
        .into());
    }
    Ok(tandem_router::RouterSecurity::Tls { tls: Arc::new(tls), api_keys: Arc::new(keys) })
}
