//! The drill's run and state, and the phases of the reference article's
//! drill script carried out against the deployment: pre-drill verification
//! (its static checks in `precheck`), region isolation, observation,
//! validation and restoration with catch-up (the post-drill phase is in
//! `postdrill`, the report in `outcome`). Each phase is a list of named
//! checks; the measurements and verdicts come from the pure modules, this one
//! does the I/O and keeps the state needed to put the deployment back if the
//! drill is interrupted or fails half-way (a drained, isolated or killed
//! target is restored on the way out).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::http::Http;
use super::journal::{DrillClock, Journal, RequestRecord};
use super::measure::{self, Class, ConflictSeen, Tick};
use super::monitor::{self, Monitor};
use super::plan::{Mode, Topology, PHASES};
use super::progress::Progress;
use super::report::{self, Check, PhaseReport};
use super::verify::Verification;
use super::workload::{self, Ctx, Item, Rng, Workload};
use super::{Settings, EXIT_CANNOT_RUN, EXIT_FAIL, EXIT_PASS};

/// Time-out of the drill's own calls (status, admin, control, read-back).
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a change may take to cross a link while the catch-up is judged.
pub(super) const CATCH_UP_GRACE: Duration = Duration::from_secs(1);
/// The pre-drill replication lag bound (the article's "lag < 5 s").
pub(super) const PRE_LAG_MAX_S: f64 = 5.0;
/// A version written this long before a routing switch may not have
/// replicated when the traffic moved: a conflict with it is the switch's.
pub(super) const CONFLICT_WINDOW_MS: u64 = 2_000;
/// After the router took the target out, requests already on their way may
/// still fail; the checks on rerouted traffic start this much later.
pub(super) const SETTLE_S: f64 = 0.5;
/// Kill mode without a "down" from the router: settle after this long.
pub(super) const SETTLE_KILL_FALLBACK_S: f64 = 3.0;
/// Pages read of one scan or audit log (1000 entries each).
pub(super) const PAGES_MAX: usize = 10_000;
/// Concurrent read-back requests.
pub(super) const READBACK_CONCURRENCY: usize = 16;
/// Tries of one read-back (503 and transport errors are retried).
pub(super) const READBACK_TRIES: usize = 5;
/// Lines of detail quoted in one finding.
pub(super) const QUOTE_MAX: usize = 20;
/// The conflict rate the deployment's alert rules fire on (0.1% of writes).
pub(super) const CONFLICT_RATE_ALERT: f64 = 0.001;

pub(super) enum Stop {
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

pub(super) struct PhaseStart {
    index: usize,
    t: f64,
}

pub(super) struct Drill {
    pub(super) s: Settings,
    pub(super) topo: Topology,
    pub(super) http: Http,
    pub(super) clock: DrillClock,
    pub(super) ctx: Arc<Ctx>,
    pub(super) monitor: Monitor,
    pub(super) workload: Option<Workload>,
    /// The Time-to-Route probes, from the isolation on.
    pub(super) probes: Option<tokio::task::JoinHandle<()>>,
    pub(super) progress: Progress,
    pub(super) phases: Vec<PhaseReport>,
    pub(super) findings: Vec<String>,
    pub(super) t_iso: Option<f64>,
    pub(super) t_settle: Option<f64>,
    /// Unix ms of the routing switches (drain or kill, restore).
    pub(super) switches_ms: Vec<u64>,
    pub(super) drained: bool,
    pub(super) isolated: bool,
    pub(super) killed: bool,
    pub(super) audit_from: BTreeMap<String, u64>,
    pub(super) conflict_base: BTreeMap<String, BTreeMap<String, f64>>,
    pub(super) conflicts_restoration: u64,
    pub(super) residency_violations: u64,
    pub(super) verification: Option<Verification>,
    pub(super) smoke_n: usize,
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
        probes: None,
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
    super::outcome::print_summary(&report, &d.s.out);
    if let Err(e) = written {
        eprintln!("tandem drill: cannot write the report: {e:#}");
        return EXIT_CANNOT_RUN;
    }
    code.unwrap_or(if report.verdict == "pass" { EXIT_PASS } else { EXIT_FAIL })
}

pub(super) fn join_or(items: &[String], none: &str) -> String {
    if items.is_empty() {
        none.to_owned()
    } else if items.len() > QUOTE_MAX {
        format!("{} … and {} more", items[..QUOTE_MAX].join("; "), items.len() - QUOTE_MAX)
    } else {
        items.join("; ")
    }
}

impl Drill {
    pub(super) fn now(&self) -> f64 {
        self.clock.now()
    }

