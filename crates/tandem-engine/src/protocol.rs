//! The names and timings of the replication protocol and the data plane that
//! more than one process relies on: header names, cursor keys, the two pull
//! paths and their timings (from `[replication]`), and the bounds of a pull.

use std::time::Duration;

/// The caller's location, as the router (or a client) names it.
pub const CLIENT_REGION_HEADER: &str = "x-tandem-client-region";
/// Who served a routed response.
pub const REGION_HEADER: &str = "x-tandem-region";
/// How a routed response was routed (`home`, `failover`, `nearest`).
pub const ROUTE_HEADER: &str = "x-tandem-route";
/// Set by the router on a write it sends away from the subject's home region.
pub const FAILOVER_HEADER: &str = "x-tandem-failover";
/// The pulling region's name on replication requests.
pub const PEER_HEADER: &str = "x-tandem-peer";

/// Most log entries scanned for one forward request (most are skipped).
pub const FORWARD_SCAN_MAX: usize = 8_192;

/// Most log entries scanned for one batch of the direct stream (a region's
/// log holds its peers' changes too, which the direct stream skips).
pub const DIRECT_SCAN_MAX: usize = 8_192;

/// The two paths a region pulls a peer's log over, each with its own cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Path {
    /// The peer's own changes, streamed as they commit.
    Direct,
    /// Changes the peer received from third regions.
    Forward,
    /// Full states of records from an anti-entropy repair (`repair`): no
    /// cursor; whatever changes here is logged as this region's own.
    Repair,
}

impl Path {
    /// The key of the durable cursor of this path from `peer`.
    pub fn cursor_key(self, peer: &str) -> String {
        match self {
            Path::Direct => format!("{peer}/direct"),
            Path::Forward => format!("{peer}/forward"),
            Path::Repair => format!("{peer}/repair"),
        }
    }
}

/// Timings of the replication protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timings {
    pub heartbeat: Duration,
    /// No frame for this long: the link is down.
    pub link_timeout: Duration,
    /// Forwarding waits this long for the direct path to deliver a change first.
    pub forward_delay: Duration,
    pub forward_interval: Duration,
    pub connect_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Timings {
    pub fn from_config(c: &tandem_config::ReplicationConfig) -> Self {
        Timings {
            heartbeat: Duration::from_millis(250),
            link_timeout: Duration::from_millis(1_500),
            forward_delay: Duration::from_millis(500),
            forward_interval: c.poll_interval.max(Duration::from_millis(100)),
            connect_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(50),
            backoff_max: c.backoff_max,
        }
    }

    /// How long a receiver waits for the stream's next frame before it calls
    /// the link down.
    pub fn idle_timeout(&self) -> Duration {
        self.heartbeat * 6
    }
}

/// The largest frame or forward answer a receiver accepts: twice the batch
/// byte limit, at least 1 MiB (one entry always goes, so a batch may exceed
/// its limit by one entry).
pub fn frame_bytes_max(c: &tandem_config::ReplicationConfig) -> usize {
    c.batch_bytes_max.saturating_mul(2).max(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_and_bounds_follow_the_config() {
        let mut c = tandem_config::ReplicationConfig::default();
        let t = Timings::from_config(&c);
        assert_eq!(t.idle_timeout(), Duration::from_millis(1_500));
        assert_eq!(t.backoff_max, c.backoff_max);
        c.batch_bytes_max = 4 << 20;
        assert_eq!(frame_bytes_max(&c), 8 << 20);
        c.batch_bytes_max = 1_000;
        assert_eq!(frame_bytes_max(&c), 1 << 20, "at least 1 MiB");
        assert_eq!(Path::Direct.cursor_key("eu-west"), "eu-west/direct");
        assert_eq!(Path::Forward.cursor_key("eu-west"), "eu-west/forward");
    }
}
