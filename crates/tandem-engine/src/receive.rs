//! The pulling side's decisions: how queued frames of a stream are applied
//! together, how long each data class's changes waited (for lag), and the
//! high-water marks a forward request carries.

use std::collections::BTreeMap;

use tandem_config::Config;

use crate::model::LogEntry;
use crate::wire::Frame;

/// Merge consecutive batch frames (up to `entries_max` entries) into one, so
/// they are applied in one commit. Heartbeats between batches are folded in:
/// they only move the cursor, which the merged batch's `next_seq` covers.
pub fn coalesce(frames: Vec<Frame>, entries_max: usize) -> Vec<Frame> {
    let mut out: Vec<Frame> = Vec::with_capacity(frames.len());
    for f in frames {
        match (out.last_mut(), f) {
            (
                Some(Frame::Batch { sender_now_ms, next_seq, sender_last_seq, entries }),
                Frame::Batch { sender_now_ms: t, next_seq: n, sender_last_seq: l, entries: more },
            ) if entries.len() + more.len() <= entries_max => {
                *sender_now_ms = t;
                *next_seq = (*next_seq).max(n);
                *sender_last_seq = (*sender_last_seq).max(l);
                entries.extend(more);
            }
            (
                Some(Frame::Batch { sender_now_ms, next_seq, sender_last_seq, .. }),
                Frame::Heartbeat { sender_now_ms: t, next_seq: n, sender_last_seq: l },
            ) => {
                *sender_now_ms = t;
                *next_seq = (*next_seq).max(n);
                *sender_last_seq = (*sender_last_seq).max(l);
            }
            (_, f) => out.push(f),
        }
    }
    out
}

/// The data class of each entry and how long it waited in the sender's log
/// (both times on the sender's clock).
pub fn classes_of(config: &Config, entries: &[LogEntry], sender_now_ms: u64) -> Vec<(String, u64)> {
    let mut worst: BTreeMap<String, u64> = BTreeMap::new();
    for e in entries {
        let Some(entity) = config.entity(&e.entity) else { continue };
        let waited = sender_now_ms.saturating_sub(e.logged_at_ms);
        let slot = worst.entry(entity.data_class.clone()).or_insert(0);
        *slot = (*slot).max(waited);
    }
    worst.into_iter().collect()
}

/// The high-water marks of a forward request: for each peer the direct
/// cursor (the highest origin sequence of that origin this region has), and
/// after a restore from backup this region's own mark, so its changes made
/// after the backup come back.
pub fn forward_have(
    direct_cursors: impl IntoIterator<Item = (String, u64)>,
    region: &str,
    own_have: Option<u64>,
) -> BTreeMap<String, u64> {
    let mut have: BTreeMap<String, u64> = direct_cursors.into_iter().collect();
    if let Some(own) = own_have {
        have.insert(region.to_owned(), own);
    }
    have
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(t: u64, n: u64, seqs: &[u64]) -> Frame {
        let entries = seqs
            .iter()
            .map(|&seq| {
                let mut state = tandem_merge::State::new(tandem_merge::MergeKind::GCounter);
                state
                    .apply(&tandem_merge::Op::Incr(1), "eu-west", tandem_clock::Hlc::new(seq, 0))
                    .unwrap();
                LogEntry {
                    seq,
                    origin: "eu-west".into(),
                    origin_seq: seq,
                    committed_at_ms: t,
                    logged_at_ms: t,
                    entity: "page_views".into(),
                    id: format!("p{seq}"),
                    state,
                }
            })
            .collect();
        Frame::Batch { sender_now_ms: t, next_seq: n, sender_last_seq: n, entries }
    }

    #[test]
    fn each_class_waited_as_long_as_its_oldest_change() {
        let c = Config::example();
        let Frame::Batch { mut entries, .. } = batch(10, 2, &[1, 2]) else { unreachable!() };
        entries[1].logged_at_ms = 4;
        entries.push(LogEntry { entity: "nope".into(), ..entries[0].clone() });
        // page_views is analytics; the unknown type has no class.
        assert_eq!(classes_of(&c, &entries, 30), vec![("analytics".to_owned(), 26)]);
        assert!(classes_of(&c, &[], 30).is_empty());
    }

    #[test]
    fn forward_requests_carry_the_direct_cursors_and_the_own_mark_after_a_restore() {
        let cursors = vec![("us-east".to_owned(), 4u64), ("eu-central".to_owned(), 9)];
        let have = forward_have(cursors.clone(), "eu-west", None);
        assert_eq!(have, BTreeMap::from([("us-east".into(), 4), ("eu-central".into(), 9)]));
        let restored = forward_have(cursors, "eu-west", Some(3));
        assert_eq!(restored.get("eu-west"), Some(&3));
    }

    #[test]
    fn queued_batches_merge_in_order_up_to_the_limit() {
        let frames = vec![
            batch(1, 2, &[1, 2]),
            Frame::Heartbeat { sender_now_ms: 2, next_seq: 3, sender_last_seq: 3 },
            batch(3, 5, &[4, 5]),
            batch(4, 7, &[6, 7]),
        ];
        let out = coalesce(frames.clone(), 100);
        assert_eq!(out.len(), 1);
        let Frame::Batch { next_seq, entries, sender_now_ms, .. } = &out[0] else { panic!() };
        assert_eq!((*next_seq, *sender_now_ms), (7, 4));
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 4, 5, 6, 7]);
        assert_eq!(coalesce(frames.clone(), 4).len(), 2, "bounded");
        assert_eq!(coalesce(frames, 6).len(), 1, "exactly at the limit still merges");
        let hello = Frame::Hello { sender: "x".into(), sender_now_ms: 0, sender_last_seq: 0 };
        assert_eq!(coalesce(vec![hello.clone(), batch(1, 1, &[1])], 10).len(), 2);
    }
}
