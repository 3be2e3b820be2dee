//! Deltas (`tandem_merge::delta`) against whole states: whatever order deltas
//! and whole states arrive in, a replica that is given again what it could
//! not apply yet ends exactly where whole-state merges end, and a delta it
//! cannot apply yet changes nothing.

use proptest::prelude::*;
use tandem_clock::Hlc;
use tandem_merge::{MergeError, MergeKind, Op, State};

const REGIONS: [&str; 3] = ["eu-central", "eu-west", "us-east"];

#[derive(Debug, Clone)]
enum Step {
    Apply { at: usize, op: Op, wall_ms: u64 },
    Deliver { at: usize, message: usize },
}

fn arb_op(kind: MergeKind) -> BoxedStrategy<Op> {
    let elements = || proptest::collection::vec("[a-h]", 1..4);
    match kind {
        MergeKind::OrSet => prop_oneof![
            4 => elements().prop_map(Op::Add),
            2 => elements().prop_map(Op::Remove),
            1 => Just(Op::Delete),
        ]
        .boxed(),
        _ => prop_oneof![
            4 => proptest::collection::btree_map(
                "[a-h]",
                proptest::option::of((0i64..3).prop_map(|n| n.to_string())),
                1..3,
            )
            .prop_map(Op::Patch),
            1 => Just(Op::Delete),
        ]
        .boxed(),
    }
}

fn arb_history() -> impl Strategy<Value = (MergeKind, usize, Vec<Step>)> {
    prop::sample::select(vec![MergeKind::OrSet, MergeKind::LwwFields]).prop_flat_map(|kind| {
        let step = prop_oneof![
            3 => (0..3usize, arb_op(kind), 0u64..6)
                .prop_map(|(at, op, wall_ms)| Step::Apply { at, op, wall_ms }),
            2 => (0..3usize, any::<usize>()).prop_map(|(at, message)| Step::Deliver { at, message }),
        ];
        (Just(kind), 1..6usize, proptest::collection::vec(step, 0..60))
    })
}

/// Merge `m`; `false` when it is a delta this replica cannot apply yet (and
/// then nothing changed).
fn offer(replica: &mut State, m: &State) -> bool {
    let before = replica.clone();
    match replica.merge(m) {
        Ok(_) => true,
        Err(MergeError::NotYet) => {
            assert_eq!(*replica, before, "a delta not applied changes nothing");
            false
        }
        Err(e) => panic!("{e}"),
    }
}

