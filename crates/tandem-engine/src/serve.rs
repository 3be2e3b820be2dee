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
//! peer move it too, so the peer's cursor passes over them. The pages come
//! from `Store::log_page` with this module's scans (`direct_scan`,
//! `forward_scan`), which judge each entry by its head, so a sender decodes
//! only the entries it may send: a region's log is mostly other regions'
//! changes, which its direct stream never carries.

use std::collections::BTreeMap;

use crate::engine::Engine;
use crate::filter::{self, ForwardDecision};
use crate::model::{LogEntry, LogHead};
use crate::store::{LogPage, Scan};

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
    /// What the direct stream reads of the log: this region's own changes.
    pub fn direct_scan(&self) -> impl FnMut(&LogHead<'_>) -> Scan + '_ {
        |head| if head.origin == self.region { Scan::Take } else { Scan::Skip }
    }

    /// What a forward request reads of the log: what `serve_forward` sends.
    pub fn forward_scan<'a>(
        &'a self,
        peer: &'a str,
        ask: ForwardAsk<'a>,
    ) -> impl FnMut(&LogHead<'_>) -> Scan + 'a {
        move |head| match self.forward_decision(peer, &ask, head) {
            ForwardDecision::Send => Scan::Take,
            ForwardDecision::Skip => Scan::Skip,
            ForwardDecision::Wait => Scan::Stop,
        }
    }

    /// Most entries one forward batch carries.
    pub fn forward_limit(&self, ask: &ForwardAsk<'_>) -> usize {
        ask.limit.clamp(1, self.config.replication.batch_max)
    }

    fn forward_decision(
        &self,
        peer: &str,
        ask: &ForwardAsk<'_>,
        head: &LogHead<'_>,
    ) -> ForwardDecision {
        filter::forward(&self.config, &self.region, peer, ask.have, head, ask.now_ms, ask.delay_ms)
    }

    /// The direct-stream batch for `peer` from `page` (read after `cursor`
    /// with `direct_scan`, or every entry after it).
    pub fn serve_direct(&self, peer: &str, page: LogPage, cursor: u64, bytes_max: usize) -> Served {
        let mut out = Served { next_seq: cursor, ..Served::default() };
        let mut bytes = 0usize;
        let mut whole = true;
        for e in page.entries {
            assert!(e.seq > cursor, "a page starts after the cursor");
            let send = if self.faults.skip_residency_when_serving {
                // Deliberately broken: the residency filter is skipped.
                e.origin == self.region
            } else {
                filter::direct(&self.config, &self.region, peer, &e)
            };
            let seq = e.seq;
            let item = if send { Ok(e) } else { self.seal_for(peer, &e).ok_or(e) };
            match item {
                Ok(item) => {
                    let size = size_of(&item);
                    if !out.entries.is_empty() && bytes.saturating_add(size) > bytes_max {
                        whole = false;
                        break;
                    }
                    bytes = bytes.saturating_add(size);
                    out.entries.push(item);
                }
                Err(e) => {
                    if e.origin == self.region && filter::may_hold(&self.config, peer, &e).is_err()
                    {
                        *out.withheld.entry(e.entity).or_insert(0) += 1;
                    }
                }
            }
            out.next_seq = seq;
        }
        if whole {
            // What the scan skipped is covered too.
            out.next_seq = out.next_seq.max(page.scanned_to);
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

    /// The forward batch for `peer` from `page` (read after `ask.after`
    /// with `forward_scan`, or every entry after it).
    pub fn serve_forward(
        &self,
        peer: &str,
        ask: ForwardAsk<'_>,
        page: LogPage,
        bytes_max: usize,
    ) -> Served {
        let limit = self.forward_limit(&ask);
        let mut out = Served { next_seq: ask.after, ..Served::default() };
        let mut bytes = 0usize;
        let mut whole = true;
        for e in page.entries {
            match self.forward_decision(peer, &ask, &e.head()) {
                ForwardDecision::Wait => {
                    whole = false;
                    break;
                }
                ForwardDecision::Skip => out.next_seq = e.seq,
                ForwardDecision::Send => {
                    let size = size_of(&e);
                    if out.entries.len() >= limit
                        || (!out.entries.is_empty() && bytes.saturating_add(size) > bytes_max)
                    {
                        whole = false;
                        break;
                    }
                    bytes = bytes.saturating_add(size);
                    out.next_seq = e.seq;
                    out.entries.push(e);
                }
            }
        }
        if whole {
            out.next_seq = out.next_seq.max(page.scanned_to);
        }
        out
    }
}
