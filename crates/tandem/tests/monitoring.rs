//! Monitoring of a deployment, end to end: the shipped Prometheus alert rules
//! pass `promtool check rules` and their unit tests (`alerts_test.yml`, which
//! must cover every alert both firing and silent); under `tandem up` with a
//! link cut, the credentials lag budget breaches within its 5 s budget plus
//! one evaluation interval and clears once the link heals; a `financial` read
//! of a record from the lagging region is refused at that node with 503
//! `reads_halted` and served fresh through the router; every metric named in
//! the alert rules and the Grafana dashboard exists in the `/metrics` output of
//! a running deployment; and a real Prometheus (Debian's package) scraping a
//! deployment sees `TandemLagBudgetCredentials` fire when a link is cut.
//!
//! Each test runs its own `tandem up` (example config, free loopback ports,
//! its own temporary data directory), so the tests run in parallel. The
//! promtool and Prometheus tests skip with a notice when the tools are missing,
//! except under `CI=true`, where a missing tool fails them.

#[allow(dead_code)] // the shared harness has more than these tests use
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill as send_signal, Signal};
use nix::unistd::Pid;
use reqwest::blocking::Client;
use reqwest::Method;
use serde_json::{json, Value};
use support::{metric, ADMIN_TOKEN, REPLICATION_SECRET};

/// The node's budget evaluation period (`tandem_node::budget::EVALUATION_INTERVAL`).
const EVALUATION_INTERVAL: Duration = Duration::from_millis(200);
/// The replication heartbeat: the last frame before a cut is at most this old.
const HEARTBEAT: Duration = Duration::from_millis(250);
/// The example's credentials budget.
const CREDENTIALS_BUDGET: Duration = Duration::from_secs(5);
/// Slack for polling and scheduling on a loaded machine.
const POLL_MARGIN: Duration = Duration::from_secs(1);
/// How long `tandem up` (or Prometheus) may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopped process may take to exit before it is SIGKILLed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two polls of a fast-moving state.
const FAST_POLL: Duration = Duration::from_millis(50);
/// Pause between two polls of everything else.
const POLL: Duration = Duration::from_millis(100);
/// Lines of a process log printed when a test fails.
const LOG_TAIL_LINES: usize = 80;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

// ---- tools ----------------------------------------------------------------------

/// True when running under CI (`CI` set to anything but empty, `0` or `false`).
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// An executable on `PATH` (Debian's `prometheus` package puts both tools
/// in /usr/bin).
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// The tool, or `None` after printing why the test is skipped; under CI a
/// missing tool fails the test instead.
fn require_tool(name: &str) -> Option<PathBuf> {
    let found = find_tool(name);
    if found.is_none() {
        assert!(
            !in_ci(),
            "`{name}` is required under CI=true: install Debian's `prometheus` package (.ci/run does)"
        );
        eprintln!(
            "NOTICE: `{name}` not found; skipping this test (install Debian's `prometheus` package; with CI=true it fails instead)"
        );
    }
    found
}

/// Run a command to completion; panics with its output unless it succeeds.
fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{text}", out.status);
    text
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("addr").port()
}

// ---- a deployment under `tandem up` ---------------------------------------------

/// One `tandem up` of the example deployment on free ports, with the router
/// unless told otherwise. Dropping it stops every process it started.
struct Up {
    dir: tempfile::TempDir,
    child: Option<Child>,
    log: PathBuf,
    control: String,
    regions: BTreeMap<String, String>,
    router: Option<String>,
    /// Pids of the region and router processes (to reap them if `up` hangs).
    pids: Vec<u32>,
    http: Client,
}

/// An HTTP answer: status, headers and the body as JSON (a JSON string when
/// it is not JSON).
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

