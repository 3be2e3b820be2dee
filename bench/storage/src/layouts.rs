//! The three storage layouts `storage-layout` compares, each behind
//! [`Layout`]: read the records a batch touches, then write every changed
//! record and its replication-log entry durably in one step, as the node's
//! writer does for one group commit.
//!
//! - [`Redb`]: tandem-store's `RedbStore` itself, unchanged: `get_many`, then
//!   `commit(&Effects)` (one redb write transaction, `Durability::Immediate`:
//!   record, log entry and `meta.next_seq` in B-trees, fsync at commit).
//! - [`Fjall`]: fjall 3 (LSM tree with its own journal): keyspaces `records`,
//!   `log` and `meta` like redb's tables, one atomic `WriteBatch` per batch,
//!   then `Database::persist(SyncData)` (fdatasync of the journal) before the
//!   batch counts as durable. Memtables flush to sorted tables in fjall's
//!   background threads (counted: same process).
//! - [`AppendLog`]: the baseline of what the disk can do: one append-only file
//!   of length-prefixed encoded log entries (which carry the record's whole
//!   state, so the file alone recovers everything), one `write` and one
//!   `fdatasync` per batch; records are kept decoded in memory. It leaves
//!   out what a real design on it needs besides (a checksum per frame, the
//!   checkpoint into an index, compaction), so it bounds from above.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use redb::ReadableDatabase as _;
use tandem_engine::model::{decode, encode, LogEntry, StoredRecord};
use tandem_engine::store::{Effects, Put, Store};
use tandem_store::RedbStore;

/// The one region every layout is written as.
pub const REGION: &str = "eu-west";
/// The entity every write goes to (a pn-counter in the node's example config).
pub const ENTITY: &str = "likes";

