//! `tandem drill`: the reference article's failover drill, scripted, against a
//! running deployment. It drives a synthetic workload through the router,
//! takes the target region out (`isolate`: drained at the router and cut off
//! from replication while it keeps running; `kill`: its process killed
//! through the `tandem up` control API), observes, validates, restores, and
//! proves afterwards that every acknowledged write is where it must be and
//! nowhere it must not be. It measures Time-to-Detect and Time-to-Route and
//! writes `report.json`, `report.md` and `timeline.svg`.
//!
//! Exit status: 0 the drill passed, 1 it found a problem, 2 it could not run
//! (bad arguments, an unreachable deployment, a failed pre-drill check).
//!
//! Layout: `script` runs the drill from start to end; `phases` holds the
//! six phases, one file each (with the pre-drill's static checks in
//! `phases/precheck`). What the phases borrow: `context` (the settings, the
//! clock, the journal, the monitor and the logbook; the moments and results
//! they hand on), `deployment` (the drill's own calls to the regions, the
//! router and the control API), `target` (what was done to the target, to be
//! undone), `traffic` (the workload, the Time-to-Route `probes` and the smoke
//! writes, over `workload`'s requests). Beneath them: `plan` (timings, the
//! deployment's shape), `http`, `journal` (the clock and the record of every
//! request), `monitor` (polling the deployment), `progress` (the live
//! display) and `outcome` (the report and the files). Pure: `measure` (TTD,
//! TTR, classes, conflicts, the routing rules), `verify` (read-back and
//! residency), `detail` (how checks quote what they saw), `report` and `svg`.

mod context;
mod deployment;
mod detail;
mod http;
mod journal;
mod measure;
mod monitor;
mod outcome;
mod phases;
mod plan;
mod probes;
mod progress;
mod report;
mod script;
mod svg;
mod target;
mod traffic;
mod verify;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

pub use plan::{Mode, TimingsPreset};

/// Exit status of a drill that passed.
pub const EXIT_PASS: u8 = 0;
/// Exit status of a drill that found a problem.
pub const EXIT_FAIL: u8 = 1;
/// Exit status of a drill that could not run.
pub const EXIT_CANNOT_RUN: u8 = 2;

#[derive(clap::Args, Debug, Clone)]
pub struct DrillArgs {
    /// Deployment config (TOML); the built-in example when omitted.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The region to take out.
    #[arg(long)]
    pub target: String,
    /// `isolate`: drain at the router and stop replication, the process keeps
    /// running; `kill`: kill the process (needs the `tandem up` control API).
    #[arg(long, value_enum, default_value = "isolate")]
    pub mode: Mode,
    /// Where report.json, report.md and timeline.svg go
    /// [default: ./drill-<target>-<mode>-<timestamp>]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Phase lengths: `short` (about a minute) or `production` (the article's
    /// 15, 5, 20, 10, 10 and 30 minutes).
    #[arg(long, value_enum, default_value = "short")]
    pub timings: TimingsPreset,
    /// The deployment's data directory (up.json, admin.token)
    /// [default: the config's deployment.data_dir]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// TEST ONLY: multiply every phase length by this factor.
    #[arg(long, hide = true, default_value_t = 1.0)]
    pub phase_scale: f64,
    /// Seed of the workload's choices [default: from the clock].
    #[arg(long, hide = true)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub connect: crate::connect::ConnectArgs,
}

pub fn run(args: DrillArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let code = rt.block_on(async {
        match setup(&args) {
            Ok(settings) => script::drill(settings).await,
            Err(e) => {
                eprintln!("tandem drill: cannot run: {e:#}");
                EXIT_CANNOT_RUN
            }
        }
    });
    // Tasks still waiting on a dead connection must not hold the exit up.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(ExitCode::from(code))
}

/// Everything the drill needs, resolved from the arguments and the files.
pub struct Settings {
    pub config: tandem_config::Config,
    pub target: String,
    pub mode: Mode,
    pub timings: plan::Timings,
    pub timings_name: String,
    pub out: PathBuf,
    pub admin_token: Option<String>,
    /// Base URL of the `tandem up` control API, from `<data_dir>/up.json`.
    pub control: Option<String>,
    pub seed: u64,
    /// How the drill reaches the deployment (TLS and credentials).
    pub connection: crate::connect::Connection,
}

fn setup(args: &DrillArgs) -> anyhow::Result<Settings> {
    let config = crate::config_cmd::load_or_example(args.config.as_deref())?;
    if config.region(&args.target).is_none() {
        let names: Vec<&str> = config.regions.iter().map(|r| r.name.as_str()).collect();
        anyhow::bail!(
            "--target `{}` is not a region of the deployment ({})",
            args.target,
            names.join(", ")
        );
    }
    if !(args.phase_scale.is_finite() && args.phase_scale > 0.0 && args.phase_scale <= 100.0) {
        anyhow::bail!("--phase-scale must be above 0 and at most 100");
    }
    let timings = plan::Timings::preset(args.timings).scaled(args.phase_scale);
    let preset = match args.timings {
        TimingsPreset::Short => "short",
        TimingsPreset::Production => "production",
    };
    let timings_name = if args.phase_scale == 1.0 {
        preset.to_owned()
    } else {
        format!("{preset} x{}", args.phase_scale)
    };
    let data_dir = args.data_dir.clone().unwrap_or_else(|| config.deployment.data_dir.clone());
    let admin_token = admin_token(&data_dir);
    let control = control_url(&data_dir);
    let connection = crate::connect::Connection::open(&args.connect, &config, &data_dir)?;
    let clock = journal::DrillClock::start();
    let out = match &args.out {
        Some(o) => o.clone(),
        None => {
            let stamp: String = report::rfc3339(clock.start_unix_ms)
                .chars()
                .filter(|c| c.is_ascii_digit() || *c == 'T')
                .take(15)
                .collect();
            PathBuf::from(format!("drill-{}-{}-{stamp}Z", args.target, args.mode.as_str()))
        }
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let seed = args.seed.unwrap_or(clock.start_unix_ms);
    Ok(Settings {
        config,
        target: args.target.clone(),
        mode: args.mode,
        timings,
        timings_name,
        out,
        admin_token,
        control,
        seed,
        connection,
    })
}

/// `TANDEM_ADMIN_TOKEN`, else `<data_dir>/admin.token`.
fn admin_token(data_dir: &Path) -> Option<String> {
    match std::env::var("TANDEM_ADMIN_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Some(t.trim().to_owned()),
        _ => std::fs::read_to_string(data_dir.join("admin.token"))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()),
    }
}

/// The control API named in `<data_dir>/up.json`.
fn control_url(data_dir: &Path) -> Option<String> {
    let text = std::fs::read(data_dir.join("up.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    v["control"].as_str().map(|s| s.trim_end_matches('/').to_owned())
}