impl Up {
    /// Start the example config, rewritten to free ports, after `edit` (which
    /// gets and returns the TOML text).
    fn start(with_router: bool, edit: impl FnOnce(String) -> String) -> Up {
        let dir = tempfile::Builder::new().prefix("tandem-mon-").tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let mut text = tandem_config::EXAMPLE_TOML.to_owned();
        for port in 7100..=7103 {
            let old = format!("\"127.0.0.1:{port}\"");
            assert!(text.contains(&old), "the example config listens on {old}");
            text = text.replace(&old, &format!("\"127.0.0.1:{}\"", free_port()));
        }
        let text = edit(text);
        let config = tandem_config::Config::from_toml_str(&text).expect("the test config is valid");
        let config_path = dir.path().join("tandem.toml");
        std::fs::write(&config_path, &text).expect("write the config");
        let regions: BTreeMap<String, String> = config
            .regions
            .iter()
            .map(|r| (r.name.clone(), format!("http://{}", r.listen)))
            .collect();
        let router = with_router.then(|| format!("http://{}", config.router.listen));

        let log = dir.path().join("up.log");
        let out = File::create(&log).expect("create the up log");
        let err = out.try_clone().expect("clone the log handle");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
        cmd.arg("up")
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--control", "127.0.0.1:0"])
            .env("TANDEM_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("TANDEM_REPLICATION_SECRET", REPLICATION_SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        if !with_router {
            cmd.arg("--no-router");
        }
        let child = cmd.spawn().expect("spawn tandem up");
        let http = Client::builder().timeout(REQUEST_TIMEOUT).no_proxy().build().expect("client");
        let mut up = Up {
            dir,
            child: Some(child),
            log,
            control: String::new(),
            regions,
            router,
            pids: Vec::new(),
            http,
        };
        // `up.json` appears once every process is healthy; it names the control API.
        let summary = data_dir.join("up.json");
        let started = Instant::now();
        up.control = loop {
            let control = std::fs::read(&summary)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| v["control"].as_str().map(str::to_owned));
            if let Some(c) = control {
                break c;
            }
            let exited = up.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            assert!(exited.is_none(), "tandem up exited ({exited:?}):\n{}", up.log_tail());
            assert!(started.elapsed() < START_TIMEOUT, "tandem up not ready:\n{}", up.log_tail());
            std::thread::sleep(POLL);
        };
        let deployment = up.get(&format!("{}/v1/deployment", up.control));
        assert_eq!(deployment.status, 200, "GET /v1/deployment: {}", deployment.body);
        up.pids = deployment.body["processes"]
            .as_object()
            .expect("processes")
            .values()
            .filter_map(|p| p["pid"].as_u64().map(|p| p as u32))
            .collect();
        up
    }

    fn url(&self, region: &str) -> &str {
        self.regions.get(region).unwrap_or_else(|| panic!("no region `{region}`"))
    }

    fn router(&self) -> &str {
        self.router.as_deref().expect("started with the router")
    }

    fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self.http.request(method.clone(), url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send().unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Answer { status, headers, body }
    }

    fn get(&self, url: &str) -> Answer {
        self.call(Method::GET, url, None, &[])
    }

    /// A request that must succeed.
    fn must(&self, method: Method, url: &str, body: &Value, headers: &[(&str, &str)]) -> Answer {
        let a = self.call(method.clone(), url, Some(body), headers);
        assert_eq!(a.status, 200, "{method} {url} with {body}: {}", a.body);
        a
    }

    fn text(&self, url: &str) -> String {
        let resp = self.http.get(url).send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
        resp.text().expect("text body")
    }

    fn metrics(&self, base: &str) -> String {
        self.text(&format!("{base}/metrics"))
    }

    fn status(&self, region: &str) -> Value {
        let a = self.get(&format!("{}/v1/status", self.url(region)));
        assert_eq!(a.status, 200, "status of {region}: {}", a.body);
        a.body
    }

    /// `changes of from flowing to to`: cut or heal that directed link.
    fn link(&self, from: &str, to: &str, action: &str) {
        let a = self.call(
            Method::POST,
            &format!("{}/v1/links/{from}/{to}/{action}", self.control),
            None,
            &[],
        );
        assert_eq!(a.status, 200, "{action} {from}->{to}: {}", a.body);
    }

    /// Wait until `cond` holds; panics naming `what` (and the log) otherwise.
    fn wait(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
        let started = Instant::now();
        while !cond() {
            assert!(started.elapsed() < timeout, "{what}: not within {timeout:?}");
            std::thread::sleep(POLL);
        }
        started.elapsed()
    }

    /// Wait until no region reports a breached budget and every link is up.
    fn wait_quiet(&self) {
        let quiet = |region: &str| {
            let s = self.status(region);
            let no_breach = s["budgets"]
                .as_object()
                .is_some_and(|b| !b.is_empty() && b.values().all(|c| c["breached"] == false));
            let linked = s["peers"]
                .as_array()
                .is_some_and(|p| p.len() == 2 && p.iter().all(|p| p["connected"] == true));
            no_breach && linked
        };
        self.wait("every region connected, no budget breached", START_TIMEOUT, || {
            self.regions.keys().all(|r| quiet(r))
        });
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- tandem up log under {}\n{}",
                self.dir.path().display(),
                self.log_tail()
            );
        }
        let Some(mut child) = self.child.take() else { return };
        let _ = send_signal(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        if !wait_exit(&mut child, STOP_TIMEOUT) {
            eprintln!("tandem up did not stop within {STOP_TIMEOUT:?}: SIGKILL");
            let _ = child.kill();
            let _ = child.wait();
            // Its regions would outlive it: reap those that are still ours.
            let ours = self.dir.path().to_string_lossy().into_owned();
            for pid in &self.pids {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&ours) {
                    let _ = send_signal(Pid::from_raw(*pid as i32), Signal::SIGKILL);
                }
            }
        }
    }
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

