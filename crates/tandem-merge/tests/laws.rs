//! Property tests for every merge type: the three semilattice laws, convergence
//! of three replicas under random delivery with duplicates, causality over clock
//! skew, and exact conflict reporting.

use std::collections::BTreeMap;

use proptest::prelude::*;
use tandem_clock::{Causality, Hlc};
use tandem_merge::{MergeKind, Op, State};

const REGIONS: [&str; 3] = ["eu-central", "eu-west", "us-east"];

/// One step of a history: replica `at` applies an op, or merges a message (an
/// earlier snapshot of some replica) into itself.
#[derive(Debug, Clone)]
enum Step {
    Apply { at: usize, op: Op, wall_ms: u64 },
    Deliver { at: usize, message: usize },
}

fn arb_json() -> impl Strategy<Value = String> {
    prop_oneof![
        (0i64..4).prop_map(|n| n.to_string()),
        "[a-c]{1,2}".prop_map(|s| format!("\"{s}\"")),
        Just("null".to_string()),
    ]
}

fn arb_op(kind: MergeKind) -> BoxedStrategy<Op> {
    let elements = || proptest::collection::vec("[p-t]", 1..3);
    match kind {
        MergeKind::Lww => prop_oneof![
            4 => arb_json().prop_map(Op::Put),
            1 => Just(Op::Delete),
            1 => arb_json().prop_map(Op::PutKeepExpiry),
            1 => (arb_json(), 0u64..8).prop_map(|(v, at)| Op::PutExpiring(v, at)),
            1 => (0u64..8).prop_map(Op::Expire),
            1 => Just(Op::Persist),
        ]
        .boxed(),
        MergeKind::LwwFields => prop_oneof![
            4 => proptest::collection::btree_map("[xyz]", proptest::option::of(arb_json()), 1..3)
                .prop_map(Op::Patch),
            1 => Just(Op::Delete),
        ]
        .boxed(),
        MergeKind::GCounter => (1u64..5).prop_map(Op::Incr).boxed(),
        MergeKind::PnCounter => {
            prop_oneof![(1u64..5).prop_map(Op::Incr), (1u64..5).prop_map(Op::Decr)].boxed()
        }
        MergeKind::OrSet => prop_oneof![
            3 => elements().prop_map(Op::Add),
            2 => elements().prop_map(Op::Remove),
            1 => Just(Op::Delete),
        ]
        .boxed(),
    }
}

fn arb_steps(kind: MergeKind, len: usize) -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        prop_oneof![
            3 => (0..3usize, arb_op(kind), 0u64..6)
                .prop_map(|(at, op, wall_ms)| Step::Apply { at, op, wall_ms }),
            2 => (0..3usize, any::<usize>()).prop_map(|(at, message)| Step::Deliver { at, message }),
        ],
        0..len,
    )
}

fn arb_kind() -> impl Strategy<Value = MergeKind> {
    prop::sample::select(MergeKind::ALL.to_vec())
}

/// Runs a history. Returns the replicas and every message (snapshot) sent.
fn run(kind: MergeKind, steps: &[Step]) -> ([State; 3], Vec<State>) {
    let mut replicas = [State::new(kind), State::new(kind), State::new(kind)];
    let mut messages: Vec<State> = Vec::new();
    for step in steps {
        match step {
            Step::Apply { at, op, wall_ms } => {
                // Clocks are deliberately coarse and unrelated to causality, so
                // equal HLCs (region tie-break) and skew happen often.
                let hlc = Hlc::new(*wall_ms, 0);
                if replicas[*at].apply(op, REGIONS[*at], hlc).is_ok() {
                    messages.push(replicas[*at].clone());
                }
            }
            Step::Deliver { at, message } => {
                if !messages.is_empty() {
                    let m = messages[message % messages.len()].clone();
                    replicas[*at].merge(&m).expect("same kind");
                }
            }
        }
    }
    (replicas, messages)
}

