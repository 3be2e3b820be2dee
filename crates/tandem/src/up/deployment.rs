//! The processes of a deployment on one machine: what each one runs (its
//! arguments, and which secrets of the environment it gets or must not get),
//! the latency proxies of the directed links between regions, and the
//! process lifecycle: start (its output prefixed with its name), supervise
//! (notice a process that exited on its own, restart it if asked), stop
//! (SIGTERM, SIGKILL after 10 s) and stop everything, the router first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tandem_config::Config;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::secrets::Secrets;
use super::UpArgs;
use crate::proxy::{self, LinkControl};

/// One process of the deployment: a region's node, or the router.
pub(super) struct Proc {
    /// Arguments after the executable.
    args: Vec<String>,
    /// Environment variables this process must not inherit (transfer keys of
    /// other jurisdictions: a region never holds another jurisdiction's key).
    env_remove: Vec<String>,
    /// Environment of this process only (its jurisdiction's pseudonym key).
    env_own: Vec<(String, String)>,
    pub(super) url: String,
    /// The name its certificate is verified by (`<region>.region.tandem`,
    /// `router.tandem`).
    pub(super) server_name: String,
    pub(super) child: Option<Child>,
    /// Set when the control API stopped it on purpose.
    stopped_on_purpose: bool,
}

/// Every process of the deployment, by name, and the proxies of its links.
pub(super) struct Deployment {
    /// The `tandem` executable every process runs.
    exe: PathBuf,
    /// Environment of every process (the admin token, the replication secret).
    env: Vec<(String, String)>,
    pub(super) procs: Mutex<BTreeMap<String, Proc>>,
    /// Directed links (from, to): changes of `from` flowing to `to`.
    pub(super) links: BTreeMap<(String, String), Arc<LinkControl>>,
    /// The clients of the health waits (the operator's certificate).
    health: super::health::HealthClients,
    /// The token the control API wants; `None` with `--insecure`.
    pub(super) control_token: Option<String>,
}

impl Deployment {
    /// The health-wait client for process `name`, verifying it by its role.
    pub(super) fn health_client(&self, name: &str) -> super::health::HttpClient {
        let server_name = self.procs.lock().expect("procs")[name].server_name.clone();
        self.health.get(&server_name)
    }
}

impl Deployment {
    /// Every process of `config` (the regions, and the router unless
    /// `--no-router`), none started yet, with a latency proxy started for
    /// each directed link.
    pub(super) async fn plan(
        config: &Config,
        config_path: &Path,
        args: &UpArgs,
        secrets: &Secrets,
        operator_tls: Option<Arc<tandem_http::tls::Tls>>,
    ) -> anyhow::Result<Deployment> {
        let pseudonym_keys = &secrets.pseudonym_keys;
        let scheme = if args.insecure { "http" } else { "https" };
        let insecure: &[&str] = if args.insecure { &["--insecure"] } else { &[] };
        let mut links = BTreeMap::new();
        let mut procs = BTreeMap::new();
        for region in &config.regions {
            let mut node_args = vec![
                "node".to_string(),
                "--config".into(),
                config_path.display().to_string(),
                "--region".into(),
                region.name.clone(),
            ];
            node_args.extend(insecure.iter().map(std::string::ToString::to_string));
            if args.unsafe_ack_region.as_deref() == Some(region.name.as_str()) {
                node_args.push("--unsafe-ack-before-commit".into());
            }
            for (r, ms) in &args.clock_skews {
                if *r == region.name {
                    node_args.push(format!("--clock-skew-ms={ms}"));
                }
            }
            for peer in config.regions.iter().filter(|p| p.name != region.name) {
                let capture = match &args.capture_dir {
                    Some(dir) => Some(proxy::Capture::create(
                        dir,
                        &format!("{}-{}", peer.name, region.name),
                    )?),
                    None => None,
                };
                let control = LinkControl::with_capture(
                    config.link_latency_ms(&region.name, &peer.name),
                    capture,
                );
                let addr = proxy::start(peer.listen, control.clone()).await?;
                links.insert((peer.name.clone(), region.name.clone()), control);
                node_args.push("--peer-url".into());
                node_args.push(format!("{}={scheme}://{addr}", peer.name));
            }
            let mut env_remove: Vec<String> = config
                .transfers
                .iter()
                .filter(|t| t.from != region.jurisdiction)
                .map(|t| t.key_env.clone())
                .collect();
            let mut env_own = Vec::new();
            for (j, (var, key)) in pseudonym_keys {
                if *j == region.jurisdiction {
                    env_own.push((var.clone(), key.clone()));
                } else {
                    env_remove.push(var.clone());
                }
            }
            procs.insert(
                region.name.clone(),
                Proc {
                    args: node_args,
                    env_remove,
                    env_own,
                    url: format!("{scheme}://{}", region.listen),
                    server_name: tandem_http::identity::region_server_name(&region.name),
                    child: None,
                    stopped_on_purpose: false,
                },
            );
        }
        if !args.no_router {
            procs.insert(
                "router".to_string(),
                Proc {
                    args: ["router", "--config", &config_path.display().to_string()]
                        .iter()
                        .chain(insecure)
                        .map(std::string::ToString::to_string)
                        .collect(),
                    env_remove: config
                        .transfers
                        .iter()
                        .map(|t| t.key_env.clone())
                        .chain(pseudonym_keys.values().map(|(v, _)| v.clone()))
                        .collect(),
                    env_own: Vec::new(),
                    url: format!("{scheme}://{}", config.router.listen),
                    server_name: tandem_http::identity::ROUTER_SERVER_NAME.to_owned(),
                    child: None,
                    stopped_on_purpose: false,
                },
            );
        }
        Ok(Deployment {
            exe: std::env::current_exe()?,
            env: vec![
                ("TANDEM_ADMIN_TOKEN".into(), secrets.admin_token.clone()),
                ("TANDEM_REPLICATION_SECRET".into(), secrets.replication_secret.clone()),
            ],
            procs: Mutex::new(procs),
            links,
            health: super::health::health_clients(operator_tls),
            control_token: (!args.insecure).then(|| secrets.admin_token.clone()),
        })
    }
}

