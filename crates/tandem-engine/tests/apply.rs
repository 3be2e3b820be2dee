//! Remote apply: what a region stores of a peer's batch, under which origin,
//! what it refuses, and how its cursor moves.

mod support;

use support::{patch, put, Region};
use tandem_engine::apply::{ApplyReport, RemoteBatch};
use tandem_engine::{Command, Faults, LogEntry, Outcome, Path, Store};
use tandem_merge::Op;

/// `from`'s log after writing `ops` (one record each).
fn changes(from: &Region) -> Vec<LogEntry> {
    from.log()
}

#[test]
fn a_new_record_is_relayed_under_its_origin() {
    let us = Region::new("us-east");
    us.write("article", "a", put("1")).unwrap();
    let west = Region::new("eu-west");
    let report = west.apply("us-east", Path::Direct, changes(&us), 1);
    assert_eq!((report.changed, report.cursor), (1, 1));
    let e = &west.log()[0];
    assert_eq!((e.origin.as_str(), e.origin_seq), ("us-east", 1), "a pure relay keeps its origin");
    assert_eq!(west.store.cursor("us-east/direct").unwrap().seq, 1);
    // Again: a duplicate changes nothing and logs nothing.
    let again = west.apply("us-east", Path::Direct, changes(&us), 1);
    assert_eq!(again.changed, 0);
    assert_eq!(west.log().len(), 1);
}

#[test]
fn a_merge_that_combines_states_is_logged_as_this_regions_own() {
    let us = Region::new("us-east");
    let west = Region::new("eu-west");
    us.write("likes", "p", Op::Incr(2)).unwrap();
    west.write("likes", "p", Op::Incr(3)).unwrap();
    let report = west.apply("us-east", Path::Direct, changes(&us), 1);
    assert_eq!(report.changed, 1);
    assert!(report.conflicts.is_empty(), "counters never conflict");
    assert_eq!(west.value("likes", "p"), Some(serde_json::json!(5)));
    let last = west.log().pop().unwrap();
    assert_eq!(last.origin, "eu-west", "a combined state is vouched for by the merging region");
    assert_eq!(last.origin_seq, last.seq);
}

#[test]
fn concurrent_writes_are_reported_as_conflicts() {
    let us = Region::new("us-east");
    let west = Region::new("eu-west");
    us.register("alice", "eu-west");
    west.register("alice", "eu-west");
    us.write("article", "a", put("\"us\"")).unwrap();
    west.write("article", "a", put("\"eu\"")).unwrap();
    let us_log: Vec<LogEntry> =
        changes(&us).into_iter().filter(|e| e.entity == "article").collect();
    let report = west.apply("us-east", Path::Direct, us_log, 2);
    assert_eq!(report.conflicts.len(), 1);
    let c = &report.conflicts[0];
    assert_eq!((c.entity.as_str(), c.id.as_str(), c.invariant_violation), ("article", "a", false));
    // A `conflicts = "never"` type: the same, marked as an invariant violation.
    let central = Region::new("eu-central");
    central.register("alice", "eu-west");
    central.write_as("profile", "alice:p", patch("name", "\"c\""), Some("eu-west")).unwrap();
    west.write("profile", "alice:p", patch("name", "\"w\"")).unwrap();
    let from_central: Vec<LogEntry> =
        central.log().into_iter().filter(|e| e.entity == "profile").collect();
    let report = west.apply("eu-central", Path::Direct, from_central, 10);
    assert!(report.conflicts.iter().any(|c| c.invariant_violation));
}

#[test]
fn personal_records_of_another_jurisdiction_are_refused() {
    let west = Region::new("eu-west");
    west.register("alice", "eu-west");
    west.write("credential", "alice:pw", put("\"secret\"")).unwrap();
    let us = Region::new("us-east");
    let report = us.apply("eu-west", Path::Direct, changes(&west), 2);
    assert_eq!(report.refused, vec![("credential".to_owned(), "alice:pw".to_owned())]);
    assert_eq!(report.changed, 1, "the registry entry is stored");
    assert!(us.store.get("credential", "alice:pw").unwrap().is_none());
    assert_eq!(report.cursor, 2, "the cursor passes over what was refused");
    // With the check broken on purpose, it is stored.
    let mut leaky = Region::new("us-east");
    leaky.engine.faults = Faults { skip_residency_when_applying: true, ..Faults::NONE };
    let report = leaky.apply("eu-west", Path::Direct, changes(&west), 2);
    assert!(report.refused.is_empty());
    assert!(leaky.store.get("credential", "alice:pw").unwrap().is_some());
}

#[test]
fn unknown_types_and_other_merge_types_are_skipped() {
    let us = Region::new("us-east");
    us.write("article", "a", put("1")).unwrap();
    let mut entries = changes(&us);
    let mut unknown = entries[0].clone();
    unknown.entity = "nope".into();
    let mut other_kind = entries[0].clone();
    other_kind.entity = "likes".into();
    entries.extend([unknown, other_kind]);
    let west = Region::new("eu-west");
    let report = west.apply("us-east", Path::Direct, entries, 3);
    assert_eq!(report.changed, 1);
    assert_eq!(report.skipped.len(), 2);
    assert!(west.store.get("likes", "a").unwrap().is_none());
}

