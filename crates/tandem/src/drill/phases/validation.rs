//! Phase 4, validation: with the target still out, smoke writes (each read
//! back) through the router for a subject of every surviving region, served
//! at its home; a pinned write of the target's subject failing over inside
//! its jurisdiction, or refused with 503 when none of it is left; then, at
//! the end of the phase, the pinned users of the surviving regions served
//! from home, conflicts on pinned types not growing beyond what the
//! isolation explains, and an alert raised by the deployment (Time-to-Detect).

use std::collections::{BTreeMap, BTreeSet};

use crate::drill::context::{Context, Moments};
use crate::drill::deployment::ConflictCounts;
use crate::drill::detail::{describe_conflict, describe_request, join_or};
use crate::drill::journal::RequestRecord;
use crate::drill::measure;
use crate::drill::report::Check;
use crate::drill::traffic::Traffic;

/// A version written this long before a routing switch may not have
/// replicated when the traffic moved: a conflict with it is the switch's.
pub(super) const CONFLICT_WINDOW_MS: u64 = 2_000;

/// `conflict_base`: the surviving regions' conflict counts just before the isolation.
pub(super) async fn run(
    cx: &mut Context,
    traffic: &mut Traffic,
    moments: &Moments,
    conflict_base: &ConflictCounts,
) {
    let start = cx.begin(3);
    let target = cx.dep.target.clone();
    let mut checks = Vec::new();
    let mut smoke_lines = Vec::new();
    let mut smoke_ok = true;
    for s in cx.dep.survivors() {
        match traffic.smoke(&s, &s).await {
            Some((w, r)) => {
                let ok = w.ok()
                    && w.region.as_deref() == Some(s.as_str())
                    && w.route.as_deref() == Some("home")
                    && r.as_ref().is_some_and(super::super::journal::RequestRecord::ok);
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
    let peers = cx.dep.topo.jurisdiction_peers(&target);
    let caller = peers.first().cloned().unwrap_or_else(|| cx.dep.survivors()[0].clone());
    if let Some((w, _)) = traffic.smoke(&target, &caller).await {
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
    cx.sleep_until(start.t + cx.settings.timings.validation.as_secs_f64()).await;
    let now = cx.now();
    let t_settle = moments.t_settle.unwrap_or(start.t);
    let records = cx.journal.snapshot();
    let survivors = cx.dep.survivors();
    let pinned_home: Vec<&RequestRecord> = records
        .iter()
        .filter(|r| {
            r.sent_s >= t_settle && r.sent_s <= now && r.is_write() && !r.op.starts_with("smoke")
        })
        .filter(|r| r.home.as_ref().is_some_and(|h| survivors.contains(h)))
        .filter(|r| cx.dep.topo.entity(&r.entity).is_some_and(|e| e.pinned))
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

    let now_conflicts = cx.dep.conflicts_by_region(&survivors).await;
    let pinned: BTreeSet<&str> =
        cx.dep.topo.entities.iter().filter(|e| e.pinned).map(|e| e.name.as_str()).collect();
    let mut delta_pinned = 0.0;
    let mut delta_all = BTreeMap::<String, f64>::new();
    for (r, by_entity) in &now_conflicts {
        for (e, n) in by_entity {
            let base = conflict_base.get(r).and_then(|b| b.get(e)).copied().unwrap_or(0.0);
            let d = (n - base).max(0.0);
            *delta_all.entry(e.clone()).or_insert(0.0) += d;
            if pinned.contains(e.as_str()) {
                delta_pinned += d;
            }
        }
    }
    let since = cx.clock.unix_ms_at(moments.t_iso.unwrap_or(start.t));
    let seen = cx.dep.conflicts_since(&survivors, since).await;
    let unexplained: Vec<String> = seen
        .iter()
        .filter(|c| pinned.contains(c.entity.as_str()))
        .filter(|c| !measure::explained_by_switch(c, &moments.switches_ms, CONFLICT_WINDOW_MS))
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
    let ticks = cx.monitor.snapshot();
    let ttd = measure::time_to_detect(&ticks, &target, moments.t_iso.unwrap_or(start.t));
    checks.push(Check::new(
        "the deployment raised an alert",
        ttd.is_some(),
        match &ttd {
            Some((s, what)) => format!("after {s:.2} s: {what}"),
            None => "neither the router nor a lag budget of a surviving region noticed".into(),
        },
    ));
    cx.end(start, checks);
}
