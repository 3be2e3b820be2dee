//! The stability horizon: for each origin region, a log position up to which
//! every region has durably applied that origin's changes, and this region
//! has every change that was concurrent with them (issue 16, item 2). A
//! delete marker whose record's entries all lie at or below it may be
//! collected: no region lacks it, and no state it does not dominate can still
//! arrive.
//!
//! Each region acknowledges to every peer, every `ACK_INTERVAL`, its durable
//! direct cursors (how far it has applied each origin's log) and its own
//! durable position (`Report`). From the newest report of every region and
//! its own, a region takes a snapshot: `horizon[o]` is the least position of
//! origin `o` any region has applied (for `o` itself, its durable position).
//! That alone is not enough: a region `p` may have written something
//! concurrent with an entry before it applied that entry, and this region
//! may not have it yet. Any such write lies at or before `p`'s durable
//! position in that same report (`needs[p]`), so the snapshot *matures* once
//! this region's own direct cursor into every `p` has reached `needs[p]`.
//! The horizon is the pointwise maximum of matured snapshots (each is safe
//! on its own, origin by origin), so it never moves back, even when a peer's
//! report does (a crash loses cursor moves that covered nothing it holds).
//!
//! Pending snapshots are bounded (`PENDING_MAX`); a region that has not
//! reported at all holds every snapshot back, which is the point: a silent
//! region stops collection until it returns (or, later, is evicted).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often a region acknowledges its positions to each peer, and takes a
/// snapshot.
pub const ACK_INTERVAL: Duration = Duration::from_millis(500);
/// Snapshots waiting to mature, at most (older ones mature first; while the
/// queue is full no new one is taken).
pub const PENDING_MAX: usize = 64;

/// What a region acknowledges: its durable direct cursor into each peer's
/// log, and its own newest durable log position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub cursors: BTreeMap<String, u64>,
    pub durable_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    /// When the oldest report in it arrived.
    at_ms: u64,
    horizon: BTreeMap<String, u64>,
    /// For each peer: how far this region must have read its log.
    needs: BTreeMap<String, u64>,
}

/// One region's view of the stability horizon.
#[derive(Debug, Clone)]
pub struct Stability {
    me: String,
    /// Every region of the deployment, this one included.
    regions: Vec<String>,
    /// The newest report of each peer, with the local time it came.
    reports: BTreeMap<String, (Report, u64)>,
    pending: VecDeque<Snapshot>,
    horizon: Option<BTreeMap<String, u64>>,
    /// When the newest matured snapshot was taken.
    matured_at_ms: Option<u64>,
    /// A peer that has not reported for this long is evicted: left out of
    /// new snapshots (`[replication] peer_retention`; it must resync when it
    /// returns).
    retention_ms: u64,
    /// When this view started (a peer never heard from is evicted once the
    /// retention has passed since then).
    started_ms: u64,
}

impl Stability {
    pub fn new(me: &str, regions: impl IntoIterator<Item = String>) -> Stability {
        let mut regions: Vec<String> = regions.into_iter().collect();
        regions.sort();
        regions.dedup();
        assert!(regions.iter().any(|r| r == me), "{me} is one of the regions");
        Stability {
            me: me.to_owned(),
            regions,
            reports: BTreeMap::new(),
            pending: VecDeque::new(),
            horizon: None,
            matured_at_ms: None,
            retention_ms: u64::MAX,
            started_ms: 0,
        }
    }

    /// Evict peers silent for `retention_ms`, counted from `now_ms` for a
    /// peer never heard from.
    pub fn set_retention(&mut self, retention_ms: u64, now_ms: u64) {
        self.retention_ms = retention_ms;
        self.started_ms = now_ms;
    }

    /// The peers evicted at `now_ms`: silent for longer than the retention.
    pub fn evicted(&self, now_ms: u64) -> Vec<String> {
        self.regions
            .iter()
            .filter(|r| **r != self.me)
            .filter(|r| {
                let heard = self.reports.get(*r).map_or(self.started_ms, |(_, at)| *at);
                now_ms.saturating_sub(heard) > self.retention_ms
            })
            .cloned()
            .collect()
    }

    /// A peer's report arrived (reports of unknown regions are ignored).
    pub fn report(&mut self, from: &str, report: Report, now_ms: u64) {
        if from != self.me && self.regions.iter().any(|r| r == from) {
            self.reports.insert(from.to_owned(), (report, now_ms));
        }
    }