#[test]
fn cursors_never_go_back_and_paths_are_separate() {
    let west = Region::new("eu-west");
    assert_eq!(west.apply("us-east", Path::Direct, Vec::new(), 9).cursor, 9);
    assert_eq!(west.apply("us-east", Path::Direct, Vec::new(), 4).cursor, 9);
    assert_eq!(west.apply("us-east", Path::Forward, Vec::new(), 2).cursor, 2);
    assert_eq!(west.store.cursor("us-east/direct").unwrap().seq, 9);
    assert_eq!(west.store.cursor("us-east/forward").unwrap().seq, 2);
}

#[test]
fn a_remote_stamp_advances_the_local_clock() {
    let us = Region::new("us-east");
    us.time.advance_ms(60);
    us.write("article", "a", put("1")).unwrap();
    let west = Region::new("eu-west");
    west.apply("us-east", Path::Direct, changes(&us), 1);
    let ack = west.write("article", "a", put("2")).unwrap();
    assert!(ack.hlc > us.log()[0].state.stamp().hlc, "a write after seeing another is later");
}

#[test]
fn a_broken_merge_overwrites_instead_of_merging() {
    let us = Region::new("us-east");
    us.time.advance_ms(100);
    us.write("likes", "p", Op::Incr(2)).unwrap();
    let mut west = Region::new("eu-west");
    west.engine.faults = Faults { merge_overwrites: true, ..Faults::NONE };
    west.write("likes", "p", Op::Incr(3)).unwrap();
    west.apply("us-east", Path::Direct, changes(&us), 1);
    assert_eq!(west.value("likes", "p"), Some(serde_json::json!(2)), "an increment was lost");
}

fn batch(peer: &str, entries: Vec<LogEntry>, continues_from: u64, next_seq: u64) -> Command {
    Command::Apply(RemoteBatch {
        peer: peer.into(),
        path: Path::Direct,
        entries,
        continues_from,
        next_seq,
    })
}

fn report(outcome: &Outcome) -> &ApplyReport {
    match outcome {
        Outcome::Apply(r) => r,
        other => panic!("{other:?}"),
    }
}

#[test]
fn batches_of_one_stream_decided_together_apply_in_order_and_a_gap_applies_nothing() {
    let us = Region::new("us-east");
    for id in ["a", "b", "c"] {
        us.write("article", id, put("1")).unwrap();
    }
    let log = us.log();
    let west = Region::new("eu-west");
    // Handed over before the first is durable: each continues where the last ends.
    let plan = west.run(vec![
        batch("us-east", log[..1].to_vec(), 0, 1),
        batch("us-east", log[1..2].to_vec(), 1, 2),
    ]);
    let cursors: Vec<u64> = plan.outcomes.iter().map(|o| report(o).cursor).collect();
    assert_eq!(cursors, vec![1, 2]);
    assert_eq!(west.store.cursor("us-east/direct").unwrap().seq, 2);
    // A batch that continues from a position the cursor has not reached.
    let plan = west.run(vec![batch("us-east", log[2..].to_vec(), 5, 6)]);
    let r = report(&plan.outcomes[0]);
    assert!(r.gap && r.changed == 0 && r.cursor == 2, "{r:?}");
    assert_eq!(west.value("article", "c"), None, "nothing of it stored");
    assert_eq!(west.store.cursor("us-east/direct").unwrap().seq, 2);
    // From the cursor it applies.
    let plan = west.run(vec![batch("us-east", log[2..].to_vec(), 2, 3)]);
    assert_eq!((report(&plan.outcomes[0]).changed, west.log().len()), (1, 3));
}

#[test]
fn a_batch_behind_one_that_waits_at_a_delta_is_not_applied() {
    let mut us = Region::new("us-east");
    us.engine.delta_members_min = 1;
    for m in ["u", "v", "w", "x", "y"] {
        us.write("tags", "t", Op::Add(vec![m.into()])).unwrap();
    }
    us.write("article", "a", put("1")).unwrap();
    let log = us.log();
    let d = log.iter().position(|e| e.state.is_delta()).expect("an add ships a delta");
    assert!(d > 0);
    let (delta_seq, article_seq) = (log[d].seq, log.last().unwrap().seq);
    let west = Region::new("eu-west");
    // The changes before the delta never came; the article behind it must wait too.
    let plan = west.run(vec![
        batch("us-east", log[d..=d].to_vec(), 0, delta_seq),
        batch("us-east", log[log.len() - 1..].to_vec(), delta_seq, article_seq),
    ]);
    let (first, second) = (report(&plan.outcomes[0]), report(&plan.outcomes[1]));
    assert!(first.waiting && first.cursor == delta_seq - 1, "{first:?}");
    assert!(second.gap && second.changed == 0 && second.cursor == delta_seq - 1, "{second:?}");
    assert_eq!(west.value("article", "a"), None);
    assert_eq!(west.store.cursor("us-east/direct").unwrap().seq, delta_seq - 1);
}
