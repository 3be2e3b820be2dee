//! Hybrid logical clock (Kulkarni et al.): a timestamp that never goes backwards,
//! stays close to physical time, and absorbs the timestamps of remote writes so
//! that a write made after seeing another carries a larger timestamp. A remote
//! timestamp further ahead of local physical time than `max_offset_ms` is refused
//! (and counted) instead of dragging the local clock into the future.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// The maximum accepted offset of a remote timestamp ahead of local time.
pub const DEFAULT_MAX_OFFSET_MS: u64 = 500;

/// A hybrid-logical-clock timestamp: physical milliseconds since the Unix epoch,
/// then a logical counter for events within the same millisecond. Ordered by
/// `(wall_ms, logical)`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hlc {
    pub wall_ms: u64,
    pub logical: u32,
}

impl Hlc {
    pub const ZERO: Hlc = Hlc { wall_ms: 0, logical: 0 };

    pub fn new(wall_ms: u64, logical: u32) -> Self {
        Hlc { wall_ms, logical }
    }
}

impl std::fmt::Display for Hlc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.wall_ms, self.logical)
    }
}

/// Where physical time comes from: the system clock in production, a manual clock
/// in tests and simulation.
pub trait TimeSource: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock, optionally skewed (for tests that need a region whose clock
/// is wrong, `tandem node --clock-skew-ms`).
#[derive(Debug, Default)]
pub struct SystemTime {
    skew_ms: AtomicI64,
}

impl SystemTime {
    pub fn with_skew_ms(skew_ms: i64) -> Self {
        SystemTime { skew_ms: AtomicI64::new(skew_ms) }
    }

    pub fn set_skew_ms(&self, skew_ms: i64) {
        self.skew_ms.store(skew_ms, Ordering::Relaxed);
    }
}

impl TimeSource for SystemTime {
    fn now_ms(&self) -> u64 {
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        real.saturating_add_signed(self.skew_ms.load(Ordering::Relaxed))
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Default, Clone)]
pub struct ManualTime {
    now_ms: Arc<AtomicU64>,
}

impl ManualTime {
    pub fn new(now_ms: u64) -> Self {
        ManualTime { now_ms: Arc::new(AtomicU64::new(now_ms)) }
    }
    pub fn set_ms(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }
    pub fn advance_ms(&self, by_ms: u64) {
        self.now_ms.fetch_add(by_ms, Ordering::SeqCst);
    }
}

impl TimeSource for ManualTime {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClockError {
    #[error("remote timestamp {remote} is {ahead_ms} ms ahead of local time, more than the maximum offset of {max_offset_ms} ms")]
    OffsetExceeded { remote: Hlc, ahead_ms: u64, max_offset_ms: u64 },
    #[error("logical counter overflow at wall time {wall_ms}")]
    LogicalOverflow { wall_ms: u64 },
}

/// A hybrid logical clock over a time source.
pub struct HlcClock {
    time: Arc<dyn TimeSource>,
    last: Mutex<Hlc>,
    max_offset_ms: u64,
    offset_rejections: AtomicU64,
}

impl std::fmt::Debug for HlcClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HlcClock")
            .field("last", &*self.last.lock().expect("hlc lock"))
            .field("max_offset_ms", &self.max_offset_ms)
            .finish()
    }
}

impl HlcClock {
    pub fn new(time: Arc<dyn TimeSource>, max_offset_ms: u64) -> Self {
        HlcClock {
            time,
            last: Mutex::new(Hlc::ZERO),
            max_offset_ms,
            offset_rejections: AtomicU64::new(0),
        }
    }

    /// A clock on the system time with the default maximum offset.
    pub fn system() -> Self {
        Self::new(Arc::new(SystemTime::default()), DEFAULT_MAX_OFFSET_MS)
    }

    /// Physical time of the underlying source, in ms.
    pub fn physical_ms(&self) -> u64 {
        self.time.now_ms()
    }

    pub fn max_offset_ms(&self) -> u64 {
        self.max_offset_ms
    }

    /// How many remote timestamps were refused for being too far ahead.
    pub fn offset_rejections(&self) -> u64 {
        self.offset_rejections.load(Ordering::Relaxed)
    }

    /// The last timestamp handed out or observed.
    pub fn last(&self) -> Hlc {
        *self.last.lock().expect("hlc lock")
    }

