//! Local writes: what the engine accepts, refuses, stores and logs.

mod support;

use support::{local, patch, put, Region};
use tandem_engine::{Outcome, Refusal, Store};
use tandem_merge::{MergeKind, Op};

#[test]
fn a_write_is_stored_and_logged_as_this_regions_own() {
    let r = Region::new("eu-west");
    let ack = r.write("article", "a1", put("\"hello\"")).unwrap();
    assert_eq!(ack.version.get("eu-west"), 1);
    assert_eq!(ack.put, Some(0));
    assert_eq!(r.value("article", "a1"), Some(serde_json::json!("hello")));
    let log = r.log();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].origin.as_str(), log[0].origin_seq, log[0].seq), ("eu-west", 1, 1));
    assert_eq!(log[0].committed_at_ms, log[0].logged_at_ms);
}

#[test]
fn a_later_command_of_a_batch_sees_the_earlier_ones() {
    let r = Region::new("eu-west");
    let plan =
        r.run(vec![local("likes", "p", Op::Incr(2), None), local("likes", "p", Op::Incr(3), None)]);
    let versions: Vec<u64> = plan
        .outcomes
        .iter()
        .map(|o| match o {
            Outcome::Local(Ok(a)) => a.version.get("eu-west"),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(versions, vec![1, 2]);
    assert_eq!(plan.effects.puts.len(), 2);
    assert_eq!(r.value("likes", "p"), Some(serde_json::json!(5)));
}

#[test]
fn operations_that_do_not_fit_the_type_are_refused() {
    let r = Region::new("eu-west");
    let e = r.write("page_views", "p", Op::Delete).unwrap_err();
    assert_eq!(
        e,
        Refusal::WrongMergeType {
            entity: "page_views".into(),
            kind: MergeKind::GCounter,
            op: "delete"
        }
    );
    assert_eq!(e.status_and_code(), (409, "wrong_merge_type"));
    let e = r.write("subscription_stats", "x", patch("plan", "\"pro\"")).unwrap_err();
    assert_eq!(e.status_and_code(), (403, "read_only_projection"));
    let e = r.write("tags", "t", Op::Add(Vec::new())).unwrap_err();
    assert_eq!(e.status_and_code(), (400, "bad_request"));
    let e = r.write("nope", "x", put("1")).unwrap_err();
    assert_eq!(e.status_and_code(), (400, "bad_request"));
    assert!(r.log().is_empty(), "nothing refused is logged");
}

#[test]
fn residency_and_pinning_against_the_local_registry() {
    let west = Region::new("eu-west");
    let central = Region::new("eu-central");
    let us = Region::new("us-east");
    for r in [&west, &central, &us] {
        r.register("alice", "eu-west");
    }
    assert!(west.write("profile", "alice:main", patch("name", "\"A\"")).is_ok());
    assert!(west.write("profile", "alice", patch("name", "\"A\"")).is_ok(), "her own record");
    let e = central.write("profile", "alice:main", patch("name", "\"B\"")).unwrap_err();
    assert_eq!(e.status_and_code(), (421, "misdirected_write"));
    assert_eq!(e.home_region(), Some("eu-west"));
    assert_eq!(e.residency_reason(), Some("misdirected_write"));
    assert!(central
        .write_as("profile", "alice:main", patch("name", "\"B\""), Some("eu-west"))
        .is_ok());
    let e = central
        .write_as("profile", "alice:main", patch("name", "\"B\""), Some("eu-central"))
        .unwrap_err();
    assert_eq!(e.status_and_code(), (421, "misdirected_write"), "a failover only for the home");
    let e =
        us.write_as("profile", "alice:main", patch("name", "\"C\""), Some("eu-west")).unwrap_err();
    assert_eq!(e.status_and_code(), (403, "residency_violation"));
    assert_eq!(e.residency_reason(), Some("write_outside_jurisdiction"));
    assert!(us.store.get("profile", "alice:main").unwrap().is_none());
    let e = west.write("credential", "bob:pw", put("\"x\"")).unwrap_err();
    assert_eq!(e, Refusal::UnknownSubject { subject: "bob".into() });
    assert_eq!(e.residency_reason(), Some("unknown_subject"));
    // A personal any-region type may be written anywhere in the jurisdiction.
    assert!(central.write("cart", "alice:c", Op::Add(vec!["x".into()])).is_ok());
    // Settings are pinned but not personal: only the home (or a failover).
    assert_eq!(
        us.write("settings", "alice:s", patch("a", "1")).unwrap_err().status_and_code().1,
        "misdirected_write"
    );
    // Not subject to residency at all.
    assert!(us.write("article", "x", put("1")).is_ok());
}

#[test]
fn a_subject_moves_only_inside_its_jurisdiction() {
    let r = Region::new("eu-west");
    r.register("alice", "eu-west");
    let to = |home: &str| put(&serde_json::json!({ "home_region": home }).to_string());
    let e = r.write("_subject", "alice", to("us-east")).unwrap_err();
    assert_eq!(e.status_and_code(), (409, "cross_jurisdiction_move"));
    assert_eq!(e.home_region(), Some("eu-west"));
    assert!(r.write("_subject", "alice", to("eu-central")).is_ok());
    assert_eq!(r.value("_subject", "alice").unwrap()["home_region"], "eu-central");
    // A new subject may be registered anywhere.
    assert!(r.write("_subject", "bob", to("us-east")).is_ok());
}

#[test]
fn removing_what_is_not_there_logs_nothing() {
    let r = Region::new("eu-west");
    let ack = r.write("tags", "t", Op::Remove(vec!["x".into()])).unwrap();
    assert_eq!(ack.put, None);
    let ack = r.write("article", "gone", Op::Delete).unwrap();
    assert!(ack.put.is_some(), "a delete of an lww record writes a tombstone version");
    r.write("tags", "t", Op::Add(vec!["x".into()])).unwrap();
    let before = r.log().len();
    assert!(r.write("tags", "t", Op::Remove(vec!["y".into()])).unwrap().put.is_none());
    assert_eq!(r.log().len(), before);
}

#[test]
fn an_analytics_projection_is_written_in_the_same_batch() {
    let r = Region::new("eu-west");
    r.register("alice", "eu-west");
    let fields = Op::Patch(
        [("plan", "\"pro\""), ("name", "\"Alice MARKER\""), ("country", "\"PT\"")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Some(v.to_owned())))
            .collect(),
    );
    let plan = r.run(vec![support::local("subscription", "alice:s1", fields, None)]);
    assert_eq!(plan.effects.puts.len(), 2, "the source and its projection");
    let p = &plan.effects.puts[1];
    assert_eq!(p.entity, "subscription_stats");
    assert!(!p.id.contains("alice"));
    let v = p.record.state.value().unwrap();
    assert_eq!((v["plan"].as_str(), v["country"].as_str()), (Some("pro"), Some("PT")));
    assert!(v.get("name").is_none() && !v.to_string().contains("MARKER"));
    assert_eq!(p.origin.origin, "eu-west");
    // Deleting the source deletes the projection.
    r.write("subscription", "alice:s1", Op::Delete).unwrap();
    assert_eq!(r.value("subscription_stats", &p.id), None);
    // Without the jurisdiction's key, such writes are refused.
    let mut keyless = Region::new("eu-west");
    keyless.engine.pseudonymizer = None;
    keyless.register("alice", "eu-west");
    let e = keyless.write("subscription", "alice:s2", patch("plan", "\"pro\"")).unwrap_err();
    assert_eq!(e.status_and_code(), (503, "unavailable"));
}

#[test]
fn a_restored_region_writes_under_its_new_actor() {
    let mut r = Region::new("eu-west");
    r.engine.actor = "eu-west+77".into();
    let ack = r.write("likes", "p", Op::Incr(1)).unwrap();
    assert_eq!((ack.version.get("eu-west+77"), ack.version.get("eu-west")), (1, 0));
    assert_eq!(r.log()[0].origin, "eu-west", "the origin is the region");
    assert_eq!(r.log()[0].state.stamp().origin, "eu-west");
}

fn write(entity: &str, id: &str, op: Op) -> tandem_engine::write::LocalWrite {
    tandem_engine::write::LocalWrite::new(entity, id, op)
}

#[test]
fn a_transaction_applies_all_of_its_writes_in_one_plan_or_none() {
    let central = Region::new("eu-central");
    central.register("alice", "eu-west");
    let before = central.log().len();
    // Around the transaction, writes of the same batch: they stand either way.
    let refused = vec![
        write("likes", "t", Op::Incr(1)),
        write("article", "t", put("\"x\"")),
        // alice's pinned record is eu-west's: refused here.
        write("profile", "alice:main", patch("name", "\"B\"")),
        write("likes", "t", Op::Incr(1)),
    ];
    let plan = central.run(vec![
        local("likes", "before", Op::Incr(1), None),
        tandem_engine::Command::Transaction(refused),
        local("likes", "t", Op::Incr(5), None),
    ]);
    match &plan.outcomes[1] {
        Outcome::Transaction(Err(r)) => assert_eq!(r.status_and_code(), (421, "misdirected_write")),
        other => panic!("{other:?}"),
    }
    let ids: Vec<&str> = plan.effects.puts.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["before", "t"], "nothing of the refused transaction is put");
    assert_eq!(
        central.value("likes", "t"),
        Some(serde_json::json!(5)),
        "a later write saw none of it"
    );
    assert_eq!(central.value("article", "t"), None);
    assert_eq!(central.log().len(), before + 2);

    let applied = vec![
        write("likes", "u", Op::Incr(1)),
        write("likes", "u", Op::Incr(2)),
        write("article", "u", put("\"y\"")),
    ];
    let plan = central.run(vec![tandem_engine::Command::Transaction(applied)]);
    match &plan.outcomes[0] {
        Outcome::Transaction(Ok(acks)) => {
            let puts: Vec<Option<usize>> = acks.iter().map(|a| a.put).collect();
            assert_eq!(puts, [Some(0), Some(1), Some(2)], "each write over the ones before it");
            assert_eq!(acks[1].outcome.total, Some(3));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(central.value("likes", "u"), Some(serde_json::json!(3)));
    assert_eq!(central.value("article", "u"), Some(serde_json::json!("y")));
}
