//! `tandem router`: the global routing layer in front of the regions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct RouterArgs {
    /// Deployment config (TOML); the built-in example when omitted.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Listen here instead of `router.listen` (port 0: any free port).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

pub fn run(args: RouterArgs) -> anyhow::Result<ExitCode> {
    let config = crate::config_cmd::load_or_example(args.config.as_deref())?;
    let admin_token = crate::node_cmd::admin_token(&config.deployment.data_dir);
    let opts = tandem_router::RouterOptions { config, listen: args.listen, admin_token };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(tandem_router::run(opts, crate::node_cmd::shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}
