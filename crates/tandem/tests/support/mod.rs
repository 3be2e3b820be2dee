//! The replication tests' harness: a whole three-region deployment of the real
//! `tandem` binary on free loopback ports, built from the example config with
//! its own temporary data directory, so that tests run in parallel. Two modes:
//! under `tandem up --no-router` (its control API cuts and heals links and
//! kills and starts regions), or as three `tandem node` processes started here
//! (for per-region flags such as `--clock-skew-ms`), each reaching its peers
//! through a link proxy of this harness that can be cut and healed like the
//! ones of `tandem up`. Either way a test sees the same surface: region URLs,
//! `cut`/`heal` of directed links, `kill` (SIGKILL) and `start` of a region,
//! blocking HTTP helpers, and waits that poll and explain what they saw when
//! they time out. Dropping the deployment stops every process it started.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill as send_signal, Signal};
use nix::unistd::Pid;
use reqwest::Method;
use serde_json::{json, Value};

/// Admin token the deployments run with (`TANDEM_ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "replication-test-admin-token";
/// Shared replication secret (`TANDEM_REPLICATION_SECRET`).
pub const REPLICATION_SECRET: &str = "replication-test-secret";
/// The example deployment's regions.
pub const ALL: [&str; 3] = ["eu-west", "eu-central", "us-east"];
/// The regions of the EU jurisdiction.
pub const EU: [&str; 2] = ["eu-west", "eu-central"];

/// How long a deployment (or a restarted region) may take to become healthy.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopped process may take to exit before it is SIGKILLed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Per-request time-out of the HTTP client.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound of the convergence waits (they normally take well under a second).
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two polls of a wait.
pub const POLL: Duration = Duration::from_millis(100);
/// Lines of each process log printed when a test fails.
const LOG_TAIL_LINES: usize = 80;

/// How to run a deployment.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Start the regions as `tandem node` processes with this harness's link
    /// proxies instead of under `tandem up`.
    pub direct: bool,
    /// Clock skew per region, in ms (direct mode only: `tandem up` passes no
    /// per-region flags).
    pub clock_skew_ms: BTreeMap<String, i64>,
    /// One-way latency overrides of the config's links, by unordered region
    /// pair (up mode only: the harness's proxies add no latency).
    pub latency_ms: Vec<(String, String, u64)>,
}

impl Options {
    /// Direct mode with the given clock skews.
    pub fn direct_with_skew(skews: &[(&str, i64)]) -> Options {
        Options {
            direct: true,
            clock_skew_ms: skews.iter().map(|(r, s)| ((*r).to_owned(), *s)).collect(),
            ..Options::default()
        }
    }
}

/// A running deployment. Every method panics with a useful message on a
/// transport error or a time-out; a test is a straight line of steps.
pub struct Deployment {
    dir: tempfile::TempDir,
    config_path: PathBuf,
    regions: BTreeMap<String, String>,
    runner: Runner,
    http: reqwest::blocking::Client,
}

enum Runner {
    Up(UpRunner),
    Direct(DirectRunner),
}

struct UpRunner {
    child: Mutex<Option<Child>>,
    control: String,
    log: PathBuf,
    /// Region pids as last reported by the control API (to reap orphans if
    /// `tandem up` must be SIGKILLed).
    pids: Mutex<BTreeMap<String, u32>>,
}

struct DirectRunner {
    nodes: BTreeMap<String, DirectNode>,
    /// Directed links `(from, to)`: the proxy `to` pulls `from`'s changes through.
    links: BTreeMap<(String, String), LinkProxy>,
}

