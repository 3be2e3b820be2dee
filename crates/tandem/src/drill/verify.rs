//! Post-drill verification, pure: every acknowledged write of the journal
//! checked against the values read back from every region that may hold its
//! record, and the residency checks over record scans and audit entries.
//!
//! The workload makes the check exact: an `lww` value or `lww-fields` field
//! only grows and has one writer, so a read-back value below an acknowledged
//! one means those writes were lost; counters only grow by 1, so acknowledged
//! increments are a lower bound of the value and acknowledged plus
//! unknown-outcome ones an upper bound; or-set elements are unique, so every
//! acknowledged element must be present. Values that no request ever tried to
//! write are reported as problems too.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::journal::{RequestRecord, WriteOp, WriteOutcome};

/// One record read back from one region.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadResult {
    Value(Value),
    /// 404: the region does not hold the record.
    Missing,
    /// No usable answer, with the reason.
    Unreadable(String),
}

/// `(entity, id)` → region → what was read there.
pub type ReadBack = BTreeMap<(String, String), BTreeMap<String, ReadResult>>;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verification {
    pub attempted: u64,
    pub acknowledged: u64,
    pub rejected: u64,
    pub unknown: u64,
    pub verified: u64,
    pub lost: u64,
    /// Lost writes missing from every region that may hold them (the others
    /// are missing from some regions only: not replicated there in time).
    pub lost_everywhere: u64,
    /// `entity/id` of every record that lost an acknowledged write.
    pub lost_keys: Vec<String>,
    /// What exactly is missing where (for the findings).
    pub lost_details: Vec<String>,
    /// Values nobody wrote, over-counted counters, unreadable records.
    pub problems: Vec<String>,
}

/// The acknowledged writes that `result` does not reflect (indexes into
/// `acked`), and a problem if the value shows something never written.
fn check_one(
    acked: &[&WriteOp],
    unknown: &[&WriteOp],
    result: &ReadResult,
) -> (BTreeSet<usize>, Option<String>) {
    let all: BTreeSet<usize> = (0..acked.len()).collect();
    let value = match result {
        ReadResult::Value(v) => v,
        ReadResult::Missing => {
            return (all, None);
        }
        ReadResult::Unreadable(why) => return (all, Some(format!("unreadable: {why}"))),
    };
    let Some(first) = acked.first().or(unknown.first()) else {
        return (BTreeSet::new(), None);
    };
    match first {
        WriteOp::Set { field, .. } => {
            let read = match field {
                None => value.as_u64(),
                Some(f) => value.get(f).and_then(Value::as_u64),
            };
            let Some(read) = read else {
                return (all, None);
            };
            let lost = acked
                .iter()
                .enumerate()
                .filter(|(_, w)| matches!(w, WriteOp::Set { value, .. } if *value > read))
                .map(|(i, _)| i)
                .collect();
            let written = acked
                .iter()
                .chain(unknown)
                .any(|w| matches!(w, WriteOp::Set { value, .. } if *value == read));
            let problem = (!written).then(|| format!("holds value {read}, which no request wrote"));
            (lost, problem)
        }
        WriteOp::Incr { .. } => {
            let by = |w: &&WriteOp| match w {
                WriteOp::Incr { by } => *by as i64,
                _ => 0,
            };
            let Some(read) = value.as_i64() else {
                return (all, Some(format!("holds {value}, not a counter")));
            };
            let low: i64 = acked.iter().map(by).sum();
            let high = low + unknown.iter().map(by).sum::<i64>();
            let mut lost = BTreeSet::new();
            if read < low {
                // The newest increments are the ones missing (the count is what matters).
                let mut deficit = low - read;
                for (i, w) in acked.iter().enumerate().rev() {
                    if deficit <= 0 {
                        break;
                    }
                    deficit -= by(w);
                    lost.insert(i);
                }
            }
            let problem = (read > high).then(|| {
                format!("counts {read}, more than the {high} increments attempted: over-counted")
            });
            (lost, problem)
        }
        WriteOp::Add { .. } => {
            let present: BTreeSet<&str> = value
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let lost = acked
                .iter()
                .enumerate()
                .filter(|(_, w)| matches!(w, WriteOp::Add { element } if !present.contains(element.as_str())))
                .map(|(i, _)| i)
                .collect();
            let attempted: BTreeSet<&str> = acked
                .iter()
                .chain(unknown)
                .filter_map(|w| match w {
                    WriteOp::Add { element } => Some(element.as_str()),
                    _ => None,
                })
                .collect();
            let strays: Vec<&&str> = present.iter().filter(|e| !attempted.contains(**e)).collect();
            let problem = (!strays.is_empty()).then(|| {
                format!("holds {} element(s) no request added, e.g. {}", strays.len(), strays[0])
            });
            (lost, problem)
        }
    }
}

