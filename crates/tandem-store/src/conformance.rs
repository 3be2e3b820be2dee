//! The conformance suite every `Store` backend passes: reads see committed
//! writes, a failed batch leaves nothing behind, every change is in the log in
//! the same transaction, scans are ordered and bounded, cursors persist.
//! Backends call [`run_all`] from their tests with a constructor.

use std::collections::BTreeMap;

use tandem_clock::Hlc;
use tandem_merge::{MergeKind, Op, State};

use crate::{ChangeOrigin, PeerCursor, Store, StoreError, StoredRecord};

fn record(kind: MergeKind, op: &Op, hlc_ms: u64) -> StoredRecord {
    let mut state = State::new(kind);
    state.apply(op, "eu-west", Hlc::new(hlc_ms, 0)).expect("valid op");
    StoredRecord { state, updated_at_ms: hlc_ms }
}

fn local(at_ms: u64) -> ChangeOrigin {
    ChangeOrigin {
        origin: "eu-west".into(),
        origin_seq: None,
        committed_at_ms: at_ms,
        logged_at_ms: at_ms,
    }
}

/// Run every conformance check against a fresh store from `make`.
pub fn run_all(make: &mut dyn FnMut() -> Box<dyn Store>) {
    writes_are_read_back_and_logged(make().as_ref());
    failed_batches_leave_nothing(make().as_ref());
    scans_are_ordered_bounded_and_per_entity(make().as_ref());
    log_is_ordered_and_paged(make().as_ref());
    cursors_persist_with_the_batch(make().as_ref());
    remote_changes_keep_their_origin(make().as_ref());
    snapshots_restore_everything_and_raise_the_floor(make().as_ref(), make().as_ref());
}

fn snapshots_restore_everything_and_raise_the_floor(source: &dyn Store, target: &dyn Store) {
    let rec = record(MergeKind::Lww, &Op::Put("\"v\"".into()), 1);
    source
        .write(&mut |txn| {
            txn.put("article", "a", &rec, &local(1))?;
            txn.put("article", "b", &rec, &local(1))?;
            txn.set_cursor("us-east/direct", &PeerCursor { seq: 7, origins: BTreeMap::new() })
        })
        .unwrap();
    let snap = source.snapshot("eu-west").unwrap();
    assert_eq!((snap.last_seq, snap.records.len(), snap.log.len()), (2, 2, 2));
    target.write(&mut |txn| txn.put("article", "stale", &rec, &local(1)).map(|_| ())).unwrap();
    assert_eq!(target.own_have().unwrap(), None);
    target.restore(&snap, 1_000).unwrap();
    assert!(target.get("article", "stale").unwrap().is_none(), "restore replaces everything");
    assert_eq!(target.get("article", "a").unwrap(), Some(rec.clone()));
    assert_eq!(target.cursor("us-east/direct").unwrap().seq, 7);
    assert_eq!(target.own_have().unwrap(), Some(2));
    assert_eq!(target.incarnation().unwrap(), Some(1_000));
    assert_eq!(source.incarnation().unwrap(), None);
    let mut seq = 0;
    target.write(&mut |txn| txn.put("article", "c", &rec, &local(2)).map(|s| seq = s)).unwrap();
    assert_eq!(seq, 1_000, "new changes number above the floor");
    assert_eq!(target.snapshot("eu-west").unwrap().records.len(), 3);
}

fn writes_are_read_back_and_logged(store: &dyn Store) {
    assert_eq!(store.last_seq().unwrap(), 0);
    assert!(store.get("article", "a").unwrap().is_none());
    let rec = record(MergeKind::Lww, &Op::Put("\"hello\"".into()), 10);
    let mut seqs = Vec::new();
    store
        .write(&mut |txn| {
            assert!(txn.get("article", "a")?.is_none());
            seqs.push(txn.put("article", "a", &rec, &local(10))?);
            // A transaction sees its own writes.
            assert_eq!(txn.get("article", "a")?.as_ref(), Some(&rec));
            seqs.push(txn.put("article", "b", &rec, &local(10))?);
            Ok(())
        })
        .unwrap();
    assert_eq!(seqs, vec![1, 2]);
    assert_eq!(store.get("article", "a").unwrap(), Some(rec.clone()));
    assert_eq!(store.last_seq().unwrap(), 2);
    let log = store.log_after(0, 10).unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!((log[0].seq, log[0].origin_seq, log[0].id.as_str()), (1, 1, "a"));
    assert_eq!(log[0].state, rec.state);
}

