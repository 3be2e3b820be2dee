//! The conformance suite every `Store` backend passes: reads see committed
//! effects (one at a time and batched), every put is in the log in the same
//! commit with numbers from a counter that never goes back, readers never see
//! past the durable sequence, scans are ordered and bounded, cursors persist
//! with their batch, remote changes keep their origin, snapshots restore
//! everything and raise the sequence floor. Backends call [`run_all`] from
//! their tests with a constructor, and durable backends also
//! [`run_reopened`] with one that reopens the same storage.

use std::collections::BTreeMap;

use tandem_clock::Hlc;
use tandem_merge::{MergeKind, Op, State};

use tandem_engine::model::LogHead;
use tandem_engine::{LogPage, Scan};

use crate::{ChangeOrigin, Effects, PeerCursor, Put, Store, StoredRecord};

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

fn put(entity: &str, id: &str, record: &StoredRecord, origin: ChangeOrigin) -> Put {
    Put { entity: entity.into(), id: id.into(), record: record.clone(), origin, delta: None }
}

fn puts(items: Vec<Put>) -> Effects {
    Effects { puts: items, cursors: BTreeMap::new() }
}

fn key(entity: &str, id: &str) -> (String, String) {
    (entity.to_owned(), id.to_owned())
}

/// Run every conformance check against a fresh store from `make`.
pub fn run_all(make: &mut dyn FnMut() -> Box<dyn Store>) {
    commits_are_read_back_and_logged(make().as_ref());
    empty_commits_change_nothing(make().as_ref());
    scans_are_ordered_bounded_and_per_entity(make().as_ref());
    log_is_ordered_and_paged(make().as_ref());
    cursors_persist_with_the_batch(make().as_ref());
    remote_changes_keep_their_origin(make().as_ref());
    snapshots_restore_everything_and_raise_the_floor(make().as_ref(), make().as_ref());
    a_batch_sees_pending_effects_over_the_store(make().as_ref());
    parts_commit_as_their_concatenation(make().as_ref(), make().as_ref());
    compaction_keeps_the_newest_entry_of_each_record_and_origin(make().as_ref());
}

/// Rewrites of the same records from two origins, compacted: the log keeps
/// exactly the newest entry of each (record, origin) whose successor is past
/// the horizon, in order; numbering goes on above the removed entries, and a
/// reader after any position sees what it must.
fn compaction_keeps_the_newest_entry_of_each_record_and_origin(store: &dyn Store) {
    let origin = |o: &str, at_ms| ChangeOrigin {
        origin: o.into(),
        origin_seq: Some(at_ms),
        committed_at_ms: at_ms,
        logged_at_ms: at_ms,
    };
    let mut newest = BTreeMap::new();
    for round in 1..=20u64 {
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            let o = if i == 2 && round % 2 == 0 { "us-east" } else { "eu-west" };
            let rec = record(MergeKind::GCounter, &Op::Incr(round), round);
            let c =
                store.commit(&puts(vec![put("page_views", id, &rec, origin(o, round))])).unwrap();
            newest.insert((id.to_string(), o.to_owned()), c.first_seq);
        }
    }
    // One more write of `a`, newer than the horizon: `a`'s round-20 entry stays too.
    let late = record(MergeKind::GCounter, &Op::Incr(1), 99);
    let late_seq = store.commit(&puts(vec![put("page_views", "a", &late, origin("eu-west", 99))]));
    let late_seq = late_seq.unwrap().first_seq;
    assert_eq!(store.log_entries().unwrap(), 61);

    let done = store.compact_log(20, 2).unwrap();
    assert_eq!(done, crate::Compacted { scanned: 61, removed: 61 - 5, young: 1 });
    let log = store.log_after(0, usize::MAX).unwrap();
    let mut kept: Vec<u64> = newest.values().copied().collect();
    kept.push(late_seq);
    kept.sort_unstable();
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), kept);
    assert_eq!(store.log_entries().unwrap(), 5);
    assert_eq!(store.log_after(kept[1], 10).unwrap()[0].seq, kept[2], "past a gap");
    assert_eq!(store.compact_log(20, 2).unwrap().removed, 0, "a second pass finds nothing");
    let c = store.commit(&puts(vec![put("page_views", "d", &late, origin("eu-west", 100))]));
    assert_eq!(c.unwrap().first_seq, late_seq + 1, "numbers are never reused");
}

