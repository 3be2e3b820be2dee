//! Storage errors. A caller can report them (503 to a client, a retry for the
//! replication loop); corruption of what we wrote ourselves is not one of them.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend: {0}")]
    Backend(String),
    #[error("data file has format version {found}, this build reads version {expected}; refusing to open it")]
    IncompatibleFormat { found: u64, expected: u64 },
    #[error("data directory belongs to region `{found}`, not `{expected}`")]
    WrongRegion { found: String, expected: String },
    #[error("cannot decode stored {what}: {message}")]
    Decode { what: &'static str, message: String },
    #[error("write aborted: {0}")]
    Aborted(String),
    /// The disk has no room for the write: nothing of it is durable, the
    /// store is back at its last commit after `Store::recover`, and writes
    /// may succeed once space returns.
    #[error("no space left for the store: {0}")]
    Full(String),
    /// A sync or a write failed for another reason: what the operating system
    /// holds of the file is unknown afterwards (the PostgreSQL fsync lesson),
    /// so the process must stop and recover from disk on restart.
    #[error("storage I/O failed, the store must be recovered from disk: {0}")]
    Fatal(String),
    /// Closed after a failed write, until `Store::recover` reopens it.
    #[error("the store is closed after a failed write and reopens once it can")]
    Closed,
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Backend(e.to_string())
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
