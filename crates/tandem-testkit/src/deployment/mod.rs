//! A whole deployment of the real binary, on free loopback ports with its
//! own temporary directory, so that tests run in parallel. Two ways to run
//! it: under `tandem up` (with the router or without; its control API cuts,
//! heals and slows links and kills and starts processes), or as separate
//! `tandem node` processes started by the kit, each reaching its peers
//! through a link proxy of the kit that can be cut and healed like those of
//! `tandem up` (for per-node flags). Either way a test sees one surface:
//! region and router URLs, requests, faults ([`faults`]), data-plane helpers
//! ([`data`]) and waits that explain what they saw when they time out
//! ([`converge`]). [`Builder`] says how to start one.
//!
//! Dropping a deployment stops every process it started; when the test is
//! failing, it first prints the tail of every process log.

mod builder;
pub mod converge;
pub mod data;
mod direct;
pub mod faults;
mod proxy;
mod schedule;
mod up;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

pub use builder::Builder;
pub use schedule::FaultPlan;
use tandem_config::Config;

use crate::http::Client;
use crate::process::Tandem;

/// The default bound of the convergence waits (they normally take well
/// under a second).
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The time limits of a deployment: of its start, its stop, its requests
/// and its waits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long the deployment, or a restarted process, may take to be healthy.
    pub start: Duration,
    /// How long a stopped process may take to exit before it is SIGKILLed.
    pub stop: Duration,
    /// Per request.
    pub request: Duration,
    /// Per connection attempt, when shorter than a request.
    pub connect: Option<Duration>,
    /// Per request of the control API (`start` answers once healthy).
    pub control: Duration,
    /// Default bound of the convergence waits.
    pub converge: Duration,
    /// Longest run of one `tandem` command ([`Deployment::cli`]).
    pub cli: Duration,
    /// Pause between two polls of a wait.
    pub poll: Duration,
}

impl Default for Limits {
    /// Tests run in parallel on small machines.
    fn default() -> Limits {
        Limits {
            start: Duration::from_secs(90),
            stop: Duration::from_secs(20),
            request: Duration::from_secs(10),
            connect: None,
            control: Duration::from_secs(10),
            converge: CONVERGE_TIMEOUT,
            cli: Duration::from_secs(60),
            poll: Duration::from_millis(50),
        }
    }
}

/// What a running deployment needs to know of how it was started.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub bin: Tandem,
    pub admin_token: String,
    pub replication_secret: Option<String>,
    /// Environment of every process started (`None` removes a variable).
    pub env: Vec<(String, Option<String>)>,
    pub limits: Limits,
    /// Lines of each process log printed when a test fails.
    pub log_tail_lines: usize,
    /// `--insecure`: plaintext and no authentication.
    pub insecure: bool,
}

impl Settings {
    /// `https`, or `http` with `--insecure`.
    pub fn scheme(&self) -> &'static str {
        if self.insecure {
            "http"
        } else {
            "https"
        }
    }
}

/// A running deployment.
pub struct Deployment {
    /// Removed (with the data) when the deployment is dropped.
    _dir: tempfile::TempDir,
    /// The canonical path of the directory (what the processes' command
    /// lines name).
    root: PathBuf,
    config: Config,
    config_path: PathBuf,
    data_dir: PathBuf,
    capture_dir: Option<PathBuf>,
    regions: BTreeMap<String, String>,
    router: Option<String>,
    runner: Runner,
    /// Trusts the deployment's CA, presents the operator's certificate and
    /// sends the kit's API key (plain HTTP with `--insecure`).
    http: Client,
    /// Trusts the CA and presents nothing: a client with no credentials.
    anonymous_http: Client,
    /// Presents the router's certificate: what a node trusts to send
    /// `X-Tandem-Failover` (plain HTTP with `--insecure`).
    router_http: Client,
    /// For the control API, whose `start` answers once the process is
    /// healthy; it sends the admin token.
    control_http: Client,
    settings: Settings,
    /// Numbers the output files of CLI runs.
    cli_runs: AtomicU32,
    started: Instant,
}

pub(crate) enum Runner {
    Up(up::UpRunner),
    Direct(direct::DirectRunner),
}

impl Deployment {
    /// `https://127.0.0.1:PORT` of a region (`http://` with `--insecure`).
    pub fn url(&self, region: &str) -> &str {
        self.regions.get(region).unwrap_or_else(|| panic!("no region `{region}`"))
    }

    /// `https://127.0.0.1:PORT` of the router (`http://` with `--insecure`).
    pub fn router(&self) -> &str {
        self.router.as_deref().expect("the deployment runs the router")
    }

    /// Region names and URLs.
    pub fn regions(&self) -> &BTreeMap<String, String> {
        &self.regions
    }

