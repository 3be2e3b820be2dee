//! Phase 5, restoration with catch-up: the target's replication resumed
//! (`isolate`) or its process restarted and kept drained at the router until
//! it has caught up (`kill`: the router would route to it as soon as one
//! health probe passes); every link to and from the target caught up; routing
//! to the target restored (the drill's second routing switch) and its
//! subjects served there again; and the conflicts of the catch-up counted and
//! explained by the drill's routing switches. Ends as soon as its work is
//! done, at most after the phase's length.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::validation::CONFLICT_WINDOW_MS;
use super::Stop;
use crate::drill::context::{Context, Moments, Results};
use crate::drill::deployment::Deployment;
use crate::drill::detail::{describe_conflict, describe_request, join_or};
use crate::drill::measure::{self, ConflictSeen};
use crate::drill::monitor;
use crate::drill::plan::Mode;
use crate::drill::report::Check;
use crate::drill::target::TargetState;
use crate::drill::traffic::Traffic;

/// How long a change may take to cross a link while the catch-up is judged.
const CATCH_UP_GRACE: Duration = Duration::from_secs(1);

/// Whether every link to and from the target is connected and has
/// reached the position the sender's log had [`CATCH_UP_GRACE`] before.
/// The sender's own `log.last_seq` is the reference, not the receiver's
/// `queue_depth`: that one is computed from the last frame the receiver
/// processed and cannot see frames still queued in the connection. The
/// grace covers the link latency, since the workload keeps writing.
async fn links_caught_up(dep: &Deployment) -> (bool, String) {
    let target = &dep.target;
    let regions = dep.topo.region_names();
    let mut heads = BTreeMap::new();
    for r in &regions {
        if let Some(seq) = dep.status(r).await.and_then(|v| v["log"]["last_seq"].as_u64()) {
            heads.insert(r.clone(), seq);
        }
    }
    tokio::time::sleep(CATCH_UP_GRACE).await;
    let mut ok = true;
    let mut lines = Vec::new();
    for r in &regions {
        let Some(v) = dep.status(r).await else {
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

pub(super) async fn run(
    cx: &mut Context,
    traffic: &mut Traffic,
    target_state: &mut TargetState,
    moments: &mut Moments,
    results: &mut Results,
) -> Result<(), Stop> {
    let start = cx.begin(4);
    let target = cx.dep.target.clone();
    let deadline = start.t + cx.settings.timings.restoration_max.as_secs_f64();
    let regions = cx.dep.topo.region_names();
    let base = cx.dep.conflicts_by_region(&regions).await;
    let since_ms = cx.clock.unix_ms_at(start.t);
    let mut checks = Vec::new();
    match cx.settings.mode {
        Mode::Isolate => {
            target_state.rejoin(&cx.dep).await?;
            let rejoined = cx.dep.status(&target).await.is_some_and(|v| v["isolated"] == false);
            checks.push(Check::new(
                format!("{target}'s replication resumed"),
                rejoined,
                format!("rejoined at +{:.2} s", cx.now()),
            ));
        }
        Mode::Kill => {
            // A restarted region passes its health probe before it has caught
            // up: keep the router off it until it has.
            target_state.drain(&cx.dep).await?;
            target_state.start(&cx.dep).await?;
            let t0 = cx.now();
            let mut healthy = false;
            while cx.now() < deadline {
                if cx.dep.healthy(&target).await {
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
                    if healthy { format!("after {:.2} s", cx.now() - t0) } else { "never".into() }
                ),
            ));
        }
    }
    let t_catch = cx.now();
    let mut caught_up = false;
    let mut last = String::new();
    while cx.now() < deadline {
        let (ok, detail) = links_caught_up(&cx.dep).await;
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
            cx.now() - t_catch
        ),
    ));
    target_state.restore_routing(&cx.dep).await?;
    let t_restore = cx.now();
    cx.log.progress.println(&format!("routing to {target} restored at +{t_restore:.2} s"));
    moments.switches_ms.push(cx.clock.unix_ms_at(t_restore));
    let mut routed = false;
    while cx.now() < t_restore + 5.0 {
        let up = cx
            .dep
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
    if let Some((w, _)) = traffic.smoke(&target, &target).await {
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
    let after = cx.dep.conflicts_by_region(&regions).await;
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
    results.conflicts_restoration = total.max(0.0).round() as u64;
    let seen = cx.dep.conflicts_since(&regions, since_ms).await;
    let unexplained: Vec<String> = seen
        .iter()
        .filter(|c| !measure::explained_by_switch(c, &moments.switches_ms, CONFLICT_WINDOW_MS))
        .map(describe_conflict)
        .collect();
    let never: Vec<&ConflictSeen> = seen
        .iter()
        .filter(|c| cx.dep.topo.entity(&c.entity).is_some_and(|e| e.conflicts_never))
        .collect();
    if !never.is_empty() {
        cx.log.findings.push(format!(
            "{} conflict(s) on `conflicts = \"never\"` types during restoration ({}): versions {} acknowledged within {} ms before the {} that had not replicated yet, against later writes elsewhere; the deployment counts them as invariant violations",
            never.len(),
            never.iter().map(|c| format!("{}/{}", c.entity, c.id)).collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>().join(", "),
            target,
            CONFLICT_WINDOW_MS,
            if cx.settings.mode == Mode::Kill { "kill" } else { "drain" }
        ));
    }
    let acked = cx.journal.counters.acked.load(std::sync::atomic::Ordering::Relaxed).max(1);
    let rate = results.conflicts_restoration as f64 / acked as f64;
    checks.push(Check::new(
        "conflicts during catch-up explained by the failover",
        unexplained.is_empty(),
        format!(
            "{} conflict(s) counted ({}), rate {:.3}% of acknowledged writes{}",
            results.conflicts_restoration,
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
    cx.end(start, checks);
    Ok(())
}
