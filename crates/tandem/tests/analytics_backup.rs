//! Anonymize-and-replicate and encrypted, jurisdiction-bound backups, end to
//! end against the real binary: each test runs its own `tandem up` deployment
//! (three regions plus the router, every listen on a free loopback port, data
//! and backup directories in a temporary directory) built from the example
//! config, whose backup destinations are rewritten to `file:///<tmp>/backups/eu/`
//! and `file:///<tmp>/backups/us/`. The tests prove that analytics projections
//! of EU subjects reach us-east without a personal field, a subject name or an
//! id part, under a pseudonym that is stable per subject, and disappear with
//! their source; that `tandem backup` refuses a destination of another
//! jurisdiction before anything is read or written (and the node's snapshot
//! endpoint refuses it too, audited); that a backup-wipe-restore round trip
//! gives back the same `/v1/digest` and the region rejoins replication; and
//! that a tampered, truncated, foreign-key or foreign-region backup is refused
//! and leaves the region byte for byte as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill as send_signal, Signal};
use nix::unistd::Pid;
use reqwest::Method;
use serde_json::{json, Value};

/// Admin token the deployments run with (`TANDEM_ADMIN_TOKEN`).
const ADMIN_TOKEN: &str = "analytics-backup-test-admin-token";
/// Shared replication secret (`TANDEM_REPLICATION_SECRET`).
const REPLICATION_SECRET: &str = "analytics-backup-test-secret";
/// The backup key (`TANDEM_BACKUP_KEY`, 64 hex digits).
const BACKUP_KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
/// Another valid key: what a backup was not encrypted with.
const OTHER_BACKUP_KEY: &str = "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5";
/// The example deployment's regions.
const ALL: [&str; 3] = ["eu-west", "eu-central", "us-east"];
/// Pseudonym key variables of the example config: never inherited from the
/// test's environment, so `tandem up` generates the keys.
const PSEUDONYM_VARS: [&str; 2] = ["TANDEM_PSEUDONYM_KEY_EU", "TANDEM_PSEUDONYM_KEY_US"];

/// How long a deployment may take to come up (tests run in parallel on small machines).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a stopped `tandem up` may take to exit before it is SIGKILLed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Per-request time-out of the HTTP client (above the router's upstream time-out).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of the replication waits (they normally take well under a second).
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest run of one `tandem backup|restore|audit` command.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two polls of a wait.
const POLL: Duration = Duration::from_millis(50);
/// Lines of the deployment log printed when a test fails.
const LOG_TAIL_LINES: usize = 120;

// ---- the deployment ------------------------------------------------------------

/// One answer: status and JSON body (a JSON string when it is not JSON).
#[derive(Debug)]
struct Resp {
    status: u16,
    body: Value,
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

/// What a `tandem` command did.
#[derive(Debug)]
struct Cli {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// A running `tandem up` deployment with the router; stopped when dropped.
struct Deployment {
    /// Removed (with the data and the backups) when the deployment is dropped.
    _dir: tempfile::TempDir,
    /// The canonical path of `dir` (what the processes' command lines name).
    root: PathBuf,
    config: tandem_config::Config,
    config_path: PathBuf,
    data_dir: PathBuf,
    regions: BTreeMap<String, String>,
    router: String,
    control: String,
    child: Option<Child>,
    log: PathBuf,
    http: reqwest::blocking::Client,
    /// Numbers the output files of CLI runs.
    cli_runs: std::cell::Cell<u32>,
}

impl Deployment {
    fn start() -> Deployment {
        let dir = tempfile::Builder::new()
            .prefix("tandem-ab-")
            .tempdir()
            .expect("create a temporary directory");
        let root = dir.path().canonicalize().expect("canonical temporary directory");
        let data_dir = root.join("data");
        std::fs::create_dir_all(&data_dir).expect("create the data directory");
        for j in ["eu", "us"] {
            std::fs::create_dir_all(root.join("backups").join(j)).expect("create a backup dir");
        }
        let config = deployment_config(&root, &data_dir);
        let config_path = root.join("tandem.toml");
        std::fs::write(&config_path, toml::to_string(&config).expect("config encodes"))
            .expect("write the config");
        let regions: BTreeMap<String, String> = config
            .regions
            .iter()
            .map(|r| (r.name.clone(), format!("http://{}", r.listen)))
            .collect();
        let router = format!("http://{}", config.router.listen);

        let log = root.join("up.log");
        let out = File::create(&log).expect("create the up log");
        let err = out.try_clone().expect("clone the log handle");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
        cmd.arg("up")
            .arg("--config")
            .arg(&config_path)
            .args(["--control", "127.0.0.1:0"])
            .env("TANDEM_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("TANDEM_REPLICATION_SECRET", REPLICATION_SECRET)
            .env("TANDEM_BACKUP_KEY", BACKUP_KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        for var in PSEUDONYM_VARS {
            cmd.env_remove(var);
        }
        let child = cmd.spawn().expect("spawn tandem up");
        let http = reqwest::blocking::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()
            .expect("build the HTTP client");
        let mut d = Deployment {
            _dir: dir,
            root,
            config,
            config_path,
            data_dir,
            regions,
            router,
            control: String::new(),
            child: Some(child),
            log,
            http,
            cli_runs: std::cell::Cell::new(0),
        };
        // `up.json` appears once every process is healthy; it names the control API.
        let summary = d.data_dir.join("up.json");
        let started = Instant::now();
        d.control = loop {
            let parsed = std::fs::read(&summary)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| v["control"].as_str().map(str::to_owned));
            if let Some(control) = parsed {
                break control;
            }
            let exited = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none() && started.elapsed() < START_TIMEOUT,
                "tandem up did not come up ({exited:?} after {:?})",
                started.elapsed()
            );
            std::thread::sleep(POLL);
        };
        // Every address answers as this deployment's process, and the router
        // has seen every region up (it routes nowhere before its first probe).
        for (name, url) in &d.regions {
            let r = d.call(Method::GET, &format!("{url}/healthz"), None, &[]);
            assert_eq!(r.body["region"], name.as_str(), "{url} is not {name}: {r}");
        }
        let all_up = || {
            let r = d.call(Method::GET, &format!("{}/v1/routes", d.router), None, &[]);
            r.body["regions"].as_array().is_some_and(|rs| rs.iter().all(|r| r["up"] == true))
        };
        assert!(wait_until(START_TIMEOUT, all_up), "the router never saw every region up");
        d
    }