/// Check every write of `records` against `readback`.
pub fn verify(records: &[RequestRecord], readback: &ReadBack) -> Verification {
    let mut v = Verification::default();
    let mut by_key: BTreeMap<(String, String), Vec<&RequestRecord>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.is_write()) {
        v.attempted += 1;
        match r.write_outcome() {
            WriteOutcome::Acked => v.acknowledged += 1,
            WriteOutcome::Rejected => v.rejected += 1,
            WriteOutcome::Unknown => v.unknown += 1,
        }
        by_key.entry((r.entity.clone(), r.id.clone())).or_default().push(r);
    }
    let empty = BTreeMap::new();
    for ((entity, id), writes) in &by_key {
        let op = |o: WriteOutcome| -> Vec<&WriteOp> {
            writes
                .iter()
                .filter(|r| r.write_outcome() == o)
                .filter_map(|r| r.write.as_ref())
                .collect()
        };
        let acked = op(WriteOutcome::Acked);
        let unknown = op(WriteOutcome::Unknown);
        if acked.is_empty() && unknown.is_empty() {
            continue;
        }
        let reads = readback.get(&(entity.clone(), id.clone())).unwrap_or(&empty);
        let mut lost: BTreeSet<usize> = BTreeSet::new();
        let mut everywhere: BTreeSet<usize> = (0..acked.len()).collect();
        if reads.is_empty() && !acked.is_empty() {
            lost.extend(0..acked.len());
            v.problems.push(format!("{entity}/{id}: not read back anywhere"));
        }
        for (region, result) in reads {
            let (missing, problem) = check_one(&acked, &unknown, result);
            everywhere.retain(|i| missing.contains(i));
            if !missing.is_empty() {
                v.lost_details.push(format!(
                    "{entity}/{id} at {region}: {} of {} acknowledged write(s) missing ({})",
                    missing.len(),
                    acked.len(),
                    describe(result)
                ));
            }
            if let Some(p) = problem {
                v.problems.push(format!("{entity}/{id} at {region}: {p}"));
            }
            lost.extend(missing);
        }
        v.lost += lost.len() as u64;
        v.lost_everywhere += everywhere.len() as u64;
        v.verified += (acked.len() - lost.len()) as u64;
        if !lost.is_empty() {
            v.lost_keys.push(format!("{entity}/{id}"));
        }
    }
    v
}

fn describe(r: &ReadResult) -> String {
    match r {
        ReadResult::Value(v) => {
            let s = v.to_string();
            if s.len() > 80 {
                format!("read {}…", &s[..80])
            } else {
                format!("read {s}")
            }
        }
        ReadResult::Missing => "record not found".into(),
        ReadResult::Unreadable(why) => format!("unreadable: {why}"),
    }
}

/// Personal records held by `region` (of `jurisdiction`) whose subject is
/// not homed in that jurisdiction. `home_jurisdiction` answers for a subject
/// (`None`: not registered, which a personal record cannot be without).
pub fn scan_violations(
    region: &str,
    jurisdiction: &str,
    entity: &str,
    ids: &[String],
    home_jurisdiction: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    ids.iter()
        .filter_map(|id| {
            let Some(subject) = tandem_config::subject_of(id) else {
                return Some(format!("{region} holds personal {entity}/{id} without a subject"));
            };
            match home_jurisdiction(subject) {
                Some(j) if j == jurisdiction => None,
                Some(j) => Some(format!(
                    "{region} ({jurisdiction}) holds {entity}/{id} of subject `{subject}` homed in {j}"
                )),
                None => Some(format!(
                    "{region} ({jurisdiction}) holds {entity}/{id} of unregistered subject `{subject}`"
                )),
            }
        })
        .collect()
}

