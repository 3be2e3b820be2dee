//! The redb backend: one database file per region, `<data_dir>/<region>/tandem.redb`,
//! behind a write-ahead log, `tandem.wal` beside it (layout 3, redb 4;
//! docs/STORAGE.md). Tables: `records` ((entity, id) → record), `log` (seq →
//! entry), `cursors` (key → cursor), `meta` (layout version, owning region,
//! the next sequence number, the log's epoch, incarnation, own high-water
//! mark).
//!
//! A `commit` encodes the batch once into a log frame, appends it and
//! fdatasyncs the log (durable: it survives `kill -9` and power loss), then
//! applies the same bytes to redb with `Durability::None` (visible, not
//! synced). Once the log passes `checkpoint_bytes`, a durable redb commit
//! moves `meta.wal_epoch` on and the log starts again (`wal`). Opening the
//! store replays the log's frames, and the log goes on. The node batches many
//! client writes into one commit (group commit). Sequence numbers come from
//! `meta.next_seq`, written with every batch, so they are never handed out
//! twice, whatever is later removed from the log.
//!
//! Failed writes: out of space while appending to the log takes the frame
//! back and, when the log holds frames, checkpoints to free it and tries once
//! more; still no room is `StoreError::Full`, nothing applied. redb refuses
//! everything after an I/O error until the file is reopened: the file sits
//! behind `TrackedBackend`, which notes which call failed; out of space on a
//! write or a resize is `StoreError::Full` (the frame is taken back out of the
//! log; `recover` reopens the file and replays the log, which needs no room),
//! and anything else, a failed sync above all, is `StoreError::Fatal`.
//!
//! Here: the store, its commits, reads, snapshot and restore. `backend`: the
//! storage under the files and how its failures are told apart. `open`:
//! opening the data file and replaying the log (the one path by which frame
//! bytes reach redb). `compact`: log compaction in bounded steps.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use tandem_engine::model::{encode_into, LogEntryRef, LogHead};
use tandem_engine::{LogPage, Scan};

use crate::backend_error::OrBackend;
use crate::wal::{FrameBuilder, Wal};
use crate::{
    decode, encode, Committed, Compacted, Effects, LogEntry, PeerCursor, Put, RecordKey, Snapshot,
    Store, StoreError, StoredRecord, FORMAT_VERSION,
};

mod backend;
mod compact;
mod open;

pub use backend::BackendFactory;
use backend::{file_backend, is_no_space, Failures};
pub(crate) use open::meta_u64;
use open::{apply_frame, next_seq, open_database, replay, wal_error};

pub(crate) const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
pub(crate) const CURSORS: TableDefinition<&str, &[u8]> = TableDefinition::new("cursors");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The layout of the data file (`meta.format_version`): 3 is redb 4 behind
/// the write-ahead log (`meta.wal_epoch`); 2 was redb 4 committed directly
/// (nothing to convert: opened as 3, so an older build refuses the directory);
/// 1 was redb 2 (upgraded on open, see `upgrade`).
pub const LAYOUT_VERSION: u64 = 3;

/// Between two compaction steps, the log lock is left free this long, so
/// that commits go first (measured: without it, a pass of 20 steps of 4096
/// held commits back for its whole 130 ms, p99 30 ms at full rate).
const COMPACTION_STEP_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// The write-ahead log beside the data file.
pub const WAL_FILE: &str = "tandem.wal";

/// A checkpoint once the log holds this much. A checkpoint's durable commit
/// writes out every page changed since the last one and the committer waits
/// for it: measured at full write rate here, 64 MiB stalled commits 85 ms
/// every 6 s (p99 15 ms), 8 MiB 13 ms every 0.6 s (p99 6 ms), 2 MiB 5 ms
/// every 0.15 s (p99 6 ms, fewer writes/s). It also bounds the replay at open.
pub const CHECKPOINT_BYTES_DEFAULT: u64 = 8 * 1024 * 1024;

