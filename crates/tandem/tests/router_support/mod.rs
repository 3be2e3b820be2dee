//! The residency tests' harness: a whole deployment under `tandem up` WITH the
//! router, built from the example config (`tandem_config::EXAMPLE_TOML`) with
//! every listen address on a free loopback port and its own temporary data
//! directory, so that tests run in parallel. It offers what those tests drive:
//! requests through the router (with the caller's region) or straight at a
//! region, answered with the status, the routing headers and the JSON body;
//! router drain and restore; the control API of `tandem up` (kill and start a
//! region, cut and heal a link); the region pids (to read their environment);
//! a graceful stop (SIGTERM) after which the data directory can be searched;
//! and raw byte searches over files. Dropping the deployment stops it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill as send_signal, Signal};
use nix::unistd::Pid;
use reqwest::Method;
use serde_json::{json, Value};

/// Admin token the deployments run with (`TANDEM_ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "residency-test-admin-token";
/// Shared replication secret (`TANDEM_REPLICATION_SECRET`).
pub const REPLICATION_SECRET: &str = "residency-test-secret";
/// The example deployment's regions.
pub const ALL: [&str; 3] = ["eu-west", "eu-central", "us-east"];
/// The regions of the EU jurisdiction.
pub const EU: [&str; 2] = ["eu-west", "eu-central"];

/// How long a deployment may take to become healthy (tests run in parallel on
/// small machines).
pub const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a stopped `tandem up` may take to exit before it is SIGKILLed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Per-request time-out of the HTTP client (above the router's upstream time-out).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of the replication waits (they normally take well under a second).
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two polls of a wait.
pub const POLL: Duration = Duration::from_millis(50);
/// Lines of the deployment log printed when a test fails.
const LOG_TAIL_LINES: usize = 120;

/// How to run a deployment.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Pass `--capture-dir` (every byte of each simulated link is recorded).
    pub capture: bool,
    /// TOML appended to the generated config (e.g. `[[transfers]]` tables).
    pub extra_toml: String,
    /// Extra environment of `tandem up` (e.g. a transfer key).
    pub env: Vec<(String, String)>,
}

/// One answer: status, `X-Tandem-Region`, `X-Tandem-Route`, JSON body (a JSON
/// string when the body is not JSON, null when empty).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub region: Option<String>,
    pub route: Option<String>,
    pub body: Value,
}

impl Resp {
    /// `error.code` of an error answer ("" otherwise).
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} region={:?} route={:?} {}", self.status, self.region, self.route, self.body)
    }
}

/// A running deployment. Methods panic with a useful message on a transport
/// error or a time-out: a test is a straight line of steps.
pub struct Deployment {
    dir: tempfile::TempDir,
    /// The config file the deployment was started from.
    pub config_path: PathBuf,
    /// `<tempdir>/data`; each region keeps its store under `<data_dir>/<region>`.
    pub data_dir: PathBuf,
    /// Where the link captures go (`<from>-<to>.bin`), when capturing.
    pub capture_dir: Option<PathBuf>,
    regions: BTreeMap<String, String>,
    router: String,
    control: String,
    child: Mutex<Option<Child>>,
    log: PathBuf,
    /// Every pid the control API reported (to reap orphans if `up` must be SIGKILLed).
    pids: Mutex<BTreeMap<String, u32>>,
    http: reqwest::blocking::Client,
}

