//! Both backends pass the same conformance suite; the redb backend also keeps
//! everything across a reopen, numbers on from where it was, and refuses
//! files it must not read.

use tandem_clock::Hlc;
use tandem_merge::{MergeKind, Op, State};
use tandem_store::{
    conformance, ChangeOrigin, Effects, MemoryStore, Put, RedbStore, Store, StoreError,
    StoredRecord,
};

#[test]
fn memory_store_conforms() {
    conformance::run_all(&mut || Box::new(MemoryStore::new()));
}

#[test]
fn redb_store_conforms() {
    let dirs: std::cell::RefCell<Vec<tempfile::TempDir>> = Default::default();
    conformance::run_all(&mut || {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path(), "eu-west").unwrap();
        dirs.borrow_mut().push(dir);
        Box::new(store)
    });
    let dir = tempfile::tempdir().unwrap();
    conformance::run_reopened(&mut || Box::new(RedbStore::open(dir.path(), "eu-west").unwrap()));
}

#[test]
fn redb_store_refuses_other_regions() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::new(MergeKind::GCounter);
    state.apply(&Op::Incr(5), "eu-west", Hlc::new(1, 0)).unwrap();
    let record = StoredRecord { state, updated_at_ms: 1 };
    {
        let store = RedbStore::open(dir.path(), "eu-west").unwrap();
        let origin = ChangeOrigin {
            origin: "eu-west".into(),
            origin_seq: None,
            committed_at_ms: 1,
            logged_at_ms: 1,
        };
        let put = Put { entity: "page_views".into(), id: "x".into(), record, origin, delta: None };
        store.commit(&Effects { puts: vec![put], ..Effects::default() }).unwrap();
    }
    // Another region's directory is refused rather than silently shared.
    std::fs::create_dir_all(dir.path().join("us-east")).unwrap();
    std::fs::copy(dir.path().join("eu-west/tandem.redb"), dir.path().join("us-east/tandem.redb"))
        .unwrap();
    let err = RedbStore::open(dir.path(), "us-east").err().unwrap();
    assert!(matches!(err, StoreError::WrongRegion { .. }), "{err}");
}

#[test]
fn values_of_another_format_version_are_refused() {
    let mut bytes = tandem_store::encode(&42u64);
    assert_eq!(tandem_store::decode::<u64>("test", &bytes).unwrap(), 42);
    bytes[0] = 2;
    let err = tandem_store::decode::<u64>("test", &bytes).unwrap_err();
    assert!(matches!(err, StoreError::IncompatibleFormat { found: 2, expected: 1 }));
    assert!(tandem_store::decode::<u64>("test", &[]).is_err());
}
