//! The redb backend: one database file per region, `<data_dir>/<region>/tandem.redb`.
//! Tables: `records` ((entity, id) → record), `log` (seq → entry), `cursors`
//! (peer → cursor), `meta` (format version, region). Every `write` is one redb
//! write transaction committed with `Durability::Immediate` (fsync), so a
//! returned `write` survives `kill -9` and power loss; the node batches many
//! client writes into one transaction (group commit).
//!
//! Failed writes: redb refuses everything after an I/O error until the file
//! is reopened. The file sits behind `TrackedBackend`, which notes which call
//! failed: out of space on a write or a resize is `StoreError::Full` (nothing
//! of the transaction is durable; `recover` reopens the file at its last
//! commit), and anything else, a failed sync above all, is `StoreError::Fatal`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use redb::{
    Database, Durability, ReadableTable, ReadableTableMetadata, StorageBackend, Table,
    TableDefinition,
};

use crate::model::{decode, encode, FORMAT_VERSION};
use crate::{
    ChangeOrigin, LogEntry, PeerCursor, Snapshot, Store, StoreError, StoredRecord, WriteTxn,
};

const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const CURSORS: TableDefinition<&str, &[u8]> = TableDefinition::new("cursors");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

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

    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.inner.read(offset, len)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.note(self.inner.set_len(len), true)
    }

    fn sync_data(&self, eventual: bool) -> io::Result<()> {
        // A failed sync is never "just" a full disk: what reached the disk is unknown.
        self.note(self.inner.sync_data(eventual), false)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.note(self.inner.write(offset, data), true)
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
    /// Open (or create) the store of `region` under `data_dir`. Refuses a file of
    /// another format version or another region.
    pub fn open(data_dir: &Path, region: &str) -> Result<RedbStore, StoreError> {
        let dir = data_dir.join(region);
        std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError::Backend(format!("create {}: {e}", dir.display())))?;
        let path = dir.join("tandem.redb");
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
}

/// Open the database and check (or set) its format version and owner.
fn open_database(
    open_backend: &BackendFactory,
    failures: &Arc<Failures>,
    region: &str,
) -> Result<Database, StoreError> {
    let backend = TrackedBackend {
        inner: open_backend().map_err(|e| StoreError::Backend(format!("open: {e}")))?,
        failures: failures.clone(),
    };
    let db = redb::Builder::new().create_with_backend(backend)?;
    let txn = db.begin_write()?;
    {
        txn.open_table(RECORDS)?;
        txn.open_table(LOG)?;
        txn.open_table(CURSORS)?;
        let mut meta = txn.open_table(META)?;
        let found = meta.get("format_version")?.map(|v| {
            let b = v.value();
            u64::from_le_bytes(b.try_into().unwrap_or([0xff; 8]))
        });
        match found {
            Some(v) if v != FORMAT_VERSION => {
                return Err(StoreError::IncompatibleFormat { found: v, expected: FORMAT_VERSION })
            }
            Some(_) => {}
            None => {
                meta.insert("format_version", FORMAT_VERSION.to_le_bytes().as_slice())?;
            }
        }
        let owner = meta.get("region")?.map(|v| String::from_utf8_lossy(v.value()).into_owned());
        match owner {
            Some(r) if r != region => {
                return Err(StoreError::WrongRegion { found: r, expected: region.to_owned() })
            }
            Some(_) => {}
            None => {
                meta.insert("region", region.as_bytes())?;
            }
        }
    }
    txn.commit()?;
    Ok(db)
}

struct RedbTxn<'t> {
    records: Table<'t, (&'static str, &'static str), &'static [u8]>,
    log: Table<'t, u64, &'static [u8]>,
    cursors: Table<'t, &'static str, &'static [u8]>,
    next_seq: u64,
}

impl WriteTxn for RedbTxn<'_> {
    fn get(&mut self, entity: &str, id: &str) -> Result<Option<StoredRecord>, StoreError> {
        match self.records.get((entity, id))? {
            Some(v) => Ok(Some(decode("record", v.value())?)),
            None => Ok(None),
        }
    }

    fn put(
        &mut self,
        entity: &str,
        id: &str,
        record: &StoredRecord,
        origin: &ChangeOrigin,
    ) -> Result<u64, StoreError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.records.insert((entity, id), encode(record).as_slice())?;
        let entry = LogEntry {
            seq,
            origin: origin.origin.clone(),
            origin_seq: origin.origin_seq.unwrap_or(seq),
            committed_at_ms: origin.committed_at_ms,
            logged_at_ms: origin.logged_at_ms,
            entity: entity.to_owned(),
            id: id.to_owned(),
            state: record.state.clone(),
        };
        self.log.insert(seq, encode(&entry).as_slice())?;
        Ok(seq)
    }

    fn cursor(&mut self, peer: &str) -> Result<PeerCursor, StoreError> {
        match self.cursors.get(peer)? {
            Some(v) => decode("cursor", v.value()),
            None => Ok(PeerCursor::default()),
        }
    }

    fn set_cursor(&mut self, peer: &str, cursor: &PeerCursor) -> Result<(), StoreError> {
        self.cursors.insert(peer, encode(cursor).as_slice())?;
        Ok(())
    }
}

