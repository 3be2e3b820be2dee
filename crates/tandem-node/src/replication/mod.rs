//! Replication between regions, the I/O side (the decisions are in
//! `tandem_engine`: `serve`, `apply`, `receive`, `link`). Every region pulls
//! from every peer over two paths, each with its own durable cursor into the
//! peer's log:
//!
//! - the direct stream (`GET /v1/replication/stream`): a long-lived response
//!   of frames carrying the changes that originated at the peer, pushed as
//!   soon as they are durable, so lag is one link latency plus one local
//!   commit;
//! - forwarding (`POST /v1/replication/forward`): changes the peer received
//!   from third regions that this region does not have yet, once they are
//!   older than the forward delay. The request carries this region's
//!   per-origin high-water marks (its direct cursors), so in steady state a
//!   change crosses each link once, and when A and B cannot talk but both reach
//!   C, A's changes still reach B through C.
//!
//! The sender filters out what the receiver's jurisdiction may not hold; the
//! receiver checks again before it stores anything. Batches are applied
//! through the group-commit writer together with the cursor advance, so apply
//! is idempotent and survives crashes. Regions prove who they are with their
//! certificates (with `--insecure`, with the shared secret; see `auth`).
//! Each region also acknowledges its durable positions to every peer
//! (`POST /v1/replication/ack`, see `ack`), from which each keeps the
//! stability horizon.

pub mod ack;
pub mod receiver;
pub mod repair;
pub mod sender;

use std::collections::BTreeMap;
use std::sync::Mutex;

use tandem_engine::link::LinkState;
use tandem_engine::Timings;
use tokio::sync::watch;

pub use tandem_http::secret_matches;

/// A region's replication state, shared by the handlers and the loops.
pub struct Replication {
    /// True while the region is isolated: it exchanges nothing with peers.
    pub isolated: watch::Sender<bool>,
    /// The newest durable log position.
    pub durable_seq: std::sync::Arc<watch::Sender<u64>>,
    pub links: BTreeMap<String, Mutex<LinkState>>,
    /// Base URL of each peer (the configured address, or a latency proxy).
    pub peer_urls: BTreeMap<String, String>,
    /// One pooled client per peer, over TLS with this region's certificate.
    pub clients: tandem_http::client::Clients<http_body_util::Full<bytes::Bytes>>,
    pub timings: Timings,
    /// After a restore: how far this region's own changes went in the backup.
    pub own_have: Option<u64>,
    /// The stability horizon, from the peers' acknowledgements (`ack`).
    pub stability: Mutex<tandem_engine::stability::Stability>,
    /// The newest resync after an eviction, per peer: what it did and how
    /// long it took (ms).
    pub resyncs: Mutex<BTreeMap<String, (tandem_engine::repair::RepairReport, u64)>>,
}

impl Replication {
    pub fn is_isolated(&self) -> bool {
        *self.isolated.borrow()
    }

    pub fn link(&self, peer: &str) -> std::sync::MutexGuard<'_, LinkState> {
        self.links.get(peer).expect("known peer").lock().expect("link lock")
    }
}