/// A storage layout under the node's batch-then-durable pattern.
pub trait Layout {
    /// The current states of `ids` (of [`ENTITY`]), in that order.
    fn get(&mut self, ids: &[String]) -> anyhow::Result<Vec<Option<StoredRecord>>>;
    /// Write every put (the record and its log entry) in one step, durable
    /// when this returns.
    fn commit(&mut self, puts: &[Put]) -> anyhow::Result<()>;
    /// Let background work on what was written finish (fjall's memtable
    /// flushes), so that its bytes can be counted too.
    fn settle(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The log entry of the `index`-th put from `first_seq`, as tandem-store
/// builds it (`memory::log_entry`).
fn log_entry(seq: u64, put: &Put) -> LogEntry {
    LogEntry {
        seq,
        origin: put.origin.origin.clone(),
        origin_seq: put.origin.origin_seq.unwrap_or(seq),
        committed_at_ms: put.origin.committed_at_ms,
        logged_at_ms: put.origin.logged_at_ms,
        entity: put.entity.clone(),
        id: put.id.clone(),
        state: put.record.state.clone(),
    }
}

// ---- (a) redb, as tandem-store uses it ------------------------------------

pub struct Redb {
    store: RedbStore,
}

impl Redb {
    pub fn open(dir: &Path) -> anyhow::Result<Redb> {
        Ok(Redb { store: RedbStore::open(dir, REGION)? })
    }
}

impl Layout for Redb {
    fn get(&mut self, ids: &[String]) -> anyhow::Result<Vec<Option<StoredRecord>>> {
        let keys: Vec<_> = ids.iter().map(|id| (ENTITY.to_owned(), id.clone())).collect();
        Ok(self.store.get_many(&keys)?)
    }

    fn commit(&mut self, puts: &[Put]) -> anyhow::Result<()> {
        let effects = Effects { puts: puts.to_vec(), cursors: Default::default() };
        self.store.commit(&effects)?;
        Ok(())
    }
}

// ---- (b) fjall ------------------------------------------------------------

pub struct Fjall {
    db: fjall::Database,
    records: fjall::Keyspace,
    log: fjall::Keyspace,
    meta: fjall::Keyspace,
    next_seq: u64,
}

impl Fjall {
    pub fn open(dir: &Path) -> anyhow::Result<Fjall> {
        let db = fjall::Database::builder(dir).open().context("open fjall")?;
        let records = db.keyspace("records", fjall::KeyspaceCreateOptions::default)?;
        let log = db.keyspace("log", fjall::KeyspaceCreateOptions::default)?;
        let meta = db.keyspace("meta", fjall::KeyspaceCreateOptions::default)?;
        let next_seq = match meta.get("next_seq")? {
            Some(v) => u64::from_le_bytes(v.as_ref().try_into().context("meta.next_seq")?),
            None => 1,
        };
        Ok(Fjall { db, records, log, meta, next_seq })
    }
}

/// `entity \0 id`: ordered by entity, then id, like redb's `(entity, id)` key.
fn record_key(entity: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(entity.len() + 1 + id.len());
    k.extend_from_slice(entity.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

impl Layout for Fjall {
    fn get(&mut self, ids: &[String]) -> anyhow::Result<Vec<Option<StoredRecord>>> {
        ids.iter()
            .map(|id| match self.records.get(record_key(ENTITY, id))? {
                Some(v) => Ok(Some(decode("record", &v)?)),
                None => Ok(None),
            })
            .collect()
    }

    fn commit(&mut self, puts: &[Put]) -> anyhow::Result<()> {
        let mut batch = self.db.batch();
        for (i, put) in puts.iter().enumerate() {
            let seq = self.next_seq + i as u64;
            batch.insert(&self.records, record_key(&put.entity, &put.id), encode(&put.record));
            // Big-endian: the log keyspace iterates in sequence order.
            batch.insert(&self.log, seq.to_be_bytes(), encode(&log_entry(seq, put)));
        }
        let next = self.next_seq + puts.len() as u64;
        batch.insert(&self.meta, "next_seq", next.to_le_bytes());
        batch.commit()?;
        self.db.persist(fjall::PersistMode::SyncData)?;
        self.next_seq = next;
        Ok(())
    }

    fn settle(&mut self) -> anyhow::Result<()> {
        for ks in [&self.records, &self.log, &self.meta] {
            ks.rotate_memtable_and_wait()?;
        }
        while self.db.outstanding_flushes() > 0 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(())
    }
}

// ---- (c) an append-only log with group fdatasync --------------------------

pub struct AppendLog {
    file: File,
    records: HashMap<String, StoredRecord>,
    next_seq: u64,
    /// Reused for every batch: one `write` per batch.
    buf: Vec<u8>,
}

impl AppendLog {
    pub fn open(dir: &Path) -> anyhow::Result<AppendLog> {
        let path = dir.join("log.bin");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        Ok(AppendLog { file, records: HashMap::new(), next_seq: 1, buf: Vec::new() })
    }
}

impl Layout for AppendLog {
    fn get(&mut self, ids: &[String]) -> anyhow::Result<Vec<Option<StoredRecord>>> {
        Ok(ids.iter().map(|id| self.records.get(id).cloned()).collect())
    }

    fn commit(&mut self, puts: &[Put]) -> anyhow::Result<()> {
        self.buf.clear();
        for (i, put) in puts.iter().enumerate() {
            let entry = encode(&log_entry(self.next_seq + i as u64, put));
            let len = u32::try_from(entry.len()).context("a log entry over 4 GiB")?;
            self.buf.extend_from_slice(&len.to_le_bytes());
            self.buf.extend_from_slice(&entry);
        }
        self.file.write_all(&self.buf)?;
        self.file.sync_data()?;
        for put in puts {
            self.records.insert(put.id.clone(), put.record.clone());
        }
        self.next_seq += puts.len() as u64;
        Ok(())
    }
}

// ---- (d) redb behind a write-ahead log ------------------------------------

const WAL_RECORDS: redb::TableDefinition<(&str, &str), &[u8]> =
    redb::TableDefinition::new("records");
const WAL_LOG: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("log");
/// Puts between two checkpoints (durable redb commits, after which the
/// write-ahead log is cut).
const CHECKPOINT_PUTS: u64 = 16_384;

/// The candidate design: each batch is appended to a write-ahead log and
/// fdatasynced (durable), then applied to redb with `Durability::None`
/// (visible, no sync); every `CHECKPOINT_PUTS` puts a durable redb commit
/// and the log is truncated. Frames carry a length and an FNV-1a checksum,
/// as recovery would need them (recovery itself is not measured).
pub struct RedbWal {
    db: redb::Database,
    wal: File,
    next_seq: u64,
    since_checkpoint: u64,
    buf: Vec<u8>,
}

impl RedbWal {
    pub fn open(dir: &Path) -> anyhow::Result<RedbWal> {
        let db = redb::Database::create(dir.join("tandem.redb")).context("open redb")?;
        let path = dir.join("tandem.wal");
        let wal = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        Ok(RedbWal { db, wal, next_seq: 1, since_checkpoint: 0, buf: Vec::new() })
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

impl Layout for RedbWal {
    fn get(&mut self, ids: &[String]) -> anyhow::Result<Vec<Option<StoredRecord>>> {
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(WAL_RECORDS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![None; ids.len()]),
            Err(e) => return Err(e.into()),
        };
        ids.iter()
            .map(|id| match table.get((ENTITY, id.as_str()))? {
                Some(v) => Ok(Some(decode("record", v.value())?)),
                None => Ok(None),
            })
            .collect()
    }

    fn commit(&mut self, puts: &[Put]) -> anyhow::Result<()> {
        // Encode once: the same bytes go to the log frame and to redb.
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = puts
            .iter()
            .enumerate()
            .map(|(i, p)| (encode(&p.record), encode(&log_entry(self.next_seq + i as u64, p))))
            .collect();
        self.buf.clear();
        self.buf.extend_from_slice(&self.next_seq.to_le_bytes());
        for (record, entry) in &encoded {
            for part in [record, entry] {
                let len = u32::try_from(part.len()).context("a part over 4 GiB")?;
                self.buf.extend_from_slice(&len.to_le_bytes());
                self.buf.extend_from_slice(part);
            }
        }
        let sum = fnv1a(&self.buf);
        let len = u32::try_from(self.buf.len()).context("a frame over 4 GiB")?;
        let mut frame = Vec::with_capacity(self.buf.len() + 12);
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&sum.to_le_bytes());
        frame.extend_from_slice(&self.buf);
        self.wal.write_all(&frame)?;
        self.wal.sync_data()?;
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        {
            let mut records = txn.open_table(WAL_RECORDS)?;
            let mut log = txn.open_table(WAL_LOG)?;
            for (i, (put, (record, entry))) in puts.iter().zip(&encoded).enumerate() {
                records.insert((put.entity.as_str(), put.id.as_str()), record.as_slice())?;
                log.insert(self.next_seq + i as u64, entry.as_slice())?;
            }
        }
        txn.commit()?;
        self.next_seq += puts.len() as u64;
        self.since_checkpoint += puts.len() as u64;
        if self.since_checkpoint >= CHECKPOINT_PUTS {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(redb::Durability::Immediate)?;
            txn.commit()?;
            self.wal.set_len(0)?;
            self.wal.sync_data()?;
            self.since_checkpoint = 0;
        }
        Ok(())
    }
}

/// Open the layout called `name` in the empty directory `dir`.
pub fn open(name: &str, dir: &Path) -> anyhow::Result<Box<dyn Layout>> {
    Ok(match name {
        "redb" => Box::new(Redb::open(dir)?),
        "fjall" => Box::new(Fjall::open(dir)?),
        "log" => Box::new(AppendLog::open(dir)?),
        "redb-wal" => Box::new(RedbWal::open(dir)?),
        other => anyhow::bail!("unknown layout {other:?}; use redb, fjall, log or redb-wal"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_engine::model::ChangeOrigin;
    use tandem_merge::{MergeKind, Op, State};

    fn put(id: &str, by: u64) -> Put {
        let mut state = State::new(MergeKind::PnCounter);
        state.apply(&Op::Incr(by), REGION, tandem_clock::Hlc::new(1, 0)).unwrap();
        Put {
            entity: ENTITY.into(),
            id: id.into(),
            record: StoredRecord { state, updated_at_ms: 1 },
            origin: ChangeOrigin {
                origin: REGION.into(),
                origin_seq: None,
                committed_at_ms: 1,
                logged_at_ms: 1,
            },
            delta: None,
        }
    }

    #[test]
    fn every_layout_reads_back_what_it_committed() {
        for name in ["redb", "fjall", "log", "redb-wal"] {
            let dir = tempfile_dir(name);
            let mut layout = open(name, &dir).unwrap();
            let ids = vec!["a".to_owned(), "b".to_owned()];
            assert_eq!(layout.get(&ids).unwrap(), vec![None, None], "{name}");
            layout.commit(&[put("a", 3)]).unwrap();
            let got = layout.get(&ids).unwrap();
            assert_eq!(got[0].as_ref().map(|r| r.state.value()), Some(Some(3.into())), "{name}");
            assert!(got[1].is_none(), "{name}");
            layout.settle().unwrap();
            drop(layout);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    fn tempfile_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("layout-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
