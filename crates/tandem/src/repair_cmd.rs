//! `tandem repair --config F --region R`: anti-entropy on demand between a
//! region and every peer, both ways: R pulls what differs from each peer
//! (`POST /v1/admin/repair` at R), then each peer pulls what differs from R
//! (`POST /v1/admin/repair?peer=R` at the peer). Only what both regions may
//! hold is compared or sent. Exit 0 when every exchange ran, 1 otherwise.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct RepairArgs {
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The region to repair (with every peer, both ways).
    #[arg(long)]
    pub region: String,
    #[command(flatten)]
    pub connect: crate::connect::ConnectArgs,
}

pub fn run(args: RepairArgs) -> anyhow::Result<ExitCode> {
    let config = crate::config_cmd::load_or_example(args.config.as_deref())?;
    let region = config
        .region(&args.region)
        .with_context(|| format!("region `{}` is not in the config", args.region))?;
    let connection =
        crate::connect::Connection::open(&args.connect, &config, &config.deployment.data_dir)?;
    let token = crate::node_cmd::admin_token(&config.deployment.data_dir)
        .context("no admin token: set TANDEM_ADMIN_TOKEN or keep <data_dir>/admin.token")?;
    let mut calls = vec![(region.name.clone(), connection.url(region.listen), String::new())];
    for peer in config.regions.iter().filter(|r| r.name != region.name) {
        calls.push((
            peer.name.clone(),
            connection.url(peer.listen),
            format!("?peer={}", region.name),
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut failed = false;
    rt.block_on(async {
        for (name, base, query) in calls {
            match call(&connection, &base, &token, &query).await {
                Ok(answer) => {
                    for r in answer["repairs"].as_array().into_iter().flatten() {
                        println!(
                            "{name} from {}: {} of 256 top ranges and {} leaves differed; {} records received, {} changed, {} refused",
                            r["peer"].as_str().unwrap_or("?"),
                            r["tops_differing"],
                            r["leaves_differing"],
                            r["records_received"],
                            r["records_changed"],
                            r["records_refused"],
                        );
                    }
                    for e in answer["errors"].as_array().into_iter().flatten() {
                        failed = true;
                        eprintln!(
                            "tandem: {name} could not repair from {}: {}",
                            e["peer"].as_str().unwrap_or("?"),
                            e["error"].as_str().unwrap_or("?")
                        );
                    }
                }
                Err(e) => {
                    failed = true;
                    eprintln!("tandem: {name}: {e:#}");
                }
            }
        }
    });
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

async fn call(
    connection: &crate::connect::Connection,
    base: &str,
    token: &str,
    query: &str,
) -> anyhow::Result<Value> {
    let url = format!("{base}/v1/admin/repair{query}");
    let (status, body) = crate::connect::admin_call(
        connection,
        hyper::Method::POST,
        &url,
        token,
        "asking to repair",
    )
    .await?;
    if !status.is_success() {
        anyhow::bail!("{base} refused the repair ({status}): {}", String::from_utf8_lossy(&body));
    }
    Ok(serde_json::from_slice(&body)?)
}
