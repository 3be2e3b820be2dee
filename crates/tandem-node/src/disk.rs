//! Running out of disk without falling over. A region keeps an emergency
//! ballast file in its data directory (CockroachDB's `EMERGENCY_BALLAST`):
//! when a commit fails for lack of space, the ballast is deleted so that the
//! store can reopen at its last commit and reads, replication serving and the
//! audit log go on, while writes are refused with 507 `insufficient_storage`
//! and `/healthz` says the region cannot write (the router then sends writes
//! elsewhere in the jurisdiction). Once the filesystem has room for the
//! ballast twice over, the ballast is made again and writes resume by
//! themselves. The sizing and the resume rule are pure functions.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The ballast's file name, in the region's data directory.
pub const BALLAST_FILE: &str = "EMERGENCY_BALLAST";
const MIB: u64 = 1024 * 1024;

/// Largest ballast: enough for the store to reopen and for the audit log and
/// replication serving to go on for a long while; small enough that a
/// deployment of many regions on one machine (`tandem up`) does not notice.
pub const BALLAST_BYTES_MAX: u64 = 32 * MIB;

/// 1 % of the filesystem, at least 1 MiB and at most `BALLAST_BYTES_MAX`.
pub fn ballast_bytes(filesystem_bytes: u64) -> u64 {
    (filesystem_bytes / 100).clamp(MIB, BALLAST_BYTES_MAX)
}

/// Writes resume once the filesystem could hold the ballast twice (once for
/// the new ballast, once for the writes that follow) on top of what the
/// store still needs to make durable where it belongs (`pending_bytes`: its
/// write-ahead log, which the next checkpoint writes into the data file).
pub fn may_resume(free_bytes: u64, ballast_bytes: u64, pending_bytes: u64) -> bool {
    free_bytes >= ballast_bytes.saturating_mul(2).saturating_add(pending_bytes)
}

/// Space of the filesystem holding `path`: (total, free to unprivileged users).
pub fn filesystem_space(path: &Path) -> Option<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let unit = s.fragment_size() as u64;
    Some((s.blocks() as u64 * unit, s.blocks_available() as u64 * unit))
}

pub struct DiskGuard {
    /// `None` for a store that is not on disk.
    ballast: Option<PathBuf>,
    ballast_bytes: u64,
    full: AtomicBool,
    full_since_ms: AtomicU64,
}

impl DiskGuard {
    /// Guard the region's data directory `dir`: make the ballast if it is
    /// missing. A filesystem without room for it starts full.
    pub fn open(dir: &Path, now_ms: u64) -> DiskGuard {
        let total = filesystem_space(dir).map(|(t, _)| t).unwrap_or(0);
        let guard = DiskGuard {
            ballast: Some(dir.join(BALLAST_FILE)),
            ballast_bytes: ballast_bytes(total),
            full: AtomicBool::new(false),
            full_since_ms: AtomicU64::new(0),
        };
        if let Err(e) = guard.make_ballast() {
            tracing::error!(error = %e, dir = %dir.display(), "no room for the emergency ballast: starting without writes");
            guard.full.store(true, Ordering::SeqCst);
            guard.full_since_ms.store(now_ms, Ordering::SeqCst);
        }
        guard
    }