/// A checkpoint also after this many commits (log compaction's steps
/// included), whatever the log holds. redb frees the pages a commit replaces
/// only at its next durable commit, so the data file's working size grows with
/// the commits between checkpoints, not the bytes: at a low write rate (one
/// write per commit) 8 MiB of log is some 16,000 commits, hundreds of MiB of
/// pages held. Here it is bounded by this many commits' changed pages.
pub const CHECKPOINT_COMMITS_MAX: u32 = 1024;

pub struct RedbStore {
    /// `None` after a failed write, until `recover` reopens the file.
    db: RwLock<Option<Database>>,
    failures: RwLock<Arc<Failures>>,
    /// Set when a write failed: redb needs the file reopened.
    poisoned: AtomicBool,
    /// The failed write was for want of room: commits answer `Full` until
    /// `recover` (a checkpoint that found no room poisons the file too).
    poisoned_by_full: AtomicBool,
    /// The log, held for the whole of a commit (there is one committer).
    log: Mutex<LogState>,
    checkpoint_bytes: AtomicU64,
    /// Restores so far: a compaction pass decided before one removes nothing.
    restores: AtomicU64,
    open_backend: BackendFactory,
    open_wal: BackendFactory,
    region: String,
    path: PathBuf,
}

/// The write-ahead log and what the committer keeps between commits.
struct LogState {
    /// `None` while the store is closed (a failed write, until `recover`).
    wal: Option<Wal>,
    /// The next sequence number to hand out (`meta.next_seq`).
    next_seq: u64,
    /// The frame being built, reused from commit to commit.
    buf: Vec<u8>,
    /// Commits to the data file since the last checkpoint.
    commits_since_checkpoint: u32,
}

