//! Phase 1, pre-drill verification: the static checks of `precheck` until
//! they pass (a deployment that just started needs a moment), the audit log
//! head of every region (the post-drill audit scan reads from there), the
//! drill's subjects registered and known everywhere, then the synthetic
//! workload started and judged: every request served, every region serving,
//! replication lag below 5 s. A failure stops the drill before it touches
//! the target.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::precheck;
use super::Stop;
use crate::drill::context::Context;
use crate::drill::detail::{describe_request, join_or};
use crate::drill::journal::RequestRecord;
use crate::drill::measure::{self, Class, Tick};
use crate::drill::report::Check;
use crate::drill::traffic::Traffic;
use crate::drill::workload::{self, Rng};

/// The pre-drill replication lag bound (the article's "lag < 5 s").
pub(super) const PRE_LAG_MAX_S: f64 = 5.0;

/// The audit log's last sequence number in each region before the drill.
pub(super) type AuditHeads = BTreeMap<String, u64>;

pub(super) async fn run(cx: &mut Context, traffic: &mut Traffic) -> Result<AuditHeads, Stop> {
    let start = cx.begin(0);
    let deadline = start.t + cx.settings.timings.checks_wait.as_secs_f64();
    let mut checks = loop {
        let checks = precheck::static_checks(&cx.dep, &cx.settings.config, cx.settings.mode).await;
        if checks.iter().all(|c| c.ok) || cx.now() > deadline {
            break checks;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    if checks.iter().any(|c| !c.ok) {
        cx.end(start, checks);
        return Err(Stop::PreCheck);
    }
    let mut audit_from = AuditHeads::new();
    for r in cx.dep.topo.region_names() {
        let url = format!("{}/v1/audit?limit=1", cx.dep.region_url(&r));
        let head = cx.dep.get_json(&url).await.and_then(|v| v["head"]["seq"].as_u64()).unwrap_or(0);
        audit_from.insert(r, head);
    }
    let registered = workload::register_subjects(
        &cx.dep.http,
        &cx.dep.topo,
        traffic.subjects(),
        cx.settings.timings.checks_wait,
    )
    .await;
    checks.push(Check::new(
        "drill subjects registered and known in every region",
        registered.is_ok(),
        match &registered {
            Ok(()) => format!("{} subjects, homed in every region", traffic.subjects().len()),
            Err(e) => e.clone(),
        },
    ));
    if registered.is_err() {
        cx.end(start, checks);
        return Err(Stop::PreCheck);
    }
    let mut rng = Rng::new(cx.settings.seed);
    let plans = workload::plan_tasks(&cx.dep.topo, traffic.subjects(), &mut rng);
    let tasks = plans.len();
    let t_workload = cx.now();
    traffic.start_workload(plans, cx.settings.seed);
    // At least a second of traffic before judging the synthetic monitors.
    cx.sleep_until((start.t + cx.settings.timings.pre.as_secs_f64()).max(t_workload + 1.0)).await;
    let now = cx.now();
    let target = &cx.dep.target;
    let records = cx.journal.snapshot();
    let window: Vec<&RequestRecord> = records.iter().filter(|r| r.sent_s >= t_workload).collect();
    let bad: Vec<String> = window
        .iter()
        .filter(|r| measure::classify(r, target) != Class::Ok)
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
    let idle: Vec<String> =
        cx.dep.topo.region_names().into_iter().filter(|r| !serving.contains(r.as_str())).collect();
    checks.push(Check::new(
        "every region serves the workload",
        idle.is_empty(),
        join_or(
            &idle.iter().map(|r| format!("{r} served nothing")).collect::<Vec<_>>(),
            "all regions served requests",
        ),
    ));
    let ticks = cx.monitor.snapshot();
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
    cx.end(start, checks);
    if ok {
        Ok(audit_from)
    } else {
        Err(Stop::PreCheck)
    }
}