/// `commit_all` of several parts is one `commit` of their concatenation:
/// the same records, log and cursors, numbered on from part to part.
fn parts_commit_as_their_concatenation(parts_store: &dyn Store, whole_store: &dyn Store) {
    let (r1, r2) = (
        record(MergeKind::GCounter, &Op::Incr(1), 1),
        record(MergeKind::GCounter, &Op::Incr(2), 2),
    );
    let mut a = puts(vec![put("likes", "x", &r1, local(1)), put("likes", "y", &r1, local(1))]);
    a.cursors.insert("peer:us-east".into(), PeerCursor { seq: 3, ..PeerCursor::default() });
    let empty = Effects::default();
    let mut b = puts(vec![put("likes", "x", &r2, local(2))]);
    b.cursors.insert("peer:us-east".into(), PeerCursor { seq: 8, ..PeerCursor::default() });
    let c = parts_store.commit_all(&[&a, &empty, &b]).unwrap();
    assert_eq!((c.first_seq, c.durable_seq), (1, 3));
    let mut whole = puts(a.puts.iter().chain(&b.puts).cloned().collect());
    whole.cursors = b.cursors.clone();
    whole_store.commit(&whole).unwrap();
    for store in [parts_store, whole_store] {
        assert_eq!(store.get("likes", "x").unwrap(), Some(r2.clone()), "the later part wins");
        assert_eq!(store.get("likes", "y").unwrap(), Some(r1.clone()));
        assert_eq!(store.cursor("peer:us-east").unwrap().seq, 8, "the later cursor wins");
    }
    assert_eq!(parts_store.log_after(0, 10).unwrap(), whole_store.log_after(0, 10).unwrap());
    let next = parts_store.commit_all(&[&empty]).unwrap();
    assert_eq!((next.first_seq, next.durable_seq), (4, 3), "nothing to number, nothing moves");
}

/// What the pipelined writer relies on: a batch decided over batches not yet
/// committed sees their records and cursors on top of the store's, the
/// newest pending one winning, and keeps seeing the same once they commit.
fn a_batch_sees_pending_effects_over_the_store(store: &dyn Store) {
    use std::sync::Arc;
    let (old, mid, new) = (
        record(MergeKind::GCounter, &Op::Incr(1), 1),
        record(MergeKind::GCounter, &Op::Incr(2), 2),
        record(MergeKind::GCounter, &Op::Incr(3), 3),
    );
    store
        .commit(&puts(vec![put("likes", "a", &old, local(1)), put("likes", "b", &old, local(1))]))
        .unwrap();
    let mut first =
        puts(vec![put("likes", "a", &mid, local(2)), put("likes", "c", &mid, local(2))]);
    first.cursors.insert("peer:us-east".into(), PeerCursor { seq: 4, ..PeerCursor::default() });
    let mut second = puts(vec![put("likes", "a", &new, local(3))]);
    second.cursors.insert("peer:us-east".into(), PeerCursor { seq: 9, ..PeerCursor::default() });
    let pending = [Arc::new(first), Arc::new(second)];
    let check = |pending: &[Arc<Effects>]| {
        let keys = vec![key("likes", "a"), key("likes", "b"), key("likes", "c")];
        let mut view = tandem_engine::BatchView::fetch_over(store, pending, keys).unwrap();
        assert_eq!(
            view.get("likes", "a").unwrap(),
            Some(new.clone()),
            "the newest pending put wins"
        );
        assert_eq!(view.get("likes", "b").unwrap(), Some(old.clone()), "untouched: the store's");
        assert_eq!(view.get("likes", "c").unwrap(), Some(mid.clone()), "only pending");
        assert_eq!(view.cursor("peer:us-east").unwrap().seq, 9, "the newest pending cursor");
        // A key not fetched in advance is looked up in the pending ones too.
        let mut late = tandem_engine::BatchView::fetch_over(store, pending, Vec::new()).unwrap();
        assert_eq!(late.get("likes", "c").unwrap(), Some(mid.clone()));
        assert_eq!(late.get("likes", "a").unwrap(), Some(new.clone()));
    };
    check(&pending);
    assert_eq!(store.get("likes", "a").unwrap(), Some(old.clone()), "pending is not stored");
    // Committed in order while still listed as pending: the same view.
    store.commit(&pending[0]).unwrap();
    check(&pending);
    store.commit(&pending[1]).unwrap();
    check(&pending);
    check(&[]);
}