impl LogState {
    /// Count a commit to the data file; whether a checkpoint is due now
    /// that the log holds `wal_len` bytes.
    fn checkpoint_due(&mut self, checkpoint_bytes: u64) -> bool {
        self.commits_since_checkpoint += 1;
        let wal_len = self.wal.as_ref().map_or(0, Wal::len);
        wal_len >= checkpoint_bytes || self.commits_since_checkpoint >= CHECKPOINT_COMMITS_MAX
    }
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
        let open_backend = file_backend(path.clone());
        let open_wal = file_backend(dir.join(WAL_FILE));
        let store = Self::open_with(open_backend, open_wal, region, path)?;
        // The log is new after an upgrade or on a new directory: its name
        // must be durable in the directory before a commit relies on it.
        crate::upgrade::sync_dir(&dir)?;
        Ok(store)
    }

    /// Open the store on the storage `open_backend` (the data file) and
    /// `open_wal` (its log) give; both are called again on every `recover`.
    pub fn open_with(
        open_backend: BackendFactory,
        open_wal: BackendFactory,
        region: &str,
        path: PathBuf,
    ) -> Result<RedbStore, StoreError> {
        let failures = Arc::new(Failures::default());
        let db = open_database(&open_backend, &failures, region)?;
        let (wal, next_seq) = replay(&db, &open_wal)?;
        Ok(RedbStore {
            db: RwLock::new(Some(db)),
            failures: RwLock::new(failures),
            poisoned: AtomicBool::new(false),
            poisoned_by_full: AtomicBool::new(false),
            log: Mutex::new(LogState {
                wal: Some(wal),
                next_seq,
                buf: Vec::new(),
                commits_since_checkpoint: 0,
            }),
            checkpoint_bytes: AtomicU64::new(CHECKPOINT_BYTES_DEFAULT),
            restores: AtomicU64::new(0),
            open_backend,
            open_wal,
            region: region.to_owned(),
            path,
        })
    }

    /// Checkpoint once the log holds `bytes` (tests make it small).
    pub fn set_checkpoint_bytes(&self, bytes: u64) {
        self.checkpoint_bytes.store(bytes, Ordering::SeqCst);
    }

    /// Bytes in the write-ahead log now (for status and tests).
    pub fn wal_bytes(&self) -> u64 {
        let log = self.log.lock().expect("log lock");
        log.wal.as_ref().map_or(0, Wal::len)
    }

    /// Make everything in the log durable in the data file and start the log
    /// again under the next epoch. The log lock is held by the caller.
    fn checkpoint(&self, log: &mut LogState) -> Result<(), StoreError> {
        let wal = log.wal.as_mut().ok_or(StoreError::Closed)?;
        let epoch = wal.epoch() + 1;
        let (started, wal_bytes) = (std::time::Instant::now(), wal.len());
        let result = self.with_db(|db| {
            let mut txn = db.begin_write().bk()?;
            txn.set_durability(Durability::Immediate).bk()?;
            txn.open_table(META).bk()?.insert("wal_epoch", epoch.to_le_bytes().as_slice()).bk()?;
            txn.commit().bk()
        });
        result.map_err(|e| self.classify(e))?;
        // The data file names the new epoch: what the log holds is in it. A
        // log that could not start again would take frames no replay reads.
        wal.reset(epoch).map_err(|e| StoreError::Fatal(format!("write-ahead log: reset: {e}")))?;
        log.commits_since_checkpoint = 0;
        tracing::debug!(
            epoch,
            wal_bytes,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "checkpoint: the data file holds the log; the log starts again"
        );
        Ok(())
    }

    /// Append the frame in `log.buf` to the log, durably; when there is no
    /// room and the log holds frames, checkpoint (which empties it) and try
    /// once more.
    fn append(&self, log: &mut LogState) -> Result<(), StoreError> {
        let wal = log.wal.as_mut().ok_or(StoreError::Closed)?;
        match wal.append(&log.buf) {
            Ok(()) => Ok(()),
            Err(e) if is_no_space(&e) && !wal.is_empty() => {
                tracing::warn!(error = %e, "no room for the write-ahead log: checkpointing to free it");
                self.checkpoint(log)?;
                let wal = log.wal.as_mut().ok_or(StoreError::Closed)?;
                wal.append(&log.buf).map_err(|e| wal_error(&e, "append"))
            }
            Err(e) => Err(wal_error(&e, "append")),
        }
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
            self.poisoned_by_full.store(true, Ordering::SeqCst);
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

    fn log_page(
        &self,
        after: u64,
        scan_max: usize,
        limit: usize,
        wanted: &mut dyn FnMut(&LogHead<'_>) -> Scan,
    ) -> Result<LogPage, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().bk()?;
            let table = txn.open_table(LOG).bk()?;
            let mut page = LogPage { entries: Vec::new(), scanned_to: after };
            for item in table.range(after.saturating_add(1)..).bk()?.take(scan_max) {
                if page.entries.len() >= limit {
                    break;
                }
                let (seq, v) = item.bk()?;
                // The head first: the state is decoded only for what is taken.
                let scan = wanted(&LogHead::decode(v.value())?);
                if !page.look(seq.value(), scan, || decode("log entry", v.value()))? {
                    break;
                }
            }
            Ok(page)
        })
    }

    fn durable_seq(&self) -> Result<u64, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().bk()?;
            Ok(next_seq(&txn.open_table(META).bk()?)? - 1)
        })
    }

    fn log_entries(&self) -> Result<u64, StoreError> {
        self.log_len()
    }

    fn pending_bytes(&self) -> u64 {
        self.wal_bytes()
    }

    fn compact_log(&self, horizon_ms: u64, step_max: usize) -> Result<Compacted, StoreError> {
        self.compact_in_steps(horizon_ms, step_max)
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
            if self.poisoned_by_full.load(Ordering::SeqCst) {
                return Err(StoreError::Full(
                    "the disk is full: the store reopens once there is room".into(),
                ));
            }
            return Err(StoreError::Closed);
        }
        let mut guard = self.log.lock().expect("log lock");
        let log = &mut *guard;
        if log.wal.is_none() {
            return Err(StoreError::Closed);
        }
        let first_seq = log.next_seq;
        // Encode once: the frame's bytes are what redb stores.
        let mut frame = FrameBuilder::new(&mut log.buf, first_seq);
        // A record put again later in the same commit (a big set's SADDs
        // from many clients) is stored once, as it is last: an empty record
        // in the frame means "log only" (`apply_frame`).
        let puts: Vec<&Put> = parts.iter().flat_map(|e| e.puts.iter()).collect();
        let mut last_put: HashMap<(&str, &str), usize> = HashMap::with_capacity(puts.len());
        for (i, put) in puts.iter().enumerate() {
            last_put.insert((&put.entity, &put.id), i);
        }
        for (i, put) in puts.iter().enumerate() {
            let seq = first_seq + i as u64;
            let last = last_put[&(put.entity.as_str(), put.id.as_str())] == i;
            frame.put(
                &put.entity,
                &put.id,
                |b| {
                    if last {
                        encode_into(&put.record, b);
                    }
                },
                |b| {
                    // Encoded from borrowed parts: the state is not cloned.
                    encode_into(&LogEntryRef::of(seq, put), b);
                },
            );
        }
        for (key, cursor) in parts.iter().flat_map(|e| e.cursors.iter()) {
            frame.cursor(key, |b| {
                encode_into(cursor, b);
            });
        }
        let index = frame.finish();
        self.append(log)?;
        let applied = self.with_db(|db| {
            let mut txn = db.begin_write().bk()?;
            txn.set_durability(Durability::None).bk()?;
            apply_frame(&txn, &log.buf, &index)?;
            txn.commit().bk()
        });
        if let Err(e) = applied {
            // Durable in the log but not applied: take the frame back, so
            // that the refused batch is not replayed later.
            let wal = log.wal.as_mut().expect("checked above");
            if let Err(undo) = wal.unappend(log.buf.len() as u64) {
                return Err(StoreError::Fatal(format!(
                    "{e}; and the write-ahead log could not take the frame back: {undo}"
                )));
            }
            return Err(self.classify(e));
        }
        log.next_seq = index.next_seq();
        let committed = Committed { first_seq, durable_seq: log.next_seq - 1 };
        if log.checkpoint_due(self.checkpoint_bytes.load(Ordering::SeqCst)) {
            match self.checkpoint(log) {
                Ok(()) => {}
                // The batch is durable in the log; the next commit finds the
                // store closed and `recover` replays the log.
                Err(StoreError::Full(detail)) => {
                    tracing::warn!(%detail, "checkpoint failed: the disk is full");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(committed)
    }

    fn recover(&self) -> Result<(), StoreError> {
        if !self.poisoned.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut log = self.log.lock().expect("log lock");
        let mut guard = self.db.write().expect("store lock");
        // Close the poisoned file first: redb holds a lock on it while open.
        guard.take();
        log.wal = None;
        let failures = Arc::new(Failures::default());
        let db = open_database(&self.open_backend, &failures, &self.region)?;
        let (wal, next_seq) = replay(&db, &self.open_wal)?;
        *self.failures.write().expect("failures lock") = failures;
        *guard = Some(db);
        log.wal = Some(wal);
        log.next_seq = next_seq;
        self.poisoned.store(false, Ordering::SeqCst);
        self.poisoned_by_full.store(false, Ordering::SeqCst);
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
        let mut log = self.log.lock().expect("log lock");
        self.restores.fetch_add(1, Ordering::SeqCst);
        let epoch = log.wal.as_ref().ok_or(StoreError::Closed)?.epoch() + 1;
        let next = seq_floor.max(snapshot.last_seq + 1);
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
                meta.insert("next_seq", next.to_le_bytes().as_slice()).bk()?;
                // What the log holds is from before the restore: never replayed.
                meta.insert("wal_epoch", epoch.to_le_bytes().as_slice()).bk()?;
                meta.insert("incarnation", seq_floor.to_le_bytes().as_slice()).bk()?;
                meta.insert("own_have", snapshot.last_seq.to_le_bytes().as_slice()).bk()?;
            }
            txn.commit().bk()?;
            Ok(())
        });
        result.map_err(|e| self.classify(e))?;
        log.next_seq = next;
        let wal = log.wal.as_mut().expect("checked above");
        wal.reset(epoch).map_err(|e| StoreError::Fatal(format!("write-ahead log: reset: {e}")))
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
