//! Bounded request bodies. A body is read up to a limit; past it the answer is
//! 413, but the client may still be writing: many HTTP clients (Python's
//! urllib among them) send the whole body before they read anything, and a
//! connection closed under them reports a broken pipe instead of the 413. So
//! the rest of an oversized body is read and thrown away first, within three
//! limits (bytes drained, time spent, connections draining at once), so a
//! drain can never become an amplifier; past any of them the connection is
//! closed without waiting.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use tokio::sync::Semaphore;

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Longer than `limit` bytes. `drained`: the rest was read, so the client
    /// has finished sending and will see the answer.
    TooLarge { limit: usize, drained: bool },
    /// Cut off or broken on the wire.
    Read(String),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge { limit, .. } => {
                write!(f, "request body is larger than the limit of {limit} bytes")
            }
            BodyError::Read(e) => write!(f, "cannot read request body: {e}"),
        }
    }
}

/// The limits on draining oversized bodies, shared by every connection of a
/// listener.
#[derive(Debug, Clone)]
pub struct DrainGate {
    permits: Arc<Semaphore>,
    bytes_max: u64,
    time_max: Duration,
}

/// Connections that may drain an oversized body at once.
pub const DRAINS_MAX: usize = 64;
/// Most bytes read and thrown away per oversized body.
pub const DRAIN_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Longest time spent draining one body.
pub const DRAIN_TIME_MAX: Duration = Duration::from_secs(5);

impl Default for DrainGate {
    fn default() -> Self {
        DrainGate::new(DRAINS_MAX, DRAIN_BYTES_MAX, DRAIN_TIME_MAX)
    }
}

impl DrainGate {
    pub fn new(drains_max: usize, bytes_max: u64, time_max: Duration) -> Self {
        assert!(drains_max > 0, "a drain limit must be positive");
        DrainGate { permits: Arc::new(Semaphore::new(drains_max)), bytes_max, time_max }
    }

    /// Read and discard what is left of `body`; true when it ended within the limits.
    async fn drain(&self, mut body: Body, already: u64) -> bool {
        if body.size_hint().upper().is_some_and(|n| n.saturating_add(already) > self.bytes_max) {
            return false;
        }
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else { return false };
        let bytes_max = self.bytes_max.saturating_sub(already);
        let drained = async {
            let mut seen = 0u64;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { return false };
                if let Some(data) = frame.data_ref() {
                    seen = seen.saturating_add(data.len() as u64);
                    if seen > bytes_max {
                        return false;
                    }
                }
            }
            true
        };
        tokio::time::timeout(self.time_max, drained).await.unwrap_or(false)
    }
}

/// Read a whole body of at most `limit` bytes.
pub async fn read_body(mut body: Body, limit: usize, gate: &DrainGate) -> Result<Bytes, BodyError> {
    let too_large = |drained| BodyError::TooLarge { limit, drained };
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large(gate.drain(body, 0).await));
    }
    // Most bodies arrive as one frame: keep it without copying.
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else { continue };
        len = len.saturating_add(data.len());
        if len > limit {
            return Err(too_large(gate.drain(body, len as u64).await));
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            None => joined.extend_from_slice(&data),
            Some(f) => {
                joined.reserve(f.len() + data.len());
                joined.extend_from_slice(&f);
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of the given chunks, without a size hint.
    fn chunks(parts: Vec<Vec<u8>>) -> Body {
        let items = parts.into_iter().map(|p| Ok::<_, std::io::Error>(Bytes::from(p)));
        Body::from_stream(futures_util::stream::iter(items))
    }

    #[tokio::test]
    async fn bodies_within_the_limit_are_read_whole() {
        let gate = DrainGate::default();
        let got = read_body(chunks(vec![b"ab".to_vec(), b"cd".to_vec()]), 4, &gate).await;
        assert_eq!(got.unwrap(), Bytes::from_static(b"abcd"));
        let one = read_body(Body::from("xyz"), 3, &gate).await.unwrap();
        assert_eq!(one, Bytes::from_static(b"xyz"));
        assert_eq!(read_body(Body::empty(), 0, &gate).await.unwrap().len(), 0);
    }

    #[tokio::test]
    async fn oversized_bodies_are_drained_within_the_limits() {
        let gate = DrainGate::new(1, 1_000, Duration::from_secs(5));
        let big = chunks(vec![vec![0; 10], vec![0; 500]]);
        assert_eq!(
            read_body(big, 100, &gate).await,
            Err(BodyError::TooLarge { limit: 100, drained: true })
        );
        // Declared larger than the drain limit: not drained at all.
        let declared = Body::from(vec![0u8; 2_000]);
        assert_eq!(
            read_body(declared, 100, &gate).await,
            Err(BodyError::TooLarge { limit: 100, drained: false })
        );
        // Longer than the drain limit without saying so: drained up to it, then given up.
        let endless = chunks(vec![vec![0; 600], vec![0; 600]]);
        assert_eq!(
            read_body(endless, 100, &gate).await,
            Err(BodyError::TooLarge { limit: 100, drained: false })
        );
    }

    #[tokio::test]
    async fn a_busy_gate_does_not_drain() {
        let gate = DrainGate::new(1, 1_000, Duration::from_secs(5));
        let _held = gate.permits.clone().try_acquire_owned().unwrap();
        assert_eq!(
            read_body(chunks(vec![vec![0; 200]]), 100, &gate).await,
            Err(BodyError::TooLarge { limit: 100, drained: false })
        );
    }
}
