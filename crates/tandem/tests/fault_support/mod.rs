//! The randomized fault harness over real processes: a four-region deployment
//! (`eu-west`, `eu-central` in EU; `us-east`, `us-west` in US) with the router
//! under `tandem up`, on free loopback ports with its own data directory; a
//! seeded workload of client threads (every merge type, subjects homed in
//! both jurisdictions, through the router and straight at regions); a seeded
//! fault thread driving `tandem up`'s control API and the router's admin API
//! (link cuts both ways, one way and partial, latency spikes, `kill -9` and
//! restart of regions and of the router, drains, a region isolated from all
//! its peers and rejoining), with clock skew on two
//! regions from the start; then heal, convergence, and a checker that reads
//! only the recorded history and what the regions serve (digests, records,
//! scans, audit logs).
//!
//! The seed fixes the deployment, the workload's choices and the fault
//! schedule; the operating system still decides the interleaving, so a seed
//! replays the same scenario, not the same microsecond. The verdict on
//! acknowledged writes is the simulation's own code (`tandem-sim`'s
//! `check/writes.rs`, compiled in here by path).
#![allow(dead_code)]

#[path = "../../../tandem-sim/src/check/writes.rs"]
pub mod writes;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill as send_signal, Signal};
use nix::unistd::Pid;
use reqwest::Method;
use serde_json::{json, Value};
use tandem_clock::VersionVector;
use writes::{Final, Outcome, Shape, Write, WriteRecord};

pub const ADMIN_TOKEN: &str = "fault-test-admin-token";
pub const REPLICATION_SECRET: &str = "fault-test-secret";
pub const REGIONS: [&str; 4] = ["eu-central", "eu-west", "us-east", "us-west"];
/// Clock skews the deployment starts with (`tandem up --clock-skew`).
pub const SKEWS: [(&str, i64); 2] = [("us-east", -3_000), ("eu-central", 2_500)];
/// Subjects and their homes: two per jurisdiction.
pub const SUBJECTS: [(&str, &str); 4] =
    [("e0", "eu-west"), ("e1", "eu-central"), ("u0", "us-east"), ("u1", "us-west")];
/// Entity types the workload writes (every merge type; personal and pinned or not).
pub const ENTITIES: [&str; 9] = [
    "article",
    "balance",
    "cart",
    "credential",
    "likes",
    "page_views",
    "profile",
    "settings",
    "tags",
];

const START_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Per request (above the router's upstream time-out of 5 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(200);
const LOG_TAIL_LINES: usize = 150;

// ---- seeded randomness ---------------------------------------------------------

/// SplitMix64, as in the simulation: one seed, forked per thread.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    pub fn fork(&mut self, salt: u64) -> Rng {
        Rng(self.next_u64() ^ salt.wrapping_mul(0xD6E8_FEB8_6659_FD93))
    }
}

// ---- the deployment --------------------------------------------------------------

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `tandem up --unsafe-ack-region R`: R acknowledges before its commit.
    pub unsafe_ack_region: Option<String>,
}

pub struct Deployment {
    dir: tempfile::TempDir,
    pub config: tandem_config::Config,
    pub config_path: PathBuf,
    pub regions: BTreeMap<String, String>,
    pub router: String,
    control: String,
    child: Mutex<Option<Child>>,
    /// Everything `tandem up` and its processes print.
    pub log: PathBuf,
    pids: Mutex<BTreeMap<String, u32>>,
    pub http: reqwest::blocking::Client,
    started: Instant,
}

/// `(digest, records)` of one entity at one region, or why it is not known.
pub type Digest = Result<(String, u64), String>;

/// One answer: status, `X-Tandem-Region`, JSON body.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub region: Option<String>,
    pub route: Option<String>,
    pub body: Value,
}

