//! The storage contract (Store v2), designed for what the write path, the
//! replication log and the SQL-backed region need (docs/STORAGE.md):
//!
//! - batched reads: `get_many` fetches every record a batch touches at once
//!   (one round trip for a SQL server), and the engine decides the whole
//!   batch against that read view (`BatchView`), later commands seeing the
//!   effects of earlier ones;
//! - effects applied in one transaction: `commit` writes every put (record and
//!   log entry) and every cursor of a batch atomically and durably, in one
//!   round trip;
//! - a durable sequence: `durable_seq` is the newest log position that is
//!   durable, and `log_after` never returns anything past it, so a reader can
//!   never see (or replicate) an entry the region could still lose;
//! - sequence numbers that are never reused: `commit` numbers puts from a
//!   persisted counter, not from the last entry in the log, so entries may be
//!   removed (compaction) without a number coming back.

use std::collections::BTreeMap;
use std::sync::Arc;

use tandem_merge::State;

use crate::error::StoreError;
use crate::model::{ChangeOrigin, LogEntry, LogHead, PeerCursor, Snapshot, StoredRecord};

/// A record's key: `(entity, id)`.
pub type RecordKey = (String, String);

/// What a log reader does with an entry, judged by its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    Take,
    Skip,
    /// Not this entry nor any after it (yet).
    Stop,
}

/// What [`Store::log_page`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPage {
    /// The entries taken, in log order.
    pub entries: Vec<LogEntry>,
    /// The last position looked at (`after` when none): the reader has seen
    /// everything up to it, taken or skipped.
    pub scanned_to: u64,
}

impl LogPage {
    /// Look at the entry at `seq` as `scan` says, taking it whole from
    /// `entry`; false when the scan stops there.
    pub fn look(
        &mut self,
        seq: u64,
        scan: Scan,
        entry: impl FnOnce() -> Result<LogEntry, StoreError>,
    ) -> Result<bool, StoreError> {
        match scan {
            Scan::Stop => return Ok(false),
            Scan::Skip => {}
            Scan::Take => self.entries.push(entry()?),
        }
        self.scanned_to = seq;
        Ok(true)
    }
}

impl From<Vec<LogEntry>> for LogPage {
    /// A page of every entry read.
    fn from(entries: Vec<LogEntry>) -> Self {
        let scanned_to = entries.last().map_or(0, |e| e.seq);
        LogPage { entries, scanned_to }
    }
}

/// One change a batch makes: the record's new state, which is also appended
/// to the replication log with `origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    pub entity: String,
    pub id: String,
    pub record: StoredRecord,
    pub origin: ChangeOrigin,
    /// What the log entry carries when it is not the record's whole state:
    /// a delta (`tandem_merge::delta`).
    pub delta: Option<State>,
}

/// Everything one batch writes, applied by `Store::commit` in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// In log order.
    pub puts: Vec<Put>,
    /// Cursor key → its new value (the last one a batch sets wins).
    pub cursors: BTreeMap<String, PeerCursor>,
}

/// What a commit did: the sequence numbers of its puts are
/// `first_seq .. first_seq + puts.len()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub first_seq: u64,
    /// The newest durable log position after the commit.
    pub durable_seq: u64,
}

impl Committed {
    /// The sequence number of the `index`-th put of the batch.
    pub fn seq_of(&self, index: usize) -> u64 {
        self.first_seq + index as u64
    }
}

/// What one compaction pass did (`Store::compact_log`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Log entries looked at.
    pub scanned: u64,
    /// Log entries removed.
    pub removed: u64,
    /// Entries kept for being younger than the horizon.
    pub young: u64,
}