struct DirectNode {
    args: Vec<String>,
    log: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Deployment {
    /// The example deployment under `tandem up`.
    pub fn up() -> Deployment {
        Deployment::start(Options::default())
    }

    pub fn start(opts: Options) -> Deployment {
        let dir = tempfile::Builder::new()
            .prefix("tandem-repl-")
            .tempdir()
            .expect("create a temporary directory");
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("create the data directory");
        let config = deployment_config(&data_dir, &opts);
        let config_path = dir.path().join("tandem.toml");
        std::fs::write(&config_path, toml::to_string(&config).expect("config encodes"))
            .expect("write the config");
        let regions: BTreeMap<String, String> = config
            .regions
            .iter()
            .map(|r| (r.name.clone(), format!("http://{}", r.listen)))
            .collect();
        let http = reqwest::blocking::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()
            .expect("build the HTTP client");
        let runner = if opts.direct {
            Runner::Direct(start_direct(&config, &config_path, &data_dir, &opts, dir.path()))
        } else {
            assert!(opts.clock_skew_ms.is_empty(), "clock skew needs direct mode");
            Runner::Up(start_up(&config_path, &data_dir, dir.path()))
        };
        let d = Deployment { dir, config_path, regions, runner, http };
        for region in ALL {
            d.wait_healthy(region);
        }
        if let Runner::Up(up) = &d.runner {
            let pids = d.up_pids(&up.control);
            *up.pids.lock().expect("pids") = pids;
        }
        d
    }

    /// `http://127.0.0.1:PORT` of a region.
    pub fn url(&self, region: &str) -> &str {
        self.regions.get(region).unwrap_or_else(|| panic!("no region `{region}`"))
    }

    // ---- faults -------------------------------------------------------------

    /// Cut the directed link carrying `from`'s changes to `to` (`*` matches
    /// every region): open connections close and new ones are refused.
    pub fn cut(&self, from: &str, to: &str) {
        self.link_action(from, to, "cut");
    }

    pub fn heal(&self, from: &str, to: &str) {
        self.link_action(from, to, "heal");
    }

    /// Cut both directions between two regions.
    pub fn partition(&self, a: &str, b: &str) {
        self.cut(a, b);
        self.cut(b, a);
    }

    fn link_action(&self, from: &str, to: &str, action: &str) {
        match &self.runner {
            Runner::Up(up) => {
                let url = format!("{}/v1/links/{from}/{to}/{action}", up.control);
                let (status, body) = self.call(Method::POST, &url, None, &[]).expect("control API");
                assert_eq!(status, 200, "{action} {from}->{to}: {body}");
            }
            Runner::Direct(direct) => {
                let mut matched = 0;
                for ((f, t), proxy) in &direct.links {
                    if (from == "*" || f == from) && (to == "*" || t == to) {
                        matched += 1;
                        match action {
                            "cut" => proxy.cut(),
                            "heal" => proxy.heal(),
                            _ => unreachable!("link action {action}"),
                        }
                    }
                }
                assert!(matched > 0, "no link {from}->{to}");
            }
        }
    }

    /// `kill -9` a region's process and wait until it is gone.
    pub fn kill(&self, region: &str) {
        match &self.runner {
            Runner::Up(up) => {
                let url = format!("{}/v1/processes/{region}/kill", up.control);
                let (status, body) = self.call(Method::POST, &url, None, &[]).expect("control API");
                assert_eq!(status, 200, "kill {region}: {body}");
            }
            Runner::Direct(direct) => {
                let node = &direct.nodes[region];
                let mut child = node.child.lock().expect("child");
                let mut c = child.take().unwrap_or_else(|| panic!("{region} is not running"));
                c.kill().expect("SIGKILL");
                c.wait().expect("reap");
            }
        }
    }

    /// Start a stopped region again on its data and wait until it is healthy.
    pub fn start_region(&self, region: &str) {
        match &self.runner {
            Runner::Up(up) => {
                let url = format!("{}/v1/processes/{region}/start", up.control);
                let (status, body) = self.call(Method::POST, &url, None, &[]).expect("control API");
                assert_eq!(status, 200, "start {region}: {body}");
            }
            Runner::Direct(direct) => {
                let node = &direct.nodes[region];
                let mut child = node.child.lock().expect("child");
                assert!(child.is_none(), "{region} is running");
                *child = Some(spawn_node(&node.args, &node.log));
            }
        }
        self.wait_healthy(region);
        if let Runner::Up(up) = &self.runner {
            let pids = self.up_pids(&up.control);
            up.pids.lock().expect("pids").extend(pids);
        }
    }

    fn wait_healthy(&self, region: &str) {
        let url = format!("{}/healthz", self.url(region));
        let started = Instant::now();
        loop {
            if let Ok((200, _)) = self.call(Method::GET, &url, None, &[]) {
                return;
            }
            if let Some(exit) = self.exited(region) {
                panic!("{region} exited ({exit}) before it became healthy\n{}", self.logs());
            }
            if started.elapsed() > START_TIMEOUT {
                panic!("{region} not healthy within {START_TIMEOUT:?}\n{}", self.logs());
            }
            std::thread::sleep(POLL);
        }
    }

    /// The exit status of a process that stopped on its own, if any.
    fn exited(&self, region: &str) -> Option<String> {
        let check = |child: &Mutex<Option<Child>>| {
            let mut child = child.lock().expect("child");
            let status = child.as_mut()?.try_wait().ok()??;
            Some(status.to_string())
        };
        match &self.runner {
            Runner::Up(up) => check(&up.child).map(|s| format!("tandem up: {s}")),
            Runner::Direct(direct) => check(&direct.nodes[region].child),
        }
    }

    fn up_pids(&self, control: &str) -> BTreeMap<String, u32> {
        let url = format!("{control}/v1/deployment");
        let (status, body) = self.call(Method::GET, &url, None, &[]).expect("control API");
        assert_eq!(status, 200, "GET /v1/deployment: {body}");
        body["processes"]
            .as_object()
            .expect("processes")
            .iter()
            .filter_map(|(name, p)| Some((name.clone(), p["pid"].as_u64()? as u32)))
            .collect()
    }

    // ---- HTTP ---------------------------------------------------------------

    /// One request; the body answered as JSON (a JSON string when it is not JSON).
    pub fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> reqwest::Result<(u16, Value)> {
        let mut req = self.http.request(method, url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send()?;
        let status = resp.status().as_u16();
        let text = resp.text()?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    /// A request to a region; panics on a transport error.
    pub fn request(
        &self,
        method: Method,
        region: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.url(region));
        self.call(method.clone(), &url, body, &[]).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
    }

    pub fn get(&self, region: &str, path: &str) -> (u16, Value) {
        self.request(Method::GET, region, path, None)
    }

    fn must(&self, method: Method, region: &str, path: &str, body: &Value) -> Value {
        let (status, resp) = self.request(method.clone(), region, path, Some(body));
        assert_eq!(status, 200, "{method} {path} at {region} with {body}: {resp}");
        resp
    }

    /// `PUT /v1/records/{entity}/{id}` (lww); answers `{"region","hlc","version"}`.
    pub fn put_record(&self, region: &str, entity: &str, id: &str, value: Value) -> Value {
        self.must(
            Method::PUT,
            region,
            &format!("/v1/records/{entity}/{id}"),
            &json!({"value": value}),
        )
    }

    /// `PATCH /v1/records/{entity}/{id}` (lww-fields).
    pub fn patch_record(&self, region: &str, entity: &str, id: &str, fields: Value) -> Value {
        self.must(
            Method::PATCH,
            region,
            &format!("/v1/records/{entity}/{id}"),
            &json!({"fields": fields}),
        )
    }

    /// `POST /v1/records/{entity}/{id}/ops` (counters, or-set).
    pub fn op(&self, region: &str, entity: &str, id: &str, op: Value) -> Value {
        self.must(Method::POST, region, &format!("/v1/records/{entity}/{id}/ops"), &op)
    }

    /// The materialized value of a record; `None` when the region answers 404.
    pub fn value(&self, region: &str, entity: &str, id: &str) -> Option<Value> {
        match self.get(region, &format!("/v1/records/{entity}/{id}")) {
            (200, body) => Some(body["value"].clone()),
            (404, _) => None,
            (status, body) => panic!("GET {entity}/{id} at {region}: {status} {body}"),
        }
    }

    /// `GET /v1/digest?entity=E`: the digest and the number of records.
    pub fn digest(&self, region: &str, entity: &str) -> (String, u64) {
        let (status, body) = self.get(region, &format!("/v1/digest?entity={entity}"));
        assert_eq!(status, 200, "digest of {entity} at {region}: {body}");
        let digest = body["digest"].as_str().expect("digest").to_owned();
        (digest, body["records"].as_u64().expect("records"))
    }

    /// The Prometheus text of a region.
    pub fn metrics(&self, region: &str) -> String {
        let url = format!("{}/metrics", self.url(region));
        let resp = self.http.get(&url).send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
        resp.text().expect("metrics text")
    }

    pub fn status(&self, region: &str) -> Value {
        let (status, body) = self.get(region, "/v1/status");
        assert_eq!(status, 200, "status of {region}: {body}");
        body
    }

    /// `GET /v1/conflicts?limit=1000`, newest first.
    pub fn conflicts(&self, region: &str) -> Vec<Value> {
        let (status, body) = self.get(region, "/v1/conflicts?limit=1000");
        assert_eq!(status, 200, "conflicts of {region}: {body}");
        body["conflicts"].as_array().expect("conflicts").clone()
    }

    /// `POST /v1/admin/{action}` with the admin token (`isolate`, `rejoin`).
    pub fn admin(&self, region: &str, action: &str) -> Value {
        let url = format!("{}/v1/admin/{action}", self.url(region));
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let (status, body) = self
            .call(Method::POST, &url, None, &[("authorization", &auth)])
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        assert_eq!(status, 200, "{action} {region}: {body}");
        body
    }

    /// Register a subject at its home region and wait until every region knows it.
    pub fn register_subject(&self, subject: &str, home: &str) {
        self.must(
            Method::PUT,
            home,
            &format!("/v1/subjects/{subject}"),
            &json!({"home_region": home}),
        );
        let known = || {
            ALL.iter().all(|r| {
                let (status, body) = self.get(r, &format!("/v1/subjects/{subject}"));
                status == 200 && body["home_region"] == home
            })
        };
        assert!(wait_until(CONVERGE_TIMEOUT, known), "subject {subject} did not replicate");
    }

    // ---- waits --------------------------------------------------------------

    /// Wait until `regions` hold equal digests of `entity`; answers how long it
    /// took. On time-out, panics with every region's digest and link status.
    pub fn wait_converged(&self, entity: &str, regions: &[&str], timeout: Duration) -> Duration {
        let started = Instant::now();
        let equal = || {
            let digests: Vec<(String, u64)> =
                regions.iter().map(|r| self.digest(r, entity)).collect();
            digests.windows(2).all(|w| w[0] == w[1])
        };
        if wait_until(timeout, equal) {
            return started.elapsed();
        }
        let seen: Vec<String> =
            regions.iter().map(|r| format!("{r}: {:?}", self.digest(r, entity))).collect();
        panic!(
            "`{entity}` did not converge within {timeout:?} across {regions:?}:\n{}\n{}",
            seen.join("\n"),
            self.link_report()
        );
    }

    /// Wait until every one of `regions` shows `expected` for a record
    /// (`None`: answers 404); answers how long it took.
    pub fn wait_value(
        &self,
        regions: &[&str],
        entity: &str,
        id: &str,
        expected: Option<&Value>,
        timeout: Duration,
    ) -> Duration {
        let started = Instant::now();
        let there = || regions.iter().all(|r| self.value(r, entity, id).as_ref() == expected);
        if wait_until(timeout, there) {
            return started.elapsed();
        }
        let seen: Vec<String> =
            regions.iter().map(|r| format!("{r}: {:?}", self.value(r, entity, id))).collect();
        panic!(
            "{entity}/{id} is not {expected:?} everywhere after {timeout:?}:\n{}\n{}",
            seen.join("\n"),
            self.link_report()
        );
    }

    /// One line per region and peer: connected, cursor, queue, last error.
    pub fn link_report(&self) -> String {
        let mut out = String::new();
        for region in ALL {
            let Ok((200, status)) =
                self.call(Method::GET, &format!("{}/v1/status", self.url(region)), None, &[])
            else {
                out.push_str(&format!("{region}: no status\n"));
                continue;
            };
            for p in status["peers"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{region} <- {}: connected={} cursor={} peer_last_seq={} queue={} forwarded={} error={}\n",
                    p["peer"], p["connected"], p["cursor"], p["peer_last_seq"], p["queue_depth"],
                    p["forwarded"], p["last_error"]
                ));
            }
        }
        out
    }