    fn url(&self, region: &str) -> &str {
        self.regions.get(region).unwrap_or_else(|| panic!("no region `{region}`"))
    }

    /// `file:///<tmp>/backups/<j>/` (`j` = `eu` or `us`).
    fn backup_url(&self, j: &str) -> String {
        format!("file://{}/", self.backup_dir(j).display())
    }

    fn backup_dir(&self, j: &str) -> PathBuf {
        self.root.join("backups").join(j)
    }

    fn region_dir(&self, region: &str) -> PathBuf {
        self.data_dir.join(region)
    }

    // ---- HTTP ---------------------------------------------------------------

    fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self.http.request(method.clone(), url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send().unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_else(|e| panic!("{method} {url}: body: {e}"));
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Resp { status, body }
    }

    /// A request through the router from a caller in `client_region`.
    fn routed(&self, method: Method, path: &str, body: Option<&Value>, client: &str) -> Resp {
        let url = format!("{}{path}", self.router);
        self.call(method, &url, body, &[("x-tandem-client-region", client)])
    }

    /// A request straight at a region.
    fn direct(&self, method: Method, region: &str, path: &str, body: Option<&Value>) -> Resp {
        let url = format!("{}{path}", self.url(region));
        self.call(method, &url, body, &[])
    }

    /// A write through the router that must succeed.
    fn routed_ok(&self, method: Method, path: &str, body: &Value, client: &str) {
        let r = self.routed(method.clone(), path, Some(body), client);
        assert_eq!(
            r.status, 200,
            "{method} {path} via the router (from {client}) with {body}: {r}"
        );
    }

    /// A write straight at a region that must succeed.
    fn direct_ok(&self, method: Method, region: &str, path: &str, body: &Value) {
        let r = self.direct(method.clone(), region, path, Some(body));
        assert_eq!(r.status, 200, "{method} {path} at {region} with {body}: {r}");
    }

    /// The materialized value of a record at a region; `None` on 404.
    fn value(&self, region: &str, entity: &str, id: &str) -> Option<Value> {
        let r = self.direct(Method::GET, region, &format!("/v1/records/{entity}/{id}"), None);
        match r.status {
            200 => Some(r.body["value"].clone()),
            404 => None,
            _ => panic!("GET {entity}/{id} at {region}: {r}"),
        }
    }

    /// Wait until `region` holds a record (any value).
    fn wait_present(&self, region: &str, entity: &str, id: &str) {
        assert!(
            wait_until(CONVERGE_TIMEOUT, || self.value(region, entity, id).is_some()),
            "{entity}/{id} never reached {region} within {CONVERGE_TIMEOUT:?}"
        );
    }

    /// Every record of an entity type at a region (`GET /v1/records/{entity}`, all pages).
    fn scan(&self, region: &str, entity: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(a) => format!("/v1/records/{entity}?limit=1000&after={a}"),
                None => format!("/v1/records/{entity}?limit=1000"),
            };
            let r = self.direct(Method::GET, region, &path, None);
            assert_eq!(r.status, 200, "scan {entity} at {region}: {r}");
            out.extend(r.body["records"].as_array().expect("records").iter().cloned());
            match r.body["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => return out,
            }
        }
    }

    /// `GET /v1/digest[?entity=E]` at a region: `(digest, records)`.
    fn digest(&self, region: &str, entity: Option<&str>) -> (String, u64) {
        let path = match entity {
            Some(e) => format!("/v1/digest?entity={e}"),
            None => "/v1/digest".to_owned(),
        };
        let r = self.direct(Method::GET, region, &path, None);
        assert_eq!(r.status, 200, "digest {entity:?} at {region}: {r}");
        (
            r.body["digest"].as_str().expect("digest").to_owned(),
            r.body["records"].as_u64().expect("records"),
        )
    }

    /// Every entry of a region's audit log, through `GET /v1/audit`.
    fn audit(&self, region: &str) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        loop {
            let after = out.last().map_or(0, |e| e["seq"].as_u64().expect("seq"));
            let r = self.direct(
                Method::GET,
                region,
                &format!("/v1/audit?after={after}&limit=1000"),
                None,
            );
            assert_eq!(r.status, 200, "audit of {region}: {r}");
            let page = r.body["entries"].as_array().expect("entries").clone();
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    /// Register a subject through the router and wait until every region knows it.
    fn register(&self, subject: &str, home: &str) {
        let path = format!("/v1/subjects/{subject}");
        self.routed_ok(Method::PUT, &path, &json!({"home_region": home}), home);
        let known = || {
            ALL.iter().all(|r| {
                let resp = self.direct(Method::GET, r, &path, None);
                resp.status == 200 && resp.body["home_region"] == home
            })
        };
        assert!(wait_until(CONVERGE_TIMEOUT, known), "{subject} not homed at {home} everywhere");
    }

    /// The states that must agree once replication caught up: the whole store
    /// of the EU regions (they hold the same records), and every entity type
    /// that may live everywhere (non-personal types and the subject registry)
    /// across all regions.
    fn convergence_view(&self) -> Result<(), String> {
        let (eu_west, eu_central) = (self.digest("eu-west", None), self.digest("eu-central", None));
        if eu_west != eu_central {
            return Err(format!(
                "EU stores differ: eu-west {eu_west:?}, eu-central {eu_central:?}"
            ));
        }
        let everywhere = self
            .config
            .entities
            .iter()
            .filter(|(_, e)| !e.personal)
            .map(|(name, _)| name.as_str())
            .chain(["_subject"]);
        for entity in everywhere {
            let digests: BTreeSet<(String, u64)> =
                ALL.iter().map(|r| self.digest(r, Some(entity))).collect();
            if digests.len() != 1 {
                return Err(format!("`{entity}` differs between regions: {digests:?}"));
            }
        }
        Ok(())
    }

    fn wait_converged(&self, what: &str) {
        let ok = wait_until(CONVERGE_TIMEOUT, || self.convergence_view().is_ok());
        assert!(
            ok,
            "{what}: no convergence within {CONVERGE_TIMEOUT:?}: {:?}",
            self.convergence_view()
        );
    }

    // ---- processes ------------------------------------------------------------

    /// `POST /v1/processes/{region}/{stop|start}` of `tandem up` (start answers once healthy).
    fn process(&self, region: &str, action: &str) {
        let url = format!("{}/v1/processes/{region}/{action}", self.control);
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(90))
            .no_proxy()
            .build()
            .expect("control client");
        let resp = client.post(&url).send().unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        assert!(status.is_success(), "{action} {region}: {status} {text}");
        if action == "start" {
            let r = self.call(Method::GET, &format!("{}/healthz", self.url(region)), None, &[]);
            assert_eq!(r.status, 200, "{region} after start: {r}");
        }
    }

