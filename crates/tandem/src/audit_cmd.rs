//! `tandem audit verify`: check a region's hash-chained audit log for modified,
//! removed or re-ordered entries: the retained segments from their anchor to
//! the head, and, with `[audit] export`, the exported segments from the first
//! entry up to that anchor.

use std::path::PathBuf;
use std::process::ExitCode;

use tandem_node::audit::retention::ExportTarget;
use tandem_node::audit::{chain, verify_dir};

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
    let retained = match verify_dir(&dir) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("tandem: {}: {e}", dir.display());
            return Ok(ExitCode::from(1));
        }
    };
    let from = if retained.anchor.seq == 0 {
        "from the first entry".to_owned()
    } else {
        format!("after entry {} (the anchor)", retained.anchor.seq)
    };
    println!(
        "{}: audit log intact ({} entries retained, {from} to entry {})",
        dir.display(),
        retained.entries(),
        retained.last.seq
    );
    if !config.audit.export {
        if retained.anchor.seq > 0 {
            println!(
                "entries 1 to {} were dropped after their retention, not exported",
                retained.anchor.seq
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let target = match ExportTarget::for_region(&config, &region) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tandem: audit export: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let parts = match rt.block_on(target.read_all()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("tandem: audit export: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    match chain::verify_export(&parts, &retained.anchor) {
        Ok(exported) => {
            println!(
                "{}: {} exported segments intact (entries 1 to {}), joining the retained chain at entry {}",
                target.url,
                parts.len(),
                exported.last.seq,
                retained.anchor.seq
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("tandem: {}: {e}", target.url);
            Ok(ExitCode::from(1))
        }
    }
}
