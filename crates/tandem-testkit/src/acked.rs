//! The acknowledged-write checker (DESIGN.md invariant 2: no acknowledged
//! write is lost): a [`History`] of the writes clients issued, per record and
//! merge shape, each with how it ended as the client saw it (acknowledged
//! with the version the region answered, refused, or of unknown outcome
//! because no answer came), judged against what every region that may hold
//! the record serves at the end.
//!
//! The rules per merge shape are the simulation's own
//! (`tandem_sim::check::writes`): the deterministic simulation, the fault
//! test, the crash tests and the drill tests' verification judge with the
//! same code. In short: every acknowledged version is in the final version;
//! a counter ends between the acknowledged sum and that widened by every
//! write of unknown outcome; a register ends as a write that no acknowledged
//! write causally follows; an acknowledged or-set add survives unless a
//! remove saw it; a refused write never shows. Register values must be
//! unique per write.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tandem_clock::VersionVector;
pub use tandem_sim::check::writes::{check_record, Final, Outcome, Shape, Write, WriteRecord};

use crate::http::{Answer, Method};

/// A record: its entity type and id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub entity: String,
    pub id: String,
}

impl Key {
    pub fn new(entity: &str, id: &str) -> Key {
        Key { entity: entity.to_owned(), id: id.to_owned() }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.entity, self.id)
    }
}

/// An acknowledged write missing (or a value nobody wrote) at one region.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lost {
    pub key: Key,
    pub region: String,
    pub detail: String,
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}: {}", self.key, self.region, self.detail)
    }
}

/// Every write issued, per record, in the order they were recorded.
#[derive(Debug, Clone, Default)]
pub struct History {
    records: BTreeMap<Key, (Shape, Vec<WriteRecord>)>,
    next_op: u64,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// Record one write under the next operation number; answers it.
    pub fn record(&mut self, key: Key, shape: Shape, write: Write, outcome: Outcome) -> u64 {
        self.next_op += 1;
        let op = self.next_op;
        self.push(key, shape, WriteRecord { op, write, outcome });
        op
    }

    /// Record one write under its own operation number.
    pub fn push(&mut self, key: Key, shape: Shape, rec: WriteRecord) {
        let entry = self.records.entry(key).or_insert_with(|| (shape, Vec::new()));
        assert_eq!(entry.0, shape, "one record, one merge shape");
        self.next_op = self.next_op.max(rec.op);
        entry.1.push(rec);
    }

    /// Every write of `other`, renumbered after this history's.
    pub fn extend(&mut self, other: History) {
        for (key, (shape, recs)) in other.records {
            for r in recs {
                self.record(key.clone(), shape, r.write, r.outcome);
            }
        }
    }

    /// The writes of one record only.
    pub fn only(&self, key: &Key) -> History {
        let mut h = History { records: BTreeMap::new(), next_op: self.next_op };
        if let Some(r) = self.records.get(key) {
            h.records.insert(key.clone(), r.clone());
        }
        h
    }

    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.records.keys()
    }

    /// The writes of one record (empty when it has none).
    pub fn writes(&self, key: &Key) -> &[WriteRecord] {
        self.records.get(key).map_or(&[], |(_, w)| w.as_slice())
    }

    /// How many writes match `pred`.
    pub fn count(&self, pred: impl Fn(&WriteRecord) -> bool) -> usize {
        self.records.values().flat_map(|(_, w)| w).filter(|w| pred(w)).count()
    }

    /// How many writes were acknowledged.
    pub fn acked(&self) -> usize {
        self.count(|w| matches!(w.outcome, Outcome::Acked { .. }))
    }

    /// How many writes are of unknown outcome.
    pub fn unknown(&self) -> usize {
        self.count(|w| w.outcome == Outcome::Unknown)
    }

    /// How many writes were refused.
    pub fn refused(&self) -> usize {
        self.count(|w| w.outcome == Outcome::Refused)
    }

    /// The records with a write acknowledged by `region`.
    pub fn acked_by(&self, region: &str) -> Vec<&Key> {
        let by =
            |w: &WriteRecord| matches!(&w.outcome, Outcome::Acked { region: r, .. } if r == region);
        self.records.iter().filter(|(_, (_, ws))| ws.iter().any(by)).map(|(k, _)| k).collect()
    }

    /// Every way `fin` contradicts the writes of one record.
    pub fn check_key(&self, key: &Key, fin: &Final) -> Vec<String> {
        match self.records.get(key) {
            Some((shape, writes)) => check_record(*shape, writes, fin),
            None => Vec::new(),
        }
    }

    /// Judge every record against what `read` says each region that may
    /// hold it serves: `(region, final state or why it could not be read)`.
    /// Empty when every acknowledged write is present everywhere.
    pub fn check(
        &self,
        mut read: impl FnMut(&Key) -> Vec<(String, Result<Final, String>)>,
    ) -> Vec<Lost> {
        let mut out = Vec::new();
        for key in self.records.keys() {
            for (region, fin) in read(key) {
                let lost =
                    |detail: String| Lost { key: key.clone(), region: region.clone(), detail };
                match fin {
                    Err(why) => out.push(lost(why)),
                    Ok(fin) => out.extend(
                        self.check_key(key, &fin)
                            .into_iter()
                            .map(|d| lost(format!("{d} (final: {:?})", fin.value))),
                    ),
                }
            }
        }
        out
    }
}

