//! Lossless log compaction, decided: which replication log entries may go.
//!
//! A log entry carries its record's full merged state at that point, or a
//! delta (`tandem_merge::delta`: big sets and field records), so an entry
//! superseded by a newer whole-state entry of the same record from the same
//! origin carries nothing the newer one lacks, whatever the peers' cursors
//! say: a peer behind both receives the newer one. A delta supersedes
//! nothing (the periodic whole state of a big record ends its chain). Same origin, because the
//! filters choose by origin (the direct stream sends this region's own
//! changes, forwarding third regions' changes past per-origin marks). The
//! superseding entry must also be older than a horizon (at least the forward
//! delay): forwarding waits until an entry is that old, so a record rewritten
//! faster than the delay would otherwise always have its only eligible entry
//! removed and never be forwarded. Sequence numbers of removed entries are
//! never handed out again (`Store`, point 4), so removal leaves gaps that
//! cursors step over.
//!
//! `Superseded` walks a log from its newest entry to its oldest and answers,
//! entry by entry, whether it may go. The store runs it over its log and
//! removes what it says, in bounded steps.

use std::collections::HashSet;
use std::time::Duration;

use crate::model::LogHead;

/// Superseding entries younger than this do not supersede yet.
pub const HORIZON_MIN: Duration = Duration::from_secs(2);

/// The horizon for a forward delay of `forward_delay`: at least four forward
/// delays, so that forwarding always finds an entry old enough to send.
pub fn horizon(forward_delay: Duration) -> Duration {
    HORIZON_MIN.max(forward_delay * 4)
}

/// The walk, newest entry first.
#[derive(Debug)]
pub struct Superseded {
    /// Entries logged at or before this may supersede older ones.
    horizon_ms: u64,
    /// `(entity, id, origin)` with an entry seen that may supersede.
    superseders: HashSet<(String, String, String)>,
    /// Entries seen logged after the horizon (kept, whatever follows them).
    young: u64,
}

impl Superseded {
    pub fn new(horizon_ms: u64) -> Superseded {
        Superseded { horizon_ms, superseders: HashSet::new(), young: 0 }
    }

    /// Whether `head`, the next entry going back in the log, may be removed.
    pub fn removable(&mut self, head: &LogHead<'_>) -> bool {
        let key = (head.entity.to_owned(), head.id.to_owned(), head.origin.to_owned());
        if self.superseders.contains(&key) {
            return true;
        }
        // A delta carries only its change: it supersedes nothing.
        if head.delta {
            if head.logged_at_ms > self.horizon_ms {
                self.young += 1;
            }
        } else if head.logged_at_ms <= self.horizon_ms {
            self.superseders.insert(key);
        } else {
            self.young += 1;
        }
        false
    }

    /// Entries seen that were logged after the horizon: a later pass, once
    /// they are old enough, may find them superseded.
    pub fn young(&self) -> u64 {
        self.young
    }

    /// Distinct (record, origin) pairs that have a superseding entry.
    pub fn keys(&self) -> usize {
        self.superseders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head<'a>(seq: u64, id: &'a str, origin: &'a str, logged_at_ms: u64) -> LogHead<'a> {
        let delta = false;
        LogHead {
            seq,
            origin,
            origin_seq: seq,
            committed_at_ms: 0,
            logged_at_ms,
            entity: "e",
            id,
            delta,
        }
    }

    #[test]
    fn the_horizon_covers_the_forward_delay() {
        assert_eq!(horizon(Duration::from_millis(500)), Duration::from_secs(2));
        assert_eq!(horizon(Duration::from_secs(3)), Duration::from_secs(12));
    }

    #[test]
    fn an_entry_goes_only_behind_a_newer_one_of_the_same_record_and_origin() {
        let log = [
            head(1, "a", "eu", 10),
            head(2, "a", "us", 11),
            head(3, "b", "eu", 12),
            head(4, "a", "eu", 13),
            head(5, "b", "eu", 90),
        ];
        let mut s = Superseded::new(50);
        let removed: Vec<u64> =
            log.iter().rev().filter(|h| s.removable(h)).map(|h| h.seq).collect();
        // 1 goes behind 4; 3 stays: its successor 5 is newer than the horizon.
        assert_eq!(removed, [1]);
        assert_eq!(s.young(), 1);
    }

    proptest! {
        /// Lossless: the newest entry of every (record, origin) stays, and
        /// every removed entry has a kept, newer whole-state entry of its
        /// record and origin logged at or before the horizon.
        #[test]
        fn compaction_keeps_the_newest_of_each_record_and_origin(
            writes in proptest::collection::vec((0..6usize, 0..3usize, 0..100u64), 0..200),
            horizon_ms in 0..100u64,
            deltas in proptest::collection::vec(any::<bool>(), 200),
        ) {
            let ids = ["a", "b", "c", "d", "e", "f"];
            let origins = ["eu", "us", "ap"];
            let mut logged_at_ms = 0;
            let log: Vec<LogHead<'_>> = writes.iter().enumerate().map(|(i, (id, o, step))| {
                logged_at_ms += step % 3;
                LogHead { delta: deltas[i], ..head(i as u64 + 1, ids[*id], origins[*o], logged_at_ms) }
            }).collect();
            let mut s = Superseded::new(horizon_ms);
            let removed: HashSet<u64> =
                log.iter().rev().filter(|h| s.removable(h)).map(|h| h.seq).collect();
            let kept: Vec<&LogHead<'_>> = log.iter().filter(|h| !removed.contains(&h.seq)).collect();
            for h in &log {
                let same = |k: &&LogHead<'_>| k.id == h.id && k.origin == h.origin;
                let newest = log.iter().filter(|k| same(k)).map(|k| k.seq).max();
                if newest == Some(h.seq) {
                    prop_assert!(!removed.contains(&h.seq), "the newest entry stays");
                }
                // A removed entry, delta or whole, is behind a kept, newer
                // whole state (which has every change before it).
                if removed.contains(&h.seq) {
                    prop_assert!(kept.iter().any(|k| same(k) && !k.delta
                        && k.seq > h.seq && k.logged_at_ms <= horizon_ms));
                }
                // A delta stays unless a newer whole state follows it.
                if h.delta && !removed.contains(&h.seq) {
                    let whole_after = log.iter().any(|k| same(&k) && !k.delta
                        && k.seq > h.seq && k.logged_at_ms <= horizon_ms);
                    prop_assert!(!whole_after, "a delta behind a whole state may go");
                }
            }
        }
    }
}
