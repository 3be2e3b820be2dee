//! Phase 3, observation: with the target out for the phase's length, what
//! the deployment did about it. The surviving regions see the target's
//! backlog grow (an isolated target runs on, isolated), the target's traffic
//! was rerouted (Time-to-Route) and, from `t_settle` on, is served elsewhere
//! within the rules or refused as residency requires, never by the target,
//! and every write since the isolation landed only where it may.

use std::collections::BTreeMap;

use crate::drill::context::{Context, Moments};
use crate::drill::detail::{describe_request, join_or};
use crate::drill::journal::RequestRecord;
use crate::drill::measure::{self, Class, Tick};
use crate::drill::monitor;
use crate::drill::plan::Mode;
use crate::drill::report::Check;

/// After the router took the target out, requests already on their way may
/// still fail; the checks on rerouted traffic start this much later.
const SETTLE_S: f64 = 0.5;
/// Kill mode without a "down" from the router: settle after this long.
const SETTLE_KILL_FALLBACK_S: f64 = 3.0;

pub(super) async fn run(cx: &mut Context, moments: &mut Moments) {
    let start = cx.begin(2);
    cx.sleep_until(start.t + cx.settings.timings.observation.as_secs_f64()).await;
    let now = cx.now();
    let target = cx.dep.target.clone();
    let t_iso = moments.t_iso.unwrap_or(start.t);
    let ticks = cx.monitor.snapshot();
    let records = cx.journal.snapshot();
    let mut checks = Vec::new();

    let router_down = ticks
        .iter()
        .filter(|t| t.t >= t_iso)
        .find(|t| {
            t.routes.as_ref().is_some_and(|rs| rs.iter().any(|r| r.region == target && !r.up))
        })
        .map(|t| t.t);
    let t_settle = match cx.settings.mode {
        Mode::Isolate => t_iso + SETTLE_S,
        Mode::Kill => router_down.unwrap_or(t_iso + SETTLE_KILL_FALLBACK_S) + SETTLE_S,
    };
    moments.t_settle = Some(t_settle);

    // Backlog: the survivors' link from the target is down and its lag grows.
    let window: Vec<&Tick> = ticks.iter().filter(|t| t.t >= start.t && t.t <= now).collect();
    let mut lines = Vec::new();
    let mut growing = true;
    for s in cx.dep.survivors() {
        let link =
            |t: &&Tick| t.node(&s).and_then(|n| n.peers.iter().find(|p| p.peer == target).cloned());
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
    if cx.settings.mode == Mode::Isolate {
        let sample = cx.dep.status(&target).await.as_ref().and_then(monitor::node_sample);
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
            Class::Refused if measure::refusal_expected(&cx.dep.topo, &target, r) => {
                refused_ok += 1;
            }
            Class::Refused => refused_bad.push(describe_request(r)),
            Class::Error => errors.push(describe_request(r)),
            Class::Ok | Class::Failover => {
                if !measure::permitted(&cx.dep.topo, r) {
                    outside.push(describe_request(r));
                }
                *served.entry(r.region.clone().unwrap_or_default()).or_insert(0) += 1;
            }
        }
    }
    let at_target = served.get(&target).copied().unwrap_or(0);
    let peers = cx.dep.topo.jurisdiction_peers(&target);
    let j = cx.dep.topo.jurisdiction_of(&target).unwrap_or_default().to_owned();
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
    let landing = measure::landing_violations(&cx.dep.topo, &since_iso);
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
    cx.end(start, checks);
}
