//! Lag and backlog of one link (a peer this region pulls from), measured so
//! that clock skew between regions cannot distort it: a change's lag is the
//! time it waited in the peer's log on the peer's clock (`sender_now -
//! logged_at`), plus half the measured round trip, plus the local apply time on
//! the local clock. While the link is down or behind, the lag is the time since
//! this region last knew it had everything: an upper bound on the age of the
//! oldest change not yet applied, which keeps growing until the link heals.

use std::collections::BTreeMap;

/// Samples older than this no longer describe the link (ms).
pub const SAMPLE_FRESH_MS: u64 = 1_000;

#[derive(Debug)]
pub struct LinkState {
    pub connected: bool,
    /// Local time (ms) a frame last arrived.
    pub last_frame_ms: u64,
    /// Local time (ms) this region last had every change of the peer.
    pub caught_up_at_ms: u64,
    pub rtt_ms: u64,
    /// The durable cursor into the peer's log (direct stream).
    pub cursor: u64,
    /// The peer's newest log position, as last reported.
    pub sender_last_seq: u64,
    /// Newest lag sample per data class: (seconds, local time ms).
    recent: BTreeMap<String, (f64, u64)>,
    /// Lag samples (ms) of every applied change, for percentiles.
    pub hist_ms: hdrhistogram::Histogram<u64>,
    /// Origin commit to local apply (ms), across the two regions' clocks:
    /// exact on one machine (benchmarks), skewed by any clock offset elsewhere.
    pub commit_to_apply_ms: hdrhistogram::Histogram<u64>,
    pub applied_total: u64,
    pub forwarded_total: u64,
    pub last_error: Option<String>,
}

impl LinkState {
    pub fn new(now_ms: u64, cursor: u64) -> Self {
        LinkState {
            connected: false,
            last_frame_ms: 0,
            caught_up_at_ms: now_ms,
            rtt_ms: 0,
            cursor,
            sender_last_seq: cursor,
            recent: BTreeMap::new(),
            hist_ms: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000, 3).expect("bounds"),
            commit_to_apply_ms: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000, 3)
                .expect("bounds"),
            applied_total: 0,
            forwarded_total: 0,
            last_error: None,
        }
    }

    /// A frame arrived and was handled; `next_seq` is now durable.
    pub fn on_frame(&mut self, now_ms: u64, next_seq: u64, sender_last_seq: u64) {
        self.connected = true;
        self.last_frame_ms = now_ms;
        self.cursor = self.cursor.max(next_seq);
        self.sender_last_seq = sender_last_seq;
        if self.cursor >= self.sender_last_seq {
            self.caught_up_at_ms = now_ms;
        }
        self.last_error = None;
    }

    pub fn record_sample(&mut self, class: &str, lag_ms: u64, now_ms: u64) {
        self.recent.insert(class.to_owned(), (lag_ms as f64 / 1000.0, now_ms));
        let _ = self.hist_ms.record(lag_ms.clamp(1, 3_600_000));
    }

    pub fn on_down(&mut self, error: String) {
        self.connected = false;
        self.last_error = Some(error);
    }

    /// Whether frames are arriving (within `timeout_ms`).
    pub fn healthy(&self, now_ms: u64, timeout_ms: u64) -> bool {
        self.connected && now_ms.saturating_sub(self.last_frame_ms) <= timeout_ms
    }

    /// Changes of the peer's log not applied here yet (by log position).
    pub fn queue_depth(&self) -> u64 {
        self.sender_last_seq.saturating_sub(self.cursor)
    }

    /// The lag of one data class from this peer, in seconds.
    pub fn lag_seconds(&self, class: &str, now_ms: u64, timeout_ms: u64) -> f64 {
        let recent = self
            .recent
            .get(class)
            .filter(|(_, at)| now_ms.saturating_sub(*at) <= SAMPLE_FRESH_MS)
            .map(|(v, _)| *v)
            .unwrap_or(0.0);
        if self.healthy(now_ms, timeout_ms) && self.queue_depth() == 0 {
            recent
        } else {
            recent.max(now_ms.saturating_sub(self.caught_up_at_ms) as f64 / 1000.0)
        }
    }

    pub fn record_commit_to_apply(&mut self, ms: u64) {
        let _ = self.commit_to_apply_ms.record(ms.clamp(1, 3_600_000));
    }

    pub fn commit_to_apply_percentile_ms(&self, q: f64) -> u64 {
        if self.commit_to_apply_ms.is_empty() {
            0
        } else {
            self.commit_to_apply_ms.value_at_quantile(q)
        }
    }

    pub fn percentile_ms(&self, q: f64) -> u64 {
        if self.hist_ms.is_empty() {
            0
        } else {
            self.hist_ms.value_at_quantile(q)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_fresh_sample_while_caught_up() {
        let mut l = LinkState::new(0, 0);
        l.on_frame(100, 10, 10);
        l.record_sample("credentials", 45, 100);
        assert_eq!(l.lag_seconds("credentials", 200, 1_000), 0.045);
        assert_eq!(l.lag_seconds("content", 200, 1_000), 0.0);
        // A sample goes stale.
        l.on_frame(1_500, 10, 10);
        assert_eq!(l.lag_seconds("credentials", 1_500, 1_000), 0.0);
    }

    #[test]
    fn lag_grows_while_the_link_is_down_and_recovers() {
        let mut l = LinkState::new(0, 0);
        l.on_frame(1_000, 5, 5);
        l.on_down("connection refused".into());
        assert_eq!(l.lag_seconds("credentials", 7_000, 1_000), 6.0);
        // Reconnected but behind: still measured from the last caught-up moment.
        l.on_frame(8_000, 6, 50);
        assert_eq!(l.queue_depth(), 44);
        assert_eq!(l.lag_seconds("credentials", 8_000, 1_000), 7.0);
        l.on_frame(8_100, 50, 50);
        assert_eq!(l.lag_seconds("credentials", 8_100, 1_000), 0.0);
    }

    #[test]
    fn a_link_going_down_says_why_and_percentiles_follow_the_samples() {
        let mut l = LinkState::new(0, 0);
        assert_eq!((l.percentile_ms(0.99), l.commit_to_apply_percentile_ms(0.5)), (0, 0));
        l.on_frame(10, 1, 1);
        l.on_down("refused".into());
        assert!(!l.connected && !l.healthy(10, 1_000));
        assert_eq!(l.last_error.as_deref(), Some("refused"));
        for ms in [10, 20, 30, 40] {
            l.record_sample("content", ms, 100);
            l.record_commit_to_apply(ms * 2);
        }
        assert_eq!(l.percentile_ms(0.5), 20);
        assert_eq!(l.percentile_ms(1.0), 40);
        assert_eq!(l.commit_to_apply_percentile_ms(1.0), 80);
        l.on_frame(20, 1, 1);
        assert_eq!(l.last_error, None, "a frame clears the error");
    }

    #[test]
    fn silence_counts_as_down() {
        let mut l = LinkState::new(0, 0);
        l.on_frame(1_000, 5, 5);
        assert!(l.healthy(1_500, 1_000));
        assert!(!l.healthy(2_500, 1_000));
        assert_eq!(l.lag_seconds("x", 4_000, 1_000), 3.0);
    }
}
