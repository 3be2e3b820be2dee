//! The drill's outcome: the report built from the phases, the journal and
//! the monitor's rounds (TTD, TTR, writes, conflicts, residency, max lag,
//! findings and the verdict), the files written into the output directory
//! (`report.json`, `report.md`, `timeline.svg`, and `requests.jsonl`, the
//! journal itself), and the summary printed on stdout.

use super::context::{Context, Moments, Results};
use super::journal::{RequestRecord, WriteOutcome};
use super::measure::{self, Class, Tick};
use super::plan::{Mode, PHASES};
use super::report::{self, Report, Requests, Writes};

/// The conflict rate the deployment's alert rules fire on (0.1% of writes).
const CONFLICT_RATE_ALERT: f64 = 0.001;

pub(super) fn print_summary(r: &Report, out: &std::path::Path) {
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

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The report of the drill so far: the monitor stops, and what the phases
/// logged and established is summed up with the journal and the ticks.
pub(super) async fn report(cx: &mut Context, moments: &Moments, results: &Results) -> Report {
    let ticks = cx.monitor.stop().await;
    let records = cx.journal.snapshot();
    let target = cx.dep.target.clone();
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
    let (ttd, ttr) = match moments.t_iso {
        Some(t) => (
            measure::time_to_detect(&ticks, &target, t),
            measure::time_to_route(&records, &target, t),
        ),
        None => (None, None),
    };
    let lag = measure::lag_series(&ticks);
    let max_lag = lag.iter().map(|p| p.1).fold(0.0, f64::max);
    let writes = match &results.verification {
        Some(v) => Writes {
            attempted: v.attempted,
            acknowledged: v.acknowledged,
            verified: v.verified,
            lost: v.lost,
            lost_everywhere: v.lost_everywhere,
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
    let mut findings = summary_findings(
        cx,
        moments,
        results,
        &ticks,
        &records,
        ttd.as_ref(),
        ttr.as_ref(),
        &writes,
    );
    findings.append(&mut cx.log.findings);
    for p in &cx.log.phases {
        for c in p.checks.iter().filter(|c| !c.ok) {
            findings.push(format!("{}: check \"{}\" failed: {}", p.name, c.name, c.detail));
        }
    }
    let complete = cx.log.phases.len() == PHASES.len();
    let mut verdict = report::verdict(&cx.log.phases, &writes, results.residency_violations);
    if !complete {
        verdict = "fail";
    }
    let conflict_rate = results.conflicts_restoration as f64 / writes.acknowledged.max(1) as f64;
    Report {
        target,
        mode: cx.settings.mode.as_str().to_owned(),
        verdict: verdict.to_owned(),
        ttd_seconds: ttd.as_ref().map(|t| t.0),
        ttd_alert: ttd.map(|t| t.1),
        ttr_seconds: ttr.as_ref().map(|t| t.0),
        ttr_request: ttr.map(|t| t.1),
        started_at: report::rfc3339(cx.clock.start_unix_ms),
        duration_seconds: round3(cx.now()),
        timings: cx.settings.timings_name.clone(),
        phases: cx.log.phases.clone(),
        writes,
        requests,
        conflicts_during_restoration: results.conflicts_restoration,
        conflict_rate_during_restoration: conflict_rate,
        residency_violations: results.residency_violations,
        max_replication_lag_seconds: round3(max_lag),
        findings,
    }
}

/// The findings that sum the drill up: TTD, TTR, failed requests around
/// the switch, refusals as residency requires, unknown outcomes, the
/// worst lag, the conflict rate, and what kill mode had to work around.
#[allow(clippy::too_many_arguments)] // the report's inputs, each computed once by `report`
fn summary_findings(
    cx: &Context,
    moments: &Moments,
    results: &Results,
    ticks: &[Tick],
    records: &[RequestRecord],
    ttd: Option<&(f64, String)>,
    ttr: Option<&(f64, String)>,
    writes: &Writes,
) -> Vec<String> {
    let mut f = Vec::new();
    let Some(t_iso) = moments.t_iso else { return f };
    let target = &cx.dep.target;
    match ttd {
        Some((s, what)) => {
            f.push(format!("Time-to-Detect {s:.2} s: {what}."));
            if cx.settings.mode == Mode::Isolate && what.contains("lag budget") {
                f.push(format!(
                        "A drained region is not a down region to the router: with {target} isolated, only the lag budgets of the surviving regions raised an alert."
                    ));
            }
        }
        None => {
            f.push("No alert fired: the deployment did not notice the loss of the region.".into());
        }
    }
    match ttr {
        Some((s, what)) => {
            f.push(format!("Time-to-Route {s:.2} s: {what}."));
            if *s > 60.0 {
                f.push("TTR is above 60 s: a routing automation problem.".into());
            }
        }
        None => f.push(format!("No request of {target}'s traffic was served by another region.")),
    }
    let t_settle = moments.t_settle.unwrap_or(t_iso);
    let early_errors = records
        .iter()
        .filter(|r| r.sent_s >= t_iso && r.sent_s < t_settle)
        .filter(|r| measure::classify(r, target) == Class::Error)
        .count();
    if early_errors > 0 {
        f.push(format!(
                "{early_errors} request(s) failed in the {:.2} s between the {} and the router routing around it.",
                t_settle - t_iso,
                if cx.settings.mode == Mode::Kill { "kill" } else { "drain" }
            ));
    }
    let refused = records.iter().filter(|r| r.refused() && r.sent_s >= t_iso).count();
    if refused > 0 && cx.dep.topo.jurisdiction_peers(target).is_empty() {
        f.push(format!(
                "{target} is the only region of {}: {refused} request(s) for its subjects were refused with 503 no_region_available while it was out, as residency requires (never a failover to another jurisdiction).",
                cx.dep.topo.jurisdiction_of(target).unwrap_or("its jurisdiction")
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
    let rate = results.conflicts_restoration as f64 / writes.acknowledged.max(1) as f64;
    if rate > CONFLICT_RATE_ALERT {
        f.push(format!(
            "Conflict rate during restoration {:.3}% is above the 0.1% alert threshold.",
            rate * 100.0
        ));
    }
    if cx.settings.mode == Mode::Kill {
        f.push(format!(
                "Restoration kept {target} drained at the router until it had caught up: the router routes to a region as soon as one health probe passes, before its replication has caught up."
            ));
    }
    f
}

/// `report.json`, `report.md`, `timeline.svg` and `requests.jsonl` into the output directory.
pub(super) fn write_outputs(cx: &Context, moments: &Moments, r: &Report) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let out = &cx.settings.out;
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(r)?)
        .with_context(|| format!("writing {}", out.join("report.json").display()))?;
    std::fs::write(out.join("report.md"), report::markdown(r))?;
    let records = cx.journal.snapshot();
    let ticks = cx.monitor.snapshot();
    let lag = measure::lag_series(&ticks);
    let mut marks = Vec::new();
    if let Some(t) = moments.t_iso {
        marks.push((
            t,
            format!(
                "{} {}",
                if cx.settings.mode == Mode::Kill { "kill" } else { "isolate" },
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