    /// The tail of every process log of this deployment.
    pub fn logs(&self) -> String {
        let paths: Vec<PathBuf> = match &self.runner {
            Runner::Up(up) => vec![up.log.clone()],
            Runner::Direct(direct) => direct.nodes.values().map(|n| n.log.clone()).collect(),
        };
        let mut out = String::new();
        for p in paths {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            out.push_str(&format!(
                "---- {} (last {} lines)\n{}\n",
                p.display(),
                tail.len(),
                tail.join("\n")
            ));
        }
        out
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("deployment under {}\n{}", self.dir.path().display(), self.logs());
        }
        match &self.runner {
            Runner::Up(up) => {
                let mut child = up.child.lock().expect("child");
                if let Some(c) = child.as_mut() {
                    let _ = send_signal(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
                    if !wait_exit(c, STOP_TIMEOUT) {
                        // `up` did not stop its regions: reap them ourselves.
                        eprintln!("tandem up did not stop within {STOP_TIMEOUT:?}; SIGKILL");
                        let _ = c.kill();
                        let _ = c.wait();
                        let pids = up.pids.lock().expect("pids");
                        for pid in pids.values() {
                            kill_if_ours(*pid, &self.config_path);
                        }
                    }
                }
            }
            Runner::Direct(direct) => {
                let mut children: Vec<Child> = direct
                    .nodes
                    .values()
                    .filter_map(|n| n.child.lock().expect("child").take())
                    .collect();
                for c in &children {
                    let _ = send_signal(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
                }
                for c in &mut children {
                    if !wait_exit(c, STOP_TIMEOUT) {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                }
            }
        }
    }
}

/// Wait up to `timeout` for a signalled process to exit.
fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// SIGKILL a pid only if its command line names this deployment's config
/// (the pid could have been reused).
fn kill_if_ours(pid: u32, config: &Path) {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return };
    if String::from_utf8_lossy(&cmdline)
        .contains(&*config.parent().unwrap_or(config).to_string_lossy())
    {
        let _ = send_signal(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

/// Poll `cond` every [`POLL`] until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if started.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// The sum of every sample of `name` whose labels include all of `labels`
/// (0 when there is none) in Prometheus text.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric_name, label_text) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric_name != name {
                return None;
            }
            let have = parse_labels(label_text);
            labels
                .iter()
                .all(|(k, v)| have.get(*k).map(String::as_str) == Some(*v))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(n);
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').trim().to_owned(), value);
        rest = &after[end..];
    }
    out
}

// ---- starting ----------------------------------------------------------------

/// The example deployment on free loopback ports, with its data under `data_dir`.
fn deployment_config(data_dir: &Path, opts: &Options) -> tandem_config::Config {
    let mut config = tandem_config::Config::example();
    let ports = free_ports(config.regions.len() + 1);
    for (region, port) in config.regions.iter_mut().zip(&ports) {
        region.listen = SocketAddr::from(([127, 0, 0, 1], *port));
    }
    config.router.listen = SocketAddr::from(([127, 0, 0, 1], ports[ports.len() - 1]));
    config.deployment.data_dir = data_dir.to_owned();
    for (a, b, ms) in &opts.latency_ms {
        assert!(!opts.direct, "link latency needs up mode");
        let link = config
            .links
            .iter_mut()
            .find(|l| {
                (l.between[0] == *a && l.between[1] == *b)
                    || (l.between[0] == *b && l.between[1] == *a)
            })
            .unwrap_or_else(|| panic!("no link between {a} and {b}"));
        link.latency_ms = *ms;
    }
    config.validate().expect("the test deployment is valid");
    config
}

/// `n` distinct free loopback ports (bound together, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("local addr").port()).collect()
}