    /// A new timestamp for a local event, strictly greater than every timestamp
    /// this clock has produced or accepted before.
    pub fn now(&self) -> Hlc {
        let pt = self.time.now_ms();
        let mut last = self.last.lock().expect("hlc lock");
        let next = if pt > last.wall_ms {
            Hlc::new(pt, 0)
        } else {
            // The logical counter has 2^32 values per millisecond; running out
            // would take four billion events in one millisecond.
            Hlc::new(last.wall_ms, last.logical.checked_add(1).expect("hlc logical overflow"))
        };
        assert!(next > *last, "hlc went backwards: {next} after {last}");
        *last = next;
        next
    }

    /// Absorb a remote timestamp. Returns the new local timestamp, which is
    /// greater than both the remote one and every earlier local one. A remote
    /// timestamp more than `max_offset_ms` ahead of local physical time is refused
    /// and counted; the local clock is left unchanged.
    pub fn observe(&self, remote: Hlc) -> Result<Hlc, ClockError> {
        let pt = self.time.now_ms();
        if remote.wall_ms > pt.saturating_add(self.max_offset_ms) {
            self.offset_rejections.fetch_add(1, Ordering::Relaxed);
            return Err(ClockError::OffsetExceeded {
                remote,
                ahead_ms: remote.wall_ms - pt,
                max_offset_ms: self.max_offset_ms,
            });
        }
        let mut last = self.last.lock().expect("hlc lock");
        let wall_ms = pt.max(last.wall_ms).max(remote.wall_ms);
        let logical = if wall_ms == last.wall_ms && wall_ms == remote.wall_ms {
            last.logical.max(remote.logical).checked_add(1)
        } else if wall_ms == last.wall_ms {
            last.logical.checked_add(1)
        } else if wall_ms == remote.wall_ms {
            remote.logical.checked_add(1)
        } else {
            Some(0)
        }
        .ok_or(ClockError::LogicalOverflow { wall_ms })?;
        let next = Hlc::new(wall_ms, logical);
        assert!(next > *last && next > remote, "hlc observe broke monotonicity");
        *last = next;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn clock_at(ms: u64) -> (ManualTime, HlcClock) {
        let t = ManualTime::new(ms);
        let c = HlcClock::new(Arc::new(t.clone()), DEFAULT_MAX_OFFSET_MS);
        (t, c)
    }

    #[test]
    fn now_is_monotonic_when_time_stands_still_or_goes_back() {
        let (t, c) = clock_at(1_000);
        let a = c.now();
        let b = c.now();
        assert!(b > a);
        t.set_ms(500);
        let d = c.now();
        assert!(d > b);
        assert_eq!(d.wall_ms, 1_000);
    }

    #[test]
    fn observe_moves_past_remote() {
        let (_t, c) = clock_at(1_000);
        let r = Hlc::new(1_400, 7);
        let n = c.observe(r).unwrap();
        assert!(n > r);
        assert!(c.now() > n);
    }

    #[test]
    fn observe_refuses_far_future_and_counts() {
        let (_t, c) = clock_at(1_000);
        let before = c.now();
        let err = c.observe(Hlc::new(1_000 + DEFAULT_MAX_OFFSET_MS + 1, 0)).unwrap_err();
        assert!(matches!(err, ClockError::OffsetExceeded { ahead_ms: 501, .. }));
        assert_eq!(c.offset_rejections(), 1);
        assert_eq!(c.last(), before, "a refused timestamp leaves the clock unchanged");
        // Exactly at the limit is accepted.
        c.observe(Hlc::new(1_000 + DEFAULT_MAX_OFFSET_MS, 0)).unwrap();
        assert_eq!(c.offset_rejections(), 1);
    }

    #[test]
    fn skewed_system_time_is_skewed() {
        let plain = SystemTime::default().now_ms();
        let behind = SystemTime::with_skew_ms(-10_000).now_ms();
        assert!(plain >= behind + 9_000);
    }

    proptest! {
        #[test]
        fn every_timestamp_is_greater_than_all_before(
            steps in proptest::collection::vec((0u8..3, 0u64..2_000, 0u32..5), 1..200)
        ) {
            let (t, c) = clock_at(10_000);
            let mut prev = Hlc::ZERO;
            for (kind, ms, logical) in steps {
                let next = match kind {
                    0 => { t.set_ms(9_000 + ms); c.now() }
                    1 => match c.observe(Hlc::new(9_000 + ms, logical)) {
                        Ok(h) => h,
                        Err(_) => continue,
                    },
                    _ => { t.advance_ms(ms % 10); c.now() }
                };
                prop_assert!(next > prev);
                prev = next;
            }
        }
    }
}