impl Resp {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Deployment {
    pub fn start(opts: &Options) -> Deployment {
        let dir = tempfile::Builder::new().prefix("tandem-fault-").tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let config = four_region_config(&data_dir);
        let config_path = dir.path().join("tandem.toml");
        std::fs::write(&config_path, toml::to_string(&config).expect("config encodes"))
            .expect("write config");
        let log = dir.path().join("up.log");
        let out = File::create(&log).expect("up log");
        let err = out.try_clone().expect("log handle");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
        cmd.arg("up")
            .arg("--config")
            .arg(&config_path)
            .args(["--control", "127.0.0.1:0", "--start-timeout-secs", "100"])
            .env("TANDEM_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("TANDEM_REPLICATION_SECRET", REPLICATION_SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        for (region, ms) in SKEWS {
            cmd.arg(format!("--clock-skew={region}={ms}"));
        }
        if let Some(r) = &opts.unsafe_ack_region {
            cmd.args(["--unsafe-ack-region", r]);
        }
        let mut child = cmd.spawn().expect("spawn tandem up");
        let summary = data_dir.join("up.json");
        let started = Instant::now();
        let control = loop {
            let parsed = std::fs::read(&summary)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| v["control"].as_str().map(str::to_owned));
            if let Some(c) = parsed {
                break c;
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || started.elapsed() > START_TIMEOUT {
                let _ = send_signal(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
                if !wait_exit(&mut child, STOP_TIMEOUT) {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                panic!(
                    "tandem up did not come up ({exited:?}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(POLL);
        };
        let http = reqwest::blocking::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .expect("client");
        let d = Deployment {
            regions: config
                .regions
                .iter()
                .map(|r| (r.name.clone(), format!("http://{}", r.listen)))
                .collect(),
            router: format!("http://{}", config.router.listen),
            config,
            config_path,
            dir,
            control,
            child: Mutex::new(Some(child)),
            log,
            pids: Mutex::new(BTreeMap::new()),
            http,
            started: Instant::now(),
        };
        d.remember_pids();
        let all_up = || {
            d.try_call(Method::GET, &format!("{}/v1/routes", d.router), None, &[]).is_ok_and(|r| {
                r.body["regions"].as_array().is_some_and(|rs| rs.iter().all(|r| r["up"] == true))
            })
        };
        assert!(
            wait_until(START_TIMEOUT, all_up),
            "the router never saw every region\n{}",
            d.logs()
        );
        d
    }

    /// Milliseconds since the deployment was up (the history's clock).
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn url(&self, region: &str) -> &str {
        &self.regions[region]
    }

    pub fn jurisdiction_of(&self, region: &str) -> &str {
        self.config.jurisdiction_of(region).expect("known region")
    }

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
            |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (region, route) = (header("x-tandem-region"), header("x-tandem-route"));
        let text = resp.text()?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Resp { status, region, route, body })
    }

    pub fn call(&self, method: Method, url: &str, body: Option<&Value>) -> Resp {
        self.try_call(method.clone(), url, body, &[])
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
    }

    fn control_post(&self, path: &str, body: Option<&Value>) -> Result<(), String> {
        let url = format!("{}{path}", self.control);
        // `start` answers once the process is healthy: allow for a slow machine.
        let mut req = self.http.post(&url).timeout(Duration::from_secs(90));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().map_err(|e| format!("POST {path}: {e}"))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("POST {path}: {} {}", resp.status(), resp.text().unwrap_or_default()))
        }
    }

    pub fn cut(&self, from: &str, to: &str) -> Result<(), String> {
        self.control_post(&format!("/v1/links/{from}/{to}/cut"), None)
    }

    pub fn heal(&self, from: &str, to: &str) -> Result<(), String> {
        self.control_post(&format!("/v1/links/{from}/{to}/heal"), None)
    }

    pub fn latency(&self, from: &str, to: &str, ms: u64) -> Result<(), String> {
        self.control_post(
            &format!("/v1/links/{from}/{to}/latency"),
            Some(&json!({ "latency_ms": ms })),
        )
    }

    pub fn kill(&self, process: &str) -> Result<(), String> {
        self.control_post(&format!("/v1/processes/{process}/kill"), None)
    }

    pub fn start_process(&self, process: &str) -> Result<(), String> {
        let r = self.control_post(&format!("/v1/processes/{process}/start"), None);
        self.remember_pids();
        r
    }

    pub fn router_admin(&self, region: &str, action: &str) -> Result<(), String> {
        let url = format!("{}/v1/admin/regions/{region}/{action}", self.router);
        let auth = format!("Bearer {ADMIN_TOKEN}");
        match self.try_call(Method::POST, &url, None, &[("authorization", &auth)]) {
            Ok(r) if r.status == 200 => Ok(()),
            Ok(r) => Err(format!("{action} {region}: {} {}", r.status, r.body)),
            Err(e) => Err(format!("{action} {region}: {e}")),
        }
    }

