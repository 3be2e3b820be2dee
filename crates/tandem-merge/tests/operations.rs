//! Each type's own operations and accessors, one behaviour at a time: what a
//! delete leaves, which stamp a record shows, what a counter and a set hold,
//! a reused dot, and the names the API and the config use.

use std::collections::BTreeMap;

use tandem_clock::{Hlc, VersionVector};
use tandem_merge::{GCounter, Lww, LwwFields, MergeKind, Op, OrSet, PnCounter, Stamp, State};

fn fields(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned))).collect()
}

#[test]
fn names_round_trip() {
    for kind in MergeKind::ALL {
        assert_eq!(kind.as_str().parse::<MergeKind>().unwrap(), kind);
        assert_eq!(kind.to_string(), kind.as_str());
    }
    assert!("LWW".parse::<MergeKind>().is_err());
    assert!("lww2".parse::<MergeKind>().is_err());
    let deletable: Vec<MergeKind> =
        MergeKind::ALL.into_iter().filter(|k| k.supports_delete()).collect();
    assert_eq!(deletable, [MergeKind::Lww, MergeKind::LwwFields, MergeKind::OrSet]);
    let ops = [
        Op::Put("1".into()),
        Op::Patch(BTreeMap::new()),
        Op::Incr(1),
        Op::Decr(1),
        Op::Add(vec![]),
        Op::Remove(vec![]),
        Op::Delete,
    ];
    let names: Vec<&str> = ops.iter().map(Op::name).collect();
    assert_eq!(names, ["put", "patch", "incr", "decr", "add", "remove", "delete"]);
}

#[test]
fn a_deleted_lww_fields_record_has_no_fields_and_shows_the_deleting_stamp() {
    let mut f = LwwFields::default();
    assert!(f.stamp().is_none());
    f.write(&fields(&[("a", Some("1")), ("b", Some("2"))]), "eu-west", Hlc::new(5, 0));
    assert_eq!(f.stamp().map(|s| s.hlc), Some(Hlc::new(5, 0)));
    f.delete("eu-west", Hlc::new(9, 0));
    assert_eq!(f.live().count(), 0, "{f:?}");
    assert_eq!(f.stamp().map(|s| s.hlc), Some(Hlc::new(9, 0)), "the delete is the newest write");
    // Through the state, as the API does it.
    let mut s = State::new(MergeKind::LwwFields);
    s.apply(&Op::Patch(fields(&[("a", Some("1"))])), "eu-west", Hlc::new(1, 0)).unwrap();
    s.apply(&Op::Delete, "eu-west", Hlc::new(2, 0)).unwrap();
    assert_eq!(s.value(), None);
}

#[test]
fn an_lww_record_built_with_a_version_keeps_it() {
    let vv: VersionVector = [("us-east".to_owned(), 4u64)].into_iter().collect();
    let stamp = Stamp::new(Hlc::new(3, 0), "us-east");
    let l = Lww::with_version(vv.clone(), stamp.clone(), "\"v\"".into());
    assert_eq!(l.register().versions().len(), 1);
    assert_eq!(l.register().versions()[0].vv, vv);
    assert_eq!(l.value(), Some("\"v\""));
    let mut w = Lww::default();
    w.write(Some("1".into()), "eu-west", Hlc::new(1, 0));
    assert_eq!(w.value(), Some("1"));
}

#[test]
fn stamps_join_to_the_greater() {
    let mut s = Stamp::new(Hlc::new(5, 0), "eu-west");
    s.join(&Stamp::new(Hlc::new(4, 9), "us-east"));
    assert_eq!(s, Stamp::new(Hlc::new(5, 0), "eu-west"), "an older stamp changes nothing");
    s.join(&Stamp::new(Hlc::new(5, 0), "us-east"));
    assert_eq!(s.origin, "us-east", "equal clocks: the region name breaks the tie");
    s.join(&Stamp::new(Hlc::new(6, 0), "eu-west"));
    assert_eq!(s.hlc, Hlc::new(6, 0));
    // Counters show the newest increment's stamp.
    let mut c = State::new(MergeKind::GCounter);
    c.apply(&Op::Incr(1), "eu-west", Hlc::new(7, 0)).unwrap();
    c.apply(&Op::Incr(1), "eu-west", Hlc::new(8, 0)).unwrap();
    assert_eq!(c.stamp().hlc, Hlc::new(8, 0));
}

#[test]
fn counters_hold_a_slot_per_region_and_report_every_change() {
    let mut g = GCounter::default();
    g.increment("eu-west", 2).unwrap();
    g.increment("us-east", 3).unwrap();
    let slots: Vec<(&str, u64)> = g.slots().collect();
    assert_eq!(slots, [("eu-west", 2), ("us-east", 3)]);
    // A pn-counter merge that changes only the decrements is a change.
    let mut a = PnCounter::default();
    let mut b = PnCounter::default();
    a.increment("eu-west", 5).unwrap();
    b.increment("eu-west", 5).unwrap();
    b.decrement("eu-west", 2).unwrap();
    assert!(a.merge(&b), "only the decrements differ");
    assert_eq!(a.total(), 3);
    assert!(!a.merge(&b));
}

#[test]
fn a_set_clears_what_it_saw_and_answers_for_its_elements() {
    let mut s = OrSet::default();
    assert!(!s.clear("eu-west"), "clearing an empty set changes nothing");
    s.add(&["x".to_owned(), "y".to_owned()], "eu-west");
    assert!(s.contains("x") && !s.contains("z"));
    assert_eq!((s.len(), s.dot_count()), (2, 2));
    assert!(s.clear("eu-west"));
    assert!(!s.contains("x"));
    assert_eq!((s.len(), s.dot_count()), (0, 0));
    // An add the clearing side had not seen survives the merge (add wins).
    let mut other = OrSet::default();
    other.add(&["z".to_owned()], "us-east");
    let mut merged = s.clone();
    assert!(merged.merge(&other));
    assert!(merged.contains("z"));
    assert!(!merged.merge(&other), "merging it again changes nothing");
}

#[test]
fn a_reused_dot_keeps_the_greater_version_on_both_sides() {
    // Two different writes under one version vector (a region wiped and
    // restarted empty would do this): both sides keep the greater.
    let vv: VersionVector = [("eu-west".to_owned(), 1u64)].into_iter().collect();
    let older =
        Lww::with_version(vv.clone(), Stamp::new(Hlc::new(1, 0), "eu-west"), "\"old\"".into());
    let newer = Lww::with_version(vv, Stamp::new(Hlc::new(2, 0), "eu-west"), "\"new\"".into());
    let mut a = older.clone();
    assert!(a.merge(&newer));
    assert_eq!(a.value(), Some("\"new\""));
    let mut b = newer.clone();
    assert!(!b.merge(&older), "the older one loses either way");
    assert_eq!(a, b);
    let mut same = newer.clone();
    assert!(!same.merge(&newer), "an equal version is no change");
}
