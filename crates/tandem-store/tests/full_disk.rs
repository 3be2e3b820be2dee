//! The redb store and its write-ahead log on storage that runs out of space,
//! fails a sync or loses power: a full disk refuses the write (`Full`), keeps
//! every committed record readable after `recover`, and takes writes again
//! once there is room; a failed sync is `Fatal`; a crash keeps every batch a
//! commit returned for, whether or not a checkpoint had put it in the data
//! file, and drops a torn tail of the log. The storage is a volume of
//! in-memory files with a capacity that the test moves, standing in for a
//! small filesystem; each file keeps what was synced, which is what a crash
//! leaves.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::StorageBackend;
use tandem_clock::Hlc;
use tandem_merge::{MergeKind, Op, State};
use tandem_store::{
    ChangeOrigin, Effects, PeerCursor, Put, RedbStore, Store, StoreError, StoredRecord,
};

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_recovers_when_space_returns() {
    let disk = Volume::new(1024 * 1024);
    let store = disk.open();
    let mut acked = Vec::new();
    let full = fill(&store, &mut acked, "r");
    assert!(matches!(full.1, StoreError::Full(_)), "{full:?}");
    assert!(acked.len() > 10, "only {} writes fit", acked.len());

    store.recover().expect("reopen at the last commit");
    assert!(store.get("notes", &full.0).unwrap().is_none(), "a refused write left nothing");
    for id in &acked {
        assert!(store.get("notes", id).unwrap().is_some(), "{id} was acknowledged");
    }
    // What the failed transaction had taken is free again: fill it up.
    let (refused, again) = fill(&store, &mut acked, "more");
    assert!(matches!(again, StoreError::Full(_)), "{again:?}");
    let still = put(&store, "still").unwrap_err();
    assert!(matches!(still, StoreError::Full(_) | StoreError::Closed), "{still:?}");
    store.recover().unwrap();
    assert!(store.get("notes", &refused).unwrap().is_none(), "a refused write left nothing");
    for id in &acked {
        assert!(store.get("notes", id).unwrap().is_some(), "{id} was acknowledged");
    }

    disk.grow(8 * 1024 * 1024);
    put(&store, "after").expect("writes resume once there is room");
    assert!(store.get("notes", "after").unwrap().is_some());
    assert_eq!(store.log_after(0, usize::MAX).unwrap().len(), acked.len() + 1);

    // And nothing acknowledged is lost if the power goes now.
    drop(store);
    let store = disk.crash().open();
    for id in acked.iter().chain(["after".to_owned()].iter()) {
        assert!(store.get("notes", id).unwrap().is_some(), "{id} was acknowledged");
    }
}

#[test]
fn a_failed_sync_is_fatal() {
    let disk = Volume::new(64 * 1024 * 1024);
    let store = disk.open();
    put(&store, "a").unwrap();
    disk.fail_sync.store(true, Ordering::SeqCst);
    let e = put(&store, "b").unwrap_err();
    assert!(matches!(e, StoreError::Fatal(_)), "{e:?}");
}

#[test]
fn a_crash_keeps_every_acknowledged_batch_checkpointed_or_not() {
    for checkpoint_bytes in [u64::MAX, 16 * 1024] {
        let disk = Volume::new(256 * 1024 * 1024);
        let store = disk.open();
        store.set_checkpoint_bytes(checkpoint_bytes);
        let mut acked = Vec::new();
        for batch in 0..40 {
            let ids: Vec<String> = (0..5).map(|i| format!("r{batch}-{i}")).collect();
            let cursor = PeerCursor { seq: batch, ..PeerCursor::default() };
            commit(&store, &ids, Some(cursor)).unwrap();
            acked.extend(ids);
        }
        drop(store);
        // Power loss: each file holds what was synced, nothing more.
        let disk = disk.crash();
        let store = disk.open();
        check(&store, &acked, 39);

        // Writes go on after the replay, numbered on; and a second crash
        // right after keeps them too.
        store.set_checkpoint_bytes(checkpoint_bytes);
        commit(&store, &["after".to_owned()], None).unwrap();
        acked.push("after".to_owned());
        drop(store);
        check(&disk.crash().open(), &acked, 39);
    }
}