fn merged(a: &State, b: &State) -> State {
    let mut out = a.clone();
    out.merge(b).expect("same kind");
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn merge_is_commutative_associative_idempotent(
        (kind, steps) in arb_kind().prop_flat_map(|k| (Just(k), arb_steps(k, 40)))
    ) {
        let ([a, b, c], _) = run(kind, &steps);
        prop_assert_eq!(merged(&a, &b), merged(&b, &a), "commutative");
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)), "associative");
        prop_assert_eq!(merged(&a, &a), a.clone(), "idempotent");
        // Merging something already absorbed changes nothing and reports nothing.
        let ab = merged(&a, &b);
        let mut again = ab.clone();
        let outcome = again.merge(&b).unwrap();
        prop_assert!(!outcome.changed && outcome.conflict.is_none());
        prop_assert_eq!(again, ab);
    }

    /// A merge says it changed the state exactly when it did: the node stores
    /// and logs a replicated change only when `changed`, so a `false` for a
    /// change would drop it, and a `true` for none would log an echo.
    #[test]
    fn merge_reports_a_change_exactly_when_the_state_changed(
        (kind, steps) in arb_kind().prop_flat_map(|k| (Just(k), arb_steps(k, 40)))
    ) {
        let ([a, b, c], _) = run(kind, &steps);
        for (x, y) in [(&a, &b), (&b, &c), (&c, &a), (&a, &c)] {
            let mut m = x.clone();
            let outcome = m.merge(y).unwrap();
            prop_assert_eq!(outcome.changed, &m != x, "{:?} into {:?}", y, x);
        }
    }

    #[test]
    fn replicas_converge_under_any_delivery_order_with_duplicates(
        (kind, steps) in arb_kind().prop_flat_map(|k| (Just(k), arb_steps(k, 60))),
        order in proptest::collection::vec(any::<usize>(), 0..200),
    ) {
        let (mut replicas, messages) = run(kind, &steps);
        // Deliver every message to every replica, in a random order per replica,
        // with random duplicates on top.
        for (i, r) in replicas.iter_mut().enumerate() {
            for &k in order.iter().skip(i) {
                if !messages.is_empty() {
                    r.merge(&messages[k % messages.len()]).unwrap();
                }
            }
            for m in messages.iter().rev() {
                r.merge(m).unwrap();
            }
        }
        prop_assert_eq!(&replicas[0], &replicas[1]);
        prop_assert_eq!(&replicas[1], &replicas[2]);
        prop_assert_eq!(replicas[0].value_json(), replicas[2].value_json());
    }

    #[test]
    fn counters_count_every_acknowledged_operation(
        (kind, steps) in prop::sample::select(vec![MergeKind::GCounter, MergeKind::PnCounter])
            .prop_flat_map(|k| (Just(k), arb_steps(k, 60)))
    ) {
        let (replicas, messages) = run(kind, &steps);
        let expected: i64 = steps.iter().map(|s| match s {
            Step::Apply { op: Op::Incr(n), .. } => *n as i64,
            Step::Apply { op: Op::Decr(n), .. } => -(*n as i64),
            _ => 0,
        }).sum();
        let mut all = replicas[0].clone();
        for r in replicas.iter().chain(messages.iter()) {
            all.merge(r).unwrap();
        }
        let value = all.value().map(|v| v.as_i64().unwrap()).unwrap_or(0);
        prop_assert_eq!(value, expected);
    }

    #[test]
    fn conflicts_are_reported_exactly_for_concurrent_different_versions(
        (kind, steps) in arb_kind().prop_flat_map(|k| (Just(k), arb_steps(k, 40))),
        i in 0..3usize, j in 0..3usize,
    ) {
        let (replicas, _) = run(kind, &steps);
        let (a, b) = (&replicas[i], &replicas[j]);
        let mut local = a.clone();
        let outcome = local.merge(b).unwrap();
        let concurrent = a.version().compare(&b.version()) == Causality::Concurrent;
        let different = a.value_json() != b.value_json();
        let counts = !matches!(kind, MergeKind::GCounter | MergeKind::PnCounter);
        prop_assert_eq!(outcome.conflict.is_some(), concurrent && different && counts);
        if let Some(c) = outcome.conflict {
            prop_assert_eq!(c.local.value, a.value_json());
            prop_assert_eq!(c.remote.value, b.value_json());
            prop_assert_eq!(c.merged, local.value_json());
            let pair = (c.conflict_type, c.resolution);
            prop_assert!(tandem_merge::possible_conflicts(kind).contains(&pair), "{:?} on {}", pair, kind);
        }
    }

    #[test]
    fn a_causally_later_write_wins_whatever_the_clock_says(
        first in arb_json(), second in arb_json(), skew_ms in 1u64..20_000,
    ) {
        prop_assume!(first != second);
        for kind in [MergeKind::Lww, MergeKind::LwwFields] {
            let now = 1_000_000;
            let mut ahead = State::new(kind);
            let op = |v: &str| match kind {
                MergeKind::Lww => Op::Put(v.to_owned()),
                _ => Op::Patch(BTreeMap::from([("f".to_owned(), Some(v.to_owned()))])),
            };
            ahead.apply(&op(&first), "us-east", Hlc::new(now, 0)).unwrap();
            // eu-west's clock is `skew_ms` behind, but it writes after seeing us-east's write.
            let mut behind = State::new(kind);
            behind.merge(&ahead).unwrap();
            behind.apply(&op(&second), "eu-west", Hlc::new(now - skew_ms, 0)).unwrap();
            let outcome = ahead.merge(&behind).unwrap();
            prop_assert!(outcome.conflict.is_none(), "causally ordered writes are not a conflict");
            prop_assert_eq!(&ahead, &behind);
            let v = ahead.value().unwrap();
            let got = match kind { MergeKind::Lww => v, _ => v["f"].clone() };
            let want: serde_json::Value = serde_json::from_str(&second).unwrap();
            prop_assert_eq!(got, want);
        }
    }
}