    /// The names of the regions, in config order.
    pub fn region_names(&self) -> Vec<&str> {
        self.config.regions.iter().map(|r| r.name.as_str()).collect()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The config file the deployment was started from.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The config file's path as a command-line argument.
    pub fn config_arg(&self) -> &str {
        self.config_path.to_str().expect("a UTF-8 path")
    }

    /// `<root>/data`; each region keeps its store under `<data_dir>/<region>`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A region's own data directory.
    pub fn region_dir(&self, region: &str) -> PathBuf {
        self.data_dir.join(region)
    }

    /// Where the link captures go (`<from>-<to>.bin`), when capturing.
    pub fn capture_dir(&self) -> Option<&Path> {
        self.capture_dir.as_deref()
    }

    /// The deployment's own directory (config, data, logs).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/backups/<j>` for jurisdiction `j` (lower case), when the
    /// deployment was built with backup destinations.
    pub fn backup_dir(&self, j: &str) -> PathBuf {
        self.root.join("backups").join(j)
    }

    /// `file:///<root>/backups/<j>/`.
    pub fn backup_url(&self, j: &str) -> String {
        format!("file://{}/", self.backup_dir(j).display())
    }

    /// The operator's client (its certificate, the kit's API key).
    pub fn http(&self) -> &Client {
        &self.http
    }

    /// A client with no credentials at all (it still trusts the CA).
    pub fn anonymous_http(&self) -> &Client {
        &self.anonymous_http
    }

    /// A client with the router's certificate, for requests a node takes
    /// only from the router (`X-Tandem-Failover`).
    pub fn router_http(&self) -> &Client {
        &self.router_http
    }

    /// `<data_dir>/certs`: the CA, every holder's certificate and the CRL.
    pub fn certs_dir(&self) -> PathBuf {
        self.data_dir.join("certs")
    }

    /// A client that trusts the CA and presents `holder`'s certificate
    /// (`None`: none), sending `auth` as `Authorization` unless a request
    /// names its own.
    pub fn client_as(&self, holder: Option<&str>, auth: Option<&str>) -> Client {
        let tls = crate::tls::client_config(&self.certs_dir(), holder);
        Client::tls(self.settings.limits.request, self.settings.limits.connect, tls, auth)
    }

    /// Whether it runs with `--insecure`.
    pub fn insecure(&self) -> bool {
        self.settings.insecure
    }

    pub fn admin_token(&self) -> &str {
        &self.settings.admin_token
    }

    /// The default bound of convergence waits.
    pub fn converge_timeout(&self) -> Duration {
        self.settings.limits.converge
    }

    /// Milliseconds since the deployment was up.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The jurisdiction of a region.
    pub fn jurisdiction_of(&self, region: &str) -> &str {
        self.config.jurisdiction_of(region).unwrap_or_else(|| panic!("no region `{region}`"))
    }

    /// Poll `cond` at this deployment's pace until it holds or `timeout` passes.
    pub fn wait_until(&self, timeout: Duration, cond: impl FnMut() -> bool) -> bool {
        crate::waits::poll_until(timeout, self.settings.limits.poll, cond)
    }

    /// Poll `cond` until it holds; panics naming `what` after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, cond: impl FnMut() -> bool) -> Duration {
        crate::waits::wait_for(what, timeout, self.settings.limits.poll, cond)
    }

    // ---- logs ---------------------------------------------------------------

    fn log_paths(&self) -> Vec<PathBuf> {
        match &self.runner {
            Runner::Up(up) => vec![up.log.clone()],
            Runner::Direct(direct) => direct.log_paths(),
        }
    }

    /// The tail of every process log of this deployment.
    pub fn logs(&self) -> String {
        let n = self.settings.log_tail_lines;
        self.log_paths().iter().map(|p| crate::process::log_tail(p, n)).collect()
    }

    /// Every process log, whole (`tandem up` prefixes each line with the
    /// process, e.g. `[us-east]`).
    pub fn log_text(&self) -> String {
        self.log_paths().iter().map(|p| std::fs::read_to_string(p).unwrap_or_default()).collect()
    }

    // ---- stopping -----------------------------------------------------------

    /// SIGTERM every process and wait until all have exited: afterwards the
    /// data directories are complete and quiet. What does not exit within
    /// the stop time-out is SIGKILLed, and so are the regions it leaves.
    pub fn stop(&self) {
        let clean = match &self.runner {
            Runner::Up(up) => up.stop(self.settings.limits.stop),
            Runner::Direct(direct) => direct.stop(self.settings.limits.stop),
        };
        if !clean {
            eprintln!(
                "the deployment did not stop within {:?}; SIGKILL",
                self.settings.limits.stop
            );
            crate::process::kill_orphans(&self.root);
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("deployment under {}\n{}", self.root.display(), self.logs());
        }
        self.stop();
    }
}