    /// This region's own positions now: mature what can be, and take a new
    /// snapshot when every peer has reported.
    pub fn tick(&mut self, own: &Report, now_ms: u64) {
        while let Some(s) = self.pending.front() {
            let ready =
                s.needs.iter().all(|(p, need)| own.cursors.get(p).copied().unwrap_or(0) >= *need);
            if !ready {
                break;
            }
            let s = self.pending.pop_front().expect("front exists");
            let horizon = self.horizon.get_or_insert_with(BTreeMap::new);
            for (o, seq) in s.horizon {
                let slot = horizon.entry(o).or_insert(0);
                *slot = (*slot).max(seq);
            }
            self.matured_at_ms = Some(s.at_ms);
        }
        if self.pending.len() < PENDING_MAX {
            if let Some(s) = self.snapshot(own, now_ms) {
                self.pending.push_back(s);
            }
        }
    }

    fn snapshot(&self, own: &Report, now_ms: u64) -> Option<Snapshot> {
        let mut views: Vec<(&str, &Report)> = vec![(self.me.as_str(), own)];
        // As old as the oldest report in it: a silent peer makes it old.
        let mut at_ms = now_ms;
        let evicted = self.evicted(now_ms);
        for r in &self.regions {
            if *r != self.me && !evicted.contains(r) {
                let (report, received_ms) = self.reports.get(r)?;
                views.push((r.as_str(), report));
                at_ms = at_ms.min(*received_ms);
            }
        }
        let horizon = self
            .regions
            .iter()
            .map(|o| {
                let least = views
                    .iter()
                    .map(|(p, rep)| {
                        if *p == o.as_str() {
                            rep.durable_seq
                        } else {
                            rep.cursors.get(o).copied().unwrap_or(0)
                        }
                    })
                    .min()
                    .unwrap_or(0);
                (o.clone(), least)
            })
            .collect();
        let needs = views
            .iter()
            .filter(|(p, _)| *p != self.me)
            .map(|(p, rep)| ((*p).to_owned(), rep.durable_seq))
            .collect();
        Some(Snapshot { at_ms, horizon, needs })
    }

    /// The horizon, once a snapshot has matured.
    pub fn horizon(&self) -> Option<&BTreeMap<String, u64>> {
        self.horizon.as_ref()
    }

    /// How old the horizon is: from the oldest report in the newest matured
    /// snapshot to `now_ms` (it grows while some region is silent).
    pub fn age_ms(&self, now_ms: u64) -> Option<u64> {
        self.matured_at_ms.map(|at| now_ms.saturating_sub(at))
    }

    /// When each peer's newest report came (local time), for status.
    pub fn reported_at(&self) -> impl Iterator<Item = (&str, u64)> {
        self.reports.iter().map(|(p, (_, at))| (p.as_str(), *at))
    }

    /// Snapshots waiting to mature.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REGIONS: [&str; 3] = ["a", "b", "c"];

    fn report(cursors: &[(&str, u64)], durable_seq: u64) -> Report {
        Report {
            cursors: cursors.iter().map(|(p, s)| ((*p).to_owned(), *s)).collect(),
            durable_seq,
        }
    }

    fn stability() -> Stability {
        Stability::new("a", REGIONS.iter().map(|r| (*r).to_owned()))
    }

    #[test]
    fn no_horizon_until_every_region_reported_and_the_snapshot_matured() {
        let mut s = stability();
        let own = report(&[("b", 5), ("c", 5)], 10);
        s.tick(&own, 0);
        assert_eq!(s.horizon(), None, "c has not reported");
        s.report("b", report(&[("a", 8), ("c", 5)], 7), 1);
        s.report("c", report(&[("a", 9), ("b", 6)], 9), 1);
        s.tick(&own, 2);
        // b wrote up to 7 and c up to 9 when they reported: a has read b to
        // 5 and c to 5, so what they wrote meanwhile may be concurrent.
        s.tick(&own, 3);
        assert_eq!(s.horizon(), None);
        let caught_up = report(&[("b", 7), ("c", 9)], 10);
        s.tick(&caught_up, 4);
        let h = s.horizon().unwrap();
        // a: least of b's and c's cursors into a (8, 9); b: least of a's
        // cursor (5) and c's (6), and b's own 7; c: a's 5, b's 5, c's 9.
        assert_eq!(h, &BTreeMap::from([("a".into(), 8), ("b".into(), 5), ("c".into(), 5)]));
        assert_eq!(s.age_ms(10), Some(9), "as old as the reports in it");
    }