    fn remember_pids(&self) {
        let url = format!("{}/v1/deployment", self.control);
        if let Ok(r) = self.try_call(Method::GET, &url, None, &[]) {
            if let Some(ps) = r.body["processes"].as_object() {
                let mut pids = self.pids.lock().expect("pids");
                for (name, p) in ps {
                    if let Some(pid) = p["pid"].as_u64() {
                        pids.insert(name.clone(), pid as u32);
                    }
                }
            }
        }
    }

    /// `POST /v1/admin/{isolate|rejoin}` at a region (stop or resume all of
    /// its replication without stopping the process).
    pub fn node_admin(&self, region: &str, action: &str) -> Result<(), String> {
        let url = format!("{}/v1/admin/{action}", self.url(region));
        let auth = format!("Bearer {ADMIN_TOKEN}");
        match self.try_call(Method::POST, &url, None, &[("authorization", &auth)]) {
            Ok(r) if r.status == 200 => Ok(()),
            Ok(r) => Err(format!("{action} {region}: {} {}", r.status, r.body)),
            Err(e) => Err(format!("{action} {region}: {e}")),
        }
    }

    /// Whether each process is running, per the control API.
    pub fn running(&self) -> BTreeMap<String, bool> {
        let url = format!("{}/v1/deployment", self.control);
        let r = self.call(Method::GET, &url, None);
        r.body["processes"]
            .as_object()
            .expect("processes")
            .iter()
            .map(|(n, p)| (n.clone(), p["running"] == true))
            .collect()
    }

    /// Undo every fault: heal every link at its configured latency, start
    /// what is stopped, restore every drain.
    pub fn heal_everything(&self) -> Result<(), String> {
        self.heal("*", "*")?;
        for a in REGIONS {
            for b in REGIONS.iter().filter(|b| **b != a) {
                self.latency(a, b, self.config.link_latency_ms(a, b))?;
            }
        }
        for (name, running) in self.running() {
            if !running {
                self.start_process(&name)?;
            }
        }
        let router_sees_all = || {
            self.try_call(Method::GET, &format!("{}/v1/routes", self.router), None, &[]).is_ok_and(
                |r| {
                    r.body["regions"]
                        .as_array()
                        .is_some_and(|rs| rs.iter().all(|r| r["up"] == true))
                },
            )
        };
        if !wait_until(Duration::from_secs(30), router_sees_all) {
            return Err("the router does not see every region up after healing".into());
        }
        for r in REGIONS {
            self.router_admin(r, "restore")?;
            self.node_admin(r, "rejoin")?;
        }
        Ok(())
    }

    /// `(digest, records)` of one entity at a region.
    pub fn digest(&self, region: &str, entity: &str) -> Digest {
        let url = format!("{}/v1/digest?entity={entity}", self.url(region));
        let r = self.try_call(Method::GET, &url, None, &[]).map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("digest of {entity} at {region}: {} {}", r.status, r.body));
        }
        Ok((
            r.body["digest"].as_str().unwrap_or("").to_owned(),
            r.body["records"].as_u64().unwrap_or(0),
        ))
    }

    /// The groups of regions that must hold equal digests of `entity`.
    pub fn digest_groups(&self, entity: &str) -> Vec<Vec<&'static str>> {
        let personal = self.config.entity(entity).is_some_and(|e| e.personal);
        if personal {
            ["EU", "US"]
                .iter()
                .map(|j| {
                    REGIONS.iter().copied().filter(|r| self.jurisdiction_of(r) == *j).collect()
                })
                .collect()
        } else {
            vec![REGIONS.to_vec()]
        }
    }

    /// Wait until every group of every entity (and the subject registry)
    /// shows equal digests; the differences seen last on time-out.
    pub fn wait_converged(&self, timeout: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        let mut entities: Vec<&str> = ENTITIES.to_vec();
        entities.push("_subject");
        let mut last = String::new();
        while started.elapsed() < timeout {
            let mut diff = String::new();
            for e in &entities {
                for group in self.digest_groups(e) {
                    let ds: Vec<(String, Digest)> =
                        group.iter().map(|r| ((*r).to_string(), self.digest(r, e))).collect();
                    let first = &ds[0].1;
                    if first.is_err() || ds.iter().any(|(_, d)| d != first) {
                        let _ = writeln!(diff, "{e}: {ds:?}");
                    }
                }
            }
            if diff.is_empty() {
                return Ok(started.elapsed());
            }
            last = diff;
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(format!("no convergence within {timeout:?}:\n{last}{}", self.link_report()))
    }

    /// One line per region and peer: connected, cursor, last error.
    pub fn link_report(&self) -> String {
        let mut out = String::new();
        for r in REGIONS {
            let url = format!("{}/v1/status", self.url(r));
            let Ok(s) = self.try_call(Method::GET, &url, None, &[]) else {
                let _ = writeln!(out, "{r}: no status");
                continue;
            };
            for p in s.body["peers"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "{r} <- {}: connected={} cursor={} peer_last_seq={} error={}",
                    p["peer"], p["connected"], p["cursor"], p["peer_last_seq"], p["last_error"]
                );
            }
        }
        out
    }

    /// Every record of `entity` a region serves (all scan pages).
    pub fn scan(&self, region: &str, entity: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut url = format!("{}/v1/records/{entity}?limit=1000", self.url(region));
            if let Some(a) = &after {
                url.push_str(&format!("&after={a}"));
            }
            let r = self.call(Method::GET, &url, None);
            assert_eq!(r.status, 200, "scan {entity} at {region}: {}", r.body);
            out.extend(r.body["records"].as_array().cloned().unwrap_or_default());
            match r.body["next"].as_str() {
                Some(n) => after = Some(n.to_owned()),
                None => return out,
            }
        }
    }

    /// Every entry of a region's audit log.
    pub fn audit(&self, region: &str) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        loop {
            let after = out.last().map_or(0, |e| e["seq"].as_u64().unwrap_or(0));
            let url = format!("{}/v1/audit?after={after}&limit=1000", self.url(region));
            let r = self.call(Method::GET, &url, None);
            assert_eq!(r.status, 200, "audit of {region}: {}", r.body);
            let page = r.body["entries"].as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    pub fn logs(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        format!("---- {} (last {} lines)\n{}\n", self.log.display(), tail.len(), tail.join("\n"))
    }

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
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("deployment under {}\n{}", self.dir.path().display(), self.logs());
        }
        self.stop();
    }
}

