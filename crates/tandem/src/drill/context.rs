//! What every phase borrows ([`Context`]: the settings, the deployment, the
//! drill's clock, the journal of requests, the monitor and the logbook), and
//! what the phases hand on: the [`Moments`] at which the drill switched the
//! deployment's routing, and the [`Results`] the report counts. A phase opens
//! with [`Context::begin`] and closes with [`Context::end`], which files its
//! checks in the logbook.

use std::sync::Arc;
use std::time::Duration;

use super::deployment::Deployment;
use super::journal::{DrillClock, Journal};
use super::monitor::Monitor;
use super::plan::PHASES;
use super::progress::Progress;
use super::report::{self, Check, PhaseReport};
use super::verify::Verification;
use super::Settings;

pub(super) struct Context {
    pub(super) settings: Settings,
    pub(super) dep: Deployment,
    pub(super) clock: DrillClock,
    /// Every request the workload and the checks sent through the router.
    pub(super) journal: Arc<Journal>,
    pub(super) monitor: Monitor,
    pub(super) log: Logbook,
}

/// The drill's own record as it goes.
pub(super) struct Logbook {
    /// The live display.
    pub(super) progress: Progress,
    /// Every finished phase with its checks.
    pub(super) phases: Vec<PhaseReport>,
    /// What the phases found for the report, besides failed checks.
    pub(super) findings: Vec<String>,
}

/// A phase under way.
pub(super) struct PhaseStart {
    pub(super) index: usize,
    /// Drill time it started.
    pub(super) t: f64,
}

impl Context {
    pub(super) fn now(&self) -> f64 {
        self.clock.now()
    }

    pub(super) async fn sleep_until(&self, t: f64) {
        let left = t - self.now();
        if left > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(left)).await;
        }
    }

    /// Start phase `index` (of [`PHASES`]) on the display.
    pub(super) fn begin(&mut self, index: usize) -> PhaseStart {
        let planned = self.settings.timings.of_phase(index);
        self.log.progress.phase(index, PHASES[index], planned, index >= 4);
        PhaseStart { index, t: self.now() }
    }

    /// Finish a phase: its outcome on the display, its report in the logbook.
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
        self.log.progress.finish(&summary);
        self.log.phases.push(PhaseReport {
            name: PHASES[start.index].to_owned(),
            started_at: report::rfc3339(self.clock.unix_ms_at(start.t)),
            offset_seconds: start.t,
            duration_seconds: self.now() - start.t,
            checks,
        });
    }
}

/// When the drill changed the deployment's routing. Set by the phase that
/// does it, read by the phases after it and by the report.
#[derive(Debug, Default)]
pub(super) struct Moments {
    /// Drill time the target was taken out (drained or killed).
    pub(super) t_iso: Option<f64>,
    /// Drill time from which the target's traffic must be served elsewhere
    /// (requests already on their way at the switch may still fail before it).
    pub(super) t_settle: Option<f64>,
    /// Unix ms of the routing switches (drain or kill, restore).
    pub(super) switches_ms: Vec<u64>,
}

/// The report's numbers that the phases establish, each set as soon as it is
/// known, so that a drill that stops half-way still reports what it found.
#[derive(Debug, Default)]
pub(super) struct Results {
    /// Conflicts the regions counted during the restoration.
    pub(super) conflicts_restoration: u64,
    /// Personal records or audited flows found outside their jurisdiction.
    pub(super) residency_violations: u64,
    /// The read-back of every write of the journal (post-drill).
    pub(super) verification: Option<Verification>,
}
