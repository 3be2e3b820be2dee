//! The redb backend: one database file per region, `<data_dir>/<region>/tandem.redb`
//! (layout 2, redb 4; docs/STORAGE.md). Tables: `records` ((entity, id) →
//! record), `log` (seq → entry), `cursors` (key → cursor), `meta` (layout
//! version, owning region, the next sequence number, incarnation, own
//! high-water mark). Every `commit` is one redb write transaction committed
//! with `Durability::Immediate` (fsync), so a returned commit survives
//! `kill -9` and power loss; the node batches many client writes into one
//! commit (group commit). Sequence numbers come from `meta.next_seq`, written
//! in the same transaction, so they are never handed out twice, whatever is
//! later removed from the log.
//!
//! Failed writes: redb refuses everything after an I/O error until the file
//! is reopened. The file sits behind `TrackedBackend`, which notes which call
//! failed: out of space on a write or a resize is `StoreError::Full` (nothing
//! of the transaction is durable; `recover` reopens the file at its last
//! commit), and anything else, a failed sync above all, is `StoreError::Fatal`.

use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, StorageBackend,
    TableDefinition,
};

use crate::backend_error::{backend, OrBackend};
use crate::{
    decode, encode, Committed, Effects, LogEntry, PeerCursor, RecordKey, Snapshot, Store,
    StoreError, StoredRecord, FORMAT_VERSION,
};

pub(crate) const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
pub(crate) const CURSORS: TableDefinition<&str, &[u8]> = TableDefinition::new("cursors");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The layout of the data file (`meta.format_version`): 2 is redb 4 with a
/// persisted `next_seq`; 1 was redb 2 (upgraded on open, see `upgrade`).
pub const LAYOUT_VERSION: u64 = 2;

/// Opens the storage under a database: the region's file, or (in tests) a
/// backend that fails on demand.
pub type BackendFactory = Box<dyn Fn() -> io::Result<Box<dyn StorageBackend>> + Send + Sync>;

/// Which calls of the backend failed since the file was opened.
#[derive(Debug, Default)]
struct Failures {
    no_space: AtomicBool,
    other: AtomicBool,
}

/// Out of space (or of quota): the write can be tried again later.
fn is_no_space(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(122) // EDQUOT
}

#[derive(Debug)]
struct TrackedBackend {
    inner: Box<dyn StorageBackend>,
    failures: Arc<Failures>,
}

impl TrackedBackend {
    fn note<T>(&self, r: io::Result<T>, may_be_space: bool) -> io::Result<T> {
        if let Err(e) = &r {
            if may_be_space && is_no_space(e) {
                self.failures.no_space.store(true, Ordering::SeqCst);
            } else {
                self.failures.other.store(true, Ordering::SeqCst);
            }
        }
        r
    }
}