    #[test]
    fn a_silent_region_stops_the_horizon_and_its_age_grows() {
        let mut s = stability();
        let own = report(&[("b", 5), ("c", 5)], 10);
        s.report("b", report(&[("a", 10), ("c", 5)], 5), 0);
        s.report("c", report(&[("a", 10), ("b", 5)], 5), 0);
        s.tick(&own, 0);
        s.tick(&own, 500);
        assert_eq!(s.horizon().map(|h| h["a"]), Some(10));
        // a writes on; b and c go silent: their old reports keep the horizon
        // where it was, however far a goes.
        for t in 1..200 {
            s.tick(&report(&[("b", 5), ("c", 5)], 10 + t), 500 + t * 500);
        }
        assert_eq!(s.horizon().map(|h| h["a"]), Some(10));
        assert!(s.pending() <= PENDING_MAX);
        assert!(s.age_ms(100_000).unwrap() > 90_000);
    }

    #[test]
    fn a_peer_silent_past_the_retention_is_evicted_and_no_longer_holds_the_horizon() {
        let mut s = stability();
        s.set_retention(10_000, 0);
        s.report("b", report(&[("a", 10), ("c", 5)], 5), 0);
        s.report("c", report(&[("a", 10), ("b", 5)], 5), 0);
        let own = report(&[("b", 5), ("c", 5)], 10);
        s.tick(&own, 0);
        s.tick(&own, 1);
        assert_eq!(s.horizon().map(|h| h["a"]), Some(10));
        // c goes silent; a writes on to 50 and b applies it.
        for t in 1..=30u64 {
            s.report("b", report(&[("a", 50), ("c", 5)], 5), t * 500);
            s.tick(&report(&[("b", 5), ("c", 5)], 50), t * 500);
        }
        assert_eq!(s.evicted(15_000), vec!["c".to_owned()]);
        // Held back by c until its retention passed, then past it.
        assert_eq!(s.horizon().map(|h| h["a"]), Some(50));
        // c's own changes: what b and a have applied of them.
        assert_eq!(s.horizon().map(|h| h["c"]), Some(5));
        // Back: it holds the horizon again.
        s.report("c", report(&[("a", 20), ("b", 5)], 5), 15_500);
        assert!(s.evicted(15_500).is_empty());
        s.tick(&report(&[("b", 5), ("c", 5)], 60), 15_500);
        s.tick(&report(&[("b", 5), ("c", 5)], 60), 16_000);
        assert_eq!(s.horizon().map(|h| h["a"]), Some(50), "never moves back");
    }

    proptest! {
        /// Whatever the order and staleness of the reports, the horizon never
        /// passes a position of an origin that some region has not applied
        /// (or the origin written), and never moves back.
        #[test]
        fn the_horizon_is_safe_and_monotone(
            steps in proptest::collection::vec((0usize..3, 0u64..4, 0u64..4, 0u64..4, any::<bool>()), 1..120)
        ) {
            let mut s = stability();
            // pos[r][r]: r's durable position; pos[r][o]: r's cursor into o,
            // never past o's durable position. Everything only grows.
            let mut pos = [[0u64; 3]; 3];
            let mut undelivered: Vec<(usize, Report)> = Vec::new();
            let mut last: Option<BTreeMap<String, u64>> = None;
            let report_of = |pos: &[[u64; 3]; 3], r: usize| Report {
                cursors: (0..3).filter(|o| *o != r).map(|o| (REGIONS[o].to_owned(), pos[r][o])).collect(),
                durable_seq: pos[r][r],
            };
            for (t, (r, grow, read_a, read_b, deliver)) in steps.into_iter().enumerate() {
                pos[r][r] += grow;
                let others: Vec<usize> = (0..3).filter(|o| *o != r).collect();
                for (o, by) in others.into_iter().zip([read_a, read_b]) {
                    pos[r][o] = (pos[r][o] + by).min(pos[o][o]);
                }
                if r == 0 {
                    s.tick(&report_of(&pos, 0), t as u64);
                } else {
                    undelivered.push((r, report_of(&pos, r)));
                }
                if deliver && !undelivered.is_empty() {
                    // The oldest report in flight arrives (late, maybe stale).
                    let (from, rep) = undelivered.remove(0);
                    s.report(REGIONS[from], rep, t as u64);
                }
                if let Some(h) = s.horizon() {
                    for (o, seq) in h {
                        let o = REGIONS.iter().position(|r| r == o).unwrap();
                        for p in 0..3 {
                            prop_assert!(*seq <= pos[p][o], "{} has not applied {}:{seq}", REGIONS[p], REGIONS[o]);
                        }
                    }
                    if let Some(prev) = &last {
                        for (o, seq) in prev {
                            prop_assert!(h[o] >= *seq, "moved back");
                        }
                    }
                    last = Some(h.clone());
                }
            }
        }
    }
}