    /// `POST /v1/links/{from}/{to}/{cut|heal}` of `tandem up` (`*` matches every region).
    fn link(&self, from: &str, to: &str, action: &str) {
        let url = format!("{}/v1/links/{from}/{to}/{action}", self.control);
        let r = self.call(Method::POST, &url, None, &[]);
        assert_eq!(r.status, 200, "{action} {from}->{to}: {r}");
    }

    /// The names of the environment variables of one of `tandem up`'s processes.
    fn env_names(&self, process: &str) -> BTreeSet<String> {
        let r = self.call(Method::GET, &format!("{}/v1/deployment", self.control), None, &[]);
        assert_eq!(r.status, 200, "GET /v1/deployment: {r}");
        let pid = r.body["processes"][process]["pid"]
            .as_u64()
            .unwrap_or_else(|| panic!("no pid of {process}: {r}"));
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read environ");
        environ
            .split(|b| *b == 0)
            .filter_map(|kv| kv.split(|b| *b == b'=').next())
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .filter(|k| !k.is_empty())
            .collect()
    }

    /// Run the real `tandem` binary with the deployment's environment (admin
    /// token, backup key) plus `env`; `None` as a value removes a variable.
    fn tandem(&self, args: &[&str], env: &[(&str, Option<&str>)]) -> Cli {
        let n = self.cli_runs.get() + 1;
        self.cli_runs.set(n);
        let out_path = self.root.join(format!("cli-{n}.out"));
        let err_path = self.root.join(format!("cli-{n}.err"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
        cmd.args(args)
            .env("TANDEM_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("TANDEM_BACKUP_KEY", BACKUP_KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::from(File::create(&out_path).expect("cli stdout")))
            .stderr(Stdio::from(File::create(&err_path).expect("cli stderr")));
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let mut child = cmd.spawn().expect("spawn tandem");
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait for tandem") {
                break s;
            }
            if started.elapsed() > CLI_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`tandem {}` did not finish within {CLI_TIMEOUT:?}", args.join(" "));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Cli {
            code: status.code(),
            stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        }
    }

    fn config_arg(&self) -> &str {
        self.config_path.to_str().expect("utf-8 path")
    }

    /// `tandem backup --config F --region R --to URL`.
    fn backup(&self, region: &str, to: &str, extra: &[&str], env: &[(&str, Option<&str>)]) -> Cli {
        let mut args =
            vec!["backup", "--config", self.config_arg(), "--region", region, "--to", to];
        args.extend_from_slice(extra);
        self.tandem(&args, env)
    }

    /// `tandem restore --config F --region R --from URL`.
    fn restore(&self, region: &str, from: &str, env: &[(&str, Option<&str>)]) -> Cli {
        self.tandem(
            &["restore", "--config", self.config_arg(), "--region", region, "--from", from],
            env,
        )
    }

    /// The `.tbk` files in a backup directory.
    fn backups_in(&self, j: &str) -> Vec<PathBuf> {
        files_under(&self.backup_dir(j))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "deployment under {} (last lines of up.log)\n{}",
                self.root.display(),
                self.log_tail()
            );
        }
        let Some(mut child) = self.child.take() else { return };
        let _ = send_signal(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let started = Instant::now();
        while started.elapsed() < STOP_TIMEOUT {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("tandem up did not stop within {STOP_TIMEOUT:?}; SIGKILL");
        let _ = child.kill();
        let _ = child.wait();
        // Its regions name this deployment's directory on their command line.
        kill_orphans(&self.root);
    }
}

/// SIGKILL every process whose command line names `dir` (regions left behind
/// by a `tandem up` that had to be SIGKILLed).
fn kill_orphans(dir: &Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    let needle = dir.to_string_lossy().into_owned();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid as u32 == std::process::id() {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                let _ = send_signal(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// The example deployment on free loopback ports, its data under `data_dir`
/// and its backup destinations under `<root>/backups/{eu,us}/`.
fn deployment_config(root: &Path, data_dir: &Path) -> tandem_config::Config {
    let mut config = tandem_config::Config::from_toml_str(tandem_config::EXAMPLE_TOML)
        .expect("the example config parses");
    let listeners: Vec<TcpListener> = (0..config.regions.len() + 1)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().expect("addr").port()).collect();
    drop(listeners);
    for (region, port) in config.regions.iter_mut().zip(&ports) {
        region.listen = SocketAddr::from(([127, 0, 0, 1], *port));
    }
    config.router.listen = SocketAddr::from(([127, 0, 0, 1], ports[ports.len() - 1]));
    config.deployment.data_dir = data_dir.to_owned();
    for (j, dir) in [("EU", "eu"), ("US", "us")] {
        let jc = config.jurisdictions.get_mut(j).unwrap_or_else(|| panic!("jurisdiction {j}"));
        jc.backup_destinations =
            vec![format!("file://{}/", root.join("backups").join(dir).display())];
    }
    config.validate().expect("the test deployment is valid");
    config
}

// ---- small helpers ----------------------------------------------------------------

/// Poll `cond` every [`POLL`] until it holds (true) or `timeout` passes (false).
fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
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

/// A tag unique to this test run, made of letters that never occur in hex
/// (pseudonyms and hashes are hex), so a marker cannot appear by accident.
fn unique_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    // Every decimal digit becomes one of q..z.
    format!("{nanos}{}", std::process::id())
        .bytes()
        .map(|b| char::from(b'q' + (b - b'0')))
        .collect()
}

/// Every regular file under `dir`, recursively, in a stable order.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The markers found in any of `files`, as `(file, marker)`.
fn markers_in_files(files: &[PathBuf], markers: &[String]) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).unwrap_or_default();
        for m in markers {
            if contains(&bytes, m.as_bytes()) {
                found.push((f.clone(), m.clone()));
            }
        }
    }
    found
}

