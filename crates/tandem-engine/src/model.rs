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

/// A [`LogEntry`] that borrows its strings and state: it encodes to the
/// same bytes (same fields, same order), so a store can log a change
/// without cloning the record's state.
#[derive(Debug, Serialize)]
pub struct LogEntryRef<'a> {
    pub seq: u64,
    pub origin: &'a str,
    pub origin_seq: u64,
    pub committed_at_ms: u64,
    pub logged_at_ms: u64,
    pub entity: &'a str,
    pub id: &'a str,
    pub state: &'a State,
}

impl<'a> LogEntryRef<'a> {
    /// The log entry of a put numbered `seq`.
    pub fn of(seq: u64, put: &'a crate::store::Put) -> LogEntryRef<'a> {
        LogEntryRef {
            seq,
            origin: &put.origin.origin,
            origin_seq: put.origin.origin_seq.unwrap_or(seq),
            committed_at_ms: put.origin.committed_at_ms,
            logged_at_ms: put.origin.logged_at_ms,
            entity: &put.entity,
            id: &put.id,
            state: put.delta.as_ref().unwrap_or(&put.record.state),
        }
    }

    pub fn to_owned_entry(&self) -> LogEntry {
        LogEntry {
            seq: self.seq,
            origin: self.origin.to_owned(),
            origin_seq: self.origin_seq,
            committed_at_ms: self.committed_at_ms,
            logged_at_ms: self.logged_at_ms,
            entity: self.entity.to_owned(),
            id: self.id.to_owned(),
            state: self.state.clone(),
        }
    }
}

/// The fields of a stored `LogEntry` before its state, read without decoding
/// the state (postcard writes the fields in order and the state is last):
/// what compaction and filters look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct LogHead<'a> {
    pub seq: u64,
    pub origin: &'a str,
    pub origin_seq: u64,
    pub committed_at_ms: u64,
    pub logged_at_ms: u64,
    pub entity: &'a str,
    pub id: &'a str,
    /// The entry carries a delta, not its record's whole state (read from
    /// the state's first byte, `tandem_merge::DELTA_TAGS`).
    #[serde(skip)]
    pub delta: bool,
}

impl LogEntry {
    /// Its head (what `LogHead::decode` reads from its stored bytes).
    pub fn head(&self) -> LogHead<'_> {
        LogHead {
            seq: self.seq,
            origin: &self.origin,
            origin_seq: self.origin_seq,
            committed_at_ms: self.committed_at_ms,
            logged_at_ms: self.logged_at_ms,
            entity: &self.entity,
            id: &self.id,
            delta: self.state.is_delta(),
        }
    }
}

impl<'a> LogHead<'a> {
    /// The head of a tagged log entry (as `encode` wrote it).
    pub fn decode(bytes: &'a [u8]) -> Result<LogHead<'a>, StoreError> {
        match bytes.split_first() {
            Some((&tag, rest)) if u64::from(tag) == FORMAT_VERSION => {
                let (mut head, state): (LogHead<'a>, &[u8]) = postcard::take_from_bytes(rest)
                    .map_err(|e| StoreError::Decode {
                        what: "log entry head",
                        message: e.to_string(),
                    })?;
                head.delta = state.first().is_some_and(|t| tandem_merge::DELTA_TAGS.contains(t));
                Ok(head)
            }
            Some((&tag, _)) => Err(StoreError::IncompatibleFormat {
                found: u64::from(tag),
                expected: FORMAT_VERSION,
            }),
            None => {
                Err(StoreError::Decode { what: "log entry head", message: "empty value".into() })
            }
        }
    }
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

/// [`encode`] appended to `out` (a reused buffer), returning where it starts.
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.push(FORMAT_VERSION as u8);
    let buf = std::mem::take(out);
    *out = postcard::to_extend(value, buf).expect("encoding to a Vec cannot fail");
    start
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
    fn a_borrowed_log_entry_encodes_as_the_owned_one() {
        let mut state = State::new(tandem_merge::MergeKind::OrSet);
        let add = tandem_merge::Op::Add(vec!["a".into(), "b".into()]);
        state.apply(&add, "eu-west", tandem_clock::Hlc::new(5, 1)).unwrap();
        let put = crate::store::Put {
            entity: "tags".into(),
            id: "t:1".into(),
            record: StoredRecord { state, updated_at_ms: 5 },
            origin: ChangeOrigin {
                origin: "us-east".into(),
                origin_seq: Some(41),
                committed_at_ms: 3,
                logged_at_ms: 4,
            },
            delta: None,
        };
        let delta = State::OrSetDelta(tandem_merge::OrSetDelta {
            actor: "us-east".into(),
            first: 3,
            base: state_version(&put),
            change: tandem_merge::SetChange::Add(vec!["c".into()]),
            stamp: put.record.state.stamp(),
        });
        for p in [
            put.clone(),
            crate::store::Put { delta: Some(delta), ..put.clone() },
            crate::store::Put {
                origin: ChangeOrigin { origin_seq: None, ..put.origin.clone() },
                ..put
            },
        ] {
            let borrowed = LogEntryRef::of(9, &p);
            let owned = borrowed.to_owned_entry();
            let bytes = encode(&owned);
            let head = LogHead::decode(&bytes).unwrap();
            assert_eq!(head, owned.head());
            assert_eq!(
                (head.seq, head.origin, head.origin_seq, head.logged_at_ms, head.entity, head.id),
                (9, owned.origin.as_str(), owned.origin_seq, owned.logged_at_ms, "tags", "t:1")
            );
            assert_eq!(encode(&borrowed), encode(&owned));
            assert_eq!(decode::<LogEntry>("entry", &encode(&borrowed)).unwrap(), owned);
            assert_eq!(owned.origin_seq, p.origin.origin_seq.unwrap_or(9));
            assert_eq!(head.delta, p.delta.is_some(), "the head tells a delta");
            assert_eq!(owned.state, p.delta.clone().unwrap_or(p.record.state.clone()));
        }
    }

    fn state_version(put: &crate::store::Put) -> tandem_clock::VersionVector {
        put.record.state.version()
    }

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
