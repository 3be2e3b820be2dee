//! The redb store on storage that runs out of space or fails a sync: a full
//! disk refuses the write (`Full`), keeps every committed record readable after
//! `recover`, and takes writes again once there is room; a failed sync is
//! `Fatal`. The storage is an in-memory file with a capacity that the test
//! moves, standing in for a small filesystem.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::StorageBackend;
use tandem_clock::Hlc;
use tandem_merge::{MergeKind, Op, State};
use tandem_store::{ChangeOrigin, Effects, Put, RedbStore, Store, StoreError, StoredRecord};

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_recovers_when_space_returns() {
    let disk = Disk::new(1024 * 1024);
    let store = disk.open();
    let mut acked = Vec::new();
    let full = loop {
        let id = format!("r{}", acked.len());
        match put(&store, &id) {
            Ok(()) => acked.push(id),
            Err(e) => break e,
        }
        assert!(acked.len() < 100_000, "the disk never filled");
    };
    assert!(matches!(full, StoreError::Full(_)), "{full:?}");
    assert!(acked.len() > 10, "only {} writes fit", acked.len());

    store.recover().expect("reopen at the last commit");
    for id in &acked {
        assert!(store.get("notes", id).unwrap().is_some(), "{id} was acknowledged");
    }
    // What the failed transaction had taken is free again: fill it up.
    let (refused, again) = loop {
        let id = format!("more{}", acked.len());
        match put(&store, &id) {
            Ok(()) => acked.push(id),
            Err(e) => break (id, e),
        }
        assert!(acked.len() < 100_000, "the disk never filled");
    };
    assert!(matches!(again, StoreError::Full(_)), "{again:?}");
    assert!(matches!(put(&store, "poisoned"), Err(StoreError::Closed)));
    store.recover().unwrap();
    assert!(store.get("notes", &refused).unwrap().is_none(), "a refused write left nothing");
    for id in &acked {
        assert!(store.get("notes", id).unwrap().is_some(), "{id} was acknowledged");
    }

    disk.grow(8 * 1024 * 1024);
    put(&store, "after").expect("writes resume once there is room");
    assert!(store.get("notes", "after").unwrap().is_some());
    assert_eq!(store.log_after(0, usize::MAX).unwrap().len(), acked.len() + 1);
}

#[test]
fn a_failed_sync_is_fatal() {
    let disk = Disk::new(64 * 1024 * 1024);
    let store = disk.open();
    put(&store, "a").unwrap();
    disk.fail_sync.store(true, Ordering::SeqCst);
    let e = put(&store, "b").unwrap_err();
    assert!(matches!(e, StoreError::Fatal(_)), "{e:?}");
}

fn put(store: &RedbStore, id: &str) -> Result<(), StoreError> {
    let mut state = State::new(MergeKind::Lww);
    state.apply(&Op::Put(format!("\"{}\"", "x".repeat(2000))), "eu-west", Hlc::new(1, 0)).unwrap();
    let record = StoredRecord { state, updated_at_ms: 1 };
    let origin = ChangeOrigin {
        origin: "eu-west".into(),
        origin_seq: None,
        committed_at_ms: 1,
        logged_at_ms: 1,
    };
    let put = Put { entity: "notes".into(), id: id.into(), record, origin };
    store.commit(&Effects { puts: vec![put], ..Effects::default() }).map(|_| ())
}

/// An in-memory file whose writes past `capacity` fail with ENOSPC.
#[derive(Debug, Clone)]
struct Disk {
    bytes: Arc<Mutex<Vec<u8>>>,
    capacity: Arc<AtomicU64>,
    fail_sync: Arc<AtomicBool>,
}

impl Disk {
    fn new(capacity: u64) -> Disk {
        Disk {
            bytes: Arc::default(),
            capacity: Arc::new(AtomicU64::new(capacity)),
            fail_sync: Arc::default(),
        }
    }

    fn grow(&self, capacity: u64) {
        self.capacity.store(capacity, Ordering::SeqCst);
    }

    fn open(&self) -> RedbStore {
        let disk = self.clone();
        RedbStore::open_with(
            Box::new(move || Ok(Box::new(disk.clone()) as Box<dyn StorageBackend>)),
            "eu-west",
            "memory".into(),
        )
        .expect("open")
    }
}

impl StorageBackend for Disk {
    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes.lock().unwrap().len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let b = self.bytes.lock().unwrap();
        let start = offset as usize;
        let src = b.get(start..start + out.len()).ok_or(io::ErrorKind::UnexpectedEof)?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        // Sparse, as on tmpfs: growing takes no space until written.
        self.bytes.lock().unwrap().resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if offset + data.len() as u64 > self.capacity.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        let mut b = self.bytes.lock().unwrap();
        let end = offset as usize + data.len();
        if b.len() < end {
            b.resize(end, 0);
        }
        b[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
}