// ---- metric names in PromQL and in /metrics ---------------------------------------

/// The metric names a PromQL expression selects: identifiers that are not
/// functions, aggregation modifiers, keywords, label names or label values.
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 27] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
        "atan2",
        // Aggregations, which a `by` clause may separate from their `(`.
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
    ];
    const LABEL_LISTS: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Skip from an opening bracket to its closing one, over quoted strings.
    let skip_to = |mut i: usize, close: char| -> usize {
        while i < chars.len() && chars[i] != close {
            if chars[i] == '"' || chars[i] == '\'' {
                let q = chars[i];
                i += 1;
                while i < chars.len() && chars[i] != q {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
            }
            i += 1;
        }
        i + 1
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            i = skip_to(i + 1, '}');
        } else if c == '[' {
            i = skip_to(i + 1, ']');
        } else if c == '"' || c == '\'' {
            i = skip_to(i + 1, c);
        } else if c == '$' {
            // A Grafana variable such as $__rate_interval.
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number (1e-9, 0.001) or a duration (5m).
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric()
                    || chars[i] == '.'
                    || ((chars[i] == '-' || chars[i] == '+') && matches!(chars[i - 1], 'e' | 'E')))
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let called = chars.get(j) == Some(&'(');
            if LABEL_LISTS.contains(&ident.as_str()) && called {
                i = skip_to(j + 1, ')');
            } else if !called && !KEYWORDS.contains(&ident.to_ascii_lowercase().as_str()) {
                names.insert(ident);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// What a `/metrics` output exposes: sample names and `# TYPE` families.
#[derive(Default)]
struct Exposition {
    samples: BTreeSet<String>,
    families: BTreeMap<String, String>,
}

impl Exposition {
    fn add(&mut self, text: &str) {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    self.families.insert(name.to_owned(), kind.to_owned());
                }
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                self.samples.insert(line[..end].to_owned());
            }
        }
    }

    /// Whether a name used in a query is exposed: as a sample, as a `# TYPE`
    /// line, as a counter's `_total` sample name, or as a histogram's series.
    fn has(&self, name: &str) -> bool {
        if self.samples.contains(name) || self.families.contains_key(name) {
            return true;
        }
        if let Some(family) = name.strip_suffix("_total") {
            if self.families.get(family).is_some_and(|k| k == "counter") {
                return true;
            }
        }
        ["_bucket", "_count", "_sum"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|family| self.families.get(family).is_some_and(|k| k == "histogram"))
        })
    }
}

/// The `expr:` of every rule in the shipped alerts.yml.
fn alert_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(deploy_dir().join("prometheus/alerts.yml"))
        .expect("read deploy/prometheus/alerts.yml");
    let exprs: Vec<String> =
        text.lines().filter_map(|l| l.trim().strip_prefix("expr: ")).map(str::to_owned).collect();
    assert!(!exprs.is_empty(), "alerts.yml has no expressions");
    exprs
}

/// The shipped Grafana dashboard.
fn dashboard() -> Value {
    let path = deploy_dir().join("grafana/tandem-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("read deploy/grafana/tandem-dashboard.json");
    serde_json::from_str(&text).expect("the dashboard is valid JSON")
}

/// Every `expr` in a JSON tree.
fn json_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => json_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| json_exprs(v, out)),
        _ => {}
    }
}

/// A dashboard query as Prometheus sees it once Grafana fills in its variables.
fn expand_grafana_vars(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$region", ".*")
}

// ---- 1. promtool -------------------------------------------------------------------

