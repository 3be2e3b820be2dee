//! The six phases of the reference article's drill script, carried out
//! against the deployment: pre-drill verification, region isolation,
//! observation, validation, restoration with catch-up, and the post-drill
//! verification and report. Each phase is a list of named checks; the
//! measurements and verdicts come from the pure modules, this one does the
//! I/O and keeps the state needed to put the deployment back if the drill is
//! interrupted or fails half-way (a drained, isolated or killed target is
//! restored on the way out).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use super::http::Http;
use super::journal::{DrillClock, Journal, RequestRecord, WriteOutcome};
use super::measure::{self, Class, ConflictSeen, Tick};
use super::monitor::{self, Monitor};
use super::plan::{Mode, Topology, PHASES};
use super::progress::Progress;
use super::report::{self, Check, PhaseReport, Report, Requests, Writes};
use super::verify::{self, ReadBack, ReadResult, Verification};
use super::workload::{self, Ctx, Item, Rng, Workload};
use super::{Settings, EXIT_CANNOT_RUN, EXIT_FAIL, EXIT_PASS};

/// Time-out of the drill's own calls (status, admin, control, read-back).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The pre-drill replication lag bound (the article's "lag < 5 s").
const PRE_LAG_MAX_S: f64 = 5.0;
/// How long the pre-drill checks may take to turn green (a deployment that
/// just started needs a moment to connect its links).
const PRE_CHECK_WAIT: Duration = Duration::from_secs(10);
/// A version written this long before a routing switch may not have
/// replicated when the traffic moved: a conflict with it is the switch's.
const CONFLICT_WINDOW_MS: u64 = 2_000;
/// After the router took the target out, requests already on their way may
/// still fail; the checks on rerouted traffic start this much later.
const SETTLE_S: f64 = 0.5;
/// Kill mode without a "down" from the router: settle after this long.
const SETTLE_KILL_FALLBACK_S: f64 = 3.0;
/// Pages read of one scan or audit log (1000 entries each).
const PAGES_MAX: usize = 10_000;
/// Concurrent read-back requests.
const READBACK_CONCURRENCY: usize = 16;
/// Tries of one read-back (503 and transport errors are retried).
const READBACK_TRIES: usize = 5;
/// Lines of detail quoted in one finding.
const QUOTE_MAX: usize = 20;
/// The conflict rate the deployment's alert rules fire on (0.1% of writes).
const CONFLICT_RATE_ALERT: f64 = 0.001;

enum Stop {
    /// A pre-drill check failed: nothing was touched.
    PreCheck,
    /// The drill could not go on.
    Error(anyhow::Error),
}

impl From<anyhow::Error> for Stop {
    fn from(e: anyhow::Error) -> Stop {
        Stop::Error(e)
    }
}

struct PhaseStart {
    index: usize,
    t: f64,
}

struct Drill {
    s: Settings,
    topo: Topology,
    http: Http,
    clock: DrillClock,
    ctx: Arc<Ctx>,
    monitor: Monitor,
    workload: Option<Workload>,
    progress: Progress,
    phases: Vec<PhaseReport>,
    findings: Vec<String>,
    t_iso: Option<f64>,
    t_settle: Option<f64>,
    /// Unix ms of the routing switches (drain or kill, restore).
    switches_ms: Vec<u64>,
    drained: bool,
    isolated: bool,
    killed: bool,
    audit_from: BTreeMap<String, u64>,
    conflict_base: BTreeMap<String, BTreeMap<String, f64>>,
    conflicts_restoration: u64,
    residency_violations: u64,
    verification: Option<Verification>,
    smoke_n: usize,
}

/// Run the drill; returns the exit status.
pub async fn drill(s: Settings) -> u8 {
    let topo = Topology::from_config(&s.config);
    let http = Http::new();
    let clock = DrillClock::start();
    let run = format!("{:08x}", clock.start_unix_ms as u32);
    let subjects = workload::subjects(&run, &topo);
    let journal = Arc::new(Journal::default());
    let ctx = Arc::new(Ctx {
        http: http.clone(),
        topo: topo.clone(),
        subjects,
        run,
        target: s.target.clone(),
        clock,
        journal: journal.clone(),
    });
    let monitor = Monitor::start(http.clone(), topo.clone(), clock);
    let ticks = monitor.ticks.clone();
    let status: super::progress::StatusFn = Arc::new(move || {
        let lag = ticks.lock().expect("ticks lock").last().and_then(Tick::max_lag).unwrap_or(0.0);
        format!("{} | max lag {lag:.1} s", journal.counters.summary())
    });
    let mut d = Drill {
        progress: Progress::new(status),
        s,
        topo,
        http,
        clock,
        ctx,
        monitor,
        workload: None,
        phases: Vec::new(),
        findings: Vec::new(),
        t_iso: None,
        t_settle: None,
        switches_ms: Vec::new(),
        drained: false,
        isolated: false,
        killed: false,
        audit_from: BTreeMap::new(),
        conflict_base: BTreeMap::new(),
        conflicts_restoration: 0,
        residency_violations: 0,
        verification: None,
        smoke_n: 0,
    };
    let outcome = {
        let fut = d.run();
        tokio::pin!(fut);
        tokio::select! {
            r = &mut fut => r,
            _ = tokio::signal::ctrl_c() => Err(Stop::Error(anyhow::anyhow!("interrupted"))),
        }
    };
    let code = match outcome {
        Ok(()) => None,
        Err(Stop::PreCheck) => {
            d.findings.push(
                "a pre-drill check failed: the drill stopped before touching the target".into(),
            );
            Some(EXIT_CANNOT_RUN)
        }
        Err(Stop::Error(e)) => {
            d.progress.finish(&format!("stopped: {e:#}"));
            d.findings.push(format!("the drill could not go on: {e:#}"));
            d.put_back().await;
            Some(EXIT_CANNOT_RUN)
        }
    };
    if let Some(w) = d.workload.as_mut() {
        w.stop().await;
    }
    let report = d.finish().await;
    let written = d.write_outputs(&report);
    print_summary(&report, &d.s.out);
    if let Err(e) = written {
        eprintln!("tandem drill: cannot write the report: {e:#}");
        return EXIT_CANNOT_RUN;
    }
    code.unwrap_or(if report.verdict == "pass" { EXIT_PASS } else { EXIT_FAIL })
}

fn print_summary(r: &Report, out: &std::path::Path) {
    let s = |v: Option<f64>| v.map_or_else(|| "none".to_owned(), |v| format!("{v:.2} s"));
    println!("drill {} ({}): {}", r.target, r.mode, r.verdict.to_uppercase());
    println!(
        "  time to detect  {}{}",
        s(r.ttd_seconds),
        r.ttd_alert.as_deref().map(|a| format!(" ({a})")).unwrap_or_default()
    );
    println!("  time to route   {}", s(r.ttr_seconds));
    println!(
        "  writes          {} attempted, {} acknowledged, {} verified, {} lost",
        r.writes.attempted, r.writes.acknowledged, r.writes.verified, r.writes.lost
    );
    println!("  conflicts       {} during restoration", r.conflicts_during_restoration);
    println!("  residency       {} violation(s)", r.residency_violations);
    println!("  max lag         {:.2} s", r.max_replication_lag_seconds);
    for p in &r.phases {
        for c in p.checks.iter().filter(|c| !c.ok) {
            println!("  FAILED {}: {}: {}", p.name, c.name, c.detail);
        }
    }
    println!("  report          {}", out.join("report.md").display());
}

fn join_or(items: &[String], none: &str) -> String {
    if items.is_empty() {
        none.to_owned()
    } else if items.len() > QUOTE_MAX {
        format!("{} … and {} more", items[..QUOTE_MAX].join("; "), items.len() - QUOTE_MAX)
    } else {
        items.join("; ")
    }
}

impl Drill {
    fn now(&self) -> f64 {
        self.clock.now()
    }