fn start_up(config_path: &Path, data_dir: &Path, dir: &Path) -> UpRunner {
    let log = dir.join("up.log");
    let out = File::create(&log).expect("create the up log");
    let err = out.try_clone().expect("clone the log handle");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("up")
        .arg("--no-router")
        .arg("--config")
        .arg(config_path)
        .args(["--control", "127.0.0.1:0"])
        .env("TANDEM_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TANDEM_REPLICATION_SECRET", REPLICATION_SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn tandem up");
    // `up.json` appears once every region is healthy; it names the control API.
    let summary = data_dir.join("up.json");
    let started = Instant::now();
    let control = loop {
        let parsed = std::fs::read(&summary)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["control"].as_str().map(str::to_owned));
        if let Some(control) = parsed {
            break control;
        }
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || started.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            orphans_of(config_path);
            panic!(
                "tandem up did not come up ({}):\n{}",
                exited.map_or_else(
                    || format!("no up.json within {START_TIMEOUT:?}"),
                    |s| s.to_string()
                ),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(POLL);
    };
    UpRunner { child: Mutex::new(Some(child)), control, log, pids: Mutex::new(BTreeMap::new()) }
}

/// SIGKILL every process whose command line names this config (regions left
/// behind by an `up` that never finished starting).
fn orphans_of(config_path: &Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for e in entries.flatten() {
        if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
            if pid != std::process::id() {
                kill_if_ours(pid, config_path);
            }
        }
    }
}