pub(super) fn start_proc(d: &Deployment, name: &str) -> anyhow::Result<()> {
    let mut procs = d.procs.lock().expect("procs");
    let p = procs.get_mut(name).with_context(|| format!("no process `{name}`"))?;
    if p.child.is_some() {
        return Ok(());
    }
    let mut cmd = Command::new(&d.exe);
    cmd.args(&p.args).envs(d.env.iter().cloned()).envs(p.env_own.iter().cloned());
    for k in &p.env_remove {
        cmd.env_remove(k);
    }
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    for (stream, is_err) in [
        (
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            false,
        ),
        (
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            true,
        ),
    ] {
        let Some(stream) = stream else { continue };
        let prefix = format!("[{name}]");
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if is_err {
                    eprintln!("{prefix} {line}");
                } else {
                    println!("{prefix} {line}");
                }
            }
        });
    }
    p.child = Some(child);
    p.stopped_on_purpose = false;
    Ok(())
}

pub(super) fn supervise(d: &Deployment, restart: bool) {
    let mut crashed = Vec::new();
    {
        let mut procs = d.procs.lock().expect("procs");
        for (name, p) in procs.iter_mut() {
            let Some(child) = p.child.as_mut() else { continue };
            if let Ok(Some(status)) = child.try_wait() {
                p.child = None;
                if !p.stopped_on_purpose {
                    eprintln!("tandem up: {name} exited on its own ({status})");
                    crashed.push(name.clone());
                }
            }
        }
    }
    if restart {
        for name in crashed {
            eprintln!("tandem up: restarting {name}");
            if let Err(e) = start_proc(d, &name) {
                eprintln!("tandem up: cannot restart {name}: {e:#}");
            }
        }
    }
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
    }
}

/// SIGTERM a process and wait for it (SIGKILL after 10 s).
pub(super) async fn stop_proc(
    d: &Deployment,
    name: &str,
    sig: nix::sys::signal::Signal,
) -> anyhow::Result<()> {
    let child = {
        let mut procs = d.procs.lock().expect("procs");
        let p = procs.get_mut(name).with_context(|| format!("no process `{name}`"))?;
        p.stopped_on_purpose = true;
        p.child.take()
    };
    let Some(mut child) = child else { return Ok(()) };
    signal(&child, sig);
    if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
    Ok(())
}

pub(super) async fn stop_all(d: &Deployment) {
    let names: Vec<String> = d.procs.lock().expect("procs").keys().cloned().collect();
    // The router first, so no request is routed to a region that is stopping.
    let (router, regions): (Vec<_>, Vec<_>) = names.into_iter().partition(|n| n == "router");
    for n in router {
        let _ = stop_proc(d, &n, nix::sys::signal::Signal::SIGTERM).await;
    }
    let stops = regions.iter().map(|n| stop_proc(d, n, nix::sys::signal::Signal::SIGTERM));
    futures_util::future::join_all(stops).await;
}
