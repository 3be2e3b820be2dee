//! What the store keeps and its binary encoding: postcard behind a one-byte
//! format tag, so a later version can refuse or migrate old values rather than
//! misread them (see docs/STORAGE.md).

use std::collections::BTreeMap;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tandem_merge::State;

use crate::error::StoreError;

/// Version of the on-disk format (the data file's `meta.format_version` and the
/// tag byte in front of every encoded value).
pub const FORMAT_VERSION: u64 = 1;

/// The reserved entity holding the subject registry.
pub const SUBJECT_ENTITY: &str = "_subject";

/// A stored record: its merge state (which carries the version vector, the HLC
/// stamp and the origin region) and the local commit time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub state: State,
    /// Wall time (ms) of the local commit that last changed this record.
    pub updated_at_ms: u64,
}

/// Where a change comes from, for its log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeOrigin {
    /// The region where the change was first written.
    pub origin: String,
    /// Its sequence number in the origin's log; `None` for a local write (the
    /// local sequence number is used).
    pub origin_seq: Option<u64>,
    /// Wall time (ms) of the origin's commit, on the origin's clock.
    pub committed_at_ms: u64,
    /// Wall time (ms) of this region's commit, on this region's clock.
    pub logged_at_ms: u64,
}

/// One entry of the replication log: the state of a record after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub seq: u64,
    pub origin: String,
    pub origin_seq: u64,
    pub committed_at_ms: u64,
    /// When this region wrote the entry to its log (its own clock): per-link
    /// lag is measured on one clock, so clock skew between regions cannot
    /// distort it.
    pub logged_at_ms: u64,
    pub entity: String,
    pub id: String,
    pub state: State,
}

/// How far this region has pulled a peer's log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCursor {
    /// The last sequence number of the peer's log that was applied.
    pub seq: u64,
    /// Per-origin high-water marks of changes received through this peer.
    pub origins: BTreeMap<String, u64>,
}

/// Encode a value: the format tag, then postcard.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let out = vec![FORMAT_VERSION as u8];
    postcard::to_extend(value, out).expect("encoding to a Vec cannot fail")
}

/// Decode a value written by [`encode`], refusing another format version.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&tag, rest)) if tag as u64 == FORMAT_VERSION => postcard::from_bytes(rest)
            .map_err(|e| StoreError::Decode { what, message: e.to_string() }),
        Some((&tag, _)) => {
            Err(StoreError::IncompatibleFormat { found: tag as u64, expected: FORMAT_VERSION })
        }
        None => Err(StoreError::Decode { what, message: "empty value".into() }),
    }
}

/// A consistent copy of a region's whole store (one read transaction), for
/// backups. Restoring it replaces everything in one write transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub region: String,
    pub format_version: u64,
    pub last_seq: u64,
    pub records: Vec<(String, String, StoredRecord)>,
    pub log: Vec<LogEntry>,
    pub cursors: Vec<(String, PeerCursor)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_their_format_tag_and_other_tags_are_refused() {
        let bytes = encode(&7u64);
        assert_eq!(bytes[0] as u64, FORMAT_VERSION);
        assert_eq!(decode::<u64>("n", &bytes).unwrap(), 7);
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(matches!(
            decode::<u64>("n", &other),
            Err(StoreError::IncompatibleFormat { found: 9, expected: FORMAT_VERSION })
        ));
        assert!(matches!(decode::<u64>("n", &[]), Err(StoreError::Decode { .. })));
        assert!(matches!(
            decode::<u64>("n", &[FORMAT_VERSION as u8]),
            Err(StoreError::Decode { .. })
        ));
    }
}
