//! Invariant 4: the router never sends a request about a subject's personal
//! or pinned record outside the subject's jurisdiction, and it answers 503
//! `no_region_available` only when it saw no available region there.

use tandem_config::WritePolicy;

use crate::check::Violation;
use crate::history::History;
use crate::world::World;

pub fn check(world: &World, history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    for op in &history.ops {
        let Some(route) = &op.route else { continue };
        let cfg = world.config.entity(&op.entity).expect("known entity");
        let write = op.write.is_some();
        let pinned = write && cfg.writes == WritePolicy::HomeRegion;
        let restricted = cfg.subjects && (cfg.personal || pinned);
        if !restricted {
            continue;
        }
        let Some(home) = &route.home else { continue };
        let j = world.jurisdiction_of(home);
        if let Some(region) = &route.region {
            if world.jurisdiction_of(region) != j {
                out.push(Violation {
                    invariant: "failover",
                    record: Some((op.entity.clone(), op.id.clone())),
                    detail: format!(
                        "#{} routed to {region} ({}), outside {j} of home {home} (route {})",
                        op.op,
                        world.jurisdiction_of(region),
                        route.route
                    ),
                });
            }
        } else if op.refusal.is_some_and(|(s, _)| s == 503)
            && route.available.iter().any(|r| world.jurisdiction_of(r) == j)
        {
            out.push(Violation {
                invariant: "failover",
                record: Some((op.entity.clone(), op.id.clone())),
                detail: format!(
                    "#{} refused with 503 while {:?} were available in {j}",
                    op.op, route.available
                ),
            });
        }
    }
    out
}
