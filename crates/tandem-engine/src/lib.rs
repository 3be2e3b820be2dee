//! Every decision of a region's write, apply and serve paths, as pure code
//! that reads through a view of the store and returns effects. The node (a
//! tokio runtime over redb, later PostgreSQL) and the deterministic
//! simulation (simulated time and network over the in-memory store) both
//! execute this engine, so what the simulation checks is what runs.
//!
//! - `Engine::plan` decides a batch of commands (local writes and batches of
//!   replicated changes) against one `BatchView`: residency and pinning,
//!   operation and merge, what is logged under which origin, analytics
//!   projections, cursor advances, conflicts found. It returns the batch's
//!   `Effects` (applied by `Store::commit` in one transaction) and each
//!   command's outcome, to be answered once the effects are durable.
//! - `serve` decides what a sender serves to a peer: the direct stream of its
//!   own changes and forwarding of third regions' changes, filtered by the
//!   peer's jurisdiction, sealed where a transfer is declared, bounded.
//! - `receive` holds the pulling side's decisions, `link` a link's lag state,
//!   `protocol` and `wire` the names, timings and format peers share.
//! - `compaction` decides which replication log entries may go (lossless).
//! - `model` and `store` are what is stored and the storage contract.
//!
//! No tokio, no HTTP, no database here: the runtimes carry effects out.

pub mod analytics;
pub mod apply;
pub mod compaction;
pub mod engine;
pub mod error;
pub mod faults;
pub mod filter;
pub mod link;
pub mod model;
pub mod protocol;
pub mod receive;
pub mod repair;
pub mod residency;
pub mod seal;
pub mod serve;
pub mod stability;
pub mod store;
pub mod wire;
pub mod write;

pub use engine::{Command, Engine, Outcome, Plan};
pub use error::{Refusal, StoreError};
pub use faults::Faults;
pub use model::{
    decode, encode, ChangeOrigin, LogEntry, PeerCursor, Snapshot, StoredRecord, FORMAT_VERSION,
    SUBJECT_ENTITY,
};
pub use protocol::{Path, Timings};
pub use store::{BatchView, Committed, Compacted, Effects, LogPage, Put, RecordKey, Scan, Store};