/// The example deployment plus `us-west` (US), on free loopback ports.
fn four_region_config(data_dir: &Path) -> tandem_config::Config {
    let mut config = tandem_config::Config::example();
    config.regions.push(tandem_config::RegionConfig {
        name: "us-west".into(),
        jurisdiction: "US".into(),
        listen: "127.0.0.1:1".parse().expect("addr"),
    });
    for (other, ms) in [("us-east", 30), ("eu-west", 70), ("eu-central", 75)] {
        config.links.push(tandem_config::LinkConfig {
            between: ["us-west".into(), other.into()],
            latency_ms: ms,
        });
    }
    let ports = free_ports(config.regions.len() + 1);
    for (region, port) in config.regions.iter_mut().zip(&ports) {
        region.listen = SocketAddr::from(([127, 0, 0, 1], *port));
    }
    config.router.listen = SocketAddr::from(([127, 0, 0, 1], ports[ports.len() - 1]));
    config.deployment.data_dir = data_dir.to_owned();
    config.validate().expect("the fault deployment is valid");
    config
}

/// Free loopback ports below the ephemeral range (where only explicit
/// choices compete), never the same twice in this process.
fn free_ports(n: usize) -> Vec<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().expect("ports");
    let low_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut rng = Rng::new(nanos ^ u64::from(std::process::id()));
    let mut out = Vec::new();
    let mut tries = 0;
    while out.len() < n {
        tries += 1;
        let port = if low_ephemeral > 22_000 && tries < 10_000 {
            20_000 + rng.below(u64::from(low_ephemeral - 20_000)) as u16
        } else {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        if handed_out.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        handed_out.insert(port);
        out.push(port);
    }
    out
}

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