#[test]
fn concurrent_writes_fall_back_to_hlc_then_region_name() {
    let put = |v: &str| Op::Put(v.to_owned());
    let mut eu = State::new(MergeKind::Lww);
    let mut us = State::new(MergeKind::Lww);
    eu.apply(&put("\"eu\""), "eu-west", Hlc::new(100, 0)).unwrap();
    us.apply(&put("\"us\""), "us-east", Hlc::new(200, 0)).unwrap();
    let outcome = eu.merge(&us).unwrap();
    let c = outcome.conflict.expect("concurrent and different");
    assert_eq!(c.conflict_type.as_str(), "concurrent_write");
    assert_eq!(c.resolution.as_str(), "hlc_wins");
    assert_eq!(c.winner.as_str(), "remote");
    assert_eq!(c.older().origin, "eu-west");
    assert_eq!(eu.value_json().as_deref(), Some("\"us\""));

    // Same HLC: the greater region name wins.
    let mut a = State::new(MergeKind::Lww);
    let mut b = State::new(MergeKind::Lww);
    a.apply(&put("1"), "eu-west", Hlc::new(5, 0)).unwrap();
    b.apply(&put("2"), "us-east", Hlc::new(5, 0)).unwrap();
    let c = a.merge(&b).unwrap().conflict.unwrap();
    assert_eq!(c.resolution.as_str(), "region_tiebreak");
    assert_eq!(a.value_json().as_deref(), Some("2"));

    // Concurrent update and delete.
    let mut x = State::new(MergeKind::Lww);
    x.apply(&put("1"), "eu-west", Hlc::new(5, 0)).unwrap();
    let mut y = x.clone();
    x.apply(&Op::Delete, "eu-west", Hlc::new(9, 0)).unwrap();
    y.apply(&put("3"), "us-east", Hlc::new(7, 0)).unwrap();
    let c = y.merge(&x).unwrap().conflict.unwrap();
    assert_eq!(c.conflict_type.as_str(), "update_delete");
    assert_eq!(y.value_json(), None);
}