/// Every file of a directory with its bytes (to prove nothing changed).
fn dir_bytes(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files_under(dir).into_iter().map(|p| (p.clone(), std::fs::read(&p).expect("read"))).collect()
}

fn file_url(p: &Path) -> String {
    format!("file://{}", p.display())
}

// ---- 1. analytics projections ---------------------------------------------------

/// One `subscription` record of the analytics test.
struct Sub {
    subject: String,
    id: String,
    /// The `rest` of the id (after `<subject>:`): a marker too.
    rest: String,
    plan: &'static str,
    country: &'static str,
    /// name, email, card and an undeclared field: none may be projected.
    personal: [String; 4],
}

#[test]
fn analytics_projection_is_anonymous_everywhere_and_stable() {
    let d = Deployment::start();
    let tag = unique_tag();
    // Subject names are markers too: none may reach a projection.
    let (ana, bert, cora) =
        (format!("qzsubjana{tag}"), format!("qzsubjbert{tag}"), format!("qzsubjcora{tag}"));
    d.register(&ana, "eu-west");
    d.register(&bert, "eu-central");
    d.register(&cora, "us-east");

    let sub = |subject: &str, n: u32, plan: &'static str, country: &'static str| {
        let rest = format!("qzrec{n}{tag}");
        Sub {
            subject: subject.to_owned(),
            id: format!("{subject}:{rest}"),
            rest,
            plan,
            country,
            personal: [
                format!("QZNAME{n}{tag}"),
                format!("qzmail{n}{tag}@example.com"),
                format!("QZCARD{n}{tag}"),
                format!("QZNICK{n}{tag}"),
            ],
        }
    };
    // Plans and countries are unique per record: they tell the projections apart.
    let subs = [
        sub(&ana, 1, "pro", "DE"),
        sub(&ana, 2, "team", "FR"),
        sub(&bert, 3, "free", "IT"),
        sub(&cora, 4, "basic", "US"),
    ];
    for s in &subs {
        let [name, email, card, nick] = &s.personal;
        let fields = json!({
            "plan": s.plan, "country": s.country,
            "name": name, "email": email, "card": card, "nickname": nick,
        });
        // From a US caller: the router sends each write to the subject's home.
        d.routed_ok(
            Method::PATCH,
            &format!("/v1/records/subscription/{}", s.id),
            &json!({ "fields": fields }),
            "us-east",
        );
    }

    // The projections reach us-east.
    let in_us = || d.scan("us-east", "subscription_stats");
    assert!(
        wait_until(CONVERGE_TIMEOUT, || in_us().len() == subs.len()),
        "us-east has {} subscription_stats records, expected {}: {:?}",
        in_us().len(),
        subs.len(),
        in_us()
    );
    let projections = in_us();
    let eu_subs: Vec<&Sub> = subs.iter().filter(|s| s.subject != cora).collect();
    let mut markers: Vec<String> = Vec::new();
    for s in &subs {
        markers.extend([s.subject.clone(), s.rest.clone(), s.id.clone()]);
        markers.extend(s.personal.iter().cloned());
    }
    let mut pseudonym_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut projection_id_of: BTreeMap<String, String> = BTreeMap::new();
    for p in &projections {
        let text = p.to_string();
        let id = p["id"].as_str().expect("id");
        let leaked: Vec<&String> = markers
            .iter()
            .filter(|m| id.contains(m.as_str()) || text.contains(m.as_str()))
            .collect();
        assert!(leaked.is_empty(), "projection in us-east carries {leaked:?}: {p}");
        let value = p["value"].as_object().unwrap_or_else(|| panic!("an object value: {p}"));
        let keys: BTreeSet<&str> = value.keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["country", "plan", "pseudonym"]), "fields of {p}");
        let s = subs
            .iter()
            .find(|s| value["plan"] == s.plan && value["country"] == s.country)
            .unwrap_or_else(|| panic!("a projection of no record of this test: {p}"));
        let pseudonym = value["pseudonym"].as_str().expect("pseudonym is a string").to_owned();
        assert!(
            pseudonym.len() >= 16 && pseudonym.bytes().all(|b| b.is_ascii_hexdigit()),
            "pseudonym {pseudonym:?} is not a keyed hash"
        );
        assert!(
            id.starts_with(&format!("{pseudonym}.")),
            "projection id {id} is <pseudonym>.<hash>"
        );
        pseudonym_of.entry(s.subject.clone()).or_default().insert(pseudonym);
        assert!(
            projection_id_of.insert(s.id.clone(), id.to_owned()).is_none(),
            "two projections of {}",
            s.id
        );
    }
    // Stable per subject, different between subjects.
    for (subject, ps) in &pseudonym_of {
        assert_eq!(ps.len(), 1, "{subject} has several pseudonyms: {ps:?}");
    }
    let distinct: BTreeSet<&String> = pseudonym_of.values().flatten().collect();
    assert_eq!(distinct.len(), 3, "three subjects, three pseudonyms: {pseudonym_of:?}");

    // Stable across updates too: a new plan keeps the subject's pseudonym and the id.
    let first = &subs[0];
    d.routed_ok(
        Method::PATCH,
        &format!("/v1/records/subscription/{}", first.id),
        &json!({"fields": {"plan": "enterprise", "name": format!("{}x", first.personal[0])}}),
        "eu-west",
    );
    let pid = &projection_id_of[&first.id];
    let updated =
        || d.value("us-east", "subscription_stats", pid).is_some_and(|v| v["plan"] == "enterprise");
    assert!(wait_until(CONVERGE_TIMEOUT, updated), "the update of {pid} never reached us-east");
    let v = d.value("us-east", "subscription_stats", pid).expect("present");
    assert_eq!(
        json!(pseudonym_of[&first.subject].iter().next()),
        v["pseudonym"],
        "pseudonym after an update: {v}"
    );

    // The projection type is readable everywhere and identical everywhere.
    let everywhere_same = || {
        ALL.iter().map(|r| d.digest(r, Some("subscription_stats"))).collect::<BTreeSet<_>>().len()
            == 1
    };
    assert!(
        wait_until(CONVERGE_TIMEOUT, everywhere_same),
        "subscription_stats differs between regions"
    );
    for r in ALL {
        assert_eq!(
            d.digest(r, Some("subscription_stats")).1,
            subs.len() as u64,
            "projections at {r}"
        );
    }

    // us-east holds no subscription of an EU subject, and its whole store holds
    // none of their personal values (the US subject's do appear: the search works).
    for s in &eu_subs {
        assert_eq!(d.value("us-east", "subscription", &s.id), None, "us-east serves {}", s.id);
        assert!(d
            .value(if s.subject == ana { "eu-west" } else { "eu-central" }, "subscription", &s.id)
            .is_some());
    }
    let eu_personal: Vec<String> =
        eu_subs.iter().flat_map(|s| s.personal.iter().cloned()).collect();
    let us_files = files_under(&d.region_dir("us-east"));
    assert!(!us_files.is_empty(), "us-east has files");
    let leaks = markers_in_files(&us_files, &eu_personal);
    assert!(leaks.is_empty(), "EU personal values in us-east's data dir: {leaks:?}");
    let cora_name = subs[3].personal[0].clone();
    assert!(
        !markers_in_files(&us_files, std::slice::from_ref(&cora_name)).is_empty(),
        "the search finds nothing at all: the US subject's name is not in us-east's files"
    );
    assert!(
        !markers_in_files(&files_under(&d.region_dir("eu-west")), &[subs[0].personal[0].clone()])
            .is_empty(),
        "the EU subject's name is in its home region's files"
    );

    // Each jurisdiction's pseudonym key stays in it: in its regions' environment
    // only, and nowhere in the other jurisdiction's data.
    for (process, own, foreign) in [
        ("eu-west", Some("TANDEM_PSEUDONYM_KEY_EU"), "TANDEM_PSEUDONYM_KEY_US"),
        ("eu-central", Some("TANDEM_PSEUDONYM_KEY_EU"), "TANDEM_PSEUDONYM_KEY_US"),
        ("us-east", Some("TANDEM_PSEUDONYM_KEY_US"), "TANDEM_PSEUDONYM_KEY_EU"),
        ("router", None, "TANDEM_PSEUDONYM_KEY_EU"),
        ("router", None, "TANDEM_PSEUDONYM_KEY_US"),
    ] {
        let names = d.env_names(process);
        assert!(!names.contains(foreign), "{process} has {foreign}");
        if let Some(own) = own {
            assert!(names.contains(own), "{process} lacks {own}");
        }
    }
    let eu_key = std::fs::read_to_string(d.data_dir.join("pseudonym-EU.key")).expect("EU key");
    assert_eq!(eu_key.trim().len(), 64, "a 32-byte key in hex");
    assert!(
        markers_in_files(&us_files, &[eu_key.trim().to_owned()]).is_empty(),
        "the EU pseudonym key is in us-east's data"
    );

    // Removing the source removes its projection everywhere; the others stay.
    let gone = &subs[2];
    let r =
        d.routed(Method::DELETE, &format!("/v1/records/subscription/{}", gone.id), None, "us-east");
    assert_eq!(r.status, 200, "DELETE {} via the router: {r}", gone.id);
    let gone_pid = &projection_id_of[&gone.id];
    for region in ALL {
        let absent = || d.value(region, "subscription_stats", gone_pid).is_none();
        assert!(wait_until(CONVERGE_TIMEOUT, absent), "projection {gone_pid} still at {region}");
    }
    assert_eq!(d.value("eu-central", "subscription", &gone.id), None, "the source is gone");
    for s in subs.iter().filter(|s| s.id != gone.id) {
        for region in ALL {
            assert!(
                d.value(region, "subscription_stats", &projection_id_of[&s.id]).is_some(),
                "the projection of {} is still at {region}",
                s.id
            );
        }
    }
    let remaining = d.scan("us-east", "subscription_stats");
    assert_eq!(remaining.len(), subs.len() - 1, "after the delete: {remaining:?}");
}

