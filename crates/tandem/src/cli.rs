//! Command-line arguments (clap derive) and the dispatch to each subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "tandem", version, about = "A multi-region active-active data store")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a whole deployment on this machine: every region, the router, latency proxies.
    Up(crate::up::UpArgs),
    /// Run one region: its store, HTTP API and replication.
    Node(crate::node_cmd::NodeArgs),
    /// Run the global router: home-region routing, failover inside the jurisdiction.
    Router(crate::router_cmd::RouterArgs),
    /// One screen for an operator: health, drains, lag against budgets, conflicts.
    Status(crate::status_cmd::StatusArgs),
    /// Back up one region, encrypted, to a destination of its jurisdiction.
    Backup(crate::backup_cmd::BackupArgs),
    /// Restore a stopped region from a backup (verified before anything changes).
    Restore(crate::backup_cmd::RestoreArgs),
    /// Anti-entropy between a region and every peer, both ways (digest trees).
    Repair(crate::repair_cmd::RepairArgs),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(crate::audit_cmd::AuditCommand),
    /// Run the scripted failover drill against a running deployment.
    Drill(crate::drill::DrillArgs),
    /// Closed-loop HTTP write load against a node or the router.
    Load(crate::load::LoadArgs),
    /// Print the built-in example deployment, or check a config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The deployment's certificate authority and certificates.
    #[command(subcommand)]
    Certs(crate::certs_cmd::CertsCommand),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the built-in example deployment (TOML).
    Example,
    /// Print Prometheus alert rules for a deployment (lag thresholds from its budgets).
    Alerts {
        /// The config file; the built-in example when omitted.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file; exits non-zero with a message naming the bad key.
    Check {
        /// The config file.
        file: PathBuf,
    },
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up(args) => crate::up::run(args),
        Command::Node(args) => crate::node_cmd::run(args),
        Command::Router(args) => crate::router_cmd::run(args),
        Command::Status(args) => crate::status_cmd::run(args),
        Command::Backup(args) => crate::backup_cmd::backup(args),
        Command::Restore(args) => crate::backup_cmd::restore(args),
        Command::Audit(cmd) => crate::audit_cmd::run(cmd),
        Command::Repair(args) => crate::repair_cmd::run(args),
        Command::Drill(args) => crate::drill::run(args),
        Command::Load(args) => crate::load::command(&args),
        Command::Certs(cmd) => crate::certs_cmd::run(cmd),
        Command::Config(ConfigCommand::Example) => crate::config_cmd::example(),
        Command::Config(ConfigCommand::Check { file }) => crate::config_cmd::check(&file),
        Command::Config(ConfigCommand::Alerts { config }) => {
            let config = crate::config_cmd::load_or_example(config.as_deref())?;
            print!("{}", crate::alerts::rules_yaml(&config));
            Ok(ExitCode::SUCCESS)
        }
    }
}