fn start_direct(
    config: &tandem_config::Config,
    config_path: &Path,
    data_dir: &Path,
    opts: &Options,
    dir: &Path,
) -> DirectRunner {
    let mut links = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    for region in &config.regions {
        let skew = opts.clock_skew_ms.get(&region.name).copied().unwrap_or(0);
        let mut args = vec![
            "node".to_owned(),
            "--config".into(),
            config_path.display().to_string(),
            "--region".into(),
            region.name.clone(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            format!("--clock-skew-ms={skew}"),
        ];
        for peer in config.regions.iter().filter(|p| p.name != region.name) {
            let proxy = LinkProxy::start(peer.listen);
            args.push("--peer-url".into());
            args.push(format!("{}=http://{}", peer.name, proxy.addr));
            links.insert((peer.name.clone(), region.name.clone()), proxy);
        }
        let log = dir.join(format!("{}.log", region.name));
        let child = spawn_node(&args, &log);
        nodes.insert(region.name.clone(), DirectNode { args, log, child: Mutex::new(Some(child)) });
    }
    DirectRunner { nodes, links }
}

fn spawn_node(args: &[String], log: &Path) -> Child {
    let out = OpenOptions::new().create(true).append(true).open(log).expect("open the node log");
    let err = out.try_clone().expect("clone the log handle");
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .env("TANDEM_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TANDEM_REPLICATION_SECRET", REPLICATION_SECRET)
        .env("TANDEM_PSEUDONYM_KEY_EU", "11".repeat(32))
        .env("TANDEM_PSEUDONYM_KEY_US", "22".repeat(32))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn tandem node")
}

// ---- link proxies (direct mode) -----------------------------------------------

/// A TCP proxy for one directed link, like `tandem up`'s but without latency:
/// a cut closes its open connections and refuses new ones until it is healed.
struct LinkProxy {
    addr: SocketAddr,
    shared: Arc<ProxyShared>,
    accept: Option<JoinHandle<()>>,
}

struct ProxyShared {
    upstream: SocketAddr,
    cut: AtomicBool,
    stopping: AtomicBool,
    next_id: AtomicU64,
    /// Both sockets of every open connection, so that a cut can close them.
    open: Mutex<BTreeMap<u64, (TcpStream, TcpStream)>>,
}

impl LinkProxy {
    fn start(upstream: SocketAddr) -> LinkProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a proxy port");
        let addr = listener.local_addr().expect("proxy addr");
        let shared = Arc::new(ProxyShared {
            upstream,
            cut: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            open: Mutex::new(BTreeMap::new()),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                if s.cut.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = TcpStream::connect_timeout(&s.upstream, Duration::from_secs(1))
                else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                relay(&s, client, server);
            }
        });
        LinkProxy { addr, shared, accept: Some(accept) }
    }

    fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        let open = std::mem::take(&mut *self.shared.open.lock().expect("open"));
        for (a, b) in open.values() {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }

    fn heal(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }
}

fn relay(shared: &Arc<ProxyShared>, client: TcpStream, server: TcpStream) {
    let clones = (|| {
        Some((
            client.try_clone().ok()?,
            server.try_clone().ok()?,
            client.try_clone().ok()?,
            server.try_clone().ok()?,
        ))
    })();
    let Some((c_reg, s_reg, c_out, s_in)) = clones else { return };
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    shared.open.lock().expect("open").insert(id, (c_reg, s_reg));
    // A cut that raced with this accept has already drained the map.
    if shared.cut.load(Ordering::SeqCst) {
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
    }
    for (from, to) in [(client, server), (s_in, c_out)] {
        let shared = shared.clone();
        std::thread::spawn(move || pump(&shared, id, from, to));
    }
}

/// Copy one direction; when either side ends, close the whole connection.
fn pump(shared: &ProxyShared, id: u64, mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if std::io::Write::write_all(&mut to, &buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    shared.open.lock().expect("open").remove(&id);
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the accept loop so that it sees `stopping`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}