impl Deployment {
    pub fn start(opts: Options) -> Deployment {
        let dir = tempfile::Builder::new()
            .prefix("tandem-res-")
            .tempdir()
            .expect("create a temporary directory");
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("create the data directory");
        let config = deployment_config(&data_dir);
        let mut text = toml::to_string(&config).expect("config encodes");
        text.push('\n');
        text.push_str(&opts.extra_toml);
        tandem_config::Config::from_toml_str(&text).expect("the test deployment is valid");
        let config_path = dir.path().join("tandem.toml");
        std::fs::write(&config_path, &text).expect("write the config");
        let regions: BTreeMap<String, String> = config
            .regions
            .iter()
            .map(|r| (r.name.clone(), format!("http://{}", r.listen)))
            .collect();
        let router = format!("http://{}", config.router.listen);
        let capture_dir = opts.capture.then(|| dir.path().join("capture"));

        let log = dir.path().join("up.log");
        let out = File::create(&log).expect("create the up log");
        let err = out.try_clone().expect("clone the log handle");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
        cmd.arg("up")
            .arg("--config")
            .arg(&config_path)
            .args(["--control", "127.0.0.1:0"])
            .env("TANDEM_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("TANDEM_REPLICATION_SECRET", REPLICATION_SECRET)
            .envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        if let Some(c) = &capture_dir {
            cmd.arg("--capture-dir").arg(c);
        }
        let mut child = cmd.spawn().expect("spawn tandem up");
        // `up.json` appears once every process is healthy; it names the control API.
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
                let _ = send_signal(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
                if !wait_exit(&mut child, STOP_TIMEOUT) {
                    let _ = child.kill();
                    let _ = child.wait();
                    orphans_of(&config_path);
                }
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
        let http = reqwest::blocking::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()
            .expect("build the HTTP client");
        let d = Deployment {
            dir,
            config_path,
            data_dir,
            capture_dir,
            regions,
            router,
            control,
            child: Mutex::new(Some(child)),
            log,
            pids: Mutex::new(BTreeMap::new()),
            http,
        };
        let pids = d.processes();
        d.pids.lock().expect("pids").extend(pids);
        // Make sure every address answers as the process of this deployment
        // (and not some other process that happened to hold the port).
        let r = d.call(Method::GET, &format!("{}/healthz", d.router), None, &[]);
        assert_eq!(r.body["role"], "router", "{} is not our router: {r}\n{}", d.router, d.logs());
        for (name, url) in &d.regions {
            let r = d.call(Method::GET, &format!("{url}/healthz"), None, &[]);
            assert_eq!(r.body["region"], name.as_str(), "{url} is not {name}: {r}\n{}", d.logs());
        }
        // `up` answered once every process served /healthz; the router also
        // needs one successful probe of each region before it routes there.
        let all_up = || {
            let routes = d.routes();
            routes["regions"].as_array().is_some_and(|rs| rs.iter().all(|r| r["up"] == true))
        };
        assert!(
            wait_until(START_TIMEOUT, all_up),
            "the router never saw every region up: {}",
            d.routes()
        );
        d
    }

    /// `http://127.0.0.1:PORT` of a region.
    pub fn url(&self, region: &str) -> &str {
        self.regions.get(region).unwrap_or_else(|| panic!("no region `{region}`"))
    }

    /// `http://127.0.0.1:PORT` of the router.
    pub fn router(&self) -> &str {
        &self.router
    }

    // ---- HTTP ---------------------------------------------------------------

    /// One request; `Err` only on a transport error.
    pub fn try_call(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> reqwest::Result<Resp> {
        let mut req = self.http.request(method, url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send()?;
        let status = resp.status().as_u16();
        let header =
            |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let region = header("x-tandem-region");
        let route = header("x-tandem-route");
        let text = resp.text()?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Resp { status, region, route, body })
    }

    /// One request; panics on a transport error.
    pub fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        self.try_call(method.clone(), url, body, headers)
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
    }

    /// A request through the router from a caller in `client_region`.
    pub fn routed(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        client_region: &str,
    ) -> Resp {
        let url = format!("{}{path}", self.router);
        self.call(method, &url, body, &[("x-tandem-client-region", client_region)])
    }

    /// A request straight at a region.
    pub fn direct(
        &self,
        method: Method,
        region: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let url = format!("{}{path}", self.url(region));
        self.call(method, &url, body, headers)
    }

    /// The materialized value of a record at a region; `None` on 404.
    pub fn value(&self, region: &str, entity: &str, id: &str) -> Option<Value> {
        let r = self.direct(Method::GET, region, &format!("/v1/records/{entity}/{id}"), None, &[]);
        match r.status {
            200 => Some(r.body["value"].clone()),
            404 => None,
            _ => panic!("GET {entity}/{id} at {region}: {r}"),
        }
    }

    /// Wait until `region` shows `expected` for a record.
    pub fn wait_value(&self, region: &str, entity: &str, id: &str, expected: &Value) {
        let there = || self.value(region, entity, id).as_ref() == Some(expected);
        assert!(
            wait_until(CONVERGE_TIMEOUT, there),
            "{entity}/{id} at {region} is {:?}, not {expected} after {CONVERGE_TIMEOUT:?}",
            self.value(region, entity, id)
        );
    }

    /// `GET /v1/digest?entity=E` at a region: the digest and the record count.
    pub fn digest(&self, region: &str, entity: &str) -> (String, u64) {
        let r = self.direct(Method::GET, region, &format!("/v1/digest?entity={entity}"), None, &[]);
        assert_eq!(r.status, 200, "digest of {entity} at {region}: {r}");
        let digest = r.body["digest"].as_str().expect("digest").to_owned();
        (digest, r.body["records"].as_u64().expect("records"))
    }

    /// Every entry of a region's audit log, through `GET /v1/audit`.
    pub fn audit(&self, region: &str) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let after = out.last().map_or(0, |e: &Value| e["seq"].as_u64().expect("seq"));
            let path = format!("/v1/audit?after={after}&limit=1000");
            let r = self.direct(Method::GET, region, &path, None, &[]);
            assert_eq!(r.status, 200, "audit of {region}: {r}");
            let page = r.body["entries"].as_array().expect("entries").clone();
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    /// Prometheus text at `base` (a region or the router URL).
    pub fn metrics_at(&self, base: &str) -> String {
        let url = format!("{base}/metrics");
        let resp = self.http.get(&url).send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
        resp.text().expect("metrics text")
    }

    /// Register a subject through the router and wait until every region knows it.
    pub fn register(&self, subject: &str, home: &str) {
        let r = self.routed(
            Method::PUT,
            &format!("/v1/subjects/{subject}"),
            Some(&json!({"home_region": home})),
            home,
        );
        assert_eq!(r.status, 200, "register {subject} at {home}: {r}");
        self.wait_subject_everywhere(subject, home);
    }

    /// Wait until every region's registry says `subject` is homed at `home`.
    pub fn wait_subject_everywhere(&self, subject: &str, home: &str) {
        let known = || {
            ALL.iter().all(|r| {
                let resp =
                    self.direct(Method::GET, r, &format!("/v1/subjects/{subject}"), None, &[]);
                resp.status == 200 && resp.body["home_region"] == home
            })
        };
        assert!(
            wait_until(CONVERGE_TIMEOUT, known),
            "subject {subject} is not homed at {home} everywhere after {CONVERGE_TIMEOUT:?}"
        );
    }

    // ---- router operations plane -----------------------------------------------

    /// `GET /v1/routes` of the router.
    pub fn routes(&self) -> Value {
        let r = self.call(Method::GET, &format!("{}/v1/routes", self.router), None, &[]);
        assert_eq!(r.status, 200, "GET /v1/routes: {r}");
        r.body
    }

    /// The router's view of one region (`up`, `drained`, ...).
    pub fn route_of(&self, region: &str) -> Value {
        let routes = self.routes();
        routes["regions"]
            .as_array()
            .expect("regions")
            .iter()
            .find(|r| r["region"] == region)
            .unwrap_or_else(|| panic!("no {region} in {routes}"))
            .clone()
    }

    /// `POST /v1/admin/regions/{region}/{drain|restore}` with `token`.
    pub fn router_admin(&self, region: &str, action: &str, token: Option<&str>) -> Resp {
        let url = format!("{}/v1/admin/regions/{region}/{action}", self.router);
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.as_deref().map(|a| vec![("authorization", a)]).unwrap_or_default();
        self.call(Method::POST, &url, None, &headers)
    }

    pub fn drain(&self, region: &str) {
        let r = self.router_admin(region, "drain", Some(ADMIN_TOKEN));
        assert_eq!(r.status, 200, "drain {region}: {r}");
    }

    pub fn restore(&self, region: &str) {
        let r = self.router_admin(region, "restore", Some(ADMIN_TOKEN));
        assert_eq!(r.status, 200, "restore {region}: {r}");
    }

    // ---- control API of `tandem up` -------------------------------------------

    fn control_post(&self, path: &str) {
        let url = format!("{}{path}", self.control);
        let r = self.call(Method::POST, &url, None, &[]);
        assert_eq!(r.status, 200, "POST {path}: {r}");
    }

    /// `kill -9` a region (the control API answers once it is gone).
    pub fn kill(&self, region: &str) {
        self.control_post(&format!("/v1/processes/{region}/kill"));
    }

    /// Start a killed region again; answers once it is healthy.
    pub fn start_region(&self, region: &str) {
        self.control_post(&format!("/v1/processes/{region}/start"));
        let pids = self.processes();
        self.pids.lock().expect("pids").extend(pids);
    }

    /// Cut the directed link carrying `from`'s changes to `to` (`*` matches all).
    pub fn cut(&self, from: &str, to: &str) {
        self.control_post(&format!("/v1/links/{from}/{to}/cut"));
    }

    pub fn heal(&self, from: &str, to: &str) {
        self.control_post(&format!("/v1/links/{from}/{to}/heal"));
    }

    /// Pids of the running processes (regions and router), by name.
    pub fn processes(&self) -> BTreeMap<String, u32> {
        let r = self.call(Method::GET, &format!("{}/v1/deployment", self.control), None, &[]);
        assert_eq!(r.status, 200, "GET /v1/deployment: {r}");
        r.body["processes"]
            .as_object()
            .expect("processes")
            .iter()
            .filter_map(|(name, p)| Some((name.clone(), p["pid"].as_u64()? as u32)))
            .collect()
    }

    /// The names of the environment variables of a running process.
    pub fn env_names(&self, process: &str) -> Vec<String> {
        let pid = self.processes()[process];
        let raw = std::fs::read(format!("/proc/{pid}/environ"))
            .unwrap_or_else(|e| panic!("environment of {process} ({pid}): {e}"));
        raw.split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                kv.split_once('=').map(|(k, _)| k.to_owned())
            })
            .collect()
    }