// ---- 2. backup destinations --------------------------------------------------------

#[test]
fn backup_to_a_foreign_destination_is_refused_before_anything_is_written() {
    let d = Deployment::start();
    let us = d.backup_url("us");
    let eu = d.backup_url("eu");
    let backup_kinds = |region: &str| -> Vec<Value> {
        d.audit(region)
            .into_iter()
            .filter(|e| e["kind"].as_str().is_some_and(|k| k.starts_with("backup")))
            .collect()
    };

    let out = d.backup("eu-west", &us, &[], &[]);
    assert_eq!(out.code, Some(2), "backup of eu-west to {us}: {out}");
    assert!(out.stderr.contains(&us), "the refusal names the destination: {out}");
    assert!(out.stderr.contains("EU"), "the refusal names the jurisdiction: {out}");
    assert!(
        d.backups_in("us").is_empty(),
        "nothing written to the US dir: {:?}",
        d.backups_in("us")
    );
    assert!(d.backups_in("eu").is_empty(), "nothing written anywhere: {:?}", d.backups_in("eu"));
    // The CLI refused on its own: the node saw no snapshot request.
    assert_eq!(backup_kinds("eu-west"), Vec::<Value>::new(), "eu-west audited a backup");

    // Refused before the node is contacted at all: even a dead URL or a missing
    // key gives the same refusal (not a connection or key error).
    let out =
        d.backup("eu-west", &us, &["--url", "http://127.0.0.1:9"], &[("TANDEM_BACKUP_KEY", None)]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("not a backup destination of EU"), "{out}");
    // A destination may not climb out of a declared prefix, however spelled:
    // URL parsing resolves encoded dots and backslashes and drops tabs.
    let climbs = [
        format!("{eu}../us/"),
        format!("{eu}%2e%2e/us/"),
        format!("{eu}.%2E/us/"),
        format!("{eu}..\\us\\eu-west.tbk"),
        format!("{eu}.\t./us/"),
    ];
    for climb in &climbs {
        let out = d.backup("eu-west", climb, &[], &[]);
        assert_eq!(out.code, Some(2), "backup to {climb:?}: {out}");
        assert!(out.stderr.contains("backup refused"), "{out}");
        assert!(d.backups_in("us").is_empty(), "{climb:?} wrote {:?}", d.backups_in("us"));
    }
    // The other way round: a US region may not back up into the EU dir.
    let out = d.backup("us-east", &eu, &[], &[]);
    assert_eq!(out.code, Some(2), "backup of us-east to {eu}: {out}");
    assert!(out.stderr.contains(&eu) && out.stderr.contains("US"), "{out}");
    assert!(d.backups_in("us").is_empty() && d.backups_in("eu").is_empty(), "nothing written");
    for region in ["eu-west", "us-east"] {
        assert_eq!(backup_kinds(region), Vec::<Value>::new(), "{region} audited a backup");
    }

    // The node's own check: the snapshot endpoint refuses the destination, audited.
    let snapshot = |dest: &str, token: Option<&str>| {
        let q: String = url::form_urlencoded::byte_serialize(dest.as_bytes()).collect();
        let url = format!("{}/v1/admin/snapshot?destination={q}", d.url("eu-west"));
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        d.call(Method::GET, &url, None, &headers)
    };
    let r = snapshot(&us, None);
    assert_eq!(r.status, 401, "snapshot without the admin token: {r}");
    assert_eq!(backup_kinds("eu-west"), Vec::<Value>::new(), "an unauthorized call is not a flow");
    let r = snapshot(&us, Some(ADMIN_TOKEN));
    assert_eq!(r.status, 403, "snapshot for {us}: {r}");
    assert_eq!(r.body["error"]["code"], "backup_destination_refused", "{r}");
    let refused = backup_kinds("eu-west");
    assert_eq!(refused.len(), 1, "one audited refusal: {refused:?}");
    assert_eq!(refused[0]["kind"], "backup_refused", "{refused:?}");
    assert!(
        refused[0]["detail"].as_str().is_some_and(|t| t.contains(&us)),
        "the entry names {us}: {refused:?}"
    );
    let r = snapshot(&climbs[1], Some(ADMIN_TOKEN));
    assert_eq!(r.status, 403, "snapshot for {}: {r}", climbs[1]);
    assert_eq!(backup_kinds("eu-west").len(), 2, "both refusals audited");
    assert!(d.backups_in("us").is_empty(), "nothing written to the US dir");
}