/// The merge shape of an entity type of `config`.
pub fn shape_of(config: &tandem_config::Config, entity: &str) -> Shape {
    let e = config.entity(entity).unwrap_or_else(|| panic!("no entity type {entity}"));
    Shape::of(e.merge.as_str())
}

/// How a write ended, from its answer: 200 is acknowledged (with the
/// region and version it answered); a refused connection, a 4xx and the
/// router's 503 `no_region_available` never applied it; anything else (no
/// answer, 500, 502, 504, another 503) may have.
pub fn outcome_of(result: &reqwest::Result<Answer>) -> Outcome {
    match result {
        Err(e) if e.is_connect() => Outcome::Refused,
        Err(_) => Outcome::Unknown,
        Ok(a) => outcome_of_status(Some(a.status), a.code(), &a.body),
    }
}

/// [`outcome_of`] from a status (`None`: no answer), an error code and the
/// body of an acknowledgement.
pub fn outcome_of_status(status: Option<u16>, code: &str, body: &Value) -> Outcome {
    match status {
        Some(200..=299) => Outcome::Acked {
            region: body["region"].as_str().unwrap_or("").to_owned(),
            version: serde_json::from_value::<VersionVector>(body["version"].clone())
                .unwrap_or_default(),
        },
        Some(s) if s < 500 => Outcome::Refused,
        Some(503) if code == "no_region_available" => Outcome::Refused,
        _ => Outcome::Unknown,
    }
}

/// A record as a region serves it: 200 is its value and version, 404 is
/// absent; any other answer is why it could not be read.
pub fn final_of(answer: &Answer) -> Result<Final, String> {
    match answer.status {
        200 => Ok(Final {
            value: Some(answer.body["value"].clone()),
            version: serde_json::from_value(answer.body["version"].clone()).ok(),
        }),
        404 => Ok(Final { value: None, version: None }),
        _ => Err(format!("GET answered {answer}")),
    }
}

/// The request that performs `write` on a record (`None`: a read).
pub fn request_of(
    entity: &str,
    id: &str,
    write: Option<&Write>,
) -> (Method, String, Option<Value>) {
    let rec = format!("/v1/records/{entity}/{id}");
    let ops = format!("{rec}/ops");
    match write {
        None => (Method::GET, rec, None),
        Some(Write::Put(v)) => (Method::PUT, rec, Some(json!({ "value": v }))),
        Some(Write::Patch(f)) => (Method::PATCH, rec, Some(json!({ "fields": f }))),
        Some(Write::Incr(by)) => (Method::POST, ops, Some(json!({"op": "incr", "by": by}))),
        Some(Write::Decr(by)) => (Method::POST, ops, Some(json!({"op": "decr", "by": by}))),
        Some(Write::Add(e)) => (Method::POST, ops, Some(json!({"op": "add", "elements": [e]}))),
        Some(Write::Remove(e)) => {
            (Method::POST, ops, Some(json!({"op": "remove", "elements": [e]})))
        }
        Some(Write::Delete) => (Method::DELETE, rec, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(region: &str, n: u64) -> Outcome {
        Outcome::Acked {
            region: region.into(),
            version: [(region.to_string(), n)].into_iter().collect(),
        }
    }

    #[test]
    fn a_lost_increment_is_reported_at_the_region_that_lacks_it() {
        let mut h = History::new();
        let k = Key::new("likes", "l1");
        h.record(k.clone(), Shape::Counter, Write::Incr(2), acked("a", 1));
        h.record(k.clone(), Shape::Counter, Write::Incr(3), acked("a", 2));
        h.record(k.clone(), Shape::Counter, Write::Incr(5), Outcome::Unknown);
        assert_eq!((h.acked(), h.unknown(), h.refused()), (2, 1, 0));
        assert_eq!(h.acked_by("a"), vec![&k]);
        let vv: VersionVector = [("a".to_string(), 2)].into_iter().collect();
        let at = |value: i64| Ok(Final { value: Some(json!(value)), version: Some(vv.clone()) });
        let lost =
            h.check(|_| vec![("x".into(), at(5)), ("y".into(), at(2)), ("z".into(), at(10))]);
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert_eq!(lost[0].region, "y");
        let unreadable = h.check(|_| vec![("x".into(), Err("GET answered 500".into()))]);
        assert_eq!(unreadable.len(), 1);
    }

    #[test]
    fn outcomes_follow_the_answer() {
        let body = json!({"region": "eu-west", "version": {"eu-west": 3}});
        assert_eq!(outcome_of_status(Some(200), "", &body), acked("eu-west", 3));
        assert_eq!(outcome_of_status(Some(409), "wrong_merge_type", &body), Outcome::Refused);
        assert_eq!(outcome_of_status(Some(503), "no_region_available", &body), Outcome::Refused);
        assert_eq!(outcome_of_status(Some(503), "overloaded", &body), Outcome::Unknown);
        assert_eq!(outcome_of_status(Some(502), "", &body), Outcome::Unknown);
        assert_eq!(outcome_of_status(None, "", &body), Outcome::Unknown);
        let (m, path, body) = request_of("tags", "t", Some(&Write::Add("e".into())));
        assert_eq!((m, path.as_str()), (Method::POST, "/v1/records/tags/t/ops"));
        assert_eq!(body, Some(json!({"op": "add", "elements": ["e"]})));
    }
}
