//! The simulated network between regions. A region pulls a peer over the
//! directed link `(peer, region)` (the peer's changes flowing to the region),
//! as the product does through `tandem up`'s proxies: the request and its
//! answer both cross that link, and cutting it closes what is open on it. On
//! top of what TCP would do, messages are lost, duplicated and re-ordered
//! (each copy gets its own random delay), so that delivery order and
//! multiplicity are exercised as invariant 5 demands.

use std::collections::{BTreeMap, BTreeSet};

use tandem_store::LogEntry;

use crate::region::Path;
use crate::rng::Rng;

/// What crosses a link.
#[derive(Debug, Clone)]
pub enum Payload {
    /// `GET /v1/replication/stream?after=SEQ` (answered as one batch or a
    /// heartbeat: the stream is modelled as long polls).
    DirectRequest { after: u64 },
    /// `POST /v1/replication/forward`.
    ForwardRequest { after: u64, have: BTreeMap<String, u64>, limit: usize },
    /// A batch (or, empty, a heartbeat) and the position it covers.
    Batch { path: Path, next_seq: u64, entries: Vec<LogEntry> },
    /// `POST /v1/replication/ack`: the sender's durable positions.
    Ack { report: tandem_engine::stability::Report },
}

#[derive(Debug, Clone)]
pub struct Message {
    pub id: u64,
    /// Sender and receiver of this message.
    pub from: String,
    pub to: String,
    /// The directed link it crosses: `(changes from, changes to)`.
    pub link: (String, String),
    /// The link's generation when sent: a cut in between closes it.
    pub generation: u64,
    pub payload: Payload,
}

/// Per-run network conditions, changed by faults.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub loss_per_mille: u32,
    pub dup_per_mille: u32,
    /// Added to every message's delay, uniformly in `0..=jitter_ms`.
    pub jitter_ms: u64,
}

#[derive(Default)]
pub struct Net {
    in_flight: BTreeMap<(u64, u64), Message>,
    next_id: u64,
    cut: BTreeSet<(String, String)>,
    generation: BTreeMap<(String, String), u64>,
    /// Extra one-way latency per directed link (a latency spike).
    pub extra_latency_ms: BTreeMap<(String, String), u64>,
    pub conditions: Conditions,
}

impl Net {
    pub fn is_cut(&self, link: &(String, String)) -> bool {
        self.cut.contains(link)
    }

    pub fn cut(&mut self, from: &str, to: &str) {
        let link = (from.to_owned(), to.to_owned());
        self.cut.insert(link.clone());
        *self.generation.entry(link).or_insert(0) += 1;
    }

    pub fn heal(&mut self, from: &str, to: &str) {
        self.cut.remove(&(from.to_owned(), to.to_owned()));
    }

    pub fn heal_all(&mut self) {
        self.cut.clear();
        self.extra_latency_ms.clear();
    }

    pub fn cuts(&self) -> impl Iterator<Item = &(String, String)> {
        self.cut.iter()
    }

    /// Close every open connection of a region (it crashed).
    pub fn reset_region(&mut self, region: &str, regions: &[String]) {
        for other in regions.iter().filter(|o| *o != region) {
            for link in [(region.to_owned(), other.clone()), (other.clone(), region.to_owned())] {
                *self.generation.entry(link).or_insert(0) += 1;
            }
        }
    }

    fn generation_of(&self, link: &(String, String)) -> u64 {
        self.generation.get(link).copied().unwrap_or(0)
    }

    /// Send a message over `link` at `now_ms` with the link's base latency.
    /// Returns how many copies went out (0: lost or the link is cut).
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &mut self,
        rng: &mut Rng,
        now_ms: u64,
        base_latency_ms: u64,
        from: &str,
        to: &str,
        link: (String, String),
        payload: Payload,
    ) -> usize {
        if self.cut.contains(&link) || rng.chance(self.conditions.loss_per_mille) {
            return 0;
        }
        let copies = if rng.chance(self.conditions.dup_per_mille) { 2 } else { 1 };
        let extra = self.extra_latency_ms.get(&link).copied().unwrap_or(0);
        let generation = self.generation_of(&link);
        for _ in 0..copies {
            let delay = base_latency_ms.max(1) + extra + rng.range(0, self.conditions.jitter_ms);
            self.next_id += 1;
            let m = Message {
                id: self.next_id,
                from: from.to_owned(),
                to: to.to_owned(),
                link: link.clone(),
                generation,
                payload: payload.clone(),
            };
            self.in_flight.insert((now_ms + delay, self.next_id), m);
        }
        copies
    }

    /// Messages due by `now_ms`, in delivery order, minus those whose
    /// connection closed (the link was cut, or an end crashed) on the way.
    pub fn due(&mut self, now_ms: u64) -> Vec<Message> {
        let later = self.in_flight.split_off(&(now_ms + 1, 0));
        let due = std::mem::replace(&mut self.in_flight, later);
        due.into_values()
            .filter(|m| !self.cut.contains(&m.link) && m.generation == self.generation_of(&m.link))
            .collect()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}