impl StorageBackend for TrackedBackend {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.note(self.inner.set_len(len), true)
    }

    fn sync_data(&self) -> io::Result<()> {
        // A failed sync is never "just" a full disk: what reached the disk is unknown.
        self.note(self.inner.sync_data(), false)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.note(self.inner.write(offset, data), true)
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

pub struct RedbStore {
    /// `None` after a failed write, until `recover` reopens the file.
    db: RwLock<Option<Database>>,
    failures: RwLock<Arc<Failures>>,
    /// Set when a write failed: redb needs the file reopened.
    poisoned: AtomicBool,
    open_backend: BackendFactory,
    region: String,
    path: PathBuf,
}

impl RedbStore {
    /// Open (or create) the store of `region` under `data_dir`, upgrading a
    /// file of an earlier layout first. Refuses a file of another region or of
    /// a layout this build does not know.
    pub fn open(data_dir: &Path, region: &str) -> Result<RedbStore, StoreError> {
        let dir = data_dir.join(region);
        std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError::Backend(format!("create {}: {e}", dir.display())))?;
        crate::upgrade::upgrade_in_place(&dir, region)?;
        let path = dir.join(crate::upgrade::DATA_FILE);
        let file_path = path.clone();
        let open_backend: BackendFactory = Box::new(move || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&file_path)?;
            let backend = redb::backends::FileBackend::new(file).map_err(io::Error::other)?;
            Ok(Box::new(backend) as Box<dyn StorageBackend>)
        });
        Self::open_with(open_backend, region, path)
    }

    /// Open the store on the storage `open_backend` gives (called again on
    /// every `recover`).
    pub fn open_with(
        open_backend: BackendFactory,
        region: &str,
        path: PathBuf,
    ) -> Result<RedbStore, StoreError> {
        let failures = Arc::new(Failures::default());
        let db = open_database(&open_backend, &failures, region)?;
        Ok(RedbStore {
            db: RwLock::new(Some(db)),
            failures: RwLock::new(failures),
            poisoned: AtomicBool::new(false),
            open_backend,
            region: region.to_owned(),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` on the open database, or answer `Closed`.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let guard = self.db.read().expect("store lock");
        match guard.as_ref() {
            Some(db) => f(db),
            None => Err(StoreError::Closed),
        }
    }

    /// What a failed write was, by what the backend saw.
    fn classify(&self, e: StoreError) -> StoreError {
        let failures = self.failures.read().expect("failures lock").clone();
        if failures.other.load(Ordering::SeqCst) {
            self.poisoned.store(true, Ordering::SeqCst);
            StoreError::Fatal(e.to_string())
        } else if failures.no_space.load(Ordering::SeqCst) {
            self.poisoned.store(true, Ordering::SeqCst);
            StoreError::Full(e.to_string())
        } else {
            e
        }
    }

    /// Number of log entries (for status and tests).
    pub fn log_len(&self) -> Result<u64, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().bk()?;
            txn.open_table(LOG).bk()?.len().bk()
        })
    }
}

/// Open the database and check (or set) its layout version and owner.
fn open_database(
    open_backend: &BackendFactory,
    failures: &Arc<Failures>,
    region: &str,
) -> Result<Database, StoreError> {
    let tracked = TrackedBackend {
        inner: open_backend().map_err(|e| StoreError::Backend(format!("open: {e}")))?,
        failures: failures.clone(),
    };
    let db = redb::Builder::new().create_with_backend(tracked).map_err(|e| match e {
        redb::DatabaseError::UpgradeRequired(v) => StoreError::Backend(format!(
            "the data file is in redb file format {v}, which this build cannot open; start the \
             node on it so that it upgrades the file first (see docs/STORAGE.md)"
        )),
        other => backend(other),
    })?;
    let txn = db.begin_write().bk()?;
    {
        txn.open_table(RECORDS).bk()?;
        txn.open_table(LOG).bk()?;
        txn.open_table(CURSORS).bk()?;
        let mut meta = txn.open_table(META).bk()?;
        match meta_u64(&meta, "format_version")? {
            Some(v) if v != LAYOUT_VERSION => {
                return Err(StoreError::IncompatibleFormat { found: v, expected: LAYOUT_VERSION })
            }
            Some(_) => {}
            None => {
                meta.insert("format_version", LAYOUT_VERSION.to_le_bytes().as_slice()).bk()?;
                meta.insert("next_seq", 1u64.to_le_bytes().as_slice()).bk()?;
            }
        }
        let owner =
            meta.get("region").bk()?.map(|v| String::from_utf8_lossy(v.value()).into_owned());
        match owner {
            Some(r) if r != region => {
                return Err(StoreError::WrongRegion { found: r, expected: region.to_owned() })
            }
            Some(_) => {}
            None => {
                meta.insert("region", region.as_bytes()).bk()?;
            }
        }
    }
    txn.commit().bk()?;
    Ok(db)
}

pub(crate) fn meta_u64<T: ReadableTable<&'static str, &'static [u8]>>(
    t: &T,
    key: &str,
) -> Result<Option<u64>, StoreError> {
    Ok(t.get(key).bk()?.and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes)))
}

fn next_seq<T: ReadableTable<&'static str, &'static [u8]>>(t: &T) -> Result<u64, StoreError> {
    Ok(meta_u64(t, "next_seq")?.expect("layout 2 always has next_seq"))
}

impl Store for RedbStore {
    fn get_many(&self, keys: &[RecordKey]) -> Result<Vec<Option<StoredRecord>>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().bk()?;
            let table = txn.open_table(RECORDS).bk()?;
            keys.iter()
                .map(|(e, id)| match table.get((e.as_str(), id.as_str())).bk()? {
                    Some(v) => Ok(Some(decode("record", v.value())?)),
                    None => Ok(None),
                })
                .collect()
        })
    }

    fn scan(
        &self,
        entity: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StoredRecord)>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().bk()?;
            let table = txn.open_table(RECORDS).bk()?;
            let mut out = Vec::new();
            for item in table.range((entity, after.unwrap_or(""))..).bk()? {
                let (k, v) = item.bk()?;
                let (e, id) = k.value();
                if e != entity || out.len() >= limit {
                    break;
                }
                if after == Some(id) {
                    continue;
                }
                out.push((id.to_owned(), decode("record", v.value())?));
            }
            Ok(out)
        })
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &str, &StoredRecord)) -> Result<(), StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().bk()?;
            let table = txn.open_table(RECORDS).bk()?;
            for item in table.iter().bk()? {
                let (k, v) = item.bk()?;
                let (e, id) = k.value();
                f(e, id, &decode("record", v.value())?);
            }
            Ok(())
        })
    }

    fn log_after(&self, after: u64, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().bk()?;
            let table = txn.open_table(LOG).bk()?;
            let mut out = Vec::new();
            for item in table.range(after.saturating_add(1)..).bk()? {
                if out.len() >= limit {
                    break;
                }
                let (_, v) = item.bk()?;
                out.push(decode("log entry", v.value())?);
            }
            Ok(out)
        })
    }

    fn durable_seq(&self) -> Result<u64, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().bk()?;
            Ok(next_seq(&txn.open_table(META).bk()?)? - 1)
        })
    }

    fn cursor(&self, key: &str) -> Result<PeerCursor, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().bk()?;
            let table = txn.open_table(CURSORS).bk()?;
            match table.get(key).bk()? {
                Some(v) => decode("cursor", v.value()),
                None => Ok(PeerCursor::default()),
            }
        })
    }

    fn commit_all(&self, parts: &[&Effects]) -> Result<Committed, StoreError> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        let result = self.with_db(|db| {
            let mut txn = db.begin_write().bk()?;
            txn.set_durability(Durability::Immediate).bk()?;
            let committed;
            {
                let mut meta = txn.open_table(META).bk()?;
                let first_seq = next_seq(&meta)?;
                let mut records = txn.open_table(RECORDS).bk()?;
                let mut log = txn.open_table(LOG).bk()?;
                let puts = parts.iter().flat_map(|e| e.puts.iter());
                let mut next = first_seq;
                for put in puts {
                    let seq = next;
                    next += 1;
                    records
                        .insert(
                            (put.entity.as_str(), put.id.as_str()),
                            encode(&put.record).as_slice(),
                        )
                        .bk()?;
                    // Encoded from borrowed parts: the state is not cloned.
                    let entry = tandem_engine::model::LogEntryRef::of(seq, put);
                    log.insert(seq, encode(&entry).as_slice()).bk()?;
                }
                meta.insert("next_seq", next.to_le_bytes().as_slice()).bk()?;
                let mut cursors = txn.open_table(CURSORS).bk()?;
                for (k, c) in parts.iter().flat_map(|e| e.cursors.iter()) {
                    cursors.insert(k.as_str(), encode(c).as_slice()).bk()?;
                }
                committed = Committed { first_seq, durable_seq: next - 1 };
            }
            txn.commit().bk()?;
            Ok(committed)
        });
        result.map_err(|e| self.classify(e))
    }

    fn recover(&self) -> Result<(), StoreError> {
        if !self.poisoned.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut guard = self.db.write().expect("store lock");
        // Close the poisoned file first: redb holds a lock on it while open.
        guard.take();
        let failures = Arc::new(Failures::default());
        let db = open_database(&self.open_backend, &failures, &self.region)?;
        *self.failures.write().expect("failures lock") = failures;
        *guard = Some(db);
        self.poisoned.store(false, Ordering::SeqCst);
        tracing::warn!(path = %self.path.display(), "store reopened at its last commit");
        Ok(())
    }

    fn snapshot(&self, region: &str) -> Result<Snapshot, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().bk()?;
            let mut records = Vec::new();
            for item in txn.open_table(RECORDS).bk()?.iter().bk()? {
                let (k, v) = item.bk()?;
                let (e, i) = k.value();
                records.push((e.to_owned(), i.to_owned(), decode("record", v.value())?));
            }
            let mut log = Vec::new();
            for item in txn.open_table(LOG).bk()?.iter().bk()? {
                let (_, v) = item.bk()?;
                log.push(decode::<LogEntry>("log entry", v.value())?);
            }
            let mut cursors = Vec::new();
            for item in txn.open_table(CURSORS).bk()?.iter().bk()? {
                let (k, v) = item.bk()?;
                cursors.push((k.value().to_owned(), decode("cursor", v.value())?));
            }
            let last_seq = next_seq(&txn.open_table(META).bk()?)? - 1;
            Ok(Snapshot {
                region: region.to_owned(),
                format_version: FORMAT_VERSION,
                last_seq,
                records,
                log,
                cursors,
            })
        })
    }

    fn restore(&self, snapshot: &Snapshot, seq_floor: u64) -> Result<(), StoreError> {
        if snapshot.format_version != FORMAT_VERSION {
            return Err(StoreError::IncompatibleFormat {
                found: snapshot.format_version,
                expected: FORMAT_VERSION,
            });
        }
        let result = self.with_db(|db| {
            let mut txn = db.begin_write().bk()?;
            txn.set_durability(Durability::Immediate).bk()?;
            txn.delete_table(RECORDS).bk()?;
            txn.delete_table(LOG).bk()?;
            txn.delete_table(CURSORS).bk()?;
            {
                let mut records = txn.open_table(RECORDS).bk()?;
                for (e, i, r) in &snapshot.records {
                    records.insert((e.as_str(), i.as_str()), encode(r).as_slice()).bk()?;
                }
                let mut log = txn.open_table(LOG).bk()?;
                for e in &snapshot.log {
                    log.insert(e.seq, encode(e).as_slice()).bk()?;
                }
                let mut cursors = txn.open_table(CURSORS).bk()?;
                for (k, c) in &snapshot.cursors {
                    cursors.insert(k.as_str(), encode(c).as_slice()).bk()?;
                }
                let mut meta = txn.open_table(META).bk()?;
                let next = seq_floor.max(snapshot.last_seq + 1);
                meta.insert("next_seq", next.to_le_bytes().as_slice()).bk()?;
                meta.insert("incarnation", seq_floor.to_le_bytes().as_slice()).bk()?;
                meta.insert("own_have", snapshot.last_seq.to_le_bytes().as_slice()).bk()?;
            }
            txn.commit().bk()?;
            Ok(())
        });
        result.map_err(|e| self.classify(e))
    }

    fn incarnation(&self) -> Result<Option<u64>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().bk()?;
            meta_u64(&txn.open_table(META).bk()?, "incarnation")
        })
    }

    fn own_have(&self) -> Result<Option<u64>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().bk()?;
            meta_u64(&txn.open_table(META).bk()?, "own_have")
        })
    }
}