/// For durable backends: `open` opens the same storage each time it is
/// called (after the previous store was dropped).
pub fn run_reopened(open: &mut dyn FnMut() -> Box<dyn Store>) {
    let rec = record(MergeKind::GCounter, &Op::Incr(5), 1);
    {
        let store = open();
        store.commit(&puts(vec![put("page_views", "x", &rec, local(1))])).unwrap();
        store.commit(&puts(vec![put("page_views", "y", &rec, local(1))])).unwrap();
    }
    let store = open();
    assert_eq!(store.get("page_views", "x").unwrap(), Some(rec.clone()));
    assert_eq!(store.durable_seq().unwrap(), 2);
    let c = store.commit(&puts(vec![put("page_views", "z", &rec, local(2))])).unwrap();
    assert_eq!(c.first_seq, 3, "numbering goes on from where it was");
    // A record put twice in one commit, replayed: stored as it is last,
    // both changes logged.
    let newer = record(MergeKind::GCounter, &Op::Incr(6), 3);
    store
        .commit(&puts(vec![
            put("page_views", "w", &rec, local(3)),
            put("page_views", "w", &newer, local(3)),
        ]))
        .unwrap();
    drop(store);
    let store = open();
    assert_eq!(store.get("page_views", "w").unwrap(), Some(newer.clone()));
    let states: Vec<State> = store.log_after(3, 10).unwrap().into_iter().map(|e| e.state).collect();
    assert_eq!(states, vec![rec.state.clone(), newer.state]);
}

fn snapshots_restore_everything_and_raise_the_floor(source: &dyn Store, target: &dyn Store) {
    let rec = record(MergeKind::Lww, &Op::Put("\"v\"".into()), 1);
    let mut effects =
        puts(vec![put("article", "a", &rec, local(1)), put("article", "b", &rec, local(1))]);
    effects
        .cursors
        .insert("us-east/direct".into(), PeerCursor { seq: 7, origins: BTreeMap::new() });
    source.commit(&effects).unwrap();
    let snap = source.snapshot("eu-west").unwrap();
    assert_eq!((snap.last_seq, snap.records.len(), snap.log.len()), (2, 2, 2));
    target.commit(&puts(vec![put("article", "stale", &rec, local(1))])).unwrap();
    assert_eq!(target.own_have().unwrap(), None);
    target.restore(&snap, 1_000).unwrap();
    assert!(target.get("article", "stale").unwrap().is_none(), "restore replaces everything");
    assert_eq!(target.get("article", "a").unwrap(), Some(rec.clone()));
    assert_eq!(target.cursor("us-east/direct").unwrap().seq, 7);
    assert_eq!(target.own_have().unwrap(), Some(2));
    assert_eq!(target.incarnation().unwrap(), Some(1_000));
    assert_eq!(source.incarnation().unwrap(), None);
    let c = target.commit(&puts(vec![put("article", "c", &rec, local(2))])).unwrap();
    assert_eq!(c.first_seq, 1_000, "new changes number above the floor");
    assert_eq!(target.snapshot("eu-west").unwrap().records.len(), 3);
}

fn commits_are_read_back_and_logged(store: &dyn Store) {
    assert_eq!(store.durable_seq().unwrap(), 0);
    assert!(store.get("article", "a").unwrap().is_none());
    let rec = record(MergeKind::Lww, &Op::Put("\"hello\"".into()), 10);
    let c = store
        .commit(&puts(vec![
            put("article", "a", &rec, local(10)),
            put("article", "b", &rec, local(10)),
        ]))
        .unwrap();
    assert_eq!((c.first_seq, c.seq_of(1), c.durable_seq), (1, 2, 2));
    assert_eq!(store.get("article", "a").unwrap(), Some(rec.clone()));
    let many =
        store.get_many(&[key("article", "b"), key("article", "zz"), key("article", "a")]).unwrap();
    assert_eq!(many, vec![Some(rec.clone()), None, Some(rec.clone())], "in the order asked");
    assert_eq!(store.durable_seq().unwrap(), 2);
    let log = store.log_after(0, 10).unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!((log[0].seq, log[0].origin_seq, log[0].id.as_str()), (1, 1, "a"));
    assert_eq!(log[0].state, rec.state);
    assert!(
        log.iter().all(|e| e.seq <= store.durable_seq().unwrap()),
        "never past the durable sequence"
    );
    // Later puts of one batch supersede earlier ones; the log keeps both.
    let newer = record(MergeKind::Lww, &Op::Put("\"again\"".into()), 11);
    store
        .commit(&puts(vec![
            put("article", "a", &rec, local(11)),
            put("article", "a", &newer, local(11)),
        ]))
        .unwrap();
    assert_eq!(store.get("article", "a").unwrap(), Some(newer));
    assert_eq!(store.log_after(2, 10).unwrap().len(), 2);
}