#[test]
fn promtool_check_and_test_rules() {
    let Some(promtool) = require_tool("promtool") else { return };
    let dir = deploy_dir().join("prometheus");
    let checked =
        run_ok(Command::new(&promtool).current_dir(&dir).args(["check", "rules", "alerts.yml"]));
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run_ok(Command::new(&promtool).current_dir(&dir).args([
        "test",
        "rules",
        "alerts_test.yml",
    ]));
    assert!(tested.contains("SUCCESS"), "{tested}");
    let config = run_ok(Command::new(&promtool).current_dir(&dir).args([
        "check",
        "config",
        "prometheus.yml",
    ]));
    assert!(config.contains("SUCCESS"), "{config}");

    // The unit tests cover every alert, each in a firing and a silent case.
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).expect("alerts.yml");
    let alerts: BTreeSet<&str> =
        rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).collect();
    assert_eq!(alerts.len(), 10, "alerts.yml changed: review alerts_test.yml ({alerts:?})");
    let tests = std::fs::read_to_string(dir.join("alerts_test.yml")).expect("alerts_test.yml");
    let (mut firing, mut silent) = (BTreeSet::new(), BTreeSet::new());
    let mut current: Option<&str> = None;
    for line in tests.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname: ") {
            assert!(alerts.contains(name), "alerts_test.yml tests an unknown alert `{name}`");
            current = Some(name);
        } else if line == "exp_alerts: []" {
            silent.extend(current.take());
        } else if line == "exp_alerts:" {
            firing.extend(current.take());
        }
    }
    for alert in &alerts {
        assert!(firing.contains(alert), "no test case where {alert} fires");
        assert!(silent.contains(alert), "no test case where {alert} stays silent");
    }
}

// ---- 2. the credentials budget under a cut link ------------------------------------

#[test]
fn credentials_budget_breaches_within_budget_and_clears() {
    let up = Up::start(false, |t| t);
    up.wait_quiet();
    let breached_gauge = |text: &str| {
        metric(text, "replication_lag_budget_breached", &[("data_class", "credentials")])
    };
    let gauge_only = |text: &str| text.contains("replication_lag_budget_breached{");
    assert!(gauge_only(&up.metrics(up.url("us-east"))), "the breach gauge is exported at rest");

    // The lag clock starts at the last frame from eu-west, at most one
    // heartbeat before the cut; the node sees it within one evaluation.
    let deadline = CREDENTIALS_BUDGET + EVALUATION_INTERVAL + POLL_MARGIN;
    let not_before = CREDENTIALS_BUDGET - HEARTBEAT - Duration::from_millis(250);
    let cut_at = Instant::now();
    up.link("eu-west", "us-east", "cut");
    let (mut status_at, mut gauge_at) = (None, None);
    while status_at.is_none() || gauge_at.is_none() {
        let elapsed = cut_at.elapsed();
        let status = up.status("us-east");
        let budget = &status["budgets"]["credentials"];
        let text = up.metrics(up.url("us-east"));
        let in_status = budget["breached"] == true;
        let in_gauge = breached_gauge(&text) == 1.0;
        if in_status || in_gauge {
            assert!(
                elapsed >= not_before,
                "credentials breached after only {elapsed:?} (budget 5 s): {budget}"
            );
        }
        if in_status && status_at.is_none() {
            status_at = Some(elapsed);
            assert_eq!(budget["lagging_peers"], json!(["eu-west"]), "{budget}");
            assert_eq!(budget["max_lag_seconds"], json!(5.0), "{budget}");
            assert_eq!(budget["on_breach"], "alert", "{budget}");
            // Only the class whose budget is exceeded: financial allows 30 s.
            assert_eq!(status["budgets"]["financial"]["breached"], false, "{status}");
        }
        if in_gauge && gauge_at.is_none() {
            gauge_at = Some(elapsed);
        }
        assert!(
            elapsed <= deadline,
            "credentials not breached {elapsed:?} after the cut (status at {status_at:?}, \
             gauge at {gauge_at:?}): {budget}"
        );
        std::thread::sleep(FAST_POLL);
    }
    let (status_at, gauge_at) = (status_at.expect("seen"), gauge_at.expect("seen"));
    eprintln!("credentials breached {status_at:?} (status) / {gauge_at:?} (gauge) after the cut");
    // The other regions still hear eu-west: no breach there.
    for region in ["eu-west", "eu-central"] {
        let budgets = &up.status(region)["budgets"];
        assert_eq!(budgets["credentials"]["breached"], false, "{region}: {budgets}");
    }
    up.wait("the breach is logged", Duration::from_secs(5), || {
        up.log_text().lines().any(|l| {
            l.starts_with("[us-east]")
                && l.contains("lag budget breached")
                && l.contains("credentials")
        })
    });

    let healed_at = Instant::now();
    up.link("eu-west", "us-east", "heal");
    up.wait("the breach clears after the heal", Duration::from_secs(6), || {
        up.status("us-east")["budgets"]["credentials"]["breached"] == false
            && breached_gauge(&up.metrics(up.url("us-east"))) == 0.0
    });
    eprintln!("credentials breach cleared {:?} after the heal", healed_at.elapsed());
    up.wait("the end of the breach is logged", Duration::from_secs(5), || {
        up.log_text()
            .lines()
            .any(|l| l.starts_with("[us-east]") && l.contains("lag back under budget"))
    });
}

