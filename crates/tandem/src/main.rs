//! The `tandem` command: a thin layer that parses arguments, sets up logging
//! and calls into the library crates. Each subcommand lives in its own module.

mod alerts;
mod audit_cmd;
mod backup_cmd;
mod certs_cmd;
mod cli;
mod config_cmd;
mod connect;
mod drill;
mod load;
mod node_cmd;
mod proxy;
mod repair_cmd;
mod router_cmd;
mod status_cmd;
mod up;

use clap::Parser;

/// mimalloc: allocation-heavy paths (redb's pages, request buffers) spent a
/// sixth of the node's CPU in glibc malloc and free (bench/profile). Built
/// `no_thp`, and transparent huge pages are off for the process (see
/// `main`): a node that applies a backlog spent a third of its CPU zeroing
/// fresh 2 MiB pages for mimalloc's arenas (BENCHMARKS.md, catch-up).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Before the runtime's threads and the store's cache allocate; the
    // processes `tandem up` starts inherit it. A kernel without the flag
    // just keeps its default.
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_thp_disable(true);
    let cli = cli::Cli::parse();
    init_tracing();
    match cli::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tandem: error: {e:#}");
            std::process::ExitCode::from(exit_code(&e))
        }
    }
}

/// 2 when a process refuses to start because its configuration or
/// credentials are incomplete or wrong (nothing was started), 1 otherwise.
fn exit_code(e: &anyhow::Error) -> u8 {
    let refused = e.chain().any(|c| {
        c.is::<tandem_node::StartupError>()
            || c.is::<tandem_config::ConfigError>()
            || c.is::<tandem_http::tls::TlsError>()
            || c.is::<tandem_http::api_keys::ApiKeysError>()
            || c.is::<Refused>()
    });
    if refused {
        2
    } else {
        1
    }
}

/// A process refused to start (exit 2) for a reason only the binary checks.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Structured logs on stderr; `RUST_LOG` selects what is shown (default `info`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