    pub(super) async fn sleep_until(&self, t: f64) {
        let left = t - self.now();
        if left > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(left)).await;
        }
    }

    pub(super) fn begin(&mut self, index: usize) -> PhaseStart {
        let planned = self.s.timings.of_phase(index);
        self.progress.phase(index, PHASES[index], planned, index >= 4);
        PhaseStart { index, t: self.now() }
    }

    pub(super) fn end(&mut self, start: PhaseStart, checks: Vec<Check>) {
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

    pub(super) fn survivors(&self) -> Vec<String> {
        self.topo.survivors(&self.s.target)
    }

    pub(super) fn region_url(&self, region: &str) -> String {
        self.topo.region(region).map(|r| r.url.clone()).unwrap_or_default()
    }

    pub(super) async fn get_json(&self, url: &str) -> Option<Value> {
        match self.http.get(url, CALL_TIMEOUT).await {
            Ok(a) if a.ok() => Some(a.body),
            _ => None,
        }
    }

    pub(super) async fn status(&self, region: &str) -> Option<Value> {
        self.get_json(&format!("{}/v1/status", self.region_url(region))).await
    }

    pub(super) async fn healthy(&self, region: &str) -> bool {
        self.get_json(&format!("{}/healthz", self.region_url(region))).await.is_some()
    }

    pub(super) async fn routes(&self) -> Option<Value> {
        self.get_json(&format!("{}/v1/routes", self.topo.router_url)).await
    }

    /// An admin call that must succeed; its failure stops the drill.
    pub(super) async fn admin(&self, url: &str, what: &str) -> anyhow::Result<Value> {
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

    pub(super) async fn router_action(&self, action: &str) -> anyhow::Result<Value> {
        let url = format!("{}/v1/admin/regions/{}/{action}", self.topo.router_url, self.s.target);
        self.admin(&url, &format!("{action} {} at the router", self.s.target)).await
    }

    pub(super) async fn node_action(&self, action: &str) -> anyhow::Result<Value> {
        let url = format!("{}/v1/admin/{action}", self.region_url(&self.s.target));
        self.admin(&url, &format!("{action} {}", self.s.target)).await
    }

    pub(super) async fn control_action(&self, action: &str) -> anyhow::Result<Value> {
        let control = self.s.control.as_deref().ok_or_else(|| anyhow::anyhow!("no control API"))?;
        let url = format!("{control}/v1/processes/{}/{action}", self.s.target);
        self.admin(&url, &format!("{action} the process of {}", self.s.target)).await
    }

    pub(super) async fn conflicts_by_region(
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
    pub(super) async fn conflicts_since(
        &self,
        regions: &[String],
        since_ms: u64,
    ) -> Vec<ConflictSeen> {
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

    pub(super) async fn run(&mut self) -> Result<(), Stop> {
        self.pre_drill().await?;
        self.isolation().await?;
        self.observation().await;
        self.validation().await;
        self.restoration().await?;
        self.post_drill().await;
        Ok(())
    }

    // ---- 1. pre-drill ---------------------------------------------------------

    pub(super) async fn pre_drill(&mut self) -> Result<(), Stop> {
        let start = self.begin(0);
        let deadline = start.t + self.s.timings.checks_wait.as_secs_f64();
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
        let registered = workload::register_subjects(
            &self.http,
            &self.topo,
            &self.ctx.subjects,
            self.s.timings.checks_wait,
        )
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

    pub(super) async fn isolation(&mut self) -> Result<(), Stop> {
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
                self.start_probes();
                self.progress.println(&format!("{target} drained at the router at +{t_iso:.2} s"));
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
                self.start_probes();
                self.progress.println(&format!("{target} killed at +{t_iso:.2} s"));
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

    /// Probe the target's traffic every 100 ms until a surviving region
    /// serves it (Time-to-Route), at most until the end of the observation.
    pub(super) fn start_probes(&mut self) {
        let specs = super::probes::probe_specs(
            &self.topo,
            &self.ctx.subjects,
            &self.ctx.run,
            &self.s.target,
        );
        let t = &self.s.timings;
        let until = self.now() + (t.isolation + t.observation).as_secs_f64();
        self.probes =
            Some(tokio::spawn(super::probes::probe_until_rerouted(self.ctx.clone(), specs, until)));
    }

    // ---- 3. observation -------------------------------------------------------

    /// Whether a refusal of this request is what the rules require: its
    /// subject's jurisdiction has no region left.
    pub(super) fn refusal_expected(&self, r: &RequestRecord) -> bool {
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
    pub(super) fn permitted(&self, r: &RequestRecord) -> bool {
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

    pub(super) async fn observation(&mut self) {
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
            "the target's traffic served elsewhere within the rules, or refused as required",
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
    pub(super) fn landing_violations(&self, records: &[&RequestRecord]) -> Vec<String> {
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
    pub(super) async fn smoke(
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
            .or_else(|| self.topo.entities.iter().position(|e| e.subjects && !e.projection))?;
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

    pub(super) async fn validation(&mut self) {
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
    /// Whether every link to and from the target is connected and has
    /// reached the position the sender's log had [`CATCH_UP_GRACE`] before.
    /// The sender's own `log.last_seq` is the reference, not the receiver's
    /// `queue_depth`: that one is computed from the last frame the receiver
    /// processed and cannot see frames still queued in the connection. The
    /// grace covers the link latency, since the workload keeps writing.
    pub(super) async fn caught_up(&self) -> (bool, String) {
        let target = &self.s.target;
        let regions = self.topo.region_names();
        let mut heads = BTreeMap::new();
        for r in &regions {
            if let Some(seq) = self.status(r).await.and_then(|v| v["log"]["last_seq"].as_u64()) {
                heads.insert(r.clone(), seq);
            }
        }
        tokio::time::sleep(CATCH_UP_GRACE).await;
        let mut ok = true;
        let mut lines = Vec::new();
        for r in &regions {
            let Some(v) = self.status(r).await else {
                ok = false;
                lines.push(format!("{r}: no status"));
                continue;
            };
            for p in v["peers"].as_array().into_iter().flatten() {
                let peer = p["peer"].as_str().unwrap_or_default();
                if r != target && peer != target {
                    continue;
                }
                let connected = p["connected"].as_bool() == Some(true);
                let cursor = p["cursor"].as_u64().unwrap_or(0);
                let head = heads.get(peer).copied();
                ok &= connected && head.is_some_and(|h| cursor >= h);
                lines.push(format!(
                    "{peer}→{r} {} at {cursor} of {}",
                    if connected { "up" } else { "down" },
                    head.map_or_else(|| "?".to_owned(), |h| h.to_string())
                ));
            }
        }
        (ok, lines.join(", "))
    }

    pub(super) async fn restoration(&mut self) -> Result<(), Stop> {
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
        let mut caught_up = false;
        let mut last = String::new();
        while self.now() < deadline {
            let (ok, detail) = self.caught_up().await;
            last = detail;
            if ok {
                caught_up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
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
        self.progress.println(&format!("routing to {target} restored at +{t_restore:.2} s"));
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

    // ---- the way out ----------------------------------------------------------

    /// Undo what the drill did to the deployment (after an error or an interrupt).
    pub(super) async fn put_back(&mut self) {
        if let Some(w) = self.workload.as_mut() {
            w.stop().await;
        }
        if let Some(p) = self.probes.take() {
            p.abort();
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
}

/// One request, for check details.
pub(super) fn describe_request(r: &RequestRecord) -> String {
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

pub(super) fn describe_conflict(c: &ConflictSeen) -> String {
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