// ---- 3. backup, wipe, restore ----------------------------------------------------------

/// Writes of every kind of entity type, in every region, some through the
/// router; `tag` makes the values markers. Returns the plaintext markers.
fn write_mixed(
    d: &Deployment,
    tag: &str,
    eu_subject: &str,
    eu2_subject: &str,
    us_subject: &str,
) -> Vec<String> {
    let name = format!("QZPROFILE{tag}");
    let article = format!("QZARTICLE{tag}");
    let password = format!("QZPASSWORD{tag}");
    for (subject, home) in
        [(eu_subject, "eu-west"), (eu2_subject, "eu-central"), (us_subject, "us-east")]
    {
        let rec = |entity: &str, rest: &str| format!("/v1/records/{entity}/{subject}:{rest}");
        d.routed_ok(
            Method::PATCH,
            &rec("profile", "main"),
            &json!({"fields": {"name": format!("{name}{home}"), "city": "Lyon"}}),
            home,
        );
        d.routed_ok(
            Method::PUT,
            &rec("credential", "pw"),
            &json!({"value": format!("{password}{home}")}),
            home,
        );
        d.routed_ok(
            Method::POST,
            &rec("balance", "eur/ops"),
            &json!({"op": "incr", "by": 100}),
            home,
        );
        d.routed_ok(
            Method::POST,
            &rec("balance", "eur/ops"),
            &json!({"op": "decr", "by": 30}),
            home,
        );
        d.routed_ok(
            Method::POST,
            &rec("cart", "now/ops"),
            &json!({"op": "add", "elements": ["book", "pen"]}),
            home,
        );
        d.routed_ok(
            Method::PATCH,
            &rec("settings", "ui"),
            &json!({"fields": {"theme": "dark"}}),
            home,
        );
        d.routed_ok(
            Method::PATCH,
            &rec("subscription", "main"),
            &json!({"fields": {"plan": "pro", "country": "DE", "name": format!("{name}{home}")}}),
            home,
        );
    }
    for region in ALL {
        d.direct_ok(
            Method::POST,
            region,
            "/v1/records/page_views/home/ops",
            &json!({"op": "incr", "by": 3}),
        );
        d.direct_ok(
            Method::POST,
            region,
            "/v1/records/likes/post-1/ops",
            &json!({"op": "incr", "by": 2}),
        );
        d.direct_ok(
            Method::POST,
            region,
            "/v1/records/tags/post-1/ops",
            &json!({"op": "add", "elements": [region]}),
        );
        d.direct_ok(
            Method::PUT,
            region,
            &format!("/v1/records/article/{region}"),
            &json!({"value": {"title": format!("{article}{region}")}}),
        );
    }
    d.direct_ok(
        Method::POST,
        "us-east",
        "/v1/records/likes/post-1/ops",
        &json!({"op": "decr", "by": 1}),
    );
    d.direct_ok(
        Method::POST,
        "eu-central",
        "/v1/records/tags/post-1/ops",
        &json!({"op": "remove", "elements": ["us-east"]}),
    );
    vec![name, article, password, eu_subject.to_owned()]
}