    // ---- stopping -------------------------------------------------------------

    /// SIGTERM `tandem up` and wait until it (and so every region) has exited:
    /// afterwards the data directories are complete and quiet.
    pub fn stop(&self) {
        let mut child = self.child.lock().expect("child");
        let Some(mut c) = child.take() else { return };
        let _ = send_signal(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        if !wait_exit(&mut c, STOP_TIMEOUT) {
            eprintln!("tandem up did not stop within {STOP_TIMEOUT:?}; SIGKILL");
            let _ = c.kill();
            let _ = c.wait();
            for pid in self.pids.lock().expect("pids").values() {
                kill_if_ours(*pid, &self.config_path);
            }
        }
    }

    /// The tail of the deployment's log (every process, prefixed by `up`).
    pub fn logs(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        format!("---- {} (last {} lines)\n{}\n", self.log.display(), tail.len(), tail.join("\n"))
    }

    /// The whole deployment log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("deployment under {}\n{}", self.dir.path().display(), self.logs());
        }
        self.stop();
    }
}

// ---- searching raw bytes ---------------------------------------------------------

/// Every regular file under `dir`, recursively (sorted, so reports are stable).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// `(file, needle)` for every needle found in any of `files`.
pub fn find_in_files(files: &[PathBuf], needles: &[String]) -> Vec<(PathBuf, String)> {
    let mut hits = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
        for n in needles {
            if contains(&bytes, n.as_bytes()) {
                hits.push((f.clone(), n.clone()));
            }
        }
    }
    hits
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
            let have: BTreeMap<&str, &str> = label_text
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.trim(), v.trim().trim_matches('"')))
                })
                .collect();
            labels.iter().all(|(k, v)| have.get(k) == Some(v)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

// ---- starting ----------------------------------------------------------------

/// The example deployment on free loopback ports, with its data under `data_dir`.
fn deployment_config(data_dir: &Path) -> tandem_config::Config {
    let mut config = tandem_config::Config::from_toml_str(tandem_config::EXAMPLE_TOML)
        .expect("the example config parses");
    let ports = free_ports(config.regions.len() + 1);
    for (region, port) in config.regions.iter_mut().zip(&ports) {
        region.listen = SocketAddr::from(([127, 0, 0, 1], *port));
    }
    config.router.listen = SocketAddr::from(([127, 0, 0, 1], ports[ports.len() - 1]));
    config.deployment.data_dir = data_dir.to_owned();
    config
}

/// `n` distinct free loopback ports for the fixed listen addresses.
///
/// They are taken below the kernel's ephemeral range when it leaves room:
/// every socket bound to port 0 (link proxies, control APIs, client sockets of
/// all the tests running in parallel) gets an ephemeral port, so a port freed
/// there can be taken by someone else before our process binds it. Below the
/// range only explicit choices compete, and this process never hands out the
/// same port twice.
fn free_ports(n: usize) -> Vec<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().expect("ports");
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = if ephemeral_low > 12_000 { (10_000, ephemeral_low) } else { (0, 0) };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut seed = (nanos ^ (u64::from(std::process::id()) << 32)) | 1;
    let mut out = Vec::new();
    let mut tries = 0;
    while out.len() < n {
        tries += 1;
        let port = if high > low && tries < 10_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            low + (seed % u64::from(high - low)) as u16
        } else {
            // No room below the ephemeral range: let the kernel choose.
            let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            l.local_addr().expect("local addr").port()
        };
        if handed_out.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        handed_out.insert(port);
        out.push(port);
    }
    out
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

/// SIGKILL a pid only if its command line names this deployment's directory
/// (the pid could have been reused).
fn kill_if_ours(pid: u32, config: &Path) {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return };
    if String::from_utf8_lossy(&cmdline)
        .contains(&*config.parent().unwrap_or(config).to_string_lossy())
    {
        let _ = send_signal(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

/// SIGKILL every process whose command line names this deployment's directory
/// (regions left behind by an `up` that never finished starting).
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