#[test]
fn a_torn_tail_of_the_log_is_dropped_and_the_log_goes_on() {
    let disk = Volume::new(256 * 1024 * 1024);
    let store = disk.open();
    store.set_checkpoint_bytes(u64::MAX);
    let acked: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    commit(&store, &acked, None).unwrap();
    drop(store);
    let disk = disk.crash();
    // A frame that was being written when the power went: part of it is on
    // disk (synced by the file system, say), the commit never returned.
    disk.tear_last_file(b"\x40\x00\x00\x00garbage-of-a-frame-that-never-finished");
    let store = disk.open();
    check(&store, &acked, 0);
    put(&store, "next").unwrap();
    assert_eq!(store.durable_seq().unwrap(), 11);
    drop(store);
    let store = disk.crash().open();
    assert!(store.get("notes", "next").unwrap().is_some());
    assert_eq!(store.durable_seq().unwrap(), 11);
}

#[test]
fn many_small_commits_of_the_same_records_keep_the_data_file_bounded() {
    // redb frees replaced pages only at a durable commit: with a log that
    // never reaches its checkpoint size, the commit count has to bring one
    // (without it, this volume is full after some 1,500 commits).
    let disk = Volume::new(6 * 1024 * 1024);
    let store = disk.open();
    store.set_checkpoint_bytes(u64::MAX);
    let ids: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    for n in 0..5_000 {
        put(&store, &ids[n % ids.len()]).unwrap_or_else(|e| panic!("commit {n}: {e}"));
        if n % 200 == 199 {
            store.compact_log(u64::MAX, 64).unwrap();
        }
    }
    assert!(store.log_entries().unwrap() <= 300);
    drop(store);
    let store = disk.crash().open();
    assert_eq!(store.durable_seq().unwrap(), 5_000);
    for id in &ids {
        assert!(store.get("notes", id).unwrap().is_some(), "{id}");
    }
}

/// Every id in `acked` is stored and logged once, in order, and the cursor
/// holds its last value.
fn check(store: &RedbStore, acked: &[String], cursor_seq: u64) {
    for id in acked {
        assert!(store.get("notes", id).unwrap().is_some(), "{id} was acknowledged");
    }
    let log = store.log_after(0, usize::MAX).unwrap();
    let ids: Vec<&str> = log.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, acked.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(log.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1), "dense from 1");
    assert_eq!(store.durable_seq().unwrap(), acked.len() as u64);
    assert_eq!(store.cursor("peer:us-east").unwrap().seq, cursor_seq);
}

/// Write `<prefix><n>` records until a write is refused: the refused id and why.
fn fill(store: &RedbStore, acked: &mut Vec<String>, prefix: &str) -> (String, StoreError) {
    loop {
        let id = format!("{prefix}{}", acked.len());
        match put(store, &id) {
            Ok(()) => acked.push(id),
            Err(e) => return (id, e),
        }
        assert!(acked.len() < 100_000, "the disk never filled");
    }
}

fn put(store: &RedbStore, id: &str) -> Result<(), StoreError> {
    commit(store, &[id.to_owned()], None)
}

fn commit(store: &RedbStore, ids: &[String], cursor: Option<PeerCursor>) -> Result<(), StoreError> {
    let mut state = State::new(MergeKind::Lww);
    state.apply(&Op::Put(format!("\"{}\"", "x".repeat(2000))), "eu-west", Hlc::new(1, 0)).unwrap();
    let record = StoredRecord { state, updated_at_ms: 1 };
    let origin = ChangeOrigin {
        origin: "eu-west".into(),
        origin_seq: None,
        committed_at_ms: 1,
        logged_at_ms: 1,
    };
    let puts = ids
        .iter()
        .map(|id| Put {
            entity: "notes".into(),
            id: id.clone(),
            record: record.clone(),
            origin: origin.clone(),
            delta: None,
        })
        .collect();
    let mut effects = Effects { puts, ..Effects::default() };
    if let Some(c) = cursor {
        effects.cursors.insert("peer:us-east".into(), c);
    }
    store.commit(&effects).map(|_| ())
}