/// Audit entries of a region (of `jurisdiction`) that show personal data
/// served in clear to a peer of another jurisdiction: a `batch_served` with
/// `personal > 0` not `encrypted`, or counting records of a personal type.
pub fn audit_violations(
    region: &str,
    jurisdiction: &str,
    entries: &[Value],
    personal_entities: &BTreeSet<String>,
) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e["kind"] == "batch_served")
        .filter(|e| e["peer_jurisdiction"].as_str().is_some_and(|j| j != jurisdiction))
        .filter_map(|e| {
            let seq = e["seq"].as_u64().unwrap_or(0);
            let peer = e["peer"].as_str().unwrap_or("?");
            let personal = e["personal"].as_u64().unwrap_or(0);
            let encrypted = e["encrypted"].as_bool().unwrap_or(false);
            let clear: Vec<String> = e["records"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(k, n)| personal_entities.contains(*k) && n.as_u64().unwrap_or(0) > 0)
                        .map(|(k, n)| format!("{n} {k}"))
                        .collect()
                })
                .unwrap_or_default();
            if personal > 0 && !encrypted {
                Some(format!(
                    "{region} audit #{seq}: served {personal} personal record(s) unencrypted to {peer}"
                ))
            } else if !clear.is_empty() {
                Some(format!("{region} audit #{seq}: served {} to {peer}", clear.join(", ")))
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn w(entity: &str, id: &str, status: Option<u16>, op: WriteOp) -> RequestRecord {
        RequestRecord {
            sent_s: 0.0,
            done_s: 0.0,
            entity: entity.into(),
            id: id.into(),
            op: "w".into(),
            caller: "eu-west".into(),
            home: None,
            normal: "eu-west".into(),
            status,
            region: None,
            route: None,
            error: None,
            write: Some(op),
        }
    }

    fn set(v: u64) -> WriteOp {
        WriteOp::Set { field: None, value: v }
    }

    fn rb(entries: &[(&str, &str, &str, ReadResult)]) -> ReadBack {
        let mut out = ReadBack::new();
        for (e, id, region, r) in entries {
            out.entry((e.to_string(), id.to_string()))
                .or_default()
                .insert(region.to_string(), r.clone());
        }
        out
    }

    #[test]
    fn lww_values_only_grow() {
        let records = vec![
            w("article", "a", Some(200), set(1)),
            w("article", "a", Some(200), set(2)),
            w("article", "a", None, set(3)),
            w("article", "a", Some(421), set(4)),
        ];
        // Value 3 came from the unknown-outcome write: fine.
        let v = verify(&records, &rb(&[("article", "a", "r1", ReadResult::Value(json!(3)))]));
        assert_eq!((v.attempted, v.acknowledged, v.unknown, v.rejected), (4, 2, 1, 1));
        assert_eq!((v.verified, v.lost), (2, 0));
        assert!(v.problems.is_empty());
        // One region lags behind the second write: lost there.
        let v = verify(
            &records,
            &rb(&[
                ("article", "a", "r1", ReadResult::Value(json!(2))),
                ("article", "a", "r2", ReadResult::Value(json!(1))),
            ]),
        );
        assert_eq!((v.verified, v.lost, v.lost_everywhere), (1, 1, 0));
        assert_eq!(v.lost_keys, vec!["article/a"]);
        assert!(v.lost_details[0].contains("r2"), "{:?}", v.lost_details);
        // The refused write's value must not appear.
        let v = verify(&records, &rb(&[("article", "a", "r1", ReadResult::Value(json!(4)))]));
        assert_eq!(v.lost, 0);
        assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
        // Missing everywhere: everything lost.
        let v = verify(&records, &rb(&[("article", "a", "r1", ReadResult::Missing)]));
        assert_eq!((v.verified, v.lost, v.lost_everywhere), (0, 2, 2));
    }

    #[test]
    fn fields_are_checked_by_name() {
        let f = |v| WriteOp::Set { field: Some("seq".into()), value: v };
        let records =
            vec![w("profile", "s:p", Some(200), f(1)), w("profile", "s:p", Some(200), f(2))];
        let ok =
            verify(&records, &rb(&[("profile", "s:p", "r", ReadResult::Value(json!({"seq": 2})))]));
        assert_eq!(ok.lost, 0);
        let lost = verify(
            &records,
            &rb(&[("profile", "s:p", "r", ReadResult::Value(json!({"other": 9})))]),
        );
        assert_eq!(lost.lost, 2);
    }

    #[test]
    fn counters_between_bounds() {
        let inc = || WriteOp::Incr { by: 1 };
        let records = vec![
            w("likes", "l", Some(200), inc()),
            w("likes", "l", Some(200), inc()),
            w("likes", "l", Some(200), inc()),
            w("likes", "l", Some(502), inc()),
            w("likes", "l", Some(503), inc()),
        ];
        for read in [3, 4] {
            let v = verify(&records, &rb(&[("likes", "l", "r", ReadResult::Value(json!(read)))]));
            assert_eq!((v.verified, v.lost), (3, 0), "read {read}");
            assert!(v.problems.is_empty());
        }
        let v = verify(&records, &rb(&[("likes", "l", "r", ReadResult::Value(json!(1)))]));
        assert_eq!((v.verified, v.lost), (1, 2));
        let v = verify(&records, &rb(&[("likes", "l", "r", ReadResult::Value(json!(5)))]));
        assert_eq!(v.lost, 0);
        assert!(v.problems[0].contains("over-counted"), "{:?}", v.problems);
    }

    #[test]
    fn set_elements_must_be_present() {
        let add = |e: &str| WriteOp::Add { element: e.into() };
        let records = vec![
            w("cart", "s:c", Some(200), add("e1")),
            w("cart", "s:c", Some(200), add("e2")),
            w("cart", "s:c", None, add("e3")),
        ];
        let v =
            verify(&records, &rb(&[("cart", "s:c", "r", ReadResult::Value(json!(["e1", "e2"])))]));
        assert_eq!((v.verified, v.lost), (2, 0));
        let v = verify(
            &records,
            &rb(&[("cart", "s:c", "r", ReadResult::Value(json!(["e1", "e3", "zz"])))]),
        );
        assert_eq!((v.verified, v.lost), (1, 1));
        assert_eq!(v.lost_keys, vec!["cart/s:c"]);
        assert!(v.problems[0].contains("zz"), "{:?}", v.problems);
        let v = verify(
            &records,
            &rb(&[("cart", "s:c", "r", ReadResult::Unreadable("timeout".into()))]),
        );
        assert_eq!(v.lost, 2);
        assert_eq!(v.problems.len(), 1);
    }

    #[test]
    fn residency_of_scans() {
        let homes = |s: &str| match s {
            "anna" => Some("EU".to_string()),
            "bob" => Some("US".to_string()),
            _ => None,
        };
        let ids = vec![
            "anna:c".to_string(),
            "bob:c".to_string(),
            "zed:c".to_string(),
            "nosubject".to_string(),
        ];
        let v = scan_violations("eu-west", "EU", "cart", &ids, &homes);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v[0].contains("bob") && v[0].contains("US"));
        assert!(scan_violations("eu-west", "EU", "cart", &ids[..1], &homes).is_empty());
    }

    #[test]
    fn residency_of_audit_entries() {
        let personal: BTreeSet<String> = ["cart".to_string()].into();
        let e = |kind: &str, pj: &str, records: Value, personal: u64, encrypted: bool| {
            json!({"seq": 1, "kind": kind, "peer": "us-east", "peer_jurisdiction": pj,
                   "records": records, "personal": personal, "encrypted": encrypted})
        };
        let entries = vec![
            e("batch_served", "EU", json!({"cart": 3}), 3, false),
            e("batch_served", "US", json!({"article": 3}), 0, false),
            e("batch_served", "US", json!({"_sealed": 2}), 2, true),
            e("flow_refused", "US", json!({}), 0, false),
        ];
        assert!(audit_violations("eu-west", "EU", &entries, &personal).is_empty());
        let bad = vec![
            e("batch_served", "US", json!({"cart": 1}), 1, false),
            e("batch_served", "US", json!({"cart": 1, "_sealed": 1}), 2, true),
        ];
        let v = audit_violations("eu-west", "EU", &bad, &personal);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("unencrypted"));
    }
}