fn kill_if_ours(pid: u32, config: &Path) {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return };
    if String::from_utf8_lossy(&cmdline)
        .contains(&*config.parent().unwrap_or(config).to_string_lossy())
    {
        let _ = send_signal(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

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

// ---- the history ------------------------------------------------------------------

/// One client operation as the client saw it.
#[derive(Debug, Clone)]
pub struct OpRecord {
    pub op: u64,
    pub at_ms: u64,
    pub done_ms: u64,
    pub entity: String,
    pub id: String,
    /// `None` for a read.
    pub write: Option<Write>,
    /// `router from <caller>` or `direct at <region>[ failover <home>]`.
    pub via: String,
    pub through_router: bool,
    pub status: u16,
    pub code: String,
    /// `X-Tandem-Region` / `X-Tandem-Route` of a routed answer.
    pub served_by: Option<String>,
    pub route: Option<String>,
    pub outcome: Outcome,
}

#[derive(Debug, Default)]
pub struct History {
    pub ops: Vec<OpRecord>,
    /// `(ms, what)`.
    pub faults: Vec<(u64, String)>,
}

pub type Shared = Arc<Mutex<History>>;

fn render_op(o: &OpRecord) -> String {
    let what = o.write.as_ref().map_or("read".to_string(), |w| format!("{w:?}"));
    let served = o
        .served_by
        .as_ref()
        .map(|r| format!(" -> {r} ({})", o.route.as_deref().unwrap_or("?")))
        .unwrap_or_default();
    let outcome = match &o.outcome {
        Outcome::Acked { region, version } => format!("ACK by {region} {version:?}"),
        Outcome::Refused if o.write.is_none() && o.status == 200 => "served".into(),
        Outcome::Refused => format!("refused {} {}", o.status, o.code),
        Outcome::Unknown => format!("UNKNOWN ({} {})", o.status, o.code),
    };
    format!(
        "{:>7} ms  #{} {}/{} {what} via {}{served}: {outcome} (answered at {} ms)",
        o.at_ms, o.op, o.entity, o.id, o.via, o.done_ms
    )
}

/// The operations on one record and every fault, in time order.
pub fn render_for(h: &History, entity: &str, id: &str) -> String {
    let mut lines: Vec<(u64, String)> = h
        .ops
        .iter()
        .filter(|o| o.entity == entity && o.id == id)
        .map(|o| (o.at_ms, render_op(o)))
        .collect();
    lines.extend(h.faults.iter().map(|(t, f)| (*t, format!("{t:>7} ms  fault: {f}"))));
    lines.sort_by_key(|(t, _)| *t);
    lines.into_iter().map(|(_, l)| l + "\n").collect()
}

// ---- the workload ------------------------------------------------------------------

const ELEMENTS: [&str; 4] = ["w", "x", "y", "z"];
const FIELDS: [&str; 3] = ["a", "b", "c"];

/// Issue random operations until `until`, recording each.
pub fn client(
    d: &Deployment,
    mut rng: Rng,
    seed: u64,
    next_op: &AtomicU64,
    until: Instant,
    h: &Shared,
) {
    while Instant::now() < until {
        let op = next_op.fetch_add(1, Ordering::SeqCst);
        let entity = *rng.pick(&ENTITIES);
        let cfg = d.config.entity(entity).expect("entity").clone();
        let id = if cfg.subjects {
            format!("{}:{}", rng.pick(&SUBJECTS).0, rng.below(2))
        } else {
            format!("k{}", rng.below(3))
        };
        let write =
            if rng.chance(120) { None } else { Some(plan_write(&mut rng, cfg.merge, seed, op)) };
        let (method, path, body) = request_of(entity, &id, write.as_ref());
        let through_router = rng.chance(700);
        let (url, via, headers): (String, String, Vec<(String, String)>) = if through_router {
            let caller = *rng.pick(&REGIONS);
            (
                format!("{}{path}", d.router),
                format!("router from {caller}"),
                vec![("x-tandem-client-region".into(), caller.into())],
            )
        } else {
            let region = *rng.pick(&REGIONS);
            let mut headers = Vec::new();
            let mut via = format!("direct at {region}");
            if rng.chance(150) {
                let home = *rng.pick(&REGIONS);
                headers.push(("x-tandem-failover".into(), home.into()));
                via.push_str(&format!(" failover {home}"));
            }
            (format!("{}{path}", d.url(region)), via, headers)
        };
        let at_ms = d.now_ms();
        let hdrs: Vec<(&str, &str)> =
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let result = d.try_call(method, &url, body.as_ref(), &hdrs);
        let done_ms = d.now_ms();
        let mut rec = OpRecord {
            op,
            at_ms,
            done_ms,
            entity: entity.into(),
            id: id.clone(),
            write: write.clone(),
            via,
            through_router,
            status: 0,
            code: String::new(),
            served_by: None,
            route: None,
            outcome: Outcome::Refused,
        };
        match result {
            Err(e) => {
                rec.code =
                    if e.is_connect() { "connect".into() } else { format!("transport: {e}") };
                // A refused connection never delivered the request.
                rec.outcome = if e.is_connect() { Outcome::Refused } else { Outcome::Unknown };
            }
            Ok(r) => {
                rec.status = r.status;
                rec.code = r.code().to_owned();
                rec.served_by = r.region.clone();
                rec.route = r.route.clone();
                rec.outcome = match r.status {
                    200 if write.is_some() => Outcome::Acked {
                        region: r.body["region"].as_str().unwrap_or("").to_owned(),
                        version: serde_json::from_value::<VersionVector>(r.body["version"].clone())
                            .unwrap_or_default(),
                    },
                    200 => Outcome::Refused,
                    s if s < 500 => Outcome::Refused,
                    503 if r.code() == "no_region_available" => Outcome::Refused,
                    // 502, 504, 503 `unavailable`: it may have been applied.
                    _ => Outcome::Unknown,
                };
            }
        }
        h.lock().expect("history").ops.push(rec);
        std::thread::sleep(Duration::from_millis(rng.range(5, 40)));
    }
}

fn plan_write(rng: &mut Rng, merge: tandem_config::MergeKind, seed: u64, op: u64) -> Write {
    use tandem_config::MergeKind as K;
    match merge {
        K::Lww if rng.chance(150) => Write::Delete,
        K::Lww => Write::Put(json!(format!("v{seed:x}-{op}"))),
        K::LwwFields if rng.chance(80) => Write::Delete,
        K::LwwFields => {
            let mut fields = BTreeMap::new();
            for i in 0..rng.range(1, 2) {
                let v = if rng.chance(100) { Value::Null } else { json!(op * 10 + i) };
                fields.insert(rng.pick(&FIELDS).to_string(), v);
            }
            Write::Patch(fields)
        }
        K::GCounter => Write::Incr(rng.range(1, 5)),
        K::PnCounter if rng.chance(400) => Write::Decr(rng.range(1, 5)),
        K::PnCounter => Write::Incr(rng.range(1, 5)),
        K::OrSet => {
            let e = rng.pick(&ELEMENTS).to_string();
            match rng.below(10) {
                0 => Write::Delete,
                1..=3 => Write::Remove(e),
                _ => Write::Add(e),
            }
        }
    }
}

fn request_of(entity: &str, id: &str, write: Option<&Write>) -> (Method, String, Option<Value>) {
    let rec = format!("/v1/records/{entity}/{id}");
    let ops = format!("{rec}/ops");
    match write {
        None => (Method::GET, rec, None),
        Some(Write::Put(v)) => (Method::PUT, rec, Some(json!({ "value": v }))),
        Some(Write::Patch(f)) => (Method::PATCH, rec, Some(json!({ "fields": f }))),
        Some(Write::Incr(by)) => (Method::POST, ops, Some(json!({"op": "incr", "by": by}))),
        Some(Write::Decr(by)) => (Method::POST, ops, Some(json!({"op": "decr", "by": by}))),
        Some(Write::Add(e)) => (Method::POST, ops, Some(json!({"op": "add", "elements": [e]}))),
        Some(Write::Remove(e)) => {
            (Method::POST, ops, Some(json!({"op": "remove", "elements": [e]})))
        }
        Some(Write::Delete) => (Method::DELETE, rec, None),
    }
}

// ---- the faults -----------------------------------------------------------------------

/// What the fault thread may do.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// Pause between two faults, ms.
    pub every_ms: (u64, u64),
    /// Kill only this region (and never the router): for the lying-region test.
    pub only_kill: Option<String>,
}

/// Inject seeded faults until `until`; every fault is undone by
/// `Deployment::heal_everything` afterwards.
pub fn faults(d: &Deployment, mut rng: Rng, plan: &FaultPlan, until: Instant, h: &Shared) {
    let record = |what: String| h.lock().expect("history").faults.push((d.now_ms(), what));
    // Restarts and restores that are due, `(due, action, target)`.
    let mut pending: Vec<(Instant, &'static str, String)> = Vec::new();
    while Instant::now() < until {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(t, _, _)| *t <= now);
        pending = later;
        for (_, action, target) in due {
            let r = match action {
                "start" => d.start_process(&target),
                "restore" => d.router_admin(&target, "restore"),
                "rejoin" => d.node_admin(&target, "rejoin"),
                "unslow" => {
                    let (a, b) = target.split_once('>').expect("link");
                    d.latency(a, b, d.config.link_latency_ms(a, b))
                }
                _ => unreachable!("action {action}"),
            };
            record(format!(
                "{action} {target}{}",
                r.err().map(|e| format!(" ({e})")).unwrap_or_default()
            ));
        }
        let a = *rng.pick(&REGIONS);
        let b = loop {
            let b = *rng.pick(&REGIONS);
            if b != a {
                break b;
            }
        };
        let down_now = pending.iter().any(|(_, act, _)| *act == "start");
        let result = if let Some(victim) = &plan.only_kill {
            if down_now {
                Ok("(waiting for the restart)".to_string())
            } else {
                d.kill(victim).map(|()| {
                    pending.push((
                        Instant::now() + ms(rng.range(800, 2_000)),
                        "start",
                        victim.clone(),
                    ));
                    format!("kill -9 {victim}")
                })
            }
        } else {
            match rng.below(12) {
                0 | 1 => d
                    .cut(a, b)
                    .and_then(|()| d.cut(b, a))
                    .map(|()| format!("partition {a} <-> {b}")),
                2 => d.cut(a, b).map(|()| format!("cut one way {a} -> {b}")),
                3 => d.heal(a, b).map(|()| format!("heal {a} -> {b}")),
                4 => d.heal("*", "*").map(|()| "heal every link".to_string()),
                5 => {
                    let extra = rng.range(200, 1_500);
                    d.latency(a, b, extra).map(|()| {
                        pending.push((
                            Instant::now() + ms(rng.range(1_000, 4_000)),
                            "unslow",
                            format!("{a}>{b}"),
                        ));
                        format!("latency {a} -> {b} {extra} ms")
                    })
                }
                6 | 7 if !down_now => d.kill(a).map(|()| {
                    pending.push((
                        Instant::now() + ms(rng.range(1_000, 4_000)),
                        "start",
                        a.to_string(),
                    ));
                    format!("kill -9 {a}")
                }),
                8 if !down_now => d.kill("router").map(|()| {
                    pending.push((
                        Instant::now() + ms(rng.range(500, 2_500)),
                        "start",
                        "router".into(),
                    ));
                    "kill -9 router".to_string()
                }),
                9 | 10 => d.router_admin(a, "drain").map(|()| {
                    pending.push((
                        Instant::now() + ms(rng.range(1_000, 5_000)),
                        "restore",
                        a.to_string(),
                    ));
                    format!("drain {a}")
                }),
                11 => d.node_admin(a, "isolate").map(|()| {
                    pending.push((
                        Instant::now() + ms(rng.range(1_000, 4_000)),
                        "rejoin",
                        a.to_string(),
                    ));
                    format!("isolate {a}")
                }),
                _ => Ok("(nothing)".to_string()),
            }
        };
        match result {
            Ok(what) => record(what),
            Err(e) => record(format!("fault failed: {e}")),
        }
        std::thread::sleep(ms(rng.range(plan.every_ms.0, plan.every_ms.1)));
    }
    for (_, action, target) in pending {
        record(format!("(left to the heal: {action} {target})"));
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---- the checker ---------------------------------------------------------------------

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    pub invariant: &'static str,
    pub record: Option<(String, String)>,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.record {
            Some((e, i)) => write!(f, "[{}] {e}/{i}: {}", self.invariant, self.detail),
            None => write!(f, "[{}] {}", self.invariant, self.detail),
        }
    }
}

fn subject_jurisdiction(id: &str) -> Option<&'static str> {
    let s = tandem_config::subject_of(id)?;
    SUBJECTS
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(n, _)| if n.starts_with('e') { "EU" } else { "US" })
}

