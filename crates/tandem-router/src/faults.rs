//! A deliberate routing bug, for the deterministic simulation only: it routes
//! with `RouterFaults { route_anywhere: true }` to show that its checker
//! catches a failover outside the jurisdiction, in the real decision. The
//! router always routes with `RouterFaults::NONE`; no config key or flag
//! reaches this.

use crate::decide::RegionView;
use crate::decide::{decide, Decision, Request, Route};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouterFaults {
    /// With no region of the subject's jurisdiction left, fail over to any
    /// region at all instead of answering 503.
    pub route_anywhere: bool,
}

impl RouterFaults {
    pub const NONE: RouterFaults = RouterFaults { route_anywhere: false };
}

/// `decide`, with `faults` applied.
pub fn decide_with(req: &Request<'_>, regions: &[RegionView], faults: RouterFaults) -> Decision {
    let decision = decide(req, regions);
    if !faults.route_anywhere {
        return decision;
    }
    match (decision, req.home_region) {
        (Decision::NoRegionAvailable { jurisdiction }, Some(home)) => {
            // Deliberately broken: fail over to any region at all.
            let anywhere = Request { kind: req.kind, entity: None, home_region: None };
            match decide(&anywhere, regions) {
                Decision::Send { region, .. } => Decision::Send {
                    region,
                    route: Route::Failover,
                    failover_for: Some(home.to_owned()),
                },
                _ => Decision::NoRegionAvailable { jurisdiction },
            }
        }
        (decision, _) => decision,
    }
}