#[test]
fn backup_wipe_restore_round_trip_gives_the_same_digest() {
    let d = Deployment::start();
    let tag = unique_tag();
    let (eu1, eu2, us1) =
        (format!("qzsubjeu{tag}"), format!("qzsubjec{tag}"), format!("qzsubjus{tag}"));
    d.register(&eu1, "eu-west");
    d.register(&eu2, "eu-central");
    d.register(&us1, "us-east");
    let markers = write_mixed(&d, &tag, &eu1, &eu2, &us1);
    d.wait_converged("after the writes");
    let before = d.digest("eu-west", None);
    assert!(before.1 > 20, "eu-west holds the writes: {before:?}");

    let eu = d.backup_url("eu");
    let out = d.backup("eu-west", &eu, &[], &[]);
    assert_eq!(out.code, Some(0), "backup of eu-west to {eu}: {out}");
    let files = d.backups_in("eu");
    assert_eq!(files.len(), 1, "one backup file: {files:?}");
    let file = files[0].clone();
    assert_eq!(file.extension().and_then(|e| e.to_str()), Some("tbk"), "{file:?}");
    assert!(d.backups_in("us").is_empty(), "nothing in the US dir");
    let bytes = std::fs::read(&file).expect("read the backup");
    assert!(bytes.starts_with(b"TNDMBK01"), "a tandem backup");
    let plain = markers_in_files(std::slice::from_ref(&file), &markers);
    assert!(plain.is_empty(), "plaintext in the backup: {plain:?}");
    let audited: Vec<Value> =
        d.audit("eu-west").into_iter().filter(|e| e["kind"] == "backup").collect();
    assert_eq!(audited.len(), 1, "the backup is audited: {audited:?}");
    assert!(audited[0]["detail"].as_str().is_some_and(|t| t.contains(&eu)), "{audited:?}");

    // Writes after the backup: the restore takes eu-west back before them,
    // and its peers must hand them back once it rejoins.
    let profile = format!("{eu1}:main");
    d.direct_ok(
        Method::PUT,
        "eu-west",
        "/v1/records/article/after-backup",
        &json!({"value": "after the backup"}),
    );
    d.direct_ok(
        Method::POST,
        "eu-west",
        "/v1/records/page_views/home/ops",
        &json!({"op": "incr", "by": 7}),
    );
    d.direct_ok(
        Method::PATCH,
        "eu-west",
        &format!("/v1/records/profile/{profile}"),
        &json!({"fields": {"phone": "after the backup"}}),
    );
    d.wait_converged("after the post-backup writes");
    assert_ne!(d.digest("eu-west", None), before, "the post-backup writes are in");

    // Wipe eu-west and restore it from the backup.
    d.process("eu-west", "stop");
    std::fs::remove_dir_all(d.region_dir("eu-west")).expect("wipe eu-west");
    let out = d.restore("eu-west", &file_url(&file), &[]);
    assert_eq!(out.code, Some(0), "restore of eu-west: {out}");
    let verify =
        || d.tandem(&["audit", "verify", "--config", d.config_arg(), "--region", "eu-west"], &[]);
    let out = verify();
    assert_eq!(out.code, Some(0), "audit verify after the restore: {out}");
    let audit_text =
        std::fs::read_to_string(d.region_dir("eu-west").join("audit.jsonl")).expect("audit file");
    let restore_entries: Vec<Value> = audit_text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"] == "restore")
        .collect();
    assert_eq!(restore_entries.len(), 1, "a restore entry: {audit_text}");
    assert!(!contains(audit_text.as_bytes(), markers[0].as_bytes()), "no values in the audit log");
    // Start it with its links cut, so that the digest shows exactly what was restored.
    d.link("*", "eu-west", "cut");
    d.link("eu-west", "*", "cut");
    d.process("eu-west", "start");
    assert_eq!(d.digest("eu-west", None), before, "eu-west after backup, wipe and restore");
    assert_eq!(d.value("eu-west", "article", "after-backup"), None, "restored to the backup");
    d.link("*", "eu-west", "heal");
    d.link("eu-west", "*", "heal");

    // The restored region rejoins replication in both directions.
    d.direct_ok(
        Method::PUT,
        "us-east",
        "/v1/records/article/after-restore-us",
        &json!({"value": "from us-east"}),
    );
    d.direct_ok(
        Method::PUT,
        "eu-west",
        "/v1/records/article/after-restore-eu",
        &json!({"value": "from eu-west"}),
    );
    d.direct_ok(
        Method::POST,
        "eu-west",
        "/v1/records/page_views/home/ops",
        &json!({"op": "incr", "by": 5}),
    );
    d.direct_ok(
        Method::PATCH,
        "eu-west",
        &format!("/v1/records/profile/{profile}"),
        &json!({"fields": {"city": "Porto"}}),
    );
    d.wait_present("eu-west", "article", "after-restore-us");
    for region in ["eu-central", "us-east"] {
        d.wait_present(region, "article", "after-restore-eu");
    }
    let moved = || d.value("eu-central", "profile", &profile).is_some_and(|v| v["city"] == "Porto");
    assert!(
        wait_until(CONVERGE_TIMEOUT, moved),
        "eu-west's new profile write never reached eu-central"
    );
    d.wait_converged("after the restored region rejoined");
    // 3 per region before the backup, 7 after it, 5 after the restore: the
    // post-backup increment came back from the peers, under its old actor.
    for region in ALL {
        assert_eq!(
            d.value(region, "page_views", "home"),
            Some(json!(21)),
            "page_views at {region}"
        );
        assert!(
            d.value(region, "article", "after-backup").is_some(),
            "the post-backup article at {region}"
        );
    }
    let p = d.value("eu-west", "profile", &profile).expect("the profile at eu-west");
    assert_eq!(
        (&p["phone"], &p["city"]),
        (&json!("after the backup"), &json!("Porto")),
        "eu-west's profile holds the post-backup and the post-restore writes: {p}"
    );
    assert_eq!(d.value("us-east", "profile", &profile), None, "EU profile never in us-east");
    assert_ne!(d.digest("eu-west", None), before, "the new writes are in");

    // The audit chain the restore started continues intact under the running node.
    d.process("eu-west", "stop");
    let out = verify();
    assert_eq!(out.code, Some(0), "audit verify after the region ran again: {out}");
    let audit_text =
        std::fs::read_to_string(d.region_dir("eu-west").join("audit.jsonl")).expect("audit file");
    assert!(audit_text.lines().count() > 1, "the node appended to the restored log: {audit_text}");
}

