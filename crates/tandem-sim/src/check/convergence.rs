//! Invariant 1: once faults stop and links heal, every region allowed to hold
//! a record holds the same materialized value (the product's digest hashes
//! exactly these values), and a region not allowed to hold it holds nothing.

use std::collections::{BTreeMap, BTreeSet};

use crate::check::Violation;
use crate::region::Region;
use crate::world::World;

pub fn check(world: &World, regions: &BTreeMap<String, Region>) -> Vec<Violation> {
    let states: BTreeMap<&str, _> =
        regions.values().map(|r| (r.name.as_str(), r.records())).collect();
    let keys: BTreeSet<&(String, String)> = states.values().flat_map(|s| s.keys()).collect();
    let mut out = Vec::new();
    for (entity, id) in keys {
        let values: Vec<(&str, Option<String>)> = states
            .iter()
            .filter(|(name, _)| world.may_hold(name, entity, id))
            .map(|(name, s)| {
                let v =
                    s.get(&(entity.clone(), id.clone())).and_then(tandem_merge::State::value_json);
                (*name, v)
            })
            .collect();
        if values.windows(2).any(|w| w[0].1 != w[1].1) {
            out.push(Violation {
                invariant: "convergence",
                record: Some((entity.clone(), id.clone())),
                detail: format!("regions disagree after healing: {values:?}"),
            });
        }
    }
    out
}
