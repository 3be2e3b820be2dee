//! Replication between regions. Every region pulls from every peer over two
//! paths, each with its own durable cursor into the peer's log:
//!
//! - the direct stream (`GET /v1/replication/stream`): a long-lived response
//!   of frames carrying the changes that originated at the peer, pushed as
//!   soon as they commit, so lag is one link latency plus one local commit;
//! - forwarding (`POST /v1/replication/forward`): changes the peer received
//!   from third regions that this region does not have yet, once they are
//!   older than the forward delay. The request carries this region's
//!   per-origin high-water marks (its direct cursors), so in steady state a
//!   change crosses each link once, and when A and B cannot talk but both reach
//!   C, A's changes still reach B through C.
//!
//! The sender filters out what the receiver's jurisdiction may not hold
//! (`filter`); the receiver checks again before it stores anything. Batches are
//! applied through the group-commit writer together with the cursor advance,
//! so apply is idempotent and survives crashes. Requests between regions carry
//! the shared secret as a bearer token.

pub mod filter;
pub mod lag;
pub mod receiver;
pub mod seal;
pub mod sender;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use lag::LinkState;

/// Cursor key of the direct stream from `peer`.
pub fn direct_key(peer: &str) -> String {
    format!("{peer}/direct")
}

/// Cursor key of forwarding from `peer`.
pub fn forward_key(peer: &str) -> String {
    format!("{peer}/forward")
}

/// Timings of the replication protocol.
#[derive(Debug, Clone)]
pub struct Timings {
    pub heartbeat: Duration,
    /// No frame for this long: the link is down.
    pub link_timeout: Duration,
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
}

/// A region's replication state, shared by the handlers and the loops.
pub struct Replication {
    /// True while the region is isolated: it exchanges nothing with peers.
    pub isolated: watch::Sender<bool>,
    /// The newest committed log position.
    pub last_seq: std::sync::Arc<watch::Sender<u64>>,
    pub links: BTreeMap<String, Mutex<LinkState>>,
    /// Base URL of each peer (the configured address, or a latency proxy).
    pub peer_urls: BTreeMap<String, String>,
    /// Shared secret authenticating regions to each other; `None` disables replication.
    pub secret: Option<String>,
    pub timings: Timings,
    /// Keys for sealed transfers out of this region's jurisdiction.
    pub sealer: seal::Sealer,
    /// After a restore: how far this region's own changes went in the backup.
    pub own_have: Option<u64>,
}

impl Replication {
    pub fn is_isolated(&self) -> bool {
        *self.isolated.borrow()
    }

    pub fn link(&self, peer: &str) -> std::sync::MutexGuard<'_, LinkState> {
        self.links.get(peer).expect("known peer").lock().expect("link lock")
    }
}

pub use tandem_http::secret_matches;