/// A region's storage: records, the replication log, cursors and meta.
pub trait Store: Send + Sync + 'static {
    /// The records at `keys`, in that order (`None`: absent).
    fn get_many(&self, keys: &[RecordKey]) -> Result<Vec<Option<StoredRecord>>, StoreError>;

    fn get(&self, entity: &str, id: &str) -> Result<Option<StoredRecord>, StoreError> {
        let mut found = self.get_many(&[(entity.to_owned(), id.to_owned())])?;
        Ok(found.pop().flatten())
    }

    /// Records of one entity in id order, strictly after `after`, at most `limit`.
    fn scan(
        &self,
        entity: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StoredRecord)>, StoreError>;

    /// Visit every record of every entity in `(entity, id)` order.
    fn for_each(&self, f: &mut dyn FnMut(&str, &str, &StoredRecord)) -> Result<(), StoreError>;

    /// Durable log entries with `seq > after`, in order, at most `limit`.
    fn log_after(&self, after: u64, limit: usize) -> Result<Vec<LogEntry>, StoreError>;

    /// The entries a reader wants of the durable log after `after`: at most
    /// `scan_max` entries are looked at, in order, each judged by its head
    /// (a store decodes the state only of what is taken), until `limit` are
    /// taken or `wanted` says stop. A sender that serves a few entries of a
    /// log full of others' changes decodes only those few.
    fn log_page(
        &self,
        after: u64,
        scan_max: usize,
        limit: usize,
        wanted: &mut dyn FnMut(&LogHead<'_>) -> Scan,
    ) -> Result<LogPage, StoreError> {
        let mut page = LogPage { entries: Vec::new(), scanned_to: after };
        for e in self.log_after(after, scan_max)? {
            if page.entries.len() >= limit {
                break;
            }
            let scan = wanted(&e.head());
            if !page.look(e.seq, scan, || Ok(e))? {
                break;
            }
        }
        Ok(page)
    }

    /// The newest durable log position (0 when nothing was logged yet).
    fn durable_seq(&self) -> Result<u64, StoreError>;

    /// Entries in the replication log now (fewer than `durable_seq` once
    /// compacted).
    fn log_entries(&self) -> Result<u64, StoreError>;

    /// One pass of lossless compaction (`crate::compaction`): remove every
    /// entry superseded by a newer entry of the same record and origin logged
    /// at or before `horizon_ms`, in write transactions of at most
    /// `step_max` removals, so a commit waits for one step at most.
    fn compact_log(&self, horizon_ms: u64, step_max: usize) -> Result<Compacted, StoreError>;

    /// The cursor stored under `key` (default when none).
    fn cursor(&self, key: &str) -> Result<PeerCursor, StoreError>;

    /// Apply `effects` in one transaction and make them durable before
    /// returning. All or nothing.
    fn commit(&self, effects: &Effects) -> Result<Committed, StoreError> {
        self.commit_all(&[effects])
    }

    /// Apply the effects of several batches, in order, as one transaction
    /// (the pipelined writer hands over what was decided meanwhile): the
    /// same as one `commit` of their concatenation, puts numbered on from
    /// one part to the next, a later part's cursor winning. All or nothing.
    fn commit_all(&self, parts: &[&Effects]) -> Result<Committed, StoreError>;

    /// After a `commit` failed with `StoreError::Full`: bring the store back
    /// to its last durable commit, so reads (and, once there is room, writes)
    /// work again. A no-op when the store is healthy.
    fn recover(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Bytes the store holds durably but not yet where they belong (a
    /// write-ahead log awaiting its checkpoint): after a full disk, writes
    /// resume only once this much more is free. 0 for stores without one.
    fn pending_bytes(&self) -> u64 {
        0
    }

    /// A consistent copy of everything (one read transaction).
    fn snapshot(&self, region: &str) -> Result<Snapshot, StoreError>;

    /// Replace everything with `snapshot` in one transaction (all or nothing).
    /// Later puts get sequence numbers of at least `seq_floor`, above any the
    /// region handed out before the restore, and `own_have` records how far
    /// the region's own changes go in the snapshot.
    fn restore(&self, snapshot: &Snapshot, seq_floor: u64) -> Result<(), StoreError>;

    /// After a restore: the newest own change the snapshot held. Changes of
    /// this region above it may exist at peers, which send them back.
    fn own_have(&self) -> Result<Option<u64>, StoreError>;

    /// After a restore: its sequence floor, which also names the region's new
    /// incarnation (the actor its new dots are written as).
    fn incarnation(&self) -> Result<Option<u64>, StoreError>;
}

/// What the engine reads while it decides one batch: the records the batch
/// touches (fetched at once), the cursors, and the batch's own effects so far.
/// With a pipelined writer, the batches decided before this one that are
/// not durable yet (`pending`, oldest first) count as written: the batch
/// sees the store with their effects on top, newest last.
pub struct BatchView<'s> {
    store: &'s dyn Store,
    pending: &'s [Arc<Effects>],
    records: BTreeMap<RecordKey, Slot>,
    effects: Effects,
    /// Puts below this index are not emptied (a mark may roll back to them).
    keep_below: usize,
}

/// A record as the batch knows it: as read, or as one of its own puts (by
/// index, so a put is not copied: big records are costly to clone).
#[derive(Debug, Clone)]
enum Slot {
    Read(Option<StoredRecord>),
    Put(usize),
}

/// What [`BatchView::rollback`] returns the batch to.
#[derive(Debug, Clone)]
pub struct Mark {
    puts: usize,
    records: BTreeMap<RecordKey, Slot>,
}

impl<'s> BatchView<'s> {
    /// Fetch `keys` in one read and start a batch over them.
    pub fn fetch(store: &'s dyn Store, keys: Vec<RecordKey>) -> Result<Self, StoreError> {
        BatchView::fetch_over(store, &[], keys)
    }

    /// Fetch `keys` in one read and start a batch over the store with the
    /// effects of `pending` (oldest first) on top.
    pub fn fetch_over(
        store: &'s dyn Store,
        pending: &'s [Arc<Effects>],
        keys: Vec<RecordKey>,
    ) -> Result<Self, StoreError> {
        let mut keys = keys;
        keys.sort();
        keys.dedup();
        let found = store.get_many(&keys)?;
        assert_eq!(found.len(), keys.len(), "get_many answers one value per key");
        let mut records: BTreeMap<RecordKey, Slot> =
            keys.into_iter().zip(found).map(|(k, r)| (k, Slot::Read(r))).collect();
        for put in pending.iter().flat_map(|e| e.puts.iter()) {
            if let Some(slot) = records.get_mut(&(put.entity.clone(), put.id.clone())) {
                *slot = Slot::Read(Some(put.record.clone()));
            }
        }
        Ok(BatchView { store, pending, records, effects: Effects::default(), keep_below: 0 })
    }

    /// A record as the batch sees it (its own puts and the pending ones included).
    pub fn get(&mut self, entity: &str, id: &str) -> Result<Option<StoredRecord>, StoreError> {
        let key = (entity.to_owned(), id.to_owned());
        match self.records.get(&key) {
            Some(Slot::Read(r)) => return Ok(r.clone()),
            Some(Slot::Put(i)) => return Ok(Some(self.effects.puts[*i].record.clone())),
            None => {}
        }
        // Not fetched in advance (a key `Engine::keys_of` did not foresee):
        // read it now; correct, only slower.
        let r = self.read_through(entity, id)?;
        self.records.insert(key, Slot::Read(r.clone()));
        Ok(r)
    }

    /// A record as the pending batches and the store have it.
    fn read_through(&self, entity: &str, id: &str) -> Result<Option<StoredRecord>, StoreError> {
        let pending = self.pending.iter().rev().flat_map(|e| e.puts.iter().rev());
        match pending.into_iter().find(|p| p.entity == entity && p.id == id) {
            Some(p) => Ok(Some(p.record.clone())),
            None => self.store.get(entity, id),
        }
    }

    /// As `get`, moving the record out of the batch's reads instead of
    /// copying it (a write about to `put` it back): a later `get` of the same
    /// key reads it again. Big records are costly to copy.
    pub fn take(&mut self, entity: &str, id: &str) -> Result<Option<StoredRecord>, StoreError> {
        let key = (entity.to_owned(), id.to_owned());
        match self.records.remove(&key) {
            Some(Slot::Read(r)) => Ok(r),
            Some(put @ Slot::Put(_)) => {
                self.records.insert(key, put);
                self.get(entity, id)
            }
            None => self.read_through(entity, id),
        }
    }

    pub fn cursor(&self, key: &str) -> Result<PeerCursor, StoreError> {
        let mine = std::iter::once(&self.effects).chain(self.pending.iter().rev().map(|e| &**e));
        for effects in mine {
            if let Some(c) = effects.cursors.get(key) {
                return Ok(c.clone());
            }
        }
        self.store.cursor(key)
    }

    /// Store a record's new state and log the change; returns its index in
    /// the batch's puts.
    pub fn put(
        &mut self,
        entity: &str,
        id: &str,
        record: StoredRecord,
        origin: ChangeOrigin,
    ) -> usize {
        self.put_logging(entity, id, record, origin, None)
    }

    /// As `put`, logging `delta` (when given) instead of the whole state.
    pub fn put_logging(
        &mut self,
        entity: &str,
        id: &str,
        record: StoredRecord,
        origin: ChangeOrigin,
        delta: Option<State>,
    ) -> usize {
        debug_assert!(delta.as_ref().is_none_or(State::is_delta));
        let index = self.effects.puts.len();
        let key = (entity.to_owned(), id.to_owned());
        if let Some(&Slot::Put(j)) = self.records.get(&key) {
            // Superseded in this batch and logged as a delta: its record is
            // never read or stored (stores keep a batch's last put of a key),
            // so a batch of SADDs to one big set holds one copy, not one each.
            let earlier = &mut self.effects.puts[j];
            if earlier.delta.is_some() && j >= self.keep_below {
                let kind = earlier.record.state.kind();
                earlier.record.state = State::new(kind);
            }
        }
        self.records.insert(key, Slot::Put(index));
        self.effects.puts.push(Put {
            entity: entity.to_owned(),
            id: id.to_owned(),
            record,
            origin,
            delta,
        });
        self.effects.puts.len() - 1
    }

    /// A point to roll back to: the batch as it is now.
    pub fn mark(&mut self) -> Mark {
        self.keep_below = self.effects.puts.len();
        Mark { puts: self.effects.puts.len(), records: self.records.clone() }
    }

    /// Undo every put since `mark` (a transaction that was refused part-way).
    pub fn rollback(&mut self, mark: Mark) {
        assert!(mark.puts <= self.effects.puts.len(), "a mark of this batch");
        self.effects.puts.truncate(mark.puts);
        self.records = mark.records;
    }

    pub fn set_cursor(&mut self, key: &str, cursor: PeerCursor) {
        self.effects.cursors.insert(key.to_owned(), cursor);
    }

    pub fn into_effects(self) -> Effects {
        self.effects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puts_are_numbered_from_the_first_sequence_number() {
        let c = Committed { first_seq: 7, durable_seq: 9 };
        assert_eq!((c.seq_of(0), c.seq_of(2)), (7, 9));
    }
}