fn failed_batches_leave_nothing(store: &dyn Store) {
    let rec = record(MergeKind::GCounter, &Op::Incr(3), 5);
    let err = store
        .write(&mut |txn| {
            txn.put("page_views", "p", &rec, &local(5))?;
            txn.set_cursor("us-east", &PeerCursor { seq: 9, origins: BTreeMap::new() })?;
            Err(StoreError::Aborted("test".into()))
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Aborted(_)));
    assert!(store.get("page_views", "p").unwrap().is_none());
    assert_eq!(store.last_seq().unwrap(), 0);
    assert_eq!(store.cursor("us-east").unwrap(), PeerCursor::default());
    // The next successful batch starts the log at 1: no hole from the failed one.
    store.write(&mut |txn| txn.put("page_views", "p", &rec, &local(5)).map(|_| ())).unwrap();
    assert_eq!(store.log_after(0, 10).unwrap()[0].seq, 1);
}

fn scans_are_ordered_bounded_and_per_entity(store: &dyn Store) {
    let rec = record(MergeKind::OrSet, &Op::Add(vec!["x".into()]), 1);
    store
        .write(&mut |txn| {
            for id in ["c", "a", "b", "d"] {
                txn.put("tags", id, &rec, &local(1))?;
            }
            txn.put("tagz", "a", &rec, &local(1))?;
            txn.put("tag", "z", &rec, &local(1))?;
            Ok(())
        })
        .unwrap();
    let ids = |v: Vec<(String, StoredRecord)>| v.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    assert_eq!(ids(store.scan("tags", None, 100).unwrap()), ["a", "b", "c", "d"]);
    assert_eq!(ids(store.scan("tags", Some("b"), 100).unwrap()), ["c", "d"]);
    assert_eq!(ids(store.scan("tags", Some("a"), 2).unwrap()), ["b", "c"]);
    assert_eq!(ids(store.scan("tags", Some("bb"), 100).unwrap()), ["c", "d"]);
    assert!(store.scan("tags", Some("d"), 100).unwrap().is_empty());
    assert!(store.scan("nothing", None, 100).unwrap().is_empty());
    let mut all = Vec::new();
    store.for_each(&mut |e, id, _| all.push(format!("{e}/{id}"))).unwrap();
    assert_eq!(all, ["tag/z", "tags/a", "tags/b", "tags/c", "tags/d", "tagz/a"]);
}

fn log_is_ordered_and_paged(store: &dyn Store) {
    for batch in 0..5u64 {
        store
            .write(&mut |txn| {
                for i in 0..7u64 {
                    let rec = record(MergeKind::PnCounter, &Op::Incr(1 + i), batch);
                    txn.put("likes", &format!("k{i}"), &rec, &local(batch))?;
                }
                Ok(())
            })
            .unwrap();
    }
    assert_eq!(store.last_seq().unwrap(), 35);
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = store.log_after(after, 4).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        after = page.last().unwrap().seq;
        seen.extend(page.into_iter().map(|e| e.seq));
    }
    assert_eq!(seen, (1..=35).collect::<Vec<_>>());
    // The record holds the last change; the log holds every change.
    let last = store.get("likes", "k6").unwrap().unwrap();
    assert_eq!(last.updated_at_ms, 4);
}

fn cursors_persist_with_the_batch(store: &dyn Store) {
    assert_eq!(store.cursor("eu-central").unwrap(), PeerCursor::default());
    let cursor =
        PeerCursor { seq: 42, origins: BTreeMap::from([("eu-central".to_string(), 40u64)]) };
    store
        .write(&mut |txn| {
            txn.set_cursor("eu-central", &cursor)?;
            assert_eq!(txn.cursor("eu-central")?, cursor);
            Ok(())
        })
        .unwrap();
    assert_eq!(store.cursor("eu-central").unwrap(), cursor);
    assert_eq!(store.cursor("us-east").unwrap(), PeerCursor::default());
}

fn remote_changes_keep_their_origin(store: &dyn Store) {
    let rec = record(MergeKind::Lww, &Op::Put("1".into()), 3);
    let remote = ChangeOrigin {
        origin: "us-east".into(),
        origin_seq: Some(77),
        committed_at_ms: 2,
        logged_at_ms: 3,
    };
    store.write(&mut |txn| txn.put("article", "r", &rec, &remote).map(|_| ())).unwrap();
    let e = &store.log_after(0, 1).unwrap()[0];
    assert_eq!((e.seq, e.origin.as_str(), e.origin_seq, e.committed_at_ms), (1, "us-east", 77, 2));
    assert_eq!(e.logged_at_ms, 3);
}