impl Store for RedbStore {
    fn get(&self, entity: &str, id: &str) -> Result<Option<StoredRecord>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(RECORDS)?;
            match table.get((entity, id))? {
                Some(v) => Ok(Some(decode("record", v.value())?)),
                None => Ok(None),
            }
        })
    }

    fn scan(
        &self,
        entity: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StoredRecord)>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(RECORDS)?;
            let mut out = Vec::new();
            for item in table.range((entity, after.unwrap_or(""))..)? {
                let (k, v) = item?;
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
            let txn = db.begin_read()?;
            let table = txn.open_table(RECORDS)?;
            for item in table.iter()? {
                let (k, v) = item?;
                let (e, id) = k.value();
                f(e, id, &decode("record", v.value())?);
            }
            Ok(())
        })
    }

    fn log_after(&self, after: u64, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(LOG)?;
            let mut out = Vec::new();
            for item in table.range(after.saturating_add(1)..)? {
                if out.len() >= limit {
                    break;
                }
                let (_, v) = item?;
                out.push(decode("log entry", v.value())?);
            }
            Ok(out)
        })
    }

    fn last_seq(&self) -> Result<u64, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(LOG)?;
            let last = table.last()?.map(|(k, _)| k.value()).unwrap_or(0);
            Ok(last)
        })
    }

    fn cursor(&self, peer: &str) -> Result<PeerCursor, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(CURSORS)?;
            match table.get(peer)? {
                Some(v) => decode("cursor", v.value()),
                None => Ok(PeerCursor::default()),
            }
        })
    }

    fn snapshot(&self, region: &str) -> Result<Snapshot, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let mut records = Vec::new();
            for item in txn.open_table(RECORDS)?.iter()? {
                let (k, v) = item?;
                let (e, i) = k.value();
                records.push((e.to_owned(), i.to_owned(), decode("record", v.value())?));
            }
            let mut log = Vec::new();
            for item in txn.open_table(LOG)?.iter()? {
                let (_, v) = item?;
                log.push(decode::<LogEntry>("log entry", v.value())?);
            }
            let mut cursors = Vec::new();
            for item in txn.open_table(CURSORS)?.iter()? {
                let (k, v) = item?;
                cursors.push((k.value().to_owned(), decode("cursor", v.value())?));
            }
            Ok(Snapshot {
                region: region.to_owned(),
                format_version: FORMAT_VERSION,
                last_seq: log.last().map(|e| e.seq).unwrap_or(0),
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
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate);
            txn.delete_table(RECORDS)?;
            txn.delete_table(LOG)?;
            txn.delete_table(CURSORS)?;
            {
                let mut records = txn.open_table(RECORDS)?;
                for (e, i, r) in &snapshot.records {
                    records.insert((e.as_str(), i.as_str()), encode(r).as_slice())?;
                }
                let mut log = txn.open_table(LOG)?;
                for e in &snapshot.log {
                    log.insert(e.seq, encode(e).as_slice())?;
                }
                let mut cursors = txn.open_table(CURSORS)?;
                for (k, c) in &snapshot.cursors {
                    cursors.insert(k.as_str(), encode(c).as_slice())?;
                }
                let mut meta = txn.open_table(META)?;
                meta.insert("seq_floor", seq_floor.to_le_bytes().as_slice())?;
                meta.insert("own_have", snapshot.last_seq.to_le_bytes().as_slice())?;
            }
            txn.commit()?;
            Ok(())
        });
        result.map_err(|e| self.classify(e))
    }

    fn incarnation(&self) -> Result<Option<u64>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read()?;
            meta_u64(&txn.open_table(META)?, "seq_floor")
        })
    }

    fn own_have(&self) -> Result<Option<u64>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read()?;
            meta_u64(&txn.open_table(META)?, "own_have")
        })
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

    fn write(
        &self,
        f: &mut dyn FnMut(&mut dyn WriteTxn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        let result = self.with_db(|db| {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate);
            {
                let log = txn.open_table(LOG)?;
                let floor = meta_u64(&txn.open_table(META)?, "seq_floor")?.unwrap_or(0);
                let next_seq = (log.last()?.map(|(k, _)| k.value()).unwrap_or(0) + 1).max(floor);
                let mut t = RedbTxn {
                    records: txn.open_table(RECORDS)?,
                    log,
                    cursors: txn.open_table(CURSORS)?,
                    next_seq,
                };
                if let Err(e) = f(&mut t) {
                    drop(t);
                    txn.abort()?;
                    return Err(e);
                }
            }
            txn.commit()?;
            Ok(())
        });
        result.map_err(|e| self.classify(e))
    }
}

fn meta_u64<T: ReadableTable<&'static str, &'static [u8]>>(
    t: &T,
    key: &str,
) -> Result<Option<u64>, StoreError> {
    Ok(t.get(key)?.and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes)))
}

impl RedbStore {
    /// Number of log entries (for status and tests).
    pub fn log_len(&self) -> Result<u64, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read()?;
            Ok(txn.open_table(LOG)?.len()?)
        })
    }
}
