//! The storage under the redb file and its log: `BackendFactory` opens it
//! (the region's files, or in tests storage that fails on demand), and
//! `TrackedBackend` notes which call failed, so that a failed write is told
//! apart as out of space (`StoreError::Full`, retried once there is room) or
//! anything else (`StoreError::Fatal`).

use std::io;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redb::StorageBackend;

/// Opens the storage under a database: the region's file, or (in tests) a
/// backend that fails on demand.
pub type BackendFactory = Box<dyn Fn() -> io::Result<Box<dyn StorageBackend>> + Send + Sync>;

/// Which calls of the backend failed since the file was opened.
#[derive(Debug, Default)]
pub(super) struct Failures {
    pub(super) no_space: AtomicBool,
    pub(super) other: AtomicBool,
}

/// Out of space (or of quota): the write can be tried again later.
pub(super) fn is_no_space(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(122) // EDQUOT
}

#[derive(Debug)]
pub(super) struct TrackedBackend {
    inner: Box<dyn StorageBackend>,
    failures: Arc<Failures>,
}

impl TrackedBackend {
    pub(super) fn new(inner: Box<dyn StorageBackend>, failures: Arc<Failures>) -> Self {
        TrackedBackend { inner, failures }
    }

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

/// Opens `path` as a redb file backend (a lock on the file keeps a second
/// process out).
pub(super) fn file_backend(path: PathBuf) -> BackendFactory {
    Box::new(move || {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let backend = redb::backends::FileBackend::new(file).map_err(io::Error::other)?;
        Ok(Box::new(backend) as Box<dyn StorageBackend>)
    })
}