#[test]
fn concurrent_updates_of_different_fields_both_survive() {
    let patch = |f: &str, v: Option<&str>| {
        Op::Patch(BTreeMap::from([(f.to_owned(), v.map(str::to_owned))]))
    };
    let mut base = State::new(MergeKind::LwwFields);
    base.apply(&patch("name", Some("\"Ada\"")), "eu-west", Hlc::new(1, 0)).unwrap();
    base.apply(&patch("city", Some("\"Paris\"")), "eu-west", Hlc::new(2, 0)).unwrap();
    let mut eu = base.clone();
    let mut us = base.clone();
    eu.apply(&patch("name", Some("\"Ada L.\"")), "eu-west", Hlc::new(10, 0)).unwrap();
    us.apply(&patch("city", None), "us-east", Hlc::new(20, 0)).unwrap();
    let c = eu.merge(&us).unwrap().conflict.expect("concurrent and different");
    assert_eq!(c.conflict_type.as_str(), "concurrent_update");
    assert_eq!(c.resolution.as_str(), "fields_merged");
    assert_eq!(c.winner.as_str(), "merged");
    assert_eq!(eu.value().unwrap(), serde_json::json!({"name": "Ada L."}));

    // The same field written concurrently: per-field LWW, reported with the field.
    let mut a = base.clone();
    let mut b = base.clone();
    a.apply(&patch("name", Some("\"A\"")), "eu-west", Hlc::new(30, 0)).unwrap();
    b.apply(&patch("name", Some("\"B\"")), "us-east", Hlc::new(31, 0)).unwrap();
    let c = a.merge(&b).unwrap().conflict.unwrap();
    assert_eq!(c.conflict_type.as_str(), "concurrent_field_write");
    assert_eq!(c.field.as_deref(), Some("name"));
    assert_eq!(a.value().unwrap()["name"], "B");
}

#[test]
fn or_set_add_wins_over_a_concurrent_remove_and_keeps_no_tombstones() {
    let add = |e: &str| Op::Add(vec![e.to_owned()]);
    let remove = |e: &str| Op::Remove(vec![e.to_owned()]);
    let mut eu = State::new(MergeKind::OrSet);
    eu.apply(&add("x"), "eu-west", Hlc::new(1, 0)).unwrap();
    let mut us = eu.clone();
    eu.apply(&remove("x"), "eu-west", Hlc::new(5, 0)).unwrap();
    us.apply(&add("x"), "us-east", Hlc::new(2, 0)).unwrap();
    let c = eu.merge(&us).unwrap().conflict.unwrap();
    assert_eq!(c.resolution.as_str(), "add_wins");
    assert_eq!(eu.value().unwrap(), serde_json::json!(["x"]));

    // Many adds and removes leave metadata bounded by live elements and regions.
    let mut s = State::new(MergeKind::OrSet);
    for i in 0..1_000u64 {
        let e = format!("e{}", i % 7);
        s.apply(&add(&e), "eu-west", Hlc::new(i, 0)).unwrap();
        s.apply(&remove(&e), "eu-west", Hlc::new(i, 1)).unwrap();
    }
    let State::OrSet { set, .. } = &s else { unreachable!() };
    assert_eq!(set.dot_count(), 0);
    assert_eq!(s.value(), None, "an empty set is absent");
    assert_eq!(set.version().iter().count(), 1);
}