// ---- 3. financial reads halted at the lagging node, served fresh by the router -----

#[test]
fn financial_reads_halted_and_served_fresh_through_router() {
    const BUDGET: Duration = Duration::from_secs(2);
    let up = Up::start(true, |t| {
        let old = "max_lag = \"30s\"\non_breach = \"halt-cross-region-reads\"";
        assert!(t.contains(old), "the example's financial budget changed");
        t.replace(old, "max_lag = \"2s\"\non_breach = \"halt-cross-region-reads\"")
    });
    up.wait_quiet();
    let router = up.router();
    let from_eu_central = [("x-tandem-client-region", "eu-central")];
    let balance = "/v1/records/balance/alice:acct";

    // alice lives in eu-west, bob in eu-central; registrations go home.
    for (subject, home) in [("alice", "eu-west"), ("bob", "eu-central")] {
        let a = up.must(
            Method::PUT,
            &format!("{router}/v1/subjects/{subject}"),
            &json!({"home_region": home}),
            &[],
        );
        assert_eq!(a.header("x-tandem-region"), home, "{}", a.body);
    }
    let a = up.must(
        Method::POST,
        &format!("{router}{balance}/ops"),
        &json!({"op": "incr", "by": 100}),
        &from_eu_central,
    );
    assert_eq!(a.header("x-tandem-region"), "eu-west", "a pinned write goes home: {}", a.body);
    up.must(
        Method::POST,
        &format!("{router}/v1/records/balance/bob:acct/ops"),
        &json!({"op": "incr", "by": 7}),
        &from_eu_central,
    );
    up.must(
        Method::PUT,
        &format!("{router}/v1/records/credential/alice:pw"),
        &json!({"value": {"hash": "h1"}}),
        &[],
    );
    let at_eu_central = |path: &str| up.get(&format!("{}{path}", up.url("eu-central")));
    up.wait("eu-central has alice's balance and credential", Duration::from_secs(10), || {
        let b = at_eu_central(balance);
        let c = at_eu_central("/v1/records/credential/alice:pw");
        b.status == 200 && b.body["value"] == json!(100) && c.status == 200
    });

    let cut_at = Instant::now();
    up.link("eu-west", "eu-central", "cut");
    let a = up.must(
        Method::POST,
        &format!("{router}{balance}/ops"),
        &json!({"op": "incr", "by": 23}),
        &from_eu_central,
    );
    assert_eq!(a.header("x-tandem-region"), "eu-west", "{}", a.body);
    // Within the budget a stale read is still served.
    let stale = at_eu_central(balance);
    if cut_at.elapsed() < BUDGET - HEARTBEAT {
        assert_eq!((stale.status, &stale.body["value"]), (200, &json!(100)), "{}", stale.body);
    }

    // Past the budget, eu-central refuses reads of records from eu-west.
    let mut refused = at_eu_central(balance);
    while refused.status != 503 {
        assert_eq!(refused.status, 200, "{}", refused.body);
        assert!(
            cut_at.elapsed() < BUDGET + EVALUATION_INTERVAL + POLL_MARGIN * 2,
            "reads not halted {:?} after the cut",
            cut_at.elapsed()
        );
        std::thread::sleep(FAST_POLL);
        refused = at_eu_central(balance);
    }
    let halted_after = cut_at.elapsed();
    eprintln!(
        "financial reads of eu-west records halted at eu-central {halted_after:?} after the cut"
    );
    assert!(halted_after >= BUDGET - HEARTBEAT, "halted after only {halted_after:?}");
    assert_eq!(refused.body["error"]["code"], "reads_halted", "{}", refused.body);
    assert_eq!(refused.body["error"]["fresh_region"], "eu-west", "{}", refused.body);
    // eu-central's own records of the class are still served there.
    let own = at_eu_central("/v1/records/balance/bob:acct");
    assert_eq!((own.status, &own.body["value"]), (200, &json!(7)), "{}", own.body);

    // The router reads it where it is fresh: eu-central first (nearest), then eu-west.
    let refused_before = metric(
        &up.metrics(router),
        "router_requests_total",
        &[("region", "eu-central"), ("outcome", "server_error")],
    );
    let fresh = up.call(Method::GET, &format!("{router}{balance}"), None, &from_eu_central);
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    assert_eq!(fresh.body["value"], json!(123), "the latest value: {}", fresh.body);
    assert_eq!(fresh.header("x-tandem-region"), "eu-west");
    assert!(fresh.headers.get("x-tandem-fresh-region").is_none(), "internal header leaked");
    let refused_after = metric(
        &up.metrics(router),
        "router_requests_total",
        &[("region", "eu-central"), ("outcome", "server_error")],
    );
    assert_eq!(refused_after, refused_before + 1.0, "the router asked eu-central first");

    // The read check measures the lag when asked; /v1/status shows the last
    // evaluation, at most one interval old.
    up.wait("eu-central reports the financial breach", EVALUATION_INTERVAL * 5, || {
        up.status("eu-central")["budgets"]["financial"]["breached"] == true
    });
    let status = up.status("eu-central");
    let financial = &status["budgets"]["financial"];
    assert_eq!(financial["on_breach"], "halt-cross-region-reads", "{financial}");
    assert_eq!(financial["lagging_peers"], json!(["eu-west"]), "{financial}");

    // A class whose action is `alert` is not halted, even in breach (5 s).
    up.wait("the credentials budget breaches at eu-central", Duration::from_secs(8), || {
        up.status("eu-central")["budgets"]["credentials"]["breached"] == true
    });
    let cred = at_eu_central("/v1/records/credential/alice:pw");
    assert_eq!(cred.status, 200, "alert-only classes are still served: {}", cred.body);

    up.link("eu-west", "eu-central", "heal");
    up.wait("eu-central serves the fresh balance again", Duration::from_secs(10), || {
        let b = at_eu_central(balance);
        b.status == 200 && b.body["value"] == json!(123)
    });
    up.wait("the financial breach clears", Duration::from_secs(5), || {
        up.status("eu-central")["budgets"]["financial"]["breached"] == false
    });
}

