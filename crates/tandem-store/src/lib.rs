//! Storage for one region: records (merge state with its version vector, HLC and
//! origin), the subject registry (records of the reserved entity `_subject`),
//! the append-only replication log and the per-peer replication cursors.
//!
//! Everything sits behind the [`Store`] trait with two backends, redb on disk
//! and in-memory, which pass one conformance suite (`conformance`). A record
//! change and its log entry are written in the same transaction, so the log and
//! the data can never disagree; a transaction is durable when `write` returns.

mod error;
mod memory;
mod model;
mod redb_store;

pub mod conformance;

pub use error::StoreError;
pub use memory::MemoryStore;
pub use model::{
    decode, encode, ChangeOrigin, LogEntry, PeerCursor, Snapshot, StoredRecord, FORMAT_VERSION,
    SUBJECT_ENTITY,
};
pub use redb_store::RedbStore;

/// A region's storage. Reads see the last committed state; `write` runs a
/// read-modify-write batch in one atomic, durable transaction.
pub trait Store: Send + Sync + 'static {
    fn get(&self, entity: &str, id: &str) -> Result<Option<StoredRecord>, StoreError>;

    /// Records of one entity in id order, strictly after `after`, at most `limit`.
    fn scan(
        &self,
        entity: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StoredRecord)>, StoreError>;

    /// Visit every record of every entity in `(entity, id)` order.
    fn for_each(&self, f: &mut dyn FnMut(&str, &str, &StoredRecord)) -> Result<(), StoreError>;

    /// Log entries with `seq > after`, in order, at most `limit`.
    fn log_after(&self, after: u64, limit: usize) -> Result<Vec<LogEntry>, StoreError>;

    /// The sequence number of the newest log entry (0 when the log is empty).
    fn last_seq(&self) -> Result<u64, StoreError>;

    fn cursor(&self, peer: &str) -> Result<PeerCursor, StoreError>;

    /// A consistent copy of everything (one read transaction).
    fn snapshot(&self, region: &str) -> Result<Snapshot, StoreError>;

    /// Replace everything with `snapshot` in one transaction (all or nothing).
    /// Later log entries get sequence numbers of at least `seq_floor`, above
    /// any the region handed out before the restore, and `own_have` records
    /// how far the region's own changes go in the snapshot.
    fn restore(&self, snapshot: &Snapshot, seq_floor: u64) -> Result<(), StoreError>;

    /// After a restore: the newest own change the snapshot held. Changes of
    /// this region above it may exist at peers, which send them back.
    fn own_have(&self) -> Result<Option<u64>, StoreError>;

    /// After a restore: its sequence floor, which also names the region's new
    /// incarnation (the actor its new dots are written as).
    fn incarnation(&self) -> Result<Option<u64>, StoreError>;

    /// After a `write` failed with `StoreError::Full`: bring the store back to
    /// its last durable commit, so reads (and, once there is room, writes) work
    /// again. A no-op when the store is healthy.
    fn recover(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Run `f` in one write transaction and commit it durably. If `f` returns an
    /// error nothing it wrote is kept.
    fn write(
        &self,
        f: &mut dyn FnMut(&mut dyn WriteTxn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
}

/// The operations of one write transaction.
pub trait WriteTxn {
    /// Read a record as this transaction sees it (its own writes included).
    fn get(&mut self, entity: &str, id: &str) -> Result<Option<StoredRecord>, StoreError>;

    /// Store a record and append its change to the replication log. Returns the
    /// log sequence number given to the change.
    fn put(
        &mut self,
        entity: &str,
        id: &str,
        record: &StoredRecord,
        origin: &ChangeOrigin,
    ) -> Result<u64, StoreError>;

    fn cursor(&mut self, peer: &str) -> Result<PeerCursor, StoreError>;

    fn set_cursor(&mut self, peer: &str, cursor: &PeerCursor) -> Result<(), StoreError>;
}
