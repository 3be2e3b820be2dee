//! Invariant 3: a personal record of a subject homed in jurisdiction J never
//! reaches a region outside J: not its store (any record or log entry it ever
//! kept) and not its replication traffic (any batch delivered to it, even one
//! it refused to store: the receiver's check is defence in depth, the sender
//! must not send).

use std::collections::BTreeMap;

use crate::check::Violation;
use crate::history::{Event, History};
use crate::region::Region;
use crate::world::World;

pub fn check(
    world: &World,
    regions: &BTreeMap<String, Region>,
    history: &History,
) -> Vec<Violation> {
    let mut out = Vec::new();
    for r in regions.values() {
        for (entity, id) in r.records().into_keys() {
            if !world.may_hold(&r.name, &entity, &id) {
                out.push(Violation {
                    invariant: "residency",
                    record: Some((entity.clone(), id.clone())),
                    detail: format!("{} ({}) holds it", r.name, r.jurisdiction),
                });
            }
        }
        for e in &r.log() {
            if !world.may_hold(&r.name, &e.entity, &e.id) {
                out.push(Violation {
                    invariant: "residency",
                    record: Some((e.entity.clone(), e.id.clone())),
                    detail: format!(
                        "{} ({}) logged it (origin {})",
                        r.name, r.jurisdiction, e.origin
                    ),
                });
            }
        }
    }
    for e in &history.events {
        let Event::Delivery { at_ms, from, to, entries, .. } = e else { continue };
        for (entity, id, origin) in entries {
            if !world.may_hold(to, entity, id) {
                out.push(Violation {
                    invariant: "residency",
                    record: Some((entity.clone(), id.clone())),
                    detail: format!(
                        "{from} sent it to {to} ({}) at {at_ms} ms (origin {origin})",
                        world.jurisdiction_of(to)
                    ),
                });
            }
        }
    }
    out
}