/// Give `messages` to `replica` in order, again and again, until each was
/// applied; panics if some never can be.
fn deliver_all(replica: &mut State, messages: &[State]) {
    let mut pending: Vec<&State> = messages.iter().collect();
    while !pending.is_empty() {
        let before = pending.len();
        pending.retain(|m| !offer(replica, m));
        assert!(pending.len() < before, "deltas stuck: {pending:?} on {replica:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn deltas_in_any_order_end_where_whole_states_end(
        (kind, members_min, steps) in arb_history(),
        order in any::<u64>(),
    ) {
        // What each change would ship whole, and what it ships.
        let mut replicas = [State::new(kind), State::new(kind), State::new(kind)];
        let mut shipped: Vec<State> = Vec::new();
        let mut deltas = 0usize;
        for step in &steps {
            match step {
                Step::Apply { at, op, wall_ms } => {
                    let r = &mut replicas[*at];
                    let base = r.version();
                    let before = r.clone();
                    if r.apply(op, REGIONS[*at], Hlc::new(*wall_ms, 0)).is_err() || *r == before {
                        continue;
                    }
                    match r.delta_of(&base, op, REGIONS[*at], members_min) {
                        Some(d) => {
                            prop_assert!(d.is_delta());
                            deltas += 1;
                            // A delta applies to the state it was made from.
                            let mut again = before.clone();
                            prop_assert!(offer(&mut again, &d));
                            prop_assert_eq!(&again, &*r);
                            shipped.push(d);
                        }
                        None => shipped.push(r.clone()),
                    }
                }
                // Replicas take deltas too; one they cannot apply yet waits.
                Step::Deliver { at, message } if !shipped.is_empty() => {
                    let m = shipped[message % shipped.len()].clone();
                    offer(&mut replicas[*at], &m);
                }
                Step::Deliver { .. } => {}
            }
        }
        // The oracle: whole-state merges of every replica.
        let mut whole = State::new(kind);
        for r in &replicas {
            whole.merge(r).unwrap();
        }
        // An observer given everything shipped, in a shuffled order.
        let mut shuffled = shipped.clone();
        let mut x = order | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut observer = State::new(kind);
        deliver_all(&mut observer, &shuffled);
        prop_assert_eq!(&observer, &whole);
        // Every replica, given everything, converges to the same.
        for r in &mut replicas {
            deliver_all(r, &shipped);
            prop_assert_eq!(&*r, &whole);
        }
        let _ = deltas;
    }
}

#[test]
fn a_big_set_ships_deltas_and_a_whole_state_at_each_power_of_two() {
    let mut s = State::new(MergeKind::OrSet);
    let mut wholes = Vec::new();
    for i in 0..600u64 {
        let base = s.version();
        let op = Op::Add(vec![format!("member-{i}")]);
        s.apply(&op, "eu-west", Hlc::new(i, 0)).unwrap();
        if s.delta_of(&base, &op, "eu-west", tandem_merge::DELTA_MEMBERS_MIN).is_none() {
            wholes.push(i + 1);
        }
    }
    let small: Vec<u64> = (1..64).collect();
    assert_eq!(wholes[..63], small[..], "below the minimum: whole");
    assert_eq!(wholes[63..], [64, 128, 256, 512], "then once per doubling");
    // A delta is a member's size, not the set's.
    let base = s.version();
    let op = Op::Add(vec!["one-more".into()]);
    s.apply(&op, "eu-west", Hlc::new(700, 0)).unwrap();
    let d = s.delta_of(&base, &op, "eu-west", tandem_merge::DELTA_MEMBERS_MIN).unwrap();
    let (delta_bytes, whole_bytes) =
        (postcard::to_allocvec(&d).unwrap().len(), postcard::to_allocvec(&s).unwrap().len());
    assert!(delta_bytes < 80 && whole_bytes > 10_000, "{delta_bytes} vs {whole_bytes}");
    assert_eq!(postcard::to_allocvec(&d).unwrap()[0], tandem_merge::DELTA_TAGS[0]);
    // A field record: the changed field only.
    let mut f = State::new(MergeKind::LwwFields);
    let three = ["a", "b", "c"].map(|k| (k.to_owned(), Some("1".to_owned())));
    f.apply(&Op::Patch(three.into()), "eu-west", Hlc::new(1, 0)).unwrap();
    let (base, patch) = (f.version(), Op::Patch([("a".to_owned(), None)].into()));
    f.apply(&patch, "eu-west", Hlc::new(2, 0)).unwrap();
    let part = f.delta_of(&base, &patch, "eu-west", 1).expect("a part");
    assert_eq!(part.value_json(), None, "only `a`, now removed");
    assert_eq!(postcard::to_allocvec(&part).unwrap()[0], tandem_merge::DELTA_TAGS[1]);
}

#[test]
fn a_conflict_with_a_delta_shows_the_members_it_touched_not_the_whole_record() {
    let mut a = State::new(MergeKind::OrSet);
    let many: Vec<String> = (0..100).map(|i| format!("m{i:03}")).collect();
    a.apply(&Op::Add(many), "eu-west", Hlc::new(1, 0)).unwrap();
    let mut b = a.clone();
    let (base, op) = (a.version(), Op::Add(vec!["x".into()]));
    a.apply(&op, "eu-west", Hlc::new(2, 0)).unwrap();
    let d = a.delta_of(&base, &op, "eu-west", tandem_merge::DELTA_MEMBERS_MIN).expect("a delta");
    b.apply(&Op::Add(vec!["y".into()]), "us-east", Hlc::new(3, 0)).unwrap();
    let outcome = b.merge(&d).unwrap();
    let c = outcome.conflict.expect("concurrent changes of a set");
    assert_eq!(c.local.value, None, "`x` was not in the local set");
    assert_eq!(c.remote.value.as_deref(), Some(r#"["x"]"#));
    assert_eq!(c.merged.as_deref(), Some(r#"["x"]"#));
    assert!(b.has_member("x") && b.has_member("y") && b.members() == 102);
}
