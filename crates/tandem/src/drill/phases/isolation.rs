//! Phase 2, region isolation: the moment the target is taken out is the
//! drill's `t_iso` and its first routing switch. `isolate` mode drains the
//! target at the router, lets what the target already acknowledged
//! replicate (at most half the phase), then cuts its replication while the
//! process keeps running; `kill` mode kills its process through the
//! `tandem up` control API. The Time-to-Route probes start at once. Returns
//! the surviving regions' conflict counts from just before, the baseline of
//! the validation's "conflicts not growing" check.

use std::time::Duration;

use super::Stop;
use crate::drill::context::{Context, Moments};
use crate::drill::deployment::ConflictCounts;
use crate::drill::monitor;
use crate::drill::plan::Mode;
use crate::drill::report::Check;
use crate::drill::target::TargetState;
use crate::drill::traffic::Traffic;

pub(super) async fn run(
    cx: &mut Context,
    traffic: &mut Traffic,
    target_state: &mut TargetState,
    moments: &mut Moments,
) -> Result<ConflictCounts, Stop> {
    let start = cx.begin(1);
    let target = cx.dep.target.clone();
    let survivors = cx.dep.survivors();
    let conflict_base = cx.dep.conflicts_by_region(&survivors).await;
    let mut checks = Vec::new();
    let t_iso = cx.now();
    moments.t_iso = Some(t_iso);
    moments.switches_ms.push(cx.clock.unix_ms_at(t_iso));
    // The probes run at most until the end of the observation.
    let probe_window = cx.settings.timings.isolation + cx.settings.timings.observation;
    match cx.settings.mode {
        Mode::Isolate => {
            target_state.drain(&cx.dep).await?;
            traffic.start_probes(probe_window);
            cx.log.progress.println(&format!("{target} drained at the router at +{t_iso:.2} s"));
            let drained = cx
                .dep
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
                cx.now() + (cx.settings.timings.isolation.as_secs_f64() / 2.0).max(0.3);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut backlog = u64::MAX;
            while cx.now() < settle_until {
                backlog = 0;
                for s in &survivors {
                    let sample = cx.dep.status(s).await.as_ref().and_then(monitor::node_sample);
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
            target_state.isolate(&cx.dep).await?;
            let t_cut = cx.now();
            let isolated = cx.dep.status(&target).await.is_some_and(|v| v["isolated"] == true);
            checks.push(Check::new(
                format!("{target} cut off from replication"),
                isolated,
                format!(
                    "isolated at +{t_cut:.2} s, {:.0} ms after the drain ({}); /v1/status isolated {isolated}",
                    (t_cut - t_iso) * 1000.0,
                    if backlog == 0 { "its writes had replicated" } else { "backlog still pending" }
                ),
            ));
            let running = cx.dep.healthy(&target).await;
            checks.push(Check::new(
                format!("{target} keeps running"),
                running,
                format!("/healthz {}", if running { "answers" } else { "does not answer" }),
            ));
        }
        Mode::Kill => {
            target_state.kill(&cx.dep).await?;
            traffic.start_probes(probe_window);
            cx.log.progress.println(&format!("{target} killed at +{t_iso:.2} s"));
            let control = cx.dep.control.clone().unwrap_or_default();
            let running = cx
                .dep
                .control_deployment()
                .await
                .map(|v| v["processes"][&target]["running"].as_bool() == Some(true));
            checks.push(Check::new(
                format!("{target}'s process killed"),
                running == Some(false),
                format!("SIGKILL at +{t_iso:.2} s through {control}; running now: {running:?}"),
            ));
        }
    }
    cx.sleep_until(start.t + cx.settings.timings.isolation.as_secs_f64()).await;
    cx.end(start, checks);
    Ok(conflict_base)
}
