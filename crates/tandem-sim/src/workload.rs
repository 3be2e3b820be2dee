//! The random client workload: every merge type, subjects of both
//! jurisdictions, a small key space so that concurrent writes of one record
//! are common, register values unique per operation (so that the checker can
//! tell which write a final value came from), single-element set operations
//! from a four-letter alphabet (so that adds and removes of one element race).

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tandem_merge::{MergeKind, Op};

use crate::check::writes::Write;
use crate::rng::Rng;
use crate::world::World;

/// A generated operation: the record, and the write (`None` for a read) both
/// as the checker sees it and as the engine applies it.
#[derive(Debug, Clone)]
pub struct Planned {
    pub entity: String,
    pub id: String,
    pub merge: MergeKind,
    pub write: Option<(Write, Op)>,
}

const ELEMENTS: [&str; 4] = ["w", "x", "y", "z"];
const FIELDS: [&str; 3] = ["a", "b", "c"];

pub fn plan(rng: &mut Rng, world: &World, op_id: u64) -> Planned {
    let entity = rng.pick(&world.entities).clone();
    let cfg = world.config.entity(&entity).expect("workload entity");
    let id = if cfg.subjects {
        let s = rng.pick(&world.subjects);
        format!("{}:{}", s.name, rng.below(2))
    } else {
        format!("k{}", rng.below(3))
    };
    let merge = cfg.merge;
    if rng.chance(120) {
        return Planned { entity, id, merge, write: None };
    }
    let write = match merge {
        MergeKind::Lww => {
            if rng.chance(150) {
                (Write::Delete, Op::Delete)
            } else {
                let v = json!(format!("v{op_id}"));
                (Write::Put(v.clone()), Op::Put(v.to_string()))
            }
        }
        MergeKind::LwwFields => {
            if rng.chance(80) {
                (Write::Delete, Op::Delete)
            } else {
                let n = rng.range(1, 2);
                let mut fields: BTreeMap<String, Value> = BTreeMap::new();
                for i in 0..n {
                    let f = rng.pick(&FIELDS).to_string();
                    let v = if rng.chance(100) { Value::Null } else { json!(op_id * 10 + i) };
                    fields.insert(f, v);
                }
                let changes = fields
                    .iter()
                    .map(|(k, v)| (k.clone(), (!v.is_null()).then(|| v.to_string())))
                    .collect();
                (Write::Patch(fields), Op::Patch(changes))
            }
        }
        MergeKind::GCounter => {
            let by = rng.range(1, 5);
            (Write::Incr(by), Op::Incr(by))
        }
        MergeKind::PnCounter => {
            let by = rng.range(1, 5);
            if rng.chance(400) {
                (Write::Decr(by), Op::Decr(by))
            } else {
                (Write::Incr(by), Op::Incr(by))
            }
        }
        MergeKind::OrSet => {
            let e = rng.pick(&ELEMENTS).to_string();
            match rng.below(10) {
                0 => (Write::Delete, Op::Delete),
                1..=3 => (Write::Remove(e.clone()), Op::Remove(vec![e])),
                _ => (Write::Add(e.clone()), Op::Add(vec![e])),
            }
        }
    };
    Planned { entity, id, merge, write: Some(write) }
}