/// A small file system: in-memory files that share a capacity. Writes past
/// it fail with ENOSPC; each file keeps its last synced image.
#[derive(Debug, Clone)]
struct Volume {
    files: Arc<Mutex<Vec<FileData>>>,
    capacity: Arc<AtomicU64>,
    fail_sync: Arc<AtomicBool>,
}

#[derive(Debug, Clone, Default)]
struct FileData {
    bytes: Vec<u8>,
    /// Bytes written (a resize past them is sparse, as on tmpfs).
    written: u64,
    synced: Vec<u8>,
}

#[derive(Debug)]
struct File {
    volume: Volume,
    index: usize,
}

impl Volume {
    fn new(capacity: u64) -> Volume {
        Volume {
            files: Arc::new(Mutex::new(vec![FileData::default(), FileData::default()])),
            capacity: Arc::new(AtomicU64::new(capacity)),
            fail_sync: Arc::default(),
        }
    }

    fn grow(&self, capacity: u64) {
        self.capacity.store(capacity, Ordering::SeqCst);
    }

    /// The volume after a power loss: every file as it was last synced.
    fn crash(&self) -> Volume {
        let files = self.files.lock().unwrap();
        let after = files
            .iter()
            .map(|f| FileData {
                bytes: f.synced.clone(),
                written: f.synced.len() as u64,
                synced: f.synced.clone(),
            })
            .collect();
        Volume {
            files: Arc::new(Mutex::new(after)),
            capacity: self.capacity.clone(),
            fail_sync: Arc::default(),
        }
    }

    /// Bytes at the end of the log file that reached the disk.
    fn tear_last_file(&self, tail: &[u8]) {
        let mut files = self.files.lock().unwrap();
        let log = &mut files[1];
        log.bytes.extend_from_slice(tail);
        log.written = log.bytes.len() as u64;
        log.synced.clone_from(&log.bytes);
    }

    fn file(&self, index: usize) -> Box<dyn StorageBackend> {
        Box::new(File { volume: self.clone(), index })
    }

    fn open(&self) -> RedbStore {
        let (data, log) = (self.clone(), self.clone());
        RedbStore::open_with(
            Box::new(move || Ok(data.file(0))),
            Box::new(move || Ok(log.file(1))),
            "eu-west",
            "memory".into(),
        )
        .expect("open")
    }
}

impl StorageBackend for File {
    fn len(&self) -> io::Result<u64> {
        Ok(self.volume.files.lock().unwrap()[self.index].bytes.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let files = self.volume.files.lock().unwrap();
        let start = offset as usize;
        let b = &files[self.index].bytes;
        let src = b.get(start..start + out.len()).ok_or(io::ErrorKind::UnexpectedEof)?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut files = self.volume.files.lock().unwrap();
        let f = &mut files[self.index];
        f.bytes.resize(len as usize, 0);
        f.written = f.written.min(len);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        if self.volume.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        let mut files = self.volume.files.lock().unwrap();
        let f = &mut files[self.index];
        f.synced.clone_from(&f.bytes);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut files = self.volume.files.lock().unwrap();
        let end = offset + data.len() as u64;
        let others: u64 = files
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.index)
            .map(|(_, f)| f.written)
            .sum();
        let f = &mut files[self.index];
        if others + f.written.max(end) > self.volume.capacity.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        if f.bytes.len() < end as usize {
            f.bytes.resize(end as usize, 0);
        }
        f.bytes[offset as usize..end as usize].copy_from_slice(data);
        f.written = f.written.max(end);
        Ok(())
    }
}