// ---- 4. damaged backups -------------------------------------------------------------

#[test]
fn tampered_or_truncated_backups_are_refused_and_change_nothing() {
    let d = Deployment::start();
    let tag = unique_tag();
    let subject = format!("qzsubj{tag}");
    d.register(&subject, "eu-west");
    let profile = format!("{subject}:main");
    d.routed_ok(
        Method::PATCH,
        &format!("/v1/records/profile/{profile}"),
        &json!({"fields": {"name": format!("QZNAME{tag}")}}),
        "eu-west",
    );
    d.direct_ok(Method::PUT, "eu-central", "/v1/records/article/a1", &json!({"value": "hello"}));
    d.wait_present("eu-west", "article", "a1");

    let eu = d.backup_url("eu");
    let out = d.backup("eu-west", &eu, &[], &[]);
    assert_eq!(out.code, Some(0), "backup: {out}");
    let files = d.backups_in("eu");
    assert_eq!(files.len(), 1, "{files:?}");
    let good = files[0].clone();
    let bytes = std::fs::read(&good).expect("read the backup");

    // A running region's store is not replaced under it.
    let before = d.digest("eu-west", None);
    let out = d.restore("eu-west", &file_url(&good), &[]);
    assert_ne!(out.code, Some(0), "restore into a running eu-west: {out}");
    assert!(out.stderr.contains("stop the region"), "says why: {out}");
    assert_eq!(d.digest("eu-west", None), before, "a refused restore changes nothing");

    d.process("eu-west", "stop");
    let on_disk = dir_bytes(&d.region_dir("eu-west"));
    assert!(!on_disk.is_empty(), "eu-west has files");

    let dir = d.root.join("damaged");
    std::fs::create_dir_all(&dir).expect("create the damaged dir");
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x01;
    let damaged = [
        ("flipped.tbk", flipped, &["integrity"][..], BACKUP_KEY),
        (
            "truncated.tbk",
            bytes[..bytes.len() - 10].to_vec(),
            &["integrity", "truncated"][..],
            BACKUP_KEY,
        ),
        ("other-key.tbk", bytes.clone(), &["integrity", "another key"][..], OTHER_BACKUP_KEY),
        (
            "garbage.tbk",
            b"this is not a backup at all, just text".to_vec(),
            &["not a tandem backup"][..],
            BACKUP_KEY,
        ),
        ("stub.tbk", bytes[..20].to_vec(), &["truncated"][..], BACKUP_KEY),
    ];
    for (name, content, expected, key) in &damaged {
        let path = dir.join(name);
        std::fs::write(&path, content).expect("write a damaged copy");
        let out = d.restore("eu-west", &file_url(&path), &[("TANDEM_BACKUP_KEY", Some(key))]);
        assert_eq!(out.code, Some(2), "restore of {name}: {out}");
        let err = out.stderr.to_lowercase();
        assert!(
            expected.iter().all(|e| err.contains(e)),
            "restore of {name} says {expected:?}: {out}"
        );
        assert!(
            err.contains("nothing was changed"),
            "restore of {name} says nothing changed: {out}"
        );
        assert_eq!(
            dir_bytes(&d.region_dir("eu-west")),
            on_disk,
            "restore of {name} changed eu-west's files"
        );
    }

    // A backup of eu-west is not a backup of eu-central (refused before its store is touched).
    let central_before = d.digest("eu-central", None);
    let out = d.restore("eu-central", &file_url(&good), &[]);
    assert_eq!(out.code, Some(2), "restore of eu-west's backup into eu-central: {out}");
    assert!(out.stderr.contains("eu-west") && out.stderr.contains("eu-central"), "{out}");
    assert_eq!(d.digest("eu-central", None), central_before, "eu-central unchanged");
    assert_eq!(dir_bytes(&d.region_dir("eu-west")), on_disk, "eu-west's files unchanged");

    d.process("eu-west", "start");
    assert_eq!(d.digest("eu-west", None), before, "eu-west after the refused restores");
    let restores: Vec<Value> =
        d.audit("eu-west").into_iter().filter(|e| e["kind"] == "restore").collect();
    assert!(restores.is_empty(), "no restore was audited: {restores:?}");
    assert!(d.value("eu-west", "profile", &profile).is_some(), "the data is still served");
}
