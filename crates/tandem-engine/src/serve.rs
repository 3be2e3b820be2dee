//! What a sender serves to a peer, decided over a page of its log:
//!
//! - the direct stream carries the changes that originated here and that the
//!   peer's jurisdiction may hold; a personal change it may not hold goes as a
//!   sealed copy when a transfer to its jurisdiction is declared and keyed,
//!   and is otherwise withheld (counted, audited);
//! - forwarding carries changes of third regions the peer lacks (its
//!   per-origin high-water marks), once they are older than the forward delay;
//! - both are bounded: entries and encoded bytes per batch (one entry always
//!   goes, so a batch may exceed its byte bound by one entry).
//!
//! `next_seq` is the log position a batch covers: entries skipped for the
//! peer move it too, so the peer's cursor passes over them.

use std::collections::BTreeMap;

use crate::engine::Engine;
use crate::filter::{self, ForwardDecision};
use crate::model::LogEntry;

/// One batch for a peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Served {
    pub entries: Vec<LogEntry>,
    pub next_seq: u64,
    /// Own changes withheld from the peer, by entity type (residency).
    pub withheld: BTreeMap<String, u64>,
}

/// What a forward request asks for.
#[derive(Debug, Clone, Copy)]
pub struct ForwardAsk<'a> {
    /// The peer's per-origin high-water marks.
    pub have: &'a BTreeMap<String, u64>,
    pub after: u64,
    pub limit: usize,
    pub now_ms: u64,
    pub delay_ms: u64,
}

fn size_of(e: &LogEntry) -> usize {
    postcard::experimental::serialized_size(e).unwrap_or(usize::MAX)
}

impl Engine {
    /// The direct-stream batch for `peer` from `page` (log entries after `cursor`).
    pub fn serve_direct(
        &self,
        peer: &str,
        page: Vec<LogEntry>,
        cursor: u64,
        bytes_max: usize,
    ) -> Served {
        let mut out = Served { next_seq: cursor, ..Served::default() };
        let mut bytes = 0usize;
        for e in page {
            assert!(e.seq > cursor, "a page starts after the cursor");
            let send = if self.faults.skip_residency_when_serving {
                // Deliberately broken: the residency filter is skipped.
                e.origin == self.region
            } else {
                filter::direct(&self.config, &self.region, peer, &e)
            };
            let item = if send { Some(e.clone()) } else { self.seal_for(peer, &e) };
            match item {
                Some(item) => {
                    let size = size_of(&item);
                    if !out.entries.is_empty() && bytes.saturating_add(size) > bytes_max {
                        break;
                    }
                    bytes = bytes.saturating_add(size);
                    out.entries.push(item);
                }
                None => {
                    if e.origin == self.region && filter::may_hold(&self.config, peer, &e).is_err()
                    {
                        *out.withheld.entry(e.entity.clone()).or_insert(0) += 1;
                    }
                }
            }
            out.next_seq = e.seq;
        }
        out
    }

    /// A sealed copy of one of this region's own changes, when `peer` may not
    /// hold it in clear but a transfer to its jurisdiction is declared and keyed.
    fn seal_for(&self, peer: &str, e: &LogEntry) -> Option<LogEntry> {
        if e.origin != self.region || filter::may_hold(&self.config, peer, e).is_ok() {
            return None;
        }
        let to = self.config.jurisdiction_of(peer)?;
        self.config.transfer(&self.jurisdiction, to)?;
        self.sealer.seal(e, to)
    }

    /// The forward batch for `peer` from `page` (log entries after `ask.after`).
    pub fn serve_forward(
        &self,
        peer: &str,
        ask: ForwardAsk<'_>,
        page: Vec<LogEntry>,
        bytes_max: usize,
    ) -> Served {
        let limit = ask.limit.clamp(1, self.config.replication.batch_max);
        let mut out = Served { next_seq: ask.after, ..Served::default() };
        let mut bytes = 0usize;
        for e in page {
            match filter::forward(
                &self.config,
                &self.region,
                peer,
                ask.have,
                &e,
                ask.now_ms,
                ask.delay_ms,
            ) {
                ForwardDecision::Wait => break,
                ForwardDecision::Skip => out.next_seq = e.seq,
                ForwardDecision::Send => {
                    let size = size_of(&e);
                    if out.entries.len() >= limit
                        || (!out.entries.is_empty() && bytes.saturating_add(size) > bytes_max)
                    {
                        break;
                    }
                    bytes = bytes.saturating_add(size);
                    out.next_seq = e.seq;
                    out.entries.push(e);
                }
            }
        }
        out
    }
}
