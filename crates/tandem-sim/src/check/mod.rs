//! The invariant checker. It reads only the history (`crate::history`) and
//! the regions' final state (records and logs), never the simulator's
//! internals, one file per invariant of DESIGN.md:
//!
//! - `convergence`: invariant 1, equal values in every region allowed to hold
//!   a record (and replication reached quiescence at all);
//! - `writes`: invariants 2 and 6, no acknowledged write lost, causality over
//!   clocks (shared with the real-process harness);
//! - `residency`: invariant 3, no personal record held by or sent to a region
//!   outside its jurisdiction;
//! - `failover`: invariant 4, routing never leaves the jurisdiction, and 503
//!   only when no region of it was available;
//! - `stability`: the stability horizon never claims a position some region
//!   had not applied.

pub mod convergence;
pub mod failover;
pub mod residency;
pub mod stability;
pub mod writes;

use std::collections::BTreeMap;

use crate::history::History;
use crate::region::Region;
use crate::world::World;

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    /// `convergence`, `liveness`, `lost_write`, `residency`, `failover`.
    pub invariant: &'static str,
    /// The record concerned, when there is one.
    pub record: Option<(String, String)>,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.record {
            Some((e, i)) => write!(f, "[{}] {e}/{i}: {}", self.invariant, self.detail),
            None => write!(f, "[{}] {}", self.invariant, self.detail),
        }
    }
}

/// Every violation in a finished run, sorted.
pub fn check(
    world: &World,
    regions: &BTreeMap<String, Region>,
    history: &History,
    stuck: Option<&str>,
) -> Vec<Violation> {
    let mut out = Vec::new();
    if let Some(report) = stuck {
        out.push(Violation {
            invariant: "liveness",
            record: None,
            detail: format!("replication did not reach quiescence after healing:\n{report}"),
        });
    }
    out.extend(convergence::check(world, regions));
    out.extend(check_writes(world, regions, history));
    out.extend(residency::check(world, regions, history));
    out.extend(failover::check(world, history));
    out.extend(stability::check(history));
    out.sort();
    out.dedup();
    out
}

fn check_writes(
    world: &World,
    regions: &BTreeMap<String, Region>,
    history: &History,
) -> Vec<Violation> {
    let mut by_record: BTreeMap<(String, String), Vec<writes::WriteRecord>> = BTreeMap::new();
    for op in &history.ops {
        let Some(w) = &op.write else { continue };
        by_record
            .entry((op.entity.clone(), op.id.clone()))
            .or_default()
            .push(writes::WriteRecord { op: op.op, write: w.clone(), outcome: op.outcome.clone() });
    }
    let states: BTreeMap<&str, _> =
        regions.values().map(|r| (r.name.as_str(), r.records())).collect();
    let mut out = Vec::new();
    for ((entity, id), ws) in by_record {
        let merge = world.config.entity(&entity).expect("known entity").merge;
        // The record as the first region allowed to hold it has it (the
        // convergence check compares the others).
        let Some(region) = regions.values().find(|r| world.may_hold(&r.name, &entity, &id)) else {
            continue;
        };
        let state = states[region.name.as_str()].get(&(entity.clone(), id.clone()));
        let fin = writes::Final {
            value: state.and_then(tandem_merge::State::value),
            version: Some(state.map(tandem_merge::State::version).unwrap_or_default()),
        };
        for detail in writes::check_record(writes::Shape::of(merge.as_str()), &ws, &fin) {
            out.push(Violation {
                invariant: "lost_write",
                record: Some((entity.clone(), id.clone())),
                detail: format!("{detail} (final value at {}: {:?})", region.name, fin.value),
            });
        }
    }
    out
}