// ---- 4. every metric of the rules and the dashboard exists --------------------------

#[test]
fn alert_and_dashboard_metrics_exist() {
    // The scanner itself, on one known expression.
    assert_eq!(
        promql_metric_names(
            "sum by (region) (increase(replication_conflict_age_seconds_count[5m])) - \
             sum(rate(x_total{le=\"60.0\", region=~\"$region\"}[$__rate_interval])) > 1e-9 \
             or max by (a) (y:z) or vector(0)"
        ),
        BTreeSet::from([
            "replication_conflict_age_seconds_count".into(),
            "x_total".into(),
            "y:z".into()
        ])
    );

    let up = Up::start(true, |t| t);
    up.wait_quiet();
    let router = up.router();
    // A few writes through the router, and conflict-free replication.
    up.must(
        Method::PUT,
        &format!("{router}/v1/subjects/carol"),
        &json!({"home_region": "eu-west"}),
        &[],
    );
    up.must(
        Method::PUT,
        &format!("{router}/v1/records/credential/carol:pw"),
        &json!({"value": {"hash": "h1"}}),
        &[("x-tandem-client-region", "eu-central")],
    );
    up.must(
        Method::POST,
        &format!("{router}/v1/records/balance/carol:acct/ops"),
        &json!({"op": "incr", "by": 5}),
        &[],
    );
    up.must(
        Method::POST,
        &format!("{}/v1/records/likes/post-1/ops", up.url("us-east")),
        &json!({"op": "incr", "by": 1}),
        &[],
    );
    up.wait("the writes replicate", Duration::from_secs(10), || {
        let cred = up.get(&format!("{}/v1/records/credential/carol:pw", up.url("eu-central")));
        let likes = up.get(&format!("{}/v1/records/likes/post-1", up.url("eu-west")));
        cred.status == 200 && likes.status == 200 && likes.body["value"] == json!(1)
    });
    let read = up.call(
        Method::GET,
        &format!("{router}/v1/records/balance/carol:acct"),
        None,
        &[("x-tandem-client-region", "eu-central")],
    );
    assert_eq!(read.status, 200, "{}", read.body);

    let mut exposed = Exposition::default();
    let mut texts = BTreeMap::new();
    for (name, base) in
        up.regions.iter().map(|(n, u)| (n.as_str(), u.as_str())).chain([("router", router)])
    {
        let text = up.metrics(base);
        exposed.add(&text);
        texts.insert(name, text);
    }
    assert!(exposed.samples.contains("replication_writes_total"), "writes are counted");
    assert!(exposed.samples.contains("router_requests_total"), "routed requests are counted");
    let total_writes: f64 = up
        .regions
        .keys()
        .map(|r| metric(&texts[r.as_str()], "replication_writes_total", &[]))
        .sum();
    assert!(total_writes >= 3.0, "three local writes at least, counted {total_writes}");
    // No conflict happened: the conflict families are there, with nothing counted.
    for r in up.regions.keys() {
        assert_eq!(metric(&texts[r.as_str()], "replication_conflicts_total", &[]), 0.0, "{r}");
    }
    // The conflict-age alert subtracts the le="60.0" bucket: the label must be
    // printed exactly so, or the alert could never fire.
    for r in up.regions.keys() {
        let text = &texts[r.as_str()];
        assert!(
            text.lines().any(|l| l.starts_with("replication_conflict_age_seconds_bucket{")
                && l.contains("le=\"60.0\"")
                && l.contains(&format!("region=\"{r}\""))),
            "{r} exports no le=\"60.0\" conflict-age bucket:\n{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with("replication_lag_seconds{")
                && l.contains("peer=")
                && l.contains("data_class=\"credentials\"")),
            "{r} exports no per-peer credentials lag"
        );
    }

    let mut wanted: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for expr in alert_exprs() {
        for name in promql_metric_names(&expr) {
            wanted.entry(name).or_default().insert("alerts.yml");
        }
    }
    let dash = dashboard();
    let mut dash_exprs = Vec::new();
    json_exprs(&dash, &mut dash_exprs);
    assert!(dash_exprs.len() >= 10, "the dashboard has {} queries", dash_exprs.len());
    for expr in &dash_exprs {
        for name in promql_metric_names(expr) {
            wanted.entry(name).or_default().insert("dashboard");
        }
    }
    // Template variables query label values of a metric too.
    for var in dash["templating"]["list"].as_array().expect("templating") {
        if let Some(def) = var["definition"].as_str() {
            if let Some(args) = def.strip_prefix("label_values(") {
                let name = args.split([',', ')']).next().expect("a metric").trim();
                wanted.entry(name.to_owned()).or_default().insert("dashboard variable");
            }
        }
    }
    for contract in [
        "replication_conflicts_total",
        "replication_writes_total",
        "replication_conflict_age_seconds_bucket",
        "replication_invariant_violations_total",
        "replication_lag_seconds",
        "replication_lag_budget_breached",
        "replication_queue_depth",
        "residency_denials_total",
        "router_requests_total",
        "router_region_up",
        "router_failovers_total",
    ] {
        assert!(
            wanted.contains_key(contract),
            "neither the rules nor the dashboard use {contract}"
        );
    }
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(name, _)| !exposed.has(name))
        .map(|(name, used)| format!("{name} (used in {used:?})"))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics used by the rules or the dashboard that no process exports: {missing:?}\n\
         exported: {:?} / families {:?}",
        exposed.samples,
        exposed.families.keys().collect::<Vec<_>>()
    );
    check_dashboard_shape(&dash);
}

