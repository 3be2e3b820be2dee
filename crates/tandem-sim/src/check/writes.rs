//! Invariant 2, "no acknowledged write is lost", decided from a history alone:
//! the writes a client issued to one record (with their outcome: acknowledged
//! with the version the region answered, refused, or unknown because the answer
//! never came) and the record's final value and version. Nothing here knows how
//! the history was produced, so the deterministic simulation and the
//! real-process tests (through `tandem-testkit`'s acknowledged-write checker:
//! the fault test, the crash tests, the drill tests) judge with the same code.
//!
//! The rules, per merge shape:
//!
//! - every acknowledged version is contained in the final version vector;
//! - counters: the final value is the sum of acknowledged increments minus
//!   acknowledged decrements, exactly, widened only by writes of unknown
//!   outcome (each may or may not have happened);
//! - registers (`lww`, and each field of `lww-fields`): the final value is
//!   written by a *candidate*: a write (acknowledged or of unknown outcome) that
//!   no acknowledged write of the same register causally follows (a version
//!   vector strictly after its own). Causality, not clocks, decides: a write
//!   that saw another can never lose to it. The register is absent at the end
//!   only if a candidate removed it or no acknowledged write set it;
//! - `or-set`: an element added by an acknowledged add is present at the end
//!   unless a remove (or delete) of it causally followed the add (its version
//!   covers the add's dot), or a remove of unknown outcome might have; every
//!   element present was added by someone;
//! - a refused write never takes effect (values are unique per write).
//!
//! Self-contained on purpose (std, `serde_json`, `tandem_clock` only), so
//! that the test kit can use it without the rest of the simulation's ideas.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use tandem_clock::{Causality, VersionVector};

/// What one client write asked for. Register values must be unique per write
/// (the checker maps a final value back to the write that produced it).
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// `lww`: a whole value.
    Put(Value),
    /// `lww-fields`: `Value::Null` removes the field.
    Patch(BTreeMap<String, Value>),
    Incr(u64),
    Decr(u64),
    /// `or-set`, one element per write (its dot is then the acknowledged
    /// version's entry for the region).
    Add(String),
    Remove(String),
    /// `lww`, `lww-fields`, `or-set`.
    Delete,
}

/// How a write ended, as the client saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 200 with the region that took it and the version it answered.
    Acked { region: String, version: VersionVector },
    /// An error answer: the write did not happen.
    Refused,
    /// No answer (time-out, connection lost, process killed): it may or may
    /// not have happened.
    Unknown,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WriteRecord {
    /// The history's id of the operation (shown in reports).
    pub op: u64,
    pub write: Write,
    pub outcome: Outcome,
}

impl WriteRecord {
    fn acked(&self) -> Option<(&str, &VersionVector)> {
        match &self.outcome {
            Outcome::Acked { region, version } => Some((region, version)),
            _ => None,
        }
    }
    fn unknown(&self) -> bool {
        self.outcome == Outcome::Unknown
    }
    fn may_have_happened(&self) -> bool {
        self.outcome != Outcome::Refused
    }
}

/// How a record's type merges, for the checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Register,
    Fields,
    Counter,
    Set,
}

impl Shape {
    /// The shape of a merge type, by its configuration name.
    pub fn of(merge: &str) -> Shape {
        match merge {
            "lww" => Shape::Register,
            "lww-fields" => Shape::Fields,
            "g-counter" | "pn-counter" => Shape::Counter,
            "or-set" => Shape::Set,
            other => panic!("unknown merge type {other}"),
        }
    }
}

/// The record as it ended: its materialized value (`None`: absent) and its
/// version vector when known (an absent record's version is not served).
#[derive(Debug, Clone, PartialEq)]
pub struct Final {
    pub value: Option<Value>,
    pub version: Option<VersionVector>,
}

/// Every way the history of one record breaks the rules above, one line each
/// naming the writes involved. Empty when it holds.
pub fn check_record(shape: Shape, writes: &[WriteRecord], fin: &Final) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(version) = &fin.version {
        for w in writes {
            if let Some((region, v)) = w.acked() {
                if !version.dominates_or_equals(v) {
                    problems.push(format!(
                        "acknowledged write #{} ({region}, version {}) is not in the final version {}",
                        w.op,
                        show_vv(v),
                        show_vv(version)
                    ));
                }
            }
        }
    }
    match shape {
        Shape::Counter => check_counter(writes, fin, &mut problems),
        Shape::Register => {
            let reg: Vec<RegWrite> = writes
                .iter()
                .filter_map(|w| match &w.write {
                    Write::Put(v) => Some(RegWrite { rec: w, value: Some(v.clone()) }),
                    Write::Delete => Some(RegWrite { rec: w, value: None }),
                    _ => None,
                })
                .collect();
            check_register("value", &reg, fin.value.as_ref(), &mut problems);
        }
        Shape::Fields => check_fields(writes, fin, &mut problems),
        Shape::Set => check_set(writes, fin, &mut problems),
    }
    problems
}