fn empty_commits_change_nothing(store: &dyn Store) {
    let c = store.commit(&Effects::default()).unwrap();
    assert_eq!((c.first_seq, c.durable_seq), (1, 0));
    assert_eq!(store.durable_seq().unwrap(), 0);
    let rec = record(MergeKind::GCounter, &Op::Incr(3), 5);
    store.commit(&puts(vec![put("page_views", "p", &rec, local(5))])).unwrap();
    assert_eq!(store.log_after(0, 10).unwrap()[0].seq, 1, "no hole from the empty commit");
}

fn scans_are_ordered_bounded_and_per_entity(store: &dyn Store) {
    let rec = record(MergeKind::OrSet, &Op::Add(vec!["x".into()]), 1);
    let mut items: Vec<Put> =
        ["c", "a", "b", "d"].iter().map(|id| put("tags", id, &rec, local(1))).collect();
    items.push(put("tagz", "a", &rec, local(1)));
    items.push(put("tag", "z", &rec, local(1)));
    store.commit(&puts(items)).unwrap();
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
        let items = (0..7u64)
            .map(|i| {
                let rec = record(MergeKind::PnCounter, &Op::Incr(1 + i), batch);
                put("likes", &format!("k{i}"), &rec, local(batch))
            })
            .collect();
        store.commit(&puts(items)).unwrap();
    }
    assert_eq!(store.durable_seq().unwrap(), 35);
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
    // Read by head: what is taken comes whole, what is skipped is passed over.
    let all = store.log_after(0, usize::MAX).unwrap();
    let odd = |h: &LogHead<'_>| if h.seq % 2 == 1 { Scan::Take } else { Scan::Skip };
    let page = store.log_page(0, usize::MAX, 5, &mut { odd }).unwrap();
    let taken: Vec<u64> = page.entries.iter().map(|e| e.seq).collect();
    assert_eq!((taken, page.scanned_to), (vec![1, 3, 5, 7, 9], 9), "at most `limit` taken");
    assert_eq!(page.entries[1], all[2], "a taken entry is whole");
    let page = store.log_page(30, 3, 10, &mut { odd }).unwrap();
    assert_eq!((page.entries.len(), page.scanned_to), (2, 33), "at most `scan_max` looked at");
    let mut stop_at_8 = |h: &LogHead<'_>| if h.seq == 8 { Scan::Stop } else { Scan::Take };
    let page = store.log_page(5, 100, 100, &mut stop_at_8).unwrap();
    assert_eq!((page.entries.len(), page.scanned_to), (2, 7), "a stop is not looked past");
    let page = store.log_page(35, 100, 100, &mut { odd }).unwrap();
    assert_eq!(page, LogPage { entries: Vec::new(), scanned_to: 35 }, "nothing after the end");
    let page = store.log_page(0, 100, 100, &mut |_: &LogHead<'_>| Scan::Skip).unwrap();
    assert_eq!((page.entries.len(), page.scanned_to), (0, 35), "all skipped, all seen");
}

fn cursors_persist_with_the_batch(store: &dyn Store) {
    assert_eq!(store.cursor("eu-central").unwrap(), PeerCursor::default());
    let cursor =
        PeerCursor { seq: 42, origins: BTreeMap::from([("eu-central".to_string(), 40u64)]) };
    let mut effects = Effects::default();
    effects.cursors.insert("eu-central".into(), cursor.clone());
    store.commit(&effects).unwrap();
    assert_eq!(store.cursor("eu-central").unwrap(), cursor);
    assert_eq!(store.cursor("us-east").unwrap(), PeerCursor::default());
    assert_eq!(store.durable_seq().unwrap(), 0, "a cursor is not a log entry");
}

fn remote_changes_keep_their_origin(store: &dyn Store) {
    let rec = record(MergeKind::Lww, &Op::Put("1".into()), 3);
    let remote = ChangeOrigin {
        origin: "us-east".into(),
        origin_seq: Some(77),
        committed_at_ms: 2,
        logged_at_ms: 3,
    };
    store.commit(&puts(vec![put("article", "r", &rec, remote)])).unwrap();
    let e = &store.log_after(0, 1).unwrap()[0];
    assert_eq!((e.seq, e.origin.as_str(), e.origin_seq, e.committed_at_ms), (1, "us-east", 77, 2));
    assert_eq!(e.logged_at_ms, 3);
}
