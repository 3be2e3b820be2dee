//! Storage backends for one region: the engine's `Store` trait (Store v2, see
//! `tandem_engine::store` and docs/STORAGE.md) on redb (one file per region)
//! and in memory, which pass one conformance suite (`conformance`); and the
//! upgrade of a data directory written by an earlier version (`upgrade`).
//! A batch's records, log entries and cursors are written in one transaction,
//! durable when `commit` returns.

mod backend_error;
mod memory;
mod redb_store;
pub mod upgrade;
mod wal;

pub mod conformance;

pub use memory::MemoryStore;
pub use redb_store::{
    BackendFactory, RedbStore, CHECKPOINT_BYTES_DEFAULT, LAYOUT_VERSION, WAL_FILE,
};
pub use tandem_engine::model::{
    decode, encode, ChangeOrigin, LogEntry, PeerCursor, Snapshot, StoredRecord, FORMAT_VERSION,
    SUBJECT_ENTITY,
};
pub use tandem_engine::store::{Committed, Compacted, Effects, Put, RecordKey, Store};
pub use tandem_engine::StoreError;