fn check_counter(writes: &[WriteRecord], fin: &Final, problems: &mut Vec<String>) {
    let (mut acked, mut unknown_up, mut unknown_down) = (0i128, 0i128, 0i128);
    for w in writes {
        let delta = match w.write {
            Write::Incr(by) => by as i128,
            Write::Decr(by) => -(by as i128),
            _ => continue,
        };
        if w.acked().is_some() {
            acked += delta;
        } else if w.unknown() {
            if delta > 0 {
                unknown_up += delta;
            } else {
                unknown_down += delta;
            }
        }
    }
    let value = match &fin.value {
        None => 0,
        Some(v) => match v.as_i64() {
            Some(n) => n as i128,
            None => {
                problems.push(format!("counter value {v} is not an integer"));
                return;
            }
        },
    };
    let (low, high) = (acked + unknown_down, acked + unknown_up);
    if value < low || value > high {
        let expect = if low == high { format!("{low}") } else { format!("{low}..={high}") };
        problems.push(format!(
            "counter is {value}, but the acknowledged operations sum to {expect} (acknowledged {acked}, unknown outcome +{unknown_up}/{unknown_down})"
        ));
    }
}

/// One write of one register: `None` removes it (delete, or a null field).
struct RegWrite<'a> {
    rec: &'a WriteRecord,
    value: Option<Value>,
}

