//! A data directory written by the previous layout (redb 2, kept as a fixture
//! made by that version of tandem) is upgraded in place when the store opens
//! it: every record, log entry and cursor is there, numbering goes on after
//! the last entry, the old file is kept, and a crash between the two renames
//! of the upgrade is finished on the next open.

use std::path::{Path, PathBuf};
use std::process::Command;

use tandem_store::upgrade::{upgrade_in_place, DATA_FILE, LAYOUT_1_FILE};
use tandem_store::{Effects, RedbStore, Store};

#[test]
fn a_layout_1_data_file_is_upgraded_in_place_on_open() {
    let dir = unpack();
    let data = dir.path().join("data");
    let store = RedbStore::open(&data, "eu-west").expect("open upgrades the file");
    check_contents(&store);
    assert!(data.join("eu-west").join(LAYOUT_1_FILE).exists(), "the old file is kept");
    let c = store.commit(&Effects::default()).unwrap();
    assert_eq!(c.first_seq, 14, "numbering goes on after the last entry");
    drop(store);
    // Opened again: nothing more to upgrade.
    assert_eq!(upgrade_in_place(&data.join("eu-west"), "eu-west").unwrap(), None);
    check_contents(&RedbStore::open(&data, "eu-west").unwrap());
}

#[test]
fn an_upgrade_interrupted_between_its_renames_is_finished() {
    let dir = unpack();
    let region = dir.path().join("data/eu-west");
    let done = upgrade_in_place(&region, "eu-west").unwrap().expect("an upgrade");
    assert_eq!((done.records, done.log_entries), (9, 13));
    // As if the process died after moving the old file aside.
    std::fs::rename(region.join(DATA_FILE), region.join("tandem.redb.upgrading")).unwrap();
    check_contents(&RedbStore::open(&dir.path().join("data"), "eu-west").unwrap());
}

#[test]
fn a_layout_1_file_of_another_region_is_refused() {
    let dir = unpack();
    let data = dir.path().join("data");
    std::fs::rename(data.join("eu-west"), data.join("us-east")).unwrap();
    let err = RedbStore::open(&data, "us-east").err().expect("refused");
    assert!(matches!(err, tandem_store::StoreError::WrongRegion { .. }), "{err}");
    assert!(data.join("us-east").join(DATA_FILE).exists(), "the file was left as it was");
}

fn check_contents(store: &RedbStore) {
    let value = |e: &str, id: &str| store.get(e, id).unwrap().and_then(|r| r.state.value());
    assert_eq!(
        value("profile", "alice:main"),
        Some(serde_json::json!({"name": "Alice", "email": "alice@example.eu"}))
    );
    assert_eq!(value("article", "kept"), Some(serde_json::json!([1, 2, 3])));
    assert_eq!(value("article", "welcome"), None, "deleted before the upgrade");
    assert_eq!(value("page_views", "home"), Some(serde_json::json!(6)));
    assert_eq!(value("likes", "post1"), Some(serde_json::json!(-1)));
    assert_eq!(value("tags", "t1"), Some(serde_json::json!(["a", "c"])));
    assert_eq!(value("_subject", "alice").unwrap()["home_region"], "eu-west");
    assert_eq!(store.durable_seq().unwrap(), 13);
    assert_eq!(store.log_after(0, 100).unwrap().len(), 13);
    let (mut stored, mut present) = (0, 0);
    store
        .for_each(&mut |_, _, r| {
            stored += 1;
            present += usize::from(r.state.value().is_some());
        })
        .unwrap();
    assert_eq!((stored, present), (9, 8), "the deleted article keeps its state");
}

fn unpack() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(fixture())
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("tar");
    assert!(status.success());
    dir
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-redb2-eu-west.tar.gz")
}