/// Judge a finished run from its history and what the regions serve now.
pub fn check(d: &Deployment, h: &History, converged: Result<Duration, String>) -> Vec<Violation> {
    let mut out = Vec::new();
    if let Err(e) = converged {
        out.push(Violation { invariant: "convergence", record: None, detail: e });
    }
    // No process may die on its own (the harness restarts what it killed,
    // and would otherwise hide a crash by starting it again).
    for line in std::fs::read_to_string(&d.log).unwrap_or_default().lines() {
        if line.contains("exited on its own") || line.contains("panicked at") {
            out.push(Violation { invariant: "crash", record: None, detail: line.to_owned() });
        }
    }
    // Invariant 2: every record written, as the first region allowed to hold it serves it.
    let mut by_record: BTreeMap<(String, String), Vec<WriteRecord>> = BTreeMap::new();
    for o in &h.ops {
        if let Some(w) = &o.write {
            by_record.entry((o.entity.clone(), o.id.clone())).or_default().push(WriteRecord {
                op: o.op,
                write: w.clone(),
                outcome: o.outcome.clone(),
            });
        }
    }
    for ((entity, id), ws) in &by_record {
        let cfg = d.config.entity(entity).expect("entity");
        let region = REGIONS
            .iter()
            .find(|r| !cfg.personal || subject_jurisdiction(id) == Some(d.jurisdiction_of(r)))
            .expect("some region may hold it");
        let url = format!("{}/v1/records/{entity}/{id}", d.url(region));
        let r = d.call(Method::GET, &url, None);
        let fin = match r.status {
            200 => Final {
                value: Some(r.body["value"].clone()),
                version: serde_json::from_value(r.body["version"].clone()).ok(),
            },
            404 => Final { value: None, version: None },
            s => {
                out.push(Violation {
                    invariant: "lost_write",
                    record: Some((entity.clone(), id.clone())),
                    detail: format!("GET at {region} answered {s} {}", r.body),
                });
                continue;
            }
        };
        for detail in writes::check_record(Shape::of(cfg.merge.as_str()), ws, &fin) {
            out.push(Violation {
                invariant: "lost_write",
                record: Some((entity.clone(), id.clone())),
                detail: format!("{detail} (final at {region}: {:?})", fin.value),
            });
        }
    }
    // Invariant 3: no personal record held outside its jurisdiction, none
    // served to a peer outside it, none even offered (a receiver's refusal).
    for region in REGIONS {
        let j = d.jurisdiction_of(region);
        for (entity, cfg) in &d.config.entities {
            if !cfg.personal {
                continue;
            }
            for rec in d.scan(region, entity) {
                let id = rec["id"].as_str().unwrap_or("").to_owned();
                if subject_jurisdiction(&id).is_some_and(|sj| sj != j) {
                    out.push(Violation {
                        invariant: "residency",
                        record: Some((entity.clone(), id)),
                        detail: format!("{region} ({j}) holds it"),
                    });
                }
            }
        }
        for e in d.audit(region) {
            let kind = e["kind"].as_str().unwrap_or("");
            let peer_j = e["peer_jurisdiction"].as_str().unwrap_or("");
            let personal = e["personal"].as_u64().unwrap_or(0);
            let encrypted = e["encrypted"] == true;
            if kind == "batch_served" && personal > 0 && peer_j != j && !encrypted {
                out.push(Violation {
                    invariant: "residency",
                    record: None,
                    detail: format!(
                        "{region} served {personal} personal record(s) to {} ({peer_j}): {e}",
                        e["peer"]
                    ),
                });
            }
            if kind == "inbound_refused" {
                out.push(Violation {
                    invariant: "residency",
                    record: None,
                    detail: format!(
                        "{region} was sent records it may not hold by {}: {e}",
                        e["peer"]
                    ),
                });
            }
        }
    }
    // Invariant 4: a routed request about a subject's personal or pinned
    // record was served inside the subject's jurisdiction.
    for o in &h.ops {
        let (Some(served), true) = (&o.served_by, o.through_router) else { continue };
        let cfg = d.config.entity(&o.entity).expect("entity");
        let pinned = o.write.is_some() && cfg.writes == tandem_config::WritePolicy::HomeRegion;
        if !(cfg.subjects && (cfg.personal || pinned)) {
            continue;
        }
        let Some(sj) = subject_jurisdiction(&o.id) else { continue };
        if d.config.jurisdiction_of(served) != Some(sj) {
            out.push(Violation {
                invariant: "failover",
                record: Some((o.entity.clone(), o.id.clone())),
                detail: format!(
                    "#{} was served by {served}, outside {sj} ({})",
                    o.op,
                    render_op(o)
                ),
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The failure report: the seed, how to replay, each violation, and the
/// history of the records involved.
pub fn explain(seed: u64, secs: u64, violations: &[Violation], h: &History) -> String {
    let mut out = format!(
        "fault run with seed {seed} ({secs} s of faults) broke {} invariant check(s); replay with\n  TANDEM_FAULT_SEED={seed} TANDEM_FAULT_SECS={secs} cargo test -p tandem --test fault -- --nocapture\n",
        violations.len()
    );
    for v in violations.iter().take(25) {
        let _ = writeln!(out, "  {v}");
    }
    let mut shown = BTreeSet::new();
    for v in violations {
        if let Some((e, i)) = &v.record {
            if shown.insert((e.clone(), i.clone())) && shown.len() <= 3 {
                let _ = write!(out, "--- history of {e}/{i}\n{}", render_for(h, e, i));
            }
        }
    }
    if shown.is_empty() {
        out.push_str("--- faults\n");
        for (t, f) in &h.faults {
            let _ = writeln!(out, "{t:>7} ms  {f}");
        }
    }
    out
}