/// What Grafana needs to import the dashboard: a title and uid, a data
/// source variable every query uses, and panels with unique ids, a position
/// on the 24-column grid and queries with a refId.
fn check_dashboard_shape(dash: &Value) {
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()), "title");
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty() && u.len() <= 40), "uid");
    assert!(dash["description"].as_str().is_some(), "description");
    assert!(dash["schemaVersion"].as_u64().is_some(), "schemaVersion");
    let vars = dash["templating"]["list"].as_array().expect("templating.list");
    assert!(
        vars.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a Prometheus data source variable"
    );
    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for p in panels {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().expect("x"), g["w"].as_u64().expect("w"));
        assert!(x + w <= 24 && g["h"].as_u64().is_some() && g["y"].as_u64().is_some(), "{g}");
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().expect("panel title");
        titles.insert(title.to_owned());
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{title}: {t}");
            assert!(refs.insert(t["refId"].as_str().expect("refId")), "{title}: duplicate refId");
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
    // The views the deployment needs.
    for (what, needle) in [
        ("region up", "Region up"),
        ("credentials lag", "credentials lag"),
        ("financial lag", "financial lag"),
        ("conflict rate", "Conflict rate"),
        ("writes", "writes"),
        ("routing outcomes", "Routing outcomes"),
        ("failovers", "Failovers"),
        ("queue depth", "queue depth"),
        ("invariant violations", "Invariant violations"),
        ("residency denials", "Residency denials"),
    ] {
        assert!(titles.iter().any(|t| t.contains(needle)), "no {what} panel in {titles:?}");
    }
    // Each class's lag panel draws its budget as a red threshold.
    let config = tandem_config::Config::example();
    for (class, budget) in &config.data_classes {
        let panel = panels
            .iter()
            .find(|p| p["title"].as_str().is_some_and(|t| t.starts_with(&format!("{class} lag"))))
            .unwrap_or_else(|| panic!("no lag panel for {class}"));
        let steps =
            panel["fieldConfig"]["defaults"]["thresholds"]["steps"].as_array().expect("steps");
        assert!(
            steps.iter().any(|s| s["color"] == "red"
                && s["value"].as_f64() == Some(budget.max_lag.as_secs_f64())),
            "the {class} panel's threshold is not its {:?} budget",
            budget.max_lag
        );
    }
}