    /// For a store in memory: never full.
    pub fn disabled() -> DiskGuard {
        DiskGuard {
            ballast: None,
            ballast_bytes: 0,
            full: AtomicBool::new(false),
            full_since_ms: AtomicU64::new(0),
        }
    }

    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::SeqCst)
    }

    /// Since when (local ms) the region cannot write.
    pub fn full_since_ms(&self) -> Option<u64> {
        self.is_full().then(|| self.full_since_ms.load(Ordering::SeqCst))
    }

    pub fn ballast_bytes(&self) -> u64 {
        self.ballast_bytes
    }

    /// Free bytes of the data directory's filesystem.
    /// (filesystem size, free bytes), `None` without a data directory.
    pub fn space(&self) -> Option<(u64, u64)> {
        filesystem_space(self.ballast.as_ref()?.parent()?)
    }

    pub fn free_bytes(&self) -> Option<u64> {
        let dir = self.ballast.as_ref()?.parent()?;
        filesystem_space(dir).map(|(_, free)| free)
    }

    /// A commit failed for lack of space: stop writing and give the room the
    /// ballast held to the store's recovery and to everything that still runs.
    pub fn on_full(&self, now_ms: u64) {
        if !self.full.swap(true, Ordering::SeqCst) {
            self.full_since_ms.store(now_ms, Ordering::SeqCst);
            tracing::error!("the disk is full: refusing writes (507) until space returns; reads and replication go on");
        }
        if let Some(path) = &self.ballast {
            match std::fs::remove_file(path) {
                Ok(()) => {
                    tracing::warn!(freed_bytes = self.ballast_bytes, "emergency ballast released");
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::error!(error = %e, "cannot remove the emergency ballast"),
            }
        }
    }

    /// While full: when there is room again, make the ballast again and take
    /// writes. Returns true when writes resumed.
    pub fn try_resume(&self, pending_bytes: u64) -> bool {
        if !self.is_full() || self.ballast.is_none() {
            return false;
        }
        let Some(free) = self.free_bytes() else { return false };
        if !may_resume(free, self.ballast_bytes, pending_bytes) {
            return false;
        }
        if let Err(e) = self.make_ballast() {
            tracing::warn!(error = %e, "space returned but the ballast could not be made; still refusing writes");
            return false;
        }
        self.full.store(false, Ordering::SeqCst);
        tracing::warn!(free_bytes = free, "space returned: taking writes again");
        true
    }

    fn make_ballast(&self) -> std::io::Result<()> {
        let Some(path) = &self.ballast else { return Ok(()) };
        if std::fs::metadata(path).is_ok_and(|m| m.len() >= self.ballast_bytes) {
            return Ok(());
        }
        let result = write_zeros(path, self.ballast_bytes);
        if result.is_err() {
            let _ = std::fs::remove_file(path);
        }
        result
    }
}

/// Really allocate `len` bytes (a sparse file would hold no space):
/// `posix_fallocate`, which the C library carries out by writing zeros where
/// the filesystem cannot allocate by itself.
fn write_zeros(path: &Path, len: u64) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(path)?;
    let len = i64::try_from(len).map_err(std::io::Error::other)?;
    nix::fcntl::posix_fallocate(&f, 0, len).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ballast_is_one_percent_within_bounds() {
        assert_eq!(ballast_bytes(24 * MIB), MIB);
        assert_eq!(ballast_bytes(0), MIB);
        assert_eq!(ballast_bytes(2_000 * MIB), 20 * MIB);
        assert_eq!(ballast_bytes(u64::MAX), BALLAST_BYTES_MAX);
    }

    #[test]
    fn writes_resume_with_room_for_two_ballasts() {
        assert!(!may_resume(MIB, MIB, 0));
        assert!(!may_resume(2 * MIB - 1, MIB, 0));
        assert!(may_resume(2 * MIB, MIB, 0));
        assert!(!may_resume(u64::MAX - 1, u64::MAX, 0));
        assert!(!may_resume(4 * MIB - 1, MIB, 2 * MIB), "room for the pending checkpoint too");
        assert!(may_resume(4 * MIB, MIB, 2 * MIB));
    }

    #[test]
    fn full_releases_the_ballast_and_resume_makes_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let g = DiskGuard::open(dir.path(), 5);
        let ballast = dir.path().join(BALLAST_FILE);
        assert!(!g.is_full());
        assert_eq!(std::fs::metadata(&ballast).unwrap().len(), g.ballast_bytes());
        g.on_full(7);
        assert!(g.is_full() && !ballast.exists());
        assert_eq!(g.full_since_ms(), Some(7));
        assert!(g.try_resume(0), "a temp dir has room");
        assert!(!g.is_full() && ballast.exists());
        assert!(!DiskGuard::disabled().is_full());
    }
}
