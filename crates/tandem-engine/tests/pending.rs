//! A batch decided over batches that are not durable yet (the pipelined
//! writer) reads their records and cursors on top of the store's: a record
//! fetched in advance and one looked up later both come from the newest
//! pending put of that very key, never from another key's.

use std::collections::BTreeMap;
use std::sync::Arc;

use tandem_clock::Hlc;
use tandem_engine::model::{ChangeOrigin, PeerCursor, StoredRecord};
use tandem_engine::{BatchView, Effects, Put, Store};
use tandem_merge::{MergeKind, Op, State};
use tandem_store::MemoryStore;

fn counter(n: u64) -> StoredRecord {
    let mut state = State::new(MergeKind::PnCounter);
    state.apply(&Op::Incr(n), "eu-west", Hlc::new(1, 0)).expect("an increment");
    StoredRecord { state, updated_at_ms: 1 }
}

fn put(entity: &str, id: &str, n: u64) -> Put {
    let origin = ChangeOrigin {
        origin: "eu-west".into(),
        origin_seq: None,
        committed_at_ms: 1,
        logged_at_ms: 1,
    };
    Put { entity: entity.into(), id: id.into(), record: counter(n), origin, delta: None }
}

fn effects(puts: Vec<Put>, cursor: Option<u64>) -> Arc<Effects> {
    let mut cursors = BTreeMap::new();
    if let Some(seq) = cursor {
        cursors.insert("peer:us-east".to_owned(), PeerCursor { seq, ..PeerCursor::default() });
    }
    Arc::new(Effects { puts, cursors })
}

#[test]
fn late_lookups_find_the_newest_pending_put_of_that_key() {
    let store = MemoryStore::new();
    store
        .commit(&Effects { puts: vec![put("likes", "stored", 1)], cursors: BTreeMap::new() })
        .unwrap();
    let pending = [
        effects(vec![put("likes", "a", 2), put("likes", "b", 3), put("tags", "a", 4)], Some(5)),
        effects(vec![put("likes", "a", 6)], None),
    ];
    // Nothing fetched in advance: every read is a late lookup.
    let mut view = BatchView::fetch_over(&store, &pending, Vec::new()).unwrap();
    assert_eq!(view.get("likes", "a").unwrap(), Some(counter(6)), "the newest of the key");
    assert_eq!(view.get("likes", "b").unwrap(), Some(counter(3)), "not another id's");
    assert_eq!(view.get("tags", "a").unwrap(), Some(counter(4)), "not another entity's");
    assert_eq!(view.get("likes", "stored").unwrap(), Some(counter(1)), "the store's");
    assert_eq!(view.get("likes", "none").unwrap(), None);
    assert_eq!(view.cursor("peer:us-east").unwrap().seq, 5, "an older pending cursor");
    // Fetched in advance: the same answers.
    let keys = ["a", "b", "stored"].map(|id| ("likes".to_owned(), id.to_owned())).to_vec();
    let mut view = BatchView::fetch_over(&store, &pending, keys).unwrap();
    assert_eq!(view.get("likes", "a").unwrap(), Some(counter(6)));
    assert_eq!(view.get("likes", "b").unwrap(), Some(counter(3)));
    assert_eq!(view.get("likes", "stored").unwrap(), Some(counter(1)));
}