// ---- 5. a real Prometheus sees the credentials alert fire --------------------------

/// A Prometheus server started by a test; stopped when dropped.
struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Prometheus {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- prometheus log\n{}", self.log_tail());
        }
        let _ = send_signal(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        if !wait_exit(&mut self.child, Duration::from_secs(10)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn live_prometheus_sees_the_credentials_alert_fire() {
    let Some(prometheus) = require_tool("prometheus") else { return };
    let up = Up::start(true, |t| t);
    let dir = up.dir.path().join("prometheus");
    std::fs::create_dir_all(&dir).expect("prometheus dir");
    std::fs::copy(deploy_dir().join("prometheus/alerts.yml"), dir.join("alerts.yml"))
        .expect("copy alerts.yml");
    let host = |url: &str| url.trim_start_matches("http://").to_owned();
    let regions: Vec<String> = up.regions.values().map(|u| format!("\"{}\"", host(u))).collect();
    let config = format!(
        "# A test's Prometheus: the deployment's actual ports, scraped every second.\n\
         global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
         rule_files:\n  - alerts.yml\n\
         scrape_configs:\n\
         \x20 - job_name: tandem-router\n    static_configs:\n      - targets: [\"{}\"]\n\
         \x20 - job_name: tandem-region\n    static_configs:\n      - targets: [{}]\n",
        host(up.router()),
        regions.join(", ")
    );
    std::fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
    let port = free_port();
    let log = dir.join("prometheus.log");
    let out = File::create(&log).expect("prometheus log");
    let err = out.try_clone().expect("clone the log handle");
    let child = Command::new(&prometheus)
        .current_dir(&dir)
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn prometheus");
    let prom = Prometheus { child, url: format!("http://127.0.0.1:{port}"), log };
    let api = |path: &str, query: &[(&str, &str)]| -> Value {
        let resp = up.http.get(format!("{}{path}", prom.url)).query(query).send();
        match resp {
            Ok(r) => r.json::<Value>().unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    };
    up.wait("Prometheus scrapes all four targets", START_TIMEOUT, || {
        let targets = api("/api/v1/targets", &[]);
        targets["data"]["activeTargets"]
            .as_array()
            .is_some_and(|t| t.len() == 4 && t.iter().all(|t| t["health"] == "up"))
    });
    up.wait_quiet();

    // Prometheus reads what the nodes export, histograms included, and every
    // dashboard query is valid PromQL.
    let buckets = api(
        "/api/v1/query",
        &[("query", "count(replication_conflict_age_seconds_bucket{le=\"60.0\"})")],
    );
    assert_eq!(buckets["data"]["result"][0]["value"][1], "3", "{buckets}");
    let mut dash_exprs = Vec::new();
    json_exprs(&dashboard(), &mut dash_exprs);
    for expr in dash_exprs {
        let q = expand_grafana_vars(&expr);
        let answer = api("/api/v1/query", &[("query", &q)]);
        assert_eq!(answer["status"], "success", "dashboard query {q}: {answer}");
    }
    let firing = |name: &str| -> Vec<Value> {
        api("/api/v1/alerts", &[])["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
            .cloned()
            .collect()
    };
    assert!(firing("TandemLagBudgetCredentials").is_empty(), "firing before the cut");

    let cut_at = Instant::now();
    up.link("eu-west", "us-east", "cut");
    let alert = loop {
        if let Some(a) = firing("TandemLagBudgetCredentials").into_iter().next() {
            break a;
        }
        assert!(
            cut_at.elapsed() < Duration::from_secs(40),
            "TandemLagBudgetCredentials not firing 40 s after the cut: {}",
            api("/api/v1/alerts", &[])
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("TandemLagBudgetCredentials firing {:?} after the cut: {alert}", cut_at.elapsed());
    assert_eq!(alert["labels"]["region"], "us-east", "{alert}");
    assert_eq!(alert["labels"]["peer"], "eu-west", "{alert}");
    assert_eq!(alert["labels"]["severity"], "page", "{alert}");
    assert!(firing("TandemRegionDown").is_empty(), "no region is down");
    // The node's own evaluation agrees, as its alert shows.
    up.wait("TandemLagBudgetBreached fires for us-east", Duration::from_secs(10), || {
        firing("TandemLagBudgetBreached").iter().any(|a| {
            a["labels"]["region"] == "us-east" && a["labels"]["data_class"] == "credentials"
        })
    });
    drop(prom);
}
