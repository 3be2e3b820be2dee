//! `tandem audit verify`: check a region's hash-chained audit log for modified,
//! removed or re-ordered entries.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify the chain of a region's audit log; exits 1 when it is broken.
    Verify {
        /// Deployment config (TOML); the built-in example when omitted.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        region: String,
        /// Data directory instead of the config's `deployment.data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let AuditCommand::Verify { config, region, data_dir } = cmd;
    let config = crate::config_cmd::load_or_example(config.as_deref())?;
    if config.region(&region).is_none() {
        anyhow::bail!("region `{region}` is not in the config");
    }
    let dir = data_dir.unwrap_or_else(|| config.deployment.data_dir.clone()).join(&region);
    match tandem_node::audit::verify_dir(&dir) {
        Ok(n) => {
            println!("{}: audit log intact ({n} entries)", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("tandem: {}: {e}", dir.display());
            Ok(ExitCode::from(1))
        }
    }
}
