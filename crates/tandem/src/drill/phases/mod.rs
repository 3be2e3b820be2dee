//! The reference article's drill script, one file per phase, run in order by
//! [`run`]: pre-drill verification (its static checks in `precheck`), region
//! isolation, observation, validation, restoration with catch-up, and the
//! post-drill verification. Each phase is a list of named checks filed in
//! the logbook; the measurements and verdicts come from the pure modules,
//! the phases do the I/O. What one phase hands to a later one is a value
//! `run` passes on, or the [`Moments`] and [`Results`] of the drill.

mod isolation;
mod observation;
mod postdrill;
mod precheck;
mod predrill;
mod restoration;
mod validation;

use super::context::{Context, Moments, Results};
use super::target::TargetState;
use super::traffic::Traffic;

/// Why the phases stopped before the end.
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

/// The six phases in order. A phase that cannot go on stops the run; what
/// the target was left in is in `target`, for the caller to put back.
pub(super) async fn run(
    cx: &mut Context,
    traffic: &mut Traffic,
    target: &mut TargetState,
    moments: &mut Moments,
    results: &mut Results,
) -> Result<(), Stop> {
    let audit_from = predrill::run(cx, traffic).await?;
    let conflict_base = isolation::run(cx, traffic, target, moments).await?;
    observation::run(cx, moments).await;
    validation::run(cx, traffic, moments, &conflict_base).await;
    restoration::run(cx, traffic, target, moments, results).await?;
    postdrill::run(cx, traffic, &audit_from, results).await;
    Ok(())
}