fn check_register(
    name: &str,
    writes: &[RegWrite<'_>],
    fin: Option<&Value>,
    problems: &mut Vec<String>,
) {
    // Candidates: writes no acknowledged write of this register causally follows.
    let dominated = |w: &RegWrite<'_>| {
        let Some((_, mine)) = w.rec.acked() else { return false };
        writes.iter().any(|o| {
            o.rec.acked().is_some_and(|(_, theirs)| theirs.compare(mine) == Causality::After)
        })
    };
    let candidates: Vec<&RegWrite<'_>> =
        writes.iter().filter(|w| w.rec.may_have_happened() && !dominated(w)).collect();
    match fin {
        Some(v) => {
            if let Some(r) = writes
                .iter()
                .find(|w| w.rec.outcome == Outcome::Refused && w.value.as_ref() == Some(v))
            {
                problems
                    .push(format!("{name} is {v}, written by #{}, which was refused", r.rec.op));
            }
            if !candidates.iter().any(|w| w.value.as_ref() == Some(v)) {
                let by = writes.iter().find(|w| w.value.as_ref() == Some(v));
                let why = match by {
                    None => "no write set it".to_string(),
                    Some(w) => {
                        let later: Vec<String> = writes
                            .iter()
                            .filter(|o| {
                                let (Some((_, a)), Some((_, b))) = (w.rec.acked(), o.rec.acked())
                                else {
                                    return false;
                                };
                                b.compare(a) == Causality::After
                            })
                            .map(|o| format!("#{}", o.rec.op))
                            .collect();
                        format!(
                            "it was written by #{}, which acknowledged writes {} causally follow",
                            w.rec.op,
                            later.join(", ")
                        )
                    }
                };
                problems.push(format!(
                    "{name} ends as {v}: {why}; allowed: {}",
                    show_candidates(&candidates)
                ));
            }
        }
        None => {
            let removed = candidates.iter().any(|w| w.value.is_none());
            let acked_set: Vec<&&RegWrite<'_>> = candidates
                .iter()
                .filter(|w| w.value.is_some() && w.rec.acked().is_some())
                .collect();
            if !removed && !acked_set.is_empty() {
                problems.push(format!(
                    "{name} ends absent, but acknowledged write(s) {} set it and nothing removed it after them",
                    acked_set.iter().map(|w| format!("#{}", w.rec.op)).collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
}

fn check_fields(writes: &[WriteRecord], fin: &Final, problems: &mut Vec<String>) {
    let mut names: BTreeSet<String> = BTreeSet::new();
    for w in writes {
        if let Write::Patch(fields) = &w.write {
            names.extend(fields.keys().cloned());
        }
    }
    let object = match &fin.value {
        None => serde_json::Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(other) => {
            problems.push(format!("lww-fields value {other} is not an object"));
            return;
        }
    };
    for name in object.keys() {
        if !names.contains(name) {
            problems.push(format!("field `{name}` is present but no write set it"));
        }
    }
    for name in &names {
        let reg: Vec<RegWrite<'_>> = writes
            .iter()
            .filter_map(|w| match &w.write {
                Write::Patch(fields) => fields
                    .get(name)
                    .map(|v| RegWrite { rec: w, value: (!v.is_null()).then(|| v.clone()) }),
                // A delete removes every field it has seen: it counts for
                // this field only if it may have seen a write of it.
                Write::Delete if delete_may_touch(w, name, writes) => {
                    Some(RegWrite { rec: w, value: None })
                }
                _ => None,
            })
            .collect();
        check_register(&format!("field `{name}`"), &reg, object.get(name), problems);
    }
}

/// Whether delete `d` may have seen a write of field `name` (and so removed
/// it): some write of the field is of unknown outcome, or `d` is, or `d`'s
/// version is causally after the write's.
fn delete_may_touch(d: &WriteRecord, name: &str, writes: &[WriteRecord]) -> bool {
    let Some((_, dv)) = d.acked() else { return d.unknown() };
    writes.iter().any(|w| {
        let Write::Patch(fields) = &w.write else { return false };
        if !fields.contains_key(name) || !w.may_have_happened() {
            return false;
        }
        match w.acked() {
            Some((_, wv)) => dv.compare(wv) == Causality::After,
            None => true,
        }
    })
}

fn check_set(writes: &[WriteRecord], fin: &Final, problems: &mut Vec<String>) {
    let present: BTreeSet<String> = match &fin.value {
        None => BTreeSet::new(),
        Some(Value::Array(a)) => a.iter().filter_map(|e| e.as_str().map(str::to_owned)).collect(),
        Some(other) => {
            problems.push(format!("or-set value {other} is not an array of strings"));
            return;
        }
    };
    for e in &present {
        let added = writes
            .iter()
            .any(|w| w.may_have_happened() && matches!(&w.write, Write::Add(x) if x == e));
        if !added {
            problems.push(format!("element {e:?} is present but no write added it"));
        }
    }
    for add in writes {
        let Write::Add(e) = &add.write else { continue };
        let Some((region, version)) = add.acked() else { continue };
        if present.contains(e) {
            continue;
        }
        let dot = version.get(region);
        let removed_after = writes.iter().any(|r| {
            let removes = match &r.write {
                Write::Remove(x) => x == e,
                Write::Delete => true,
                _ => false,
            };
            if !removes || r.op == add.op {
                return false;
            }
            match &r.outcome {
                Outcome::Acked { version, .. } => version.get(region) >= dot,
                Outcome::Unknown => true,
                Outcome::Refused => false,
            }
        });
        if !removed_after {
            problems.push(format!(
                "element {e:?} added by acknowledged #{} ({region}, dot {dot}) is missing, and no remove followed it",
                add.op
            ));
        }
    }
}

fn show_candidates(c: &[&RegWrite<'_>]) -> String {
    if c.is_empty() {
        return "nothing".into();
    }
    c.iter()
        .map(|w| {
            let v = w.value.as_ref().map_or("(removed)".to_string(), Value::to_string);
            format!("#{} {v}", w.rec.op)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn show_vv(v: &VersionVector) -> String {
    let parts: Vec<String> = v.iter().map(|(r, n)| format!("{r}:{n}")).collect();
    format!("{{{}}}", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vv(pairs: &[(&str, u64)]) -> VersionVector {
        pairs.iter().map(|(r, n)| ((*r).to_string(), *n)).collect()
    }
    fn acked(op: u64, write: Write, region: &str, v: &[(&str, u64)]) -> WriteRecord {
        WriteRecord { op, write, outcome: Outcome::Acked { region: region.into(), version: vv(v) } }
    }
    fn unknown(op: u64, write: Write) -> WriteRecord {
        WriteRecord { op, write, outcome: Outcome::Unknown }
    }
    fn fin(value: Option<Value>, v: &[(&str, u64)]) -> Final {
        Final { value, version: Some(vv(v)) }
    }

    #[test]
    fn counters_are_exact_and_widened_only_by_unknown_outcomes() {
        let w = [
            acked(1, Write::Incr(5), "a", &[("a", 1)]),
            acked(2, Write::Decr(2), "b", &[("b", 1)]),
            unknown(3, Write::Incr(10)),
        ];
        let v = &[("a", 1), ("b", 1)];
        assert!(check_record(Shape::Counter, &w, &fin(Some(json!(3)), v)).is_empty());
        assert!(check_record(Shape::Counter, &w, &fin(Some(json!(13)), v)).is_empty());
        assert_eq!(check_record(Shape::Counter, &w, &fin(Some(json!(14)), v)).len(), 1);
        assert_eq!(check_record(Shape::Counter, &w, &fin(Some(json!(2)), v)).len(), 1);
        // An acknowledged version missing from the final one is a loss too.
        assert_eq!(check_record(Shape::Counter, &w, &fin(Some(json!(3)), &[("a", 1)])).len(), 1);
    }

    #[test]
    fn a_causally_later_write_must_win_whatever_the_clock() {
        let w = [
            acked(1, Write::Put(json!("old")), "a", &[("a", 1)]),
            acked(2, Write::Put(json!("new")), "b", &[("a", 1), ("b", 1)]),
        ];
        let v = &[("a", 1), ("b", 1)];
        assert!(check_record(Shape::Register, &w, &fin(Some(json!("new")), v)).is_empty());
        assert_eq!(check_record(Shape::Register, &w, &fin(Some(json!("old")), v)).len(), 1);
        assert_eq!(check_record(Shape::Register, &w, &fin(None, v)).len(), 1);
        // Concurrent writes: either may win.
        let c = [
            acked(1, Write::Put(json!("x")), "a", &[("a", 1)]),
            acked(2, Write::Put(json!("y")), "b", &[("b", 1)]),
        ];
        assert!(check_record(Shape::Register, &c, &fin(Some(json!("x")), v)).is_empty());
        assert!(check_record(Shape::Register, &c, &fin(Some(json!("y")), v)).is_empty());
        // A refused write never shows.
        let r = [WriteRecord { op: 9, write: Write::Put(json!("no")), outcome: Outcome::Refused }];
        assert_eq!(check_record(Shape::Register, &r, &fin(Some(json!("no")), &[])).len(), 2);
    }

    #[test]
    fn fields_are_registers_and_a_delete_removes_what_it_saw() {
        let patch = |f: &str, v: Value| Write::Patch([(f.to_string(), v)].into_iter().collect());
        let w = [
            acked(1, patch("a", json!(1)), "x", &[("x", 1)]),
            acked(2, patch("b", json!(2)), "y", &[("y", 1)]),
            acked(3, Write::Delete, "x", &[("x", 2)]),
        ];
        let v = &[("x", 2), ("y", 1)];
        // The delete saw `a` but not the concurrent `b`.
        assert!(check_record(Shape::Fields, &w, &fin(Some(json!({"b": 2})), v)).is_empty());
        assert_eq!(check_record(Shape::Fields, &w, &fin(None, v)).len(), 1);
        assert_eq!(
            check_record(Shape::Fields, &w, &fin(Some(json!({"a": 1, "b": 2})), v)).len(),
            1
        );
        assert_eq!(
            check_record(Shape::Fields, &w, &fin(Some(json!({"b": 2, "c": 3})), v)).len(),
            1
        );
    }

    #[test]
    fn set_adds_survive_unless_a_remove_saw_them() {
        let w = [
            acked(1, Write::Add("e".into()), "a", &[("a", 1)]),
            acked(2, Write::Remove("e".into()), "b", &[("b", 1)]),
        ];
        let v = &[("a", 1), ("b", 1)];
        // The remove did not see the add (its version has no a:1): add wins.
        assert_eq!(check_record(Shape::Set, &w, &fin(None, v)).len(), 1);
        assert!(check_record(Shape::Set, &w, &fin(Some(json!(["e"])), v)).is_empty());
        let seen = [
            acked(1, Write::Add("e".into()), "a", &[("a", 1)]),
            acked(2, Write::Remove("e".into()), "b", &[("a", 1), ("b", 1)]),
        ];
        assert!(check_record(Shape::Set, &seen, &fin(None, v)).is_empty());
        assert_eq!(check_record(Shape::Set, &seen, &fin(Some(json!(["z"])), v)).len(), 1);
    }
}
