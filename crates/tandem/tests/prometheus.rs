//! The shipped monitoring, end to end: the Prometheus alert rules pass
//! `promtool check rules` and their unit tests (`alerts_test.yml`, which must
//! cover every alert both firing and silent); every metric named in the alert
//! rules and the Grafana dashboard exists in the `/metrics` output of a
//! running deployment; and a real Prometheus (Debian's package) scraping a
//! deployment sees `TandemLagBudgetCredentials` fire when a link is cut.
//!
//! Each test runs its own `tandem up` (example config, free loopback ports,
//! its own temporary data directory), so the tests run in parallel. The
//! promtool and Prometheus tests skip with a notice when the tools are missing,
//! except under `CI=true`, where a missing tool fails them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tandem_testkit::metrics::{self, promql_metric_names, Exposition};
use tandem_testkit::process::{log_tail, Proc};
use tandem_testkit::{ports, Builder, Method, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));
/// How long a deployment (or Prometheus) may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn promtool_check_and_test_rules() {
    let Some(promtool) =
        tandem_testkit::tools::require("promtool", "Debian's `prometheus` package")
    else {
        return;
    };
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
    assert_eq!(alerts.len(), 14, "alerts.yml changed: review alerts_test.yml ({alerts:?})");
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

    let up = deployment().start();
    up.wait_quiet(START_TIMEOUT);
    let router = up.router();
    // A few writes through the router, and conflict-free replication.
    up.call_ok(
        Method::PUT,
        &format!("{router}/v1/subjects/carol"),
        &json!({"home_region": "eu-west"}),
        &[],
    );
    up.call_ok(
        Method::PUT,
        &format!("{router}/v1/records/credential/carol:pw"),
        &json!({"value": {"hash": "h1"}}),
        &[("x-tandem-client-region", "eu-central")],
    );
    up.call_ok(
        Method::POST,
        &format!("{router}/v1/records/balance/carol:acct/ops"),
        &json!({"op": "incr", "by": 5}),
        &[],
    );
    up.call_ok(
        Method::POST,
        &format!("{}/v1/records/likes/post-1/ops", up.url("us-east")),
        &json!({"op": "incr", "by": 1}),
        &[],
    );
    up.wait_for("the writes replicate", Duration::from_secs(10), || {
        let cred = up.get("eu-central", "/v1/records/credential/carol:pw");
        let likes = up.get("eu-west", "/v1/records/likes/post-1");
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
        up.regions().iter().map(|(n, u)| (n.as_str(), u.as_str())).chain([("router", router)])
    {
        let text = up.metrics_at(base);
        exposed.add(&text);
        texts.insert(name, text);
    }
    assert!(exposed.samples.contains("replication_writes_total"), "writes are counted");
    assert!(exposed.samples.contains("router_requests_total"), "routed requests are counted");
    let total_writes: f64 = up
        .regions()
        .keys()
        .map(|r| metrics::sum(&texts[r.as_str()], "replication_writes_total", &[]))
        .sum();
    assert!(total_writes >= 3.0, "three local writes at least, counted {total_writes}");
    // No conflict happened: the conflict families are there, with nothing counted.
    for r in up.regions().keys() {
        assert_eq!(
            metrics::sum(&texts[r.as_str()], "replication_conflicts_total", &[]),
            0.0,
            "{r}"
        );
    }
    // The conflict-age alert subtracts the le="60.0" bucket: the label must be
    // printed exactly so, or the alert could never fire.
    for r in up.regions().keys() {
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

#[test]
fn live_prometheus_sees_the_credentials_alert_fire() {
    let Some(prometheus) =
        tandem_testkit::tools::require("prometheus", "Debian's `prometheus` package")
    else {
        return;
    };
    let up = deployment().start();
    let dir = up.root().join("prometheus");
    std::fs::create_dir_all(&dir).expect("prometheus dir");
    std::fs::copy(deploy_dir().join("prometheus/alerts.yml"), dir.join("alerts.yml"))
        .expect("copy alerts.yml");
    let host = |url: &str| url.trim_start_matches("https://").to_owned();
    // Prometheus checks the servers against the deployment's CA; /metrics
    // wants no credential.
    let tls = format!(
        "    scheme: https\n    tls_config:\n      ca_file: {}\n",
        up.certs_dir().join("ca.pem").display()
    );
    let regions: Vec<String> = up.regions().values().map(|u| format!("\"{}\"", host(u))).collect();
    let config = format!(
        "# A test's Prometheus: the deployment's actual ports, scraped every second.\n\
         global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
         rule_files:\n  - alerts.yml\n\
         scrape_configs:\n\
         \x20 - job_name: tandem-router\n{tls}    static_configs:\n      - targets: [\"{}\"]\n\
         \x20 - job_name: tandem-region\n{tls}    static_configs:\n      - targets: [{}]\n",
        host(up.router()),
        regions.join(", ")
    );
    std::fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
    let port = ports::free_port();
    let log = dir.join("prometheus.log");
    let mut cmd = Command::new(&prometheus);
    cmd.current_dir(&dir)
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
    let proc = Some(Proc::spawn(cmd, &log, &log));
    let prom = Prometheus { proc, url: format!("http://127.0.0.1:{port}"), log };
    let api = |path: &str, query: &[(&str, &str)]| -> Value {
        let resp = up.http().inner().get(format!("{}{path}", prom.url)).query(query).send();
        match resp {
            Ok(r) => r.json::<Value>().unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    };
    up.wait_for("Prometheus scrapes all four targets", START_TIMEOUT, || {
        let targets = api("/api/v1/targets", &[]);
        targets["data"]["activeTargets"]
            .as_array()
            .is_some_and(|t| t.len() == 4 && t.iter().all(|t| t["health"] == "up"))
    });
    up.wait_quiet(START_TIMEOUT);

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
    up.cut("eu-west", "us-east");
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
    up.wait_for("TandemLagBudgetBreached fires for us-east", Duration::from_secs(10), || {
        firing("TandemLagBudgetBreached").iter().any(|a| {
            a["labels"]["region"] == "us-east" && a["labels"]["data_class"] == "credentials"
        })
    });
    drop(prom);
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

/// A Prometheus server started by a test; stopped when dropped.
struct Prometheus {
    proc: Option<Proc>,
    url: String,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", log_tail(&self.log, 40));
        }
        if let Some(p) = self.proc.take() {
            p.stop(Duration::from_secs(10));
        }
    }
}

/// The example deployment under `tandem up`, router included.
fn deployment() -> Builder {
    TANDEM.deployment().prefix("tandem-prom-")
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Run a command to completion; panics with its output unless it succeeds.
fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{text}", out.status);
    text
}