#[test]
fn wrong_operations_are_refused_and_change_nothing() {
    for kind in MergeKind::ALL {
        let mut s = State::new(kind);
        let ops = [
            Op::Put("1".into()),
            Op::Patch(BTreeMap::from([("f".to_owned(), Some("1".to_owned()))])),
            Op::Incr(1),
            Op::Decr(1),
            Op::Add(vec!["a".into()]),
            Op::Remove(vec!["a".into()]),
            Op::Delete,
        ];
        for op in ops {
            let before = s.clone();
            match s.apply(&op, "eu-west", Hlc::new(1, 0)) {
                Ok(()) => assert!(op.allowed_for(kind)),
                Err(e) => {
                    assert!(!op.allowed_for(kind), "{kind} refused {}: {e}", op.name());
                    assert_eq!(s, before);
                }
            }
        }
    }
    let mut c = State::new(MergeKind::GCounter);
    assert!(c.apply(&Op::Incr(0), "eu-west", Hlc::new(1, 0)).is_err());
    c.apply(&Op::Incr(i64::MAX as u64), "eu-west", Hlc::new(1, 0)).unwrap();
    assert!(c.apply(&Op::Incr(1), "eu-west", Hlc::new(1, 0)).is_err());
    let mut other = State::new(MergeKind::PnCounter);
    assert!(c.merge(&other).is_err());
    assert!(other.merge(&c).is_err());
}

#[test]
fn states_round_trip_through_postcard() {
    let mut s = State::new(MergeKind::LwwFields);
    s.apply(
        &Op::Patch(BTreeMap::from([("a".to_owned(), Some("{\"x\":[1,2]}".to_owned()))])),
        "eu-west",
        Hlc::new(7, 1),
    )
    .unwrap();
    let bytes = postcard::to_allocvec(&s).unwrap();
    let back: State = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, s);
}

/// Expiry: a causally later change replaces the deadline; among concurrent
/// ones no expiry beats any deadline, else the latest deadline wins; a SET
/// clears the expiry it has seen, SET KEEPTTL keeps it; an expired record
/// reads as absent.
#[test]
fn concurrent_expiries_converge_to_the_longest_and_persist_beats_them() {
    let mut base = State::new(MergeKind::Lww);
    base.apply(&Op::Put("\"v\"".into()), "eu-west", Hlc::new(1, 0)).unwrap();
    let (mut eu, mut us) = (base.clone(), base.clone());
    eu.apply(&Op::Expire(5_000), "eu-west", Hlc::new(2, 0)).unwrap();
    us.apply(&Op::Expire(9_000), "us-east", Hlc::new(2, 0)).unwrap();
    let (a, b) = (merged(&eu, &us), merged(&us, &eu));
    assert_eq!(a, b);
    assert_eq!(a.expires_at_ms(), Some(9_000), "the longest of concurrent deadlines");
    assert!(a.is_live_at(8_999) && !a.is_live_at(9_000));
    assert_eq!(a.value_json().as_deref(), Some("\"v\""), "expiry leaves the value");
    // A later EXPIRE that saw both replaces them, even with a shorter deadline.
    let mut later = a.clone();
    later.apply(&Op::Expire(3_000), "us-east", Hlc::new(3, 0)).unwrap();
    assert_eq!(merged(&later, &eu).expires_at_ms(), Some(3_000));
    // PERSIST concurrent with any deadline wins.
    let mut p = base.clone();
    p.apply(&Op::Persist, "eu-central", Hlc::new(2, 0)).unwrap();
    assert_eq!(merged(&merged(&a, &p), &eu).expires_at_ms(), None);
    // SET clears the expiry it saw; KEEPTTL keeps it.
    let mut set = a.clone();
    set.apply(&Op::PutKeepExpiry("\"w\"".into()), "eu-west", Hlc::new(4, 0)).unwrap();
    assert_eq!(set.expires_at_ms(), Some(9_000));
    set.apply(&Op::Put("\"x\"".into()), "eu-west", Hlc::new(5, 0)).unwrap();
    assert_eq!(set.expires_at_ms(), None);
    assert!(set.is_live_at(u64::MAX));
    // A write that keeps the expiry, concurrent with it, does not revive
    // the record once the deadline passed.
    let mut keep = base.clone();
    keep.apply(&Op::PutKeepExpiry("\"k\"".into()), "us-east", Hlc::new(3, 0)).unwrap();
    let m = merged(&eu, &keep);
    assert_eq!(m.value_json().as_deref(), Some("\"k\""));
    assert!(!m.is_live_at(5_000), "still expires at eu-west's deadline");
}