    async fn sleep_until(&self, t: f64) {
        let left = t - self.now();
        if left > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(left)).await;
        }
    }

    fn begin(&mut self, index: usize) -> PhaseStart {
        let planned = self.s.timings.of_phase(index);
        self.progress.phase(index, PHASES[index], planned, index >= 4);
        PhaseStart { index, t: self.now() }
    }

    fn end(&mut self, start: PhaseStart, checks: Vec<Check>) {
        let failed: Vec<&Check> = checks.iter().filter(|c| !c.ok).collect();
        let summary = if failed.is_empty() {
            format!("{}: {} check(s) passed", PHASES[start.index], checks.len())
        } else {
            format!(
                "{}: {} of {} check(s) FAILED: {}",
                PHASES[start.index],
                failed.len(),
                checks.len(),
                failed.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
            )
        };
        self.progress.finish(&summary);
        self.phases.push(PhaseReport {
            name: PHASES[start.index].to_owned(),
            started_at: report::rfc3339(self.clock.unix_ms_at(start.t)),
            offset_seconds: start.t,
            duration_seconds: self.now() - start.t,
            checks,
        });
    }

    fn survivors(&self) -> Vec<String> {
        self.topo.survivors(&self.s.target)
    }

    fn region_url(&self, region: &str) -> String {
        self.topo.region(region).map(|r| r.url.clone()).unwrap_or_default()
    }

    async fn get_json(&self, url: &str) -> Option<Value> {
        match self.http.get(url, CALL_TIMEOUT).await {
            Ok(a) if a.ok() => Some(a.body),
            _ => None,
        }
    }

    async fn status(&self, region: &str) -> Option<Value> {
        self.get_json(&format!("{}/v1/status", self.region_url(region))).await
    }

    async fn healthy(&self, region: &str) -> bool {
        self.get_json(&format!("{}/healthz", self.region_url(region))).await.is_some()
    }

    async fn routes(&self) -> Option<Value> {
        self.get_json(&format!("{}/v1/routes", self.topo.router_url)).await
    }

    /// An admin call that must succeed; its failure stops the drill.
    async fn admin(&self, url: &str, what: &str) -> anyhow::Result<Value> {
        let a = self
            .http
            .admin_post(url, self.s.admin_token.as_deref(), CALL_TIMEOUT)
            .await
            .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        if !a.ok() {
            anyhow::bail!("{what}: {url} answered {}: {}", a.status, a.body);
        }
        Ok(a.body)
    }

    async fn router_action(&self, action: &str) -> anyhow::Result<Value> {
        let url = format!("{}/v1/admin/regions/{}/{action}", self.topo.router_url, self.s.target);
        self.admin(&url, &format!("{action} {} at the router", self.s.target)).await
    }

    async fn node_action(&self, action: &str) -> anyhow::Result<Value> {
        let url = format!("{}/v1/admin/{action}", self.region_url(&self.s.target));
        self.admin(&url, &format!("{action} {}", self.s.target)).await
    }

    async fn control_action(&self, action: &str) -> anyhow::Result<Value> {
        let control = self.s.control.as_deref().ok_or_else(|| anyhow::anyhow!("no control API"))?;
        let url = format!("{control}/v1/processes/{}/{action}", self.s.target);
        self.admin(&url, &format!("{action} the process of {}", self.s.target)).await
    }

    async fn conflicts_by_region(
        &self,
        regions: &[String],
    ) -> BTreeMap<String, BTreeMap<String, f64>> {
        let mut out = BTreeMap::new();
        for r in regions {
            let url = format!("{}/metrics", self.region_url(r));
            if let Ok(text) = self.http.get_text(&url, CALL_TIMEOUT).await {
                out.insert(r.clone(), monitor::conflicts_by_entity(&text));
            }
        }
        out
    }

    /// Conflicts detected at `regions` since `since_ms`.
    async fn conflicts_since(&self, regions: &[String], since_ms: u64) -> Vec<ConflictSeen> {
        let mut out = Vec::new();
        for r in regions {
            let url = format!("{}/v1/conflicts?limit=1000", self.region_url(r));
            let Some(v) = self.get_json(&url).await else { continue };
            for e in v["conflicts"].as_array().into_iter().flatten() {
                if let Some(c) = ConflictSeen::from_json(r, e) {
                    if c.detected_at_ms >= since_ms {
                        out.push(c);
                    }
                }
            }
        }
        out
    }

    async fn run(&mut self) -> Result<(), Stop> {
        self.pre_drill().await?;
        self.isolation().await?;
        self.observation().await;
        self.validation().await;
        self.restoration().await?;
        self.post_drill().await;
        Ok(())
    }

    // ---- 1. pre-drill ---------------------------------------------------------

    async fn static_checks(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        let regions = self.topo.region_names();
        let mut unhealthy = Vec::new();
        for r in &regions {
            if !self.healthy(r).await {
                unhealthy.push(r.clone());
            }
        }
        checks.push(Check::new(
            "every region healthy",
            unhealthy.is_empty(),
            if unhealthy.is_empty() {
                format!("/healthz answered by {}", regions.join(", "))
            } else {
                format!("no /healthz from {}", unhealthy.join(", "))
            },
        ));
        match self.routes().await {
            None => checks.push(Check::new(
                "router sees every region up, none drained",
                false,
                format!("no /v1/routes from the router at {}", self.topo.router_url),
            )),
            Some(v) => {
                let samples = monitor::route_samples(&v).unwrap_or_default();
                let bad: Vec<String> = samples
                    .iter()
                    .filter(|r| !r.up || r.drained)
                    .map(|r| format!("{} (up {}, drained {})", r.region, r.up, r.drained))
                    .collect();
                checks.push(Check::new(
                    "router sees every region up, none drained",
                    bad.is_empty() && samples.len() == regions.len(),
                    join_or(&bad, &format!("{} regions up", samples.len())),
                ));
                let mismatches = self.routes_mismatches(&v);
                checks.push(Check::new(
                    "router routes as configured",
                    mismatches.is_empty(),
                    join_or(&mismatches, "regions, jurisdictions, default region and entity policies match the config"),
                ));
            }
        }
        let mut isolated = Vec::new();
        let mut lagging = Vec::new();
        let mut worst = (0.0f64, String::new());
        for r in &regions {
            let Some(sample) = self.status(r).await.as_ref().and_then(monitor::node_sample) else {
                lagging.push(format!("{r}: no /v1/status"));
                continue;
            };
            if sample.isolated {
                isolated.push(r.clone());
            }
            for p in &sample.peers {
                if !p.connected || p.lag_seconds >= PRE_LAG_MAX_S {
                    lagging.push(format!(
                        "{}→{r}: {} lag {:.2} s",
                        p.peer,
                        if p.connected { "connected" } else { "not connected" },
                        p.lag_seconds
                    ));
                }
                if p.lag_seconds >= worst.0 {
                    worst = (p.lag_seconds, format!("{}→{r}", p.peer));
                }
            }
        }
        checks.push(Check::new(
            "no region isolated",
            isolated.is_empty(),
            join_or(
                &isolated.iter().map(|r| format!("{r} is isolated")).collect::<Vec<_>>(),
                "none",
            ),
        ));
        checks.push(Check::new(
            "replication lag below 5 s on every link",
            lagging.is_empty(),
            join_or(&lagging, &format!("worst {:.2} s ({})", worst.0, worst.1)),
        ));
        checks.push(self.token_check(&isolated).await);
        if self.s.mode == Mode::Kill {
            checks.push(self.control_check().await);
        }
        checks
    }

    fn routes_mismatches(&self, v: &Value) -> Vec<String> {
        let mut out = Vec::new();
        let config = &self.s.config;
        let default =
            config.router.default_region.clone().unwrap_or_else(|| config.regions[0].name.clone());
        if v["default_region"].as_str() != Some(default.as_str()) {
            out.push(format!("default region {} (config: {default})", v["default_region"]));
        }
        let listed = v["regions"].as_array().cloned().unwrap_or_default();
        if listed.len() != self.topo.regions.len() {
            out.push(format!("{} regions (config: {})", listed.len(), self.topo.regions.len()));
        }
        for r in &self.topo.regions {
            match listed.iter().find(|x| x["region"] == r.name.as_str()) {
                None => out.push(format!("region {} missing", r.name)),
                Some(x) => {
                    if x["jurisdiction"] != r.jurisdiction.as_str() || x["url"] != r.url.as_str() {
                        out.push(format!(
                            "region {}: {} at {} (config: {} at {})",
                            r.name, x["jurisdiction"], x["url"], r.jurisdiction, r.url
                        ));
                    }
                }
            }
        }
        for e in &self.topo.entities {
            let x = &v["entities"][&e.name];
            let writes = if e.pinned { "home-region" } else { "any-region" };
            if x["personal"] != e.personal || x["subjects"] != e.subjects || x["writes"] != writes {
                out.push(format!("entity {}: router has {x}", e.name));
            }
        }
        out
    }

    async fn token_check(&self, isolated: &[String]) -> Check {
        let name = "admin token accepted by the router and the target";
        let Some(token) = self.s.admin_token.as_deref() else {
            return Check::new(name, false, "no admin token: set TANDEM_ADMIN_TOKEN or pass --data-dir of the deployment (admin.token)");
        };
        // An unknown region is refused after the token is checked: 404 means accepted.
        let url = format!("{}/v1/admin/regions/drill-token-check/drain", self.topo.router_url);
        let router = self.http.admin_post(&url, Some(token), CALL_TIMEOUT).await;
        let router_ok = matches!(&router, Ok(a) if a.status == 404);
        // Rejoin is a no-op on a region that is not isolated.
        let node_ok = if isolated.contains(&self.s.target) {
            false
        } else {
            let url = format!("{}/v1/admin/rejoin", self.region_url(&self.s.target));
            matches!(self.http.admin_post(&url, Some(token), CALL_TIMEOUT).await, Ok(a) if a.ok())
        };
        let describe = |r: &Result<super::http::Answer, String>| match r {
            Ok(a) => format!("{}", a.status),
            Err(e) => e.clone(),
        };
        Check::new(
            name,
            router_ok && node_ok,
            format!(
                "router {}, {} {}",
                if router_ok {
                    "accepts it".into()
                } else {
                    format!("answered {}", describe(&router))
                },
                self.s.target,
                if node_ok { "accepts it" } else { "refused it or is isolated" }
            ),
        )
    }

    async fn control_check(&self) -> Check {
        let name = "control API reachable and the target's process running";
        let Some(control) = self.s.control.as_deref() else {
            return Check::new(name, false, "kill mode needs the control API of `tandem up`: no up.json in the data directory (pass --data-dir)");
        };
        let Some(v) = self.get_json(&format!("{control}/v1/deployment")).await else {
            return Check::new(name, false, format!("no answer from {control}/v1/deployment"));
        };
        let running = v["processes"][&self.s.target]["running"].as_bool() == Some(true);
        Check::new(name, running, format!("{control}: {} running {running}", self.s.target))
    }

    async fn pre_drill(&mut self) -> Result<(), Stop> {
        let start = self.begin(0);
        let deadline = start.t + self.s.timings.pre.max(PRE_CHECK_WAIT).as_secs_f64();
        let mut checks = loop {
            let checks = self.static_checks().await;
            if checks.iter().all(|c| c.ok) || self.now() > deadline {
                break checks;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        if checks.iter().any(|c| !c.ok) {
            self.end(start, checks);
            return Err(Stop::PreCheck);
        }
        for r in self.topo.region_names() {
            let url = format!("{}/v1/audit?limit=1", self.region_url(&r));
            let head =
                self.get_json(&url).await.and_then(|v| v["head"]["seq"].as_u64()).unwrap_or(0);
            self.audit_from.insert(r, head);
        }
        let registered =
            workload::register_subjects(&self.http, &self.topo, &self.ctx.subjects, PRE_CHECK_WAIT)
                .await;
        checks.push(Check::new(
            "drill subjects registered and known in every region",
            registered.is_ok(),
            match &registered {
                Ok(()) => format!("{} subjects, homed in every region", self.ctx.subjects.len()),
                Err(e) => e.clone(),
            },
        ));
        if registered.is_err() {
            self.end(start, checks);
            return Err(Stop::PreCheck);
        }
        let mut rng = Rng::new(self.s.seed);
        let plans = workload::plan_tasks(&self.topo, &self.ctx.subjects, &mut rng);
        let tasks = plans.len();
        let t_workload = self.now();
        self.workload = Some(Workload::start(self.ctx.clone(), plans, self.s.seed));
        // At least a second of traffic before judging the synthetic monitors.
        self.sleep_until((start.t + self.s.timings.pre.as_secs_f64()).max(t_workload + 1.0)).await;
        let now = self.now();
        let records = self.ctx.journal.snapshot();
        let window: Vec<&RequestRecord> =
            records.iter().filter(|r| r.sent_s >= t_workload).collect();
        let bad: Vec<String> = window
            .iter()
            .filter(|r| measure::classify(r, &self.s.target) != Class::Ok)
            .map(|r| describe_request(r))
            .collect();
        checks.push(Check::new(
            "synthetic workload green",
            bad.is_empty() && !window.is_empty(),
            if bad.is_empty() {
                format!("{} requests from {tasks} tasks, all served", window.len())
            } else {
                format!("{} of {} requests failed: {}", bad.len(), window.len(), join_or(&bad, ""))
            },
        ));
        let serving: BTreeSet<&str> =
            window.iter().filter(|r| r.ok()).filter_map(|r| r.region.as_deref()).collect();
        let idle: Vec<String> = self
            .topo
            .region_names()
            .into_iter()
            .filter(|r| !serving.contains(r.as_str()))
            .collect();
        checks.push(Check::new(
            "every region serves the workload",
            idle.is_empty(),
            join_or(
                &idle.iter().map(|r| format!("{r} served nothing")).collect::<Vec<_>>(),
                "all regions served requests",
            ),
        ));
        let ticks = self.monitor.snapshot();
        let lag = ticks
            .iter()
            .filter(|t| t.t >= start.t && t.t <= now)
            .filter_map(Tick::max_lag)
            .fold(0.0, f64::max);
        checks.push(Check::new(
            "replication lag stayed below 5 s",
            lag < PRE_LAG_MAX_S,
            format!("worst {lag:.2} s over the pre-drill window"),
        ));
        let ok = checks.iter().all(|c| c.ok);
        self.end(start, checks);
        if ok {
            Ok(())
        } else {
            Err(Stop::PreCheck)
        }
    }

    // ---- 2. isolation ---------------------------------------------------------

    async fn isolation(&mut self) -> Result<(), Stop> {
        let start = self.begin(1);
        let target = self.s.target.clone();
        let survivors = self.survivors();
        self.conflict_base = self.conflicts_by_region(&survivors).await;
        let mut checks = Vec::new();
        let t_iso = self.now();
        self.t_iso = Some(t_iso);
        self.switches_ms.push(self.clock.unix_ms_at(t_iso));
        match self.s.mode {
            Mode::Isolate => {
                self.router_action("drain").await?;
                self.drained = true;
                let drained = self
                    .routes()
                    .await
                    .and_then(|v| monitor::route_samples(&v))
                    .is_some_and(|rs| rs.iter().any(|r| r.region == target && r.drained));
                checks.push(Check::new(
                    format!("router stopped routing to {target}"),
                    drained,
                    format!("drained at +{t_iso:.2} s; /v1/routes shows drained {drained}"),
                ));
                // Let writes already acknowledged by the target replicate before
                // its links are cut, so the cut does not strand them.
                let settle_until =
                    self.now() + (self.s.timings.isolation.as_secs_f64() / 2.0).max(0.3);
                tokio::time::sleep(Duration::from_millis(300)).await;
                let mut backlog = u64::MAX;
                while self.now() < settle_until {
                    backlog = 0;
                    for s in &survivors {
                        let sample = self.status(s).await.as_ref().and_then(monitor::node_sample);
                        let depth = sample
                            .and_then(|n| n.peers.into_iter().find(|p| p.peer == target))
                            .map_or(u64::MAX, |p| p.queue_depth);
                        backlog = backlog.saturating_add(depth);
                    }
                    if backlog == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                self.node_action("isolate").await?;
                self.isolated = true;
                let t_cut = self.now();
                let isolated = self.status(&target).await.is_some_and(|v| v["isolated"] == true);
                checks.push(Check::new(
                    format!("{target} cut off from replication"),
                    isolated,
                    format!(
                        "isolated at +{t_cut:.2} s, {:.0} ms after the drain ({}); /v1/status isolated {isolated}",
                        (t_cut - t_iso) * 1000.0,
                        if backlog == 0 { "its writes had replicated" } else { "backlog still pending" }
                    ),
                ));
                let running = self.healthy(&target).await;
                checks.push(Check::new(
                    format!("{target} keeps running"),
                    running,
                    format!("/healthz {}", if running { "answers" } else { "does not answer" }),
                ));
            }
            Mode::Kill => {
                self.control_action("kill").await?;
                self.killed = true;
                let control = self.s.control.clone().unwrap_or_default();
                let running = self
                    .get_json(&format!("{control}/v1/deployment"))
                    .await
                    .map(|v| v["processes"][&target]["running"].as_bool() == Some(true));
                checks.push(Check::new(
                    format!("{target}'s process killed"),
                    running == Some(false),
                    format!("SIGKILL at +{t_iso:.2} s through {control}; running now: {running:?}"),
                ));
            }
        }
        self.sleep_until(start.t + self.s.timings.isolation.as_secs_f64()).await;
        self.end(start, checks);
        Ok(())
    }

    // ---- 3. observation -------------------------------------------------------

    /// Whether a refusal of this request is what the rules require: its
    /// subject's jurisdiction has no region left.
    fn refusal_expected(&self, r: &RequestRecord) -> bool {
        if r.error.as_deref() == Some("reads_halted") && !r.is_write() {
            return true;
        }
        let Some(home) = r.home.as_deref() else { return false };
        let Some(e) = self.topo.entity(&r.entity) else { return false };
        let j = self.topo.jurisdiction_of(home);
        e.routed_by_home(r.is_write())
            && j == self.topo.jurisdiction_of(&self.s.target)
            && self.topo.jurisdiction_peers(&self.s.target).is_empty()
    }

    /// Whether a served request was served where the rules allow.
    fn permitted(&self, r: &RequestRecord) -> bool {
        let Some(region) = r.region.as_deref() else { return true };
        let Some(e) = self.topo.entity(&r.entity) else { return true };
        let Some(home) = r.home.as_deref() else { return true };
        let same_j = self.topo.jurisdiction_of(region) == self.topo.jurisdiction_of(home);
        if e.personal && !same_j {
            return false;
        }
        if r.is_write() && e.pinned {
            return region == home || (r.route.as_deref() == Some("failover") && same_j);
        }
        true
    }

    async fn observation(&mut self) {
        let start = self.begin(2);
        self.sleep_until(start.t + self.s.timings.observation.as_secs_f64()).await;
        let now = self.now();
        let target = self.s.target.clone();
        let t_iso = self.t_iso.unwrap_or(start.t);
        let ticks = self.monitor.snapshot();
        let records = self.ctx.journal.snapshot();
        let mut checks = Vec::new();

        let router_down = ticks
            .iter()
            .filter(|t| t.t >= t_iso)
            .find(|t| {
                t.routes.as_ref().is_some_and(|rs| rs.iter().any(|r| r.region == target && !r.up))
            })
            .map(|t| t.t);
        let t_settle = match self.s.mode {
            Mode::Isolate => t_iso + SETTLE_S,
            Mode::Kill => router_down.unwrap_or(t_iso + SETTLE_KILL_FALLBACK_S) + SETTLE_S,
        };
        self.t_settle = Some(t_settle);

        // Backlog: the survivors' link from the target is down and its lag grows.
        let window: Vec<&Tick> = ticks.iter().filter(|t| t.t >= start.t && t.t <= now).collect();
        let mut lines = Vec::new();
        let mut growing = true;
        for s in self.survivors() {
            let link = |t: &&Tick| {
                t.node(&s).and_then(|n| n.peers.iter().find(|p| p.peer == target).cloned())
            };
            let first = window.iter().find_map(link);
            let last = window.iter().rev().find_map(link);
            match (first, last) {
                (Some(a), Some(b)) => {
                    let ok = b.lag_seconds > a.lag_seconds && !b.connected;
                    growing &= ok;
                    lines.push(format!(
                        "{s}: link from {target} {}, lag {:.1} s → {:.1} s, queue depth {}",
                        if b.connected { "connected" } else { "down" },
                        a.lag_seconds,
                        b.lag_seconds,
                        b.queue_depth
                    ));
                }
                _ => {
                    growing = false;
                    lines.push(format!("{s}: no status"));
                }
            }
        }
        checks.push(Check::new(
            "surviving regions see the target's backlog grow",
            growing,
            lines.join("; "),
        ));
        if self.s.mode == Mode::Isolate {
            let sample = self.status(&target).await.as_ref().and_then(monitor::node_sample);
            let detail = match &sample {
                Some(n) => format!(
                    "isolated {}, lag from peers {}",
                    n.isolated,
                    n.peers
                        .iter()
                        .map(|p| format!("{} {:.1} s", p.peer, p.lag_seconds))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => "no /v1/status".into(),
            };
            checks.push(Check::new(
                format!("{target} runs on, isolated"),
                sample.as_ref().is_some_and(|n| n.isolated),
                detail,
            ));
        }

        let ttr = measure::time_to_route(&records, &target, t_iso);
        checks.push(Check::new(
            "traffic rerouted",
            ttr.is_some(),
            match &ttr {
                Some((s, what)) => format!("after {s:.2} s: {what}"),
                None => format!("no request of {target}'s traffic was served by another region"),
            },
        ));

        let after: Vec<&RequestRecord> =
            records.iter().filter(|r| r.sent_s >= t_settle && r.sent_s <= now).collect();
        let bound: Vec<&&RequestRecord> =
            after.iter().filter(|r| measure::target_bound(r, &target)).collect();
        let mut served = BTreeMap::<String, u64>::new();
        let (mut refused_ok, mut refused_bad, mut errors, mut outside) =
            (0u64, Vec::new(), Vec::new(), Vec::new());
        for r in &bound {
            match measure::classify(r, &target) {
                Class::Refused if self.refusal_expected(r) => refused_ok += 1,
                Class::Refused => refused_bad.push(describe_request(r)),
                Class::Error => errors.push(describe_request(r)),
                Class::Ok | Class::Failover => {
                    if !self.permitted(r) {
                        outside.push(describe_request(r));
                    }
                    *served.entry(r.region.clone().unwrap_or_default()).or_insert(0) += 1;
                }
            }
        }
        let at_target = served.get(&target).copied().unwrap_or(0);
        let peers = self.topo.jurisdiction_peers(&target);
        let j = self.topo.jurisdiction_of(&target).unwrap_or_default().to_owned();
        let mut detail = format!(
            "{} requests of {target}'s traffic since +{t_settle:.1} s: served by {}",
            bound.len(),
            if served.is_empty() {
                "none".to_owned()
            } else {
                served.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", ")
            }
        );
        if refused_ok > 0 {
            detail.push_str(&format!(
                "; {refused_ok} refused with 503 as required ({})",
                if peers.is_empty() {
                    format!("{target} is the only region of {j}")
                } else {
                    "reads of a lagging class halted".to_owned()
                }
            ));
        }
        for (what, list) in [
            ("refused unexpectedly", &refused_bad),
            ("failed", &errors),
            ("served outside the rules", &outside),
        ] {
            if !list.is_empty() {
                detail.push_str(&format!("; {} {what}: {}", list.len(), join_or(list, "")));
            }
        }
        checks.push(Check::new(
            "the target's traffic moved within its jurisdiction",
            refused_bad.is_empty()
                && errors.is_empty()
                && outside.is_empty()
                && at_target == 0
                && !bound.is_empty(),
            detail,
        ));
        let at_target_any: Vec<String> = after
            .iter()
            .filter(|r| r.region.as_deref() == Some(target.as_str()))
            .map(|r| describe_request(r))
            .collect();
        checks.push(Check::new(
            format!("no request served by {target}"),
            at_target_any.is_empty(),
            join_or(&at_target_any, &format!("none since +{t_settle:.1} s")),
        ));
        let since_iso: Vec<&RequestRecord> = records.iter().filter(|r| r.sent_s >= t_iso).collect();
        let landing = self.landing_violations(&since_iso);
        checks.push(Check::new(
            "writes land only in permitted regions",
            landing.is_empty(),
            join_or(
                &landing,
                &format!(
                    "{} acknowledged writes since isolation, personal ones inside their subject's jurisdiction, pinned ones at home or failed over inside it",
                    since_iso.iter().filter(|r| r.is_write() && r.ok()).count()
                ),
            ),
        ));
        self.end(start, checks);
    }

    /// Acknowledged writes served where they must not be, and refusals that
    /// say the router sent a write to the wrong region.
    fn landing_violations(&self, records: &[&RequestRecord]) -> Vec<String> {
        records
            .iter()
            .filter(|r| r.is_write())
            .filter(|r| {
                (r.ok() && !self.permitted(r))
                    || matches!(
                        r.error.as_deref(),
                        Some("residency_violation") | Some("misdirected_write")
                    )
            })
            .map(|r| describe_request(r))
            .collect()
    }

    // ---- 4. validation --------------------------------------------------------

    /// A smoke write (and read back) through the router for a subject homed
    /// in `home`, by a caller in `caller`. Returns the write's and the read's records.
    async fn smoke(
        &mut self,
        home: &str,
        caller: &str,
    ) -> Option<(RequestRecord, Option<RequestRecord>)> {
        let subject = self.ctx.subjects.iter().position(|s| s.home == home)?;
        let entity = self
            .topo
            .entities
            .iter()
            .position(|e| e.subjects && e.pinned && e.merge == tandem_config::MergeKind::Lww)
            .or_else(|| self.topo.entities.iter().position(|e| e.subjects))?;
        self.smoke_n += 1;
        // Task numbers from 1000 on are the checks' own: one writer per key.
        let task = 1000 + self.smoke_n;
        let item = Item { entity, subject: Some(subject) };
        let mut spec =
            workload::write_spec(&self.topo, &self.ctx.subjects, &self.ctx.run, task, item, 1);
        spec.op = format!("smoke-{}", spec.op);
        let (w, _) = workload::execute(&self.ctx, caller, &spec).await;
        if !w.ok() {
            return Some((w, None));
        }
        let mut read =
            workload::read_spec(&self.topo, &self.ctx.subjects, &self.ctx.run, task, item);
        read.op = "smoke-get".into();
        let (r, _) = workload::execute(&self.ctx, caller, &read).await;
        Some((w, Some(r)))
    }

    async fn validation(&mut self) {
        let start = self.begin(3);
        let target = self.s.target.clone();
        let mut checks = Vec::new();
        let mut smoke_lines = Vec::new();
        let mut smoke_ok = true;
        for s in self.survivors() {
            match self.smoke(&s, &s).await {
                Some((w, r)) => {
                    let ok = w.ok()
                        && w.region.as_deref() == Some(s.as_str())
                        && w.route.as_deref() == Some("home")
                        && r.as_ref().is_some_and(|r| r.ok());
                    smoke_ok &= ok;
                    smoke_lines.push(format!(
                        "{s}: write {} read {}",
                        describe_request(&w),
                        r.as_ref().map_or("not tried".into(), describe_request)
                    ));
                }
                None => smoke_lines.push(format!("{s}: no subject or entity to try")),
            }
        }
        checks.push(Check::new(
            "smoke test against surviving regions",
            smoke_ok,
            smoke_lines.join("; "),
        ));
        let peers = self.topo.jurisdiction_peers(&target);
        let caller = peers.first().cloned().unwrap_or_else(|| self.survivors()[0].clone());
        if let Some((w, _)) = self.smoke(&target, &caller).await {
            let (ok, expected) = if peers.is_empty() {
                (w.refused(), "503 no_region_available: no region of its jurisdiction is left")
            } else {
                (
                    w.ok()
                        && w.route.as_deref() == Some("failover")
                        && w.region.as_deref().is_some_and(|r| peers.iter().any(|p| p == r)),
                    "a failover write to a surviving region of its jurisdiction",
                )
            };
            checks.push(Check::new(
                format!("a pinned write of {target}'s subject fails over correctly"),
                ok,
                format!("expected {expected}; got {}", describe_request(&w)),
            ));
        }
        self.sleep_until(start.t + self.s.timings.validation.as_secs_f64()).await;
        let now = self.now();
        let t_settle = self.t_settle.unwrap_or(start.t);
        let records = self.ctx.journal.snapshot();
        let survivors = self.survivors();
        let pinned_home: Vec<&RequestRecord> = records
            .iter()
            .filter(|r| {
                r.sent_s >= t_settle
                    && r.sent_s <= now
                    && r.is_write()
                    && !r.op.starts_with("smoke")
            })
            .filter(|r| r.home.as_ref().is_some_and(|h| survivors.contains(h)))
            .filter(|r| self.topo.entity(&r.entity).is_some_and(|e| e.pinned))
            .collect();
        let off: Vec<String> = pinned_home
            .iter()
            .filter(|r| !(r.ok() && r.route.as_deref() == Some("home") && r.region == r.home))
            .map(|r| describe_request(r))
            .collect();
        checks.push(Check::new(
            "pinned users of the surviving regions served from home",
            off.is_empty() && !pinned_home.is_empty(),
            if off.is_empty() {
                format!("{} pinned writes since +{t_settle:.1} s, all at home", pinned_home.len())
            } else {
                format!(
                    "{} of {} not served at home: {}",
                    off.len(),
                    pinned_home.len(),
                    join_or(&off, "")
                )
            },
        ));

        let now_conflicts = self.conflicts_by_region(&survivors).await;
        let pinned: BTreeSet<&str> =
            self.topo.entities.iter().filter(|e| e.pinned).map(|e| e.name.as_str()).collect();
        let mut delta_pinned = 0.0;
        let mut delta_all = BTreeMap::<String, f64>::new();
        for (r, by_entity) in &now_conflicts {
            for (e, n) in by_entity {
                let base = self.conflict_base.get(r).and_then(|b| b.get(e)).copied().unwrap_or(0.0);
                let d = (n - base).max(0.0);
                *delta_all.entry(e.clone()).or_insert(0.0) += d;
                if pinned.contains(e.as_str()) {
                    delta_pinned += d;
                }
            }
        }
        let since = self.clock.unix_ms_at(self.t_iso.unwrap_or(start.t));
        let seen = self.conflicts_since(&survivors, since).await;
        let unexplained: Vec<String> = seen
            .iter()
            .filter(|c| pinned.contains(c.entity.as_str()))
            .filter(|c| !measure::explained_by_switch(c, &self.switches_ms, CONFLICT_WINDOW_MS))
            .map(describe_conflict)
            .collect();
        let all: Vec<String> =
            delta_all.iter().filter(|(_, n)| **n > 0.0).map(|(e, n)| format!("{e} {n}")).collect();
        checks.push(Check::new(
            "conflicts not growing unexpectedly (pinned types)",
            unexplained.is_empty(),
            format!(
                "on the surviving regions since isolation: {delta_pinned} on pinned types, all types: {}{}",
                join_or(&all, "none"),
                if unexplained.is_empty() {
                    String::new()
                } else {
                    format!("; not explained by the isolation: {}", join_or(&unexplained, ""))
                }
            ),
        ));
        let ticks = self.monitor.snapshot();
        let ttd = measure::time_to_detect(&ticks, &target, self.t_iso.unwrap_or(start.t));
        checks.push(Check::new(
            "the deployment raised an alert",
            ttd.is_some(),
            match &ttd {
                Some((s, what)) => format!("after {s:.2} s: {what}"),
                None => "neither the router nor a lag budget of a surviving region noticed".into(),
            },
        ));
        self.end(start, checks);
    }

    // ---- 5. restoration -------------------------------------------------------

    /// Whether every link to and from the target is connected with nothing queued.
    async fn caught_up(&self) -> (bool, String) {
        let target = &self.s.target;
        let mut ok = true;
        let mut lines = Vec::new();
        for r in self.topo.region_names() {
            let sample = self.status(&r).await.as_ref().and_then(monitor::node_sample);
            let Some(n) = sample else {
                ok = false;
                lines.push(format!("{r}: no status"));
                continue;
            };
            for p in n.peers.iter().filter(|p| r == *target || p.peer == *target) {
                let done = p.connected && p.queue_depth == 0;
                ok &= done;
                lines.push(format!(
                    "{}→{r} {} depth {} lag {:.1} s",
                    p.peer,
                    if p.connected { "up" } else { "down" },
                    p.queue_depth,
                    p.lag_seconds
                ));
            }
        }
        (ok, lines.join(", "))
    }

    async fn restoration(&mut self) -> Result<(), Stop> {
        let start = self.begin(4);
        let target = self.s.target.clone();
        let deadline = start.t + self.s.timings.restoration_max.as_secs_f64();
        let regions = self.topo.region_names();
        let base = self.conflicts_by_region(&regions).await;
        let since_ms = self.clock.unix_ms_at(start.t);
        let mut checks = Vec::new();
        match self.s.mode {
            Mode::Isolate => {
                self.node_action("rejoin").await?;
                self.isolated = false;
                let rejoined = self.status(&target).await.is_some_and(|v| v["isolated"] == false);
                checks.push(Check::new(
                    format!("{target}'s replication resumed"),
                    rejoined,
                    format!("rejoined at +{:.2} s", self.now()),
                ));
            }
            Mode::Kill => {
                // A restarted region passes its health probe before it has caught
                // up: keep the router off it until it has.
                self.router_action("drain").await?;
                self.drained = true;
                self.control_action("start").await?;
                self.killed = false;
                let t0 = self.now();
                let mut healthy = false;
                while self.now() < deadline {
                    if self.healthy(&target).await {
                        healthy = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                checks.push(Check::new(
                    format!("{target} restarted"),
                    healthy,
                    format!(
                        "started at +{t0:.2} s (drained at the router until caught up), healthy {}",
                        if healthy {
                            format!("after {:.2} s", self.now() - t0)
                        } else {
                            "never".into()
                        }
                    ),
                ));
            }
        }
        let t_catch = self.now();
        let mut streak = 0;
        let mut last = String::new();
        while self.now() < deadline {
            let (ok, detail) = self.caught_up().await;
            last = detail;
            streak = if ok { streak + 1 } else { 0 };
            if streak >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let caught_up = streak >= 2;
        checks.push(Check::new(
            "replication caught up",
            caught_up,
            format!(
                "{} after {:.2} s: {last}",
                if caught_up { "caught up" } else { "NOT caught up" },
                self.now() - t_catch
            ),
        ));
        self.router_action("restore").await?;
        self.drained = false;
        let t_restore = self.now();
        self.switches_ms.push(self.clock.unix_ms_at(t_restore));
        let mut routed = false;
        while self.now() < t_restore + 5.0 {
            let up = self
                .routes()
                .await
                .and_then(|v| monitor::route_samples(&v))
                .is_some_and(|rs| rs.iter().any(|r| r.region == target && r.up && !r.drained));
            if up {
                routed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        checks.push(Check::new(
            format!("router routes to {target} again"),
            routed,
            format!("restored at +{t_restore:.2} s; /v1/routes up and not drained: {routed}"),
        ));
        if let Some((w, _)) = self.smoke(&target, &target).await {
            checks.push(Check::new(
                format!("{target} serves its subjects again"),
                w.ok()
                    && w.region.as_deref() == Some(target.as_str())
                    && w.route.as_deref() == Some("home"),
                describe_request(&w),
            ));
        }
        // Conflicts of the catch-up (and of the switch back) show within moments.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = self.conflicts_by_region(&regions).await;
        let mut by_entity = BTreeMap::<String, f64>::new();
        for (r, m) in &after {
            for (e, n) in m {
                let b = base.get(r).and_then(|x| x.get(e)).copied().unwrap_or(0.0);
                // A restarted process counts from zero.
                let b = if *n < b { 0.0 } else { b };
                *by_entity.entry(e.clone()).or_insert(0.0) += n - b;
            }
        }
        let total: f64 = by_entity.values().sum();
        self.conflicts_restoration = total.max(0.0).round() as u64;
        let seen = self.conflicts_since(&regions, since_ms).await;
        let unexplained: Vec<String> = seen
            .iter()
            .filter(|c| !measure::explained_by_switch(c, &self.switches_ms, CONFLICT_WINDOW_MS))
            .map(describe_conflict)
            .collect();
        let never: Vec<&ConflictSeen> = seen
            .iter()
            .filter(|c| self.topo.entity(&c.entity).is_some_and(|e| e.conflicts_never))
            .collect();
        if !never.is_empty() {
            self.findings.push(format!(
                "{} conflict(s) on `conflicts = \"never\"` types during restoration ({}): versions {} acknowledged within {} ms before the {} that had not replicated yet, against later writes elsewhere; the deployment counts them as invariant violations",
                never.len(),
                never.iter().map(|c| format!("{}/{}", c.entity, c.id)).collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>().join(", "),
                target,
                CONFLICT_WINDOW_MS,
                if self.s.mode == Mode::Kill { "kill" } else { "drain" }
            ));
        }
        let acked =
            self.ctx.journal.counters.acked.load(std::sync::atomic::Ordering::Relaxed).max(1);
        let rate = self.conflicts_restoration as f64 / acked as f64;
        checks.push(Check::new(
            "conflicts during catch-up explained by the failover",
            unexplained.is_empty(),
            format!(
                "{} conflict(s) counted ({}), rate {:.3}% of acknowledged writes{}",
                self.conflicts_restoration,
                join_or(
                    &by_entity
                        .iter()
                        .filter(|(_, n)| **n > 0.0)
                        .map(|(e, n)| format!("{e} {n}"))
                        .collect::<Vec<_>>(),
                    "none"
                ),
                rate * 100.0,
                if unexplained.is_empty() {
                    String::new()
                } else {
                    format!("; not explained by a routing switch: {}", join_or(&unexplained, ""))
                }
            ),
        ));
        self.end(start, checks);
        Ok(())
    }

    // ---- 6. post-drill --------------------------------------------------------

    /// Regions that must agree on an entity's digest, in groups.
    fn digest_groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        for e in &self.topo.entities {
            if e.personal {
                let js: BTreeSet<&str> =
                    self.topo.regions.iter().map(|r| r.jurisdiction.as_str()).collect();
                for j in js {
                    let rs: Vec<String> = self
                        .topo
                        .regions
                        .iter()
                        .filter(|r| r.jurisdiction == j)
                        .map(|r| r.name.clone())
                        .collect();
                    if rs.len() > 1 {
                        out.push((e.name.clone(), rs));
                    }
                }
            } else {
                out.push((e.name.clone(), self.topo.region_names()));
            }
        }
        out
    }

    async fn diverged(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (entity, regions) in self.digest_groups() {
            let mut digests = BTreeMap::new();
            for r in &regions {
                let url = format!("{}/v1/digest?entity={entity}", self.region_url(r));
                let d =
                    self.get_json(&url).await.and_then(|v| v["digest"].as_str().map(str::to_owned));
                digests.insert(r.clone(), d.unwrap_or_else(|| "unreachable".into()));
            }
            let distinct: BTreeSet<&String> = digests.values().collect();
            if distinct.len() > 1 {
                out.push(format!(
                    "{entity}: {}",
                    digests
                        .iter()
                        .map(|(r, d)| format!("{r} {}", &d[..d.len().min(8)]))
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
            }
        }
        out
    }

    async fn read_back(&self, records: &[RequestRecord]) -> ReadBack {
        let mut keys: BTreeMap<(String, String), Option<String>> = BTreeMap::new();
        for r in
            records.iter().filter(|r| r.is_write() && r.write_outcome() != WriteOutcome::Rejected)
        {
            keys.insert((r.entity.clone(), r.id.clone()), r.home.clone());
        }
        let jobs: Vec<(String, String, String)> = keys
            .iter()
            .flat_map(|((e, id), home)| {
                self.topo
                    .holders(e, home.as_deref())
                    .into_iter()
                    .map(move |r| (e.clone(), id.clone(), r))
            })
            .collect();
        let results: Vec<((String, String, String), ReadResult)> = futures_util::stream::iter(jobs)
            .map(|(e, id, r)| async move {
                let url = format!("{}/v1/records/{e}/{id}", self.region_url(&r));
                let mut result = ReadResult::Unreadable("not tried".into());
                for _ in 0..READBACK_TRIES {
                    result = match self.http.get(&url, CALL_TIMEOUT).await {
                        Ok(a) if a.ok() => ReadResult::Value(a.body["value"].clone()),
                        Ok(a) if a.status == 404 => ReadResult::Missing,
                        Ok(a) => ReadResult::Unreadable(format!(
                            "{} {}",
                            a.status,
                            a.error_code().unwrap_or_default()
                        )),
                        Err(err) => ReadResult::Unreadable(err),
                    };
                    if !matches!(result, ReadResult::Unreadable(_)) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                ((e, id, r), result)
            })
            .buffer_unordered(READBACK_CONCURRENCY)
            .collect()
            .await;
        let mut out = ReadBack::new();
        for ((e, id, r), result) in results {
            out.entry((e, id)).or_default().insert(r, result);
        }
        out
    }

    async fn scan_ids(&self, region: &str, entity: &str) -> Result<Vec<String>, String> {
        let mut ids = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..PAGES_MAX {
            let mut url = format!("{}/v1/records/{entity}?limit=1000", self.region_url(region));
            if let Some(a) = &after {
                url.push_str(&format!("&after={a}"));
            }
            let a = self.http.get(&url, CALL_TIMEOUT).await?;
            if !a.ok() {
                return Err(format!("{url} answered {}", a.status));
            }
            for r in a.body["records"].as_array().into_iter().flatten() {
                if let Some(id) = r["id"].as_str() {
                    ids.push(id.to_owned());
                }
            }
            match a.body["next"].as_str() {
                Some(n) => after = Some(n.to_owned()),
                None => return Ok(ids),
            }
        }
        Err(format!("{entity} at {region}: more than {PAGES_MAX} pages"))
    }

    async fn residency_scan(&mut self) -> Check {
        let mut homes: BTreeMap<String, Option<String>> = self
            .ctx
            .subjects
            .iter()
            .map(|s| (s.name.clone(), self.topo.jurisdiction_of(&s.home).map(str::to_owned)))
            .collect();
        let mut violations = Vec::new();
        let mut scanned = 0usize;
        let mut errors = Vec::new();
        let personal: Vec<String> =
            self.topo.entities.iter().filter(|e| e.personal).map(|e| e.name.clone()).collect();
        for region in self.topo.regions.clone() {
            for entity in &personal {
                let ids = match self.scan_ids(&region.name, entity).await {
                    Ok(ids) => ids,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                };
                scanned += ids.len();
                for id in &ids {
                    let Some(subject) = tandem_config::subject_of(id) else { continue };
                    if !homes.contains_key(subject) {
                        let url = format!("{}/v1/subjects/{subject}", self.topo.router_url);
                        let j = self
                            .get_json(&url)
                            .await
                            .and_then(|v| v["jurisdiction"].as_str().map(str::to_owned));
                        homes.insert(subject.to_owned(), j);
                    }
                }
                let lookup = |s: &str| homes.get(s).cloned().flatten();
                violations.extend(verify::scan_violations(
                    &region.name,
                    &region.jurisdiction,
                    entity,
                    &ids,
                    &lookup,
                ));
            }
        }
        self.residency_violations += violations.len() as u64;
        let mut detail = format!(
            "{scanned} personal records scanned in {} regions: {}",
            self.topo.regions.len(),
            join_or(&violations, "each in its subject's jurisdiction")
        );
        if !errors.is_empty() {
            detail.push_str(&format!("; scans failed: {}", join_or(&errors, "")));
        }
        if !violations.is_empty() {
            self.findings.push(format!("residency violations: {}", join_or(&violations, "")));
        }
        Check::new(
            "residency: personal records only in their subject's jurisdiction",
            violations.is_empty() && errors.is_empty(),
            detail,
        )
    }

    async fn audit_scan(&mut self) -> Check {
        let personal: BTreeSet<String> =
            self.topo.entities.iter().filter(|e| e.personal).map(|e| e.name.clone()).collect();
        let mut violations = Vec::new();
        let mut errors = Vec::new();
        let mut entries_seen = 0usize;
        for region in self.topo.regions.clone() {
            let mut after = self.audit_from.get(&region.name).copied().unwrap_or(0);
            let mut entries = Vec::new();
            for _ in 0..PAGES_MAX {
                let url = format!("{}/v1/audit?after={after}&limit=1000", region.url);
                let Some(v) = self.get_json(&url).await else {
                    errors.push(format!("no audit from {}", region.name));
                    break;
                };
                let page = v["entries"].as_array().cloned().unwrap_or_default();
                let Some(last) = page.last().and_then(|e| e["seq"].as_u64()) else { break };
                after = last;
                entries.extend(page);
            }
            entries_seen += entries.len();
            violations.extend(verify::audit_violations(
                &region.name,
                &region.jurisdiction,
                &entries,
                &personal,
            ));
        }
        self.residency_violations += violations.len() as u64;
        if !violations.is_empty() {
            self.findings.push(format!(
                "audit shows personal data served across jurisdictions: {}",
                join_or(&violations, "")
            ));
        }
        let mut detail = format!(
            "{entries_seen} audit entries of the drill checked: {}",
            join_or(&violations, "no personal data served in clear to another jurisdiction")
        );
        if !errors.is_empty() {
            detail.push_str(&format!("; {}", errors.join("; ")));
        }
        Check::new(
            "audit: cross-jurisdiction flows carry no personal data in clear",
            violations.is_empty() && errors.is_empty(),
            detail,
        )
    }

    async fn post_drill(&mut self) {
        let start = self.begin(5);
        let mut checks = Vec::new();
        if let Some(w) = self.workload.as_mut() {
            w.stop().await;
        }
        let converge_until = self.now() + self.s.timings.post_max.as_secs_f64() * 0.6;
        let t0 = self.now();
        let mut diverged;
        loop {
            diverged = self.diverged().await;
            if diverged.is_empty() || self.now() > converge_until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        checks.push(Check::new(
            "regions converged (equal digests)",
            diverged.is_empty(),
            if diverged.is_empty() {
                format!(
                    "every entity type equal where it may be held, after {:.2} s",
                    self.now() - t0
                )
            } else {
                format!(
                    "still different after {:.1} s: {}",
                    self.now() - t0,
                    join_or(&diverged, "")
                )
            },
        ));
        let records = self.ctx.journal.snapshot();
        let readback = self.read_back(&records).await;
        let v = verify::verify(&records, &readback);
        checks.push(Check::new(
            "every acknowledged write is in every region that may hold it",
            v.lost == 0,
            format!(
                "{} acknowledged, {} verified, {} lost{}",
                v.acknowledged,
                v.verified,
                v.lost,
                if v.lost > 0 {
                    format!(": {}", join_or(&v.lost_details, ""))
                } else {
                    String::new()
                }
            ),
        ));
        checks.push(Check::new(
            "no record holds a value no request wrote",
            v.problems.is_empty(),
            join_or(&v.problems, "none"),
        ));
        if v.lost > 0 {
            self.findings.push(format!(
                "{} acknowledged write(s) lost in {} record(s): {}",
                v.lost,
                v.lost_keys.len(),
                join_or(&v.lost_details, "")
            ));
        }
        self.verification = Some(v);
        checks.push(self.residency_scan().await);
        checks.push(self.audit_scan().await);
        let all: Vec<&RequestRecord> = records.iter().collect();
        let landing = self.landing_violations(&all);
        checks.push(Check::new(
            "writes landed only in permitted regions (whole drill)",
            landing.is_empty(),
            join_or(
                &landing,
                &format!(
                    "{} acknowledged writes checked",
                    records.iter().filter(|r| r.is_write() && r.ok()).count()
                ),
            ),
        ));
        self.end(start, checks);
    }

    // ---- the way out ----------------------------------------------------------

    /// Undo what the drill did to the deployment (after an error or an interrupt).
    async fn put_back(&mut self) {
        if let Some(w) = self.workload.as_mut() {
            w.stop().await;
        }
        if self.killed {
            match self.control_action("start").await {
                Ok(_) => self.killed = false,
                Err(e) => self.findings.push(format!("could not restart {}: {e:#}", self.s.target)),
            }
        }
        if self.isolated {
            match self.node_action("rejoin").await {
                Ok(_) => self.isolated = false,
                Err(e) => self.findings.push(format!("could not rejoin {}: {e:#}", self.s.target)),
            }
        }
        if self.drained {
            match self.router_action("restore").await {
                Ok(_) => self.drained = false,
                Err(e) => self
                    .findings
                    .push(format!("could not restore routing to {}: {e:#}", self.s.target)),
            }
        }
    }

    async fn finish(&mut self) -> Report {
        let ticks = self.monitor.stop().await;
        let records = self.ctx.journal.snapshot();
        let target = self.s.target.clone();
        let mut requests = Requests::default();
        for r in &records {
            requests.total += 1;
            match measure::classify(r, &target) {
                Class::Ok => requests.ok += 1,
                Class::Failover => requests.failover += 1,
                Class::Refused => requests.refused += 1,
                Class::Error => requests.error += 1,
            }
        }
        let (ttd, ttr) = match self.t_iso {
            Some(t) => (
                measure::time_to_detect(&ticks, &target, t),
                measure::time_to_route(&records, &target, t),
            ),
            None => (None, None),
        };
        let lag = measure::lag_series(&ticks);
        let max_lag = lag.iter().map(|p| p.1).fold(0.0, f64::max);
        let writes = match &self.verification {
            Some(v) => Writes {
                attempted: v.attempted,
                acknowledged: v.acknowledged,
                verified: v.verified,
                lost: v.lost,
                lost_keys: v.lost_keys.clone(),
                unknown_outcome: v.unknown,
                rejected: v.rejected,
            },
            None => {
                let writes: Vec<&RequestRecord> = records.iter().filter(|r| r.is_write()).collect();
                let count = |o| writes.iter().filter(|r| r.write_outcome() == o).count() as u64;
                Writes {
                    attempted: writes.len() as u64,
                    acknowledged: count(WriteOutcome::Acked),
                    unknown_outcome: count(WriteOutcome::Unknown),
                    rejected: count(WriteOutcome::Rejected),
                    ..Writes::default()
                }
            }
        };
        let mut findings =
            self.summary_findings(&ticks, &records, ttd.as_ref(), ttr.as_ref(), &writes);
        findings.append(&mut self.findings);
        for p in &self.phases {
            for c in p.checks.iter().filter(|c| !c.ok) {
                findings.push(format!("{}: check \"{}\" failed: {}", p.name, c.name, c.detail));
            }
        }
        let complete = self.phases.len() == PHASES.len();
        let mut verdict = report::verdict(&self.phases, &writes, self.residency_violations);
        if !complete {
            verdict = "fail";
        }
        let conflict_rate = self.conflicts_restoration as f64 / writes.acknowledged.max(1) as f64;
        Report {
            target,
            mode: self.s.mode.as_str().to_owned(),
            verdict: verdict.to_owned(),
            ttd_seconds: ttd.as_ref().map(|t| round3(t.0)),
            ttd_alert: ttd.map(|t| t.1),
            ttr_seconds: ttr.as_ref().map(|t| round3(t.0)),
            ttr_request: ttr.map(|t| t.1),
            started_at: report::rfc3339(self.clock.start_unix_ms),
            duration_seconds: round3(self.now()),
            timings: self.s.timings_name.clone(),
            phases: self.phases.clone(),
            writes,
            requests,
            conflicts_during_restoration: self.conflicts_restoration,
            conflict_rate_during_restoration: conflict_rate,
            residency_violations: self.residency_violations,
            max_replication_lag_seconds: round3(max_lag),
            findings,
        }
    }

    fn summary_findings(
        &self,
        ticks: &[Tick],
        records: &[RequestRecord],
        ttd: Option<&(f64, String)>,
        ttr: Option<&(f64, String)>,
        writes: &Writes,
    ) -> Vec<String> {
        let mut f = Vec::new();
        let Some(t_iso) = self.t_iso else { return f };
        let target = &self.s.target;
        match ttd {
            Some((s, what)) => {
                f.push(format!("Time-to-Detect {s:.2} s: {what}."));
                if self.s.mode == Mode::Isolate && what.contains("lag budget") {
                    f.push(format!(
                        "A drained region is not a down region to the router: with {target} isolated, only the lag budgets of the surviving regions raised an alert."
                    ));
                }
            }
            None => f.push(
                "No alert fired: the deployment did not notice the loss of the region.".into(),
            ),
        }
        match ttr {
            Some((s, what)) => {
                f.push(format!("Time-to-Route {s:.2} s: {what}."));
                if *s > 60.0 {
                    f.push("TTR is above 60 s: a routing automation problem.".into());
                }
            }
            None => {
                f.push(format!("No request of {target}'s traffic was served by another region."))
            }
        }
        let t_settle = self.t_settle.unwrap_or(t_iso);
        let early_errors = records
            .iter()
            .filter(|r| r.sent_s >= t_iso && r.sent_s < t_settle)
            .filter(|r| measure::classify(r, target) == Class::Error)
            .count();
        if early_errors > 0 {
            f.push(format!(
                "{early_errors} request(s) failed in the {:.2} s between the {} and the router routing around it.",
                t_settle - t_iso,
                if self.s.mode == Mode::Kill { "kill" } else { "drain" }
            ));
        }
        let refused = records.iter().filter(|r| r.refused() && r.sent_s >= t_iso).count();
        if refused > 0 && self.topo.jurisdiction_peers(target).is_empty() {
            f.push(format!(
                "{target} is the only region of {}: {refused} request(s) for its subjects were refused with 503 no_region_available while it was out, as residency requires (never a failover to another jurisdiction).",
                self.topo.jurisdiction_of(target).unwrap_or("its jurisdiction")
            ));
        }
        if writes.unknown_outcome > 0 {
            f.push(format!(
                "{} write(s) got no usable answer (outcome unknown): counted as attempted, not acknowledged.",
                writes.unknown_outcome
            ));
        }
        let peak = ticks
            .iter()
            .filter_map(|t| t.max_lag().map(|l| (l, t.t)))
            .fold((0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a });
        f.push(format!("Max replication lag {:.2} s at +{:.1} s.", peak.0, peak.1));
        let rate = self.conflicts_restoration as f64 / writes.acknowledged.max(1) as f64;
        if rate > CONFLICT_RATE_ALERT {
            f.push(format!(
                "Conflict rate during restoration {:.3}% is above the 0.1% alert threshold.",
                rate * 100.0
            ));
        }
        if self.s.mode == Mode::Kill {
            f.push(format!(
                "Restoration kept {target} drained at the router until it had caught up: the router routes to a region as soon as one health probe passes, before its replication has caught up."
            ));
        }
        f
    }

    fn write_outputs(&self, r: &Report) -> anyhow::Result<()> {
        use anyhow::Context;
        let out = &self.s.out;
        std::fs::create_dir_all(out)?;
        std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(r)?)
            .with_context(|| format!("writing {}", out.join("report.json").display()))?;
        std::fs::write(out.join("report.md"), report::markdown(r))?;
        let records = self.ctx.journal.snapshot();
        let ticks = self.monitor.snapshot();
        let lag = measure::lag_series(&ticks);
        let mut marks = Vec::new();
        if let Some(t) = self.t_iso {
            marks.push((
                t,
                format!(
                    "{} {}",
                    if self.s.mode == Mode::Kill { "kill" } else { "isolate" },
                    r.target
                ),
            ));
            if let Some(s) = r.ttd_seconds {
                marks.push((t + s, format!("TTD {s:.2} s")));
            }
            if let Some(s) = r.ttr_seconds {
                marks.push((t + s, format!("TTR {s:.2} s")));
            }
        }
        let svg = super::svg::render(&super::svg::Timeline {
            title: format!("tandem drill: {} ({}) — {}", r.target, r.mode, r.verdict),
            target: &r.target,
            phases: &r.phases,
            records: &records,
            lag: &lag,
            marks,
        });
        std::fs::write(out.join("timeline.svg"), svg)?;
        let mut lines = String::new();
        for rec in &records {
            lines.push_str(&serde_json::to_string(rec)?);
            lines.push('\n');
        }
        std::fs::write(out.join("requests.jsonl"), lines)?;
        Ok(())
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn describe_request(r: &RequestRecord) -> String {
    format!(
        "{} {}/{} from {} at +{:.2} s: {}{}{}",
        r.op,
        r.entity,
        r.id,
        r.caller,
        r.sent_s,
        r.status.map_or_else(|| "no answer".to_owned(), |s| s.to_string()),
        r.region
            .as_deref()
            .map(|g| format!(" by {g} ({})", r.route.as_deref().unwrap_or("?")))
            .unwrap_or_default(),
        r.error.as_deref().map(|e| format!(" {e}")).unwrap_or_default()
    )
}

fn describe_conflict(c: &ConflictSeen) -> String {
    format!(
        "{}/{} at {}: {}@{} vs {}@{}",
        c.entity,
        c.id,
        c.region,
        c.local.origin,
        c.local.wall_ms,
        c.remote.origin,
        c.remote.wall_ms
    )
}
