//! What a run recorded, and all the checker reads besides the regions' final
//! state: every client operation (how it was sent, where the router sent it,
//! its outcome), every delivered replication batch (which records it carried,
//! which the receiver refused) and every fault. Rendering a minimal history
//! for one record, and the trace hash that proves a seed replays exactly.

use std::fmt::Write as _;

use tandem_merge::MergeKind;

use crate::check::writes::{Outcome, Write};
use crate::region::Path;

/// How a client operation reached a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// Through the router, from a caller in `caller`.
    Router { caller: String },
    /// Straight at a region, with an `X-Tandem-Failover` header or not.
    Direct { region: String, failover_header: Option<String> },
}

/// Where the router sent a request, and what it could choose from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRecord {
    /// `None`: answered by the router itself (503, 422).
    pub region: Option<String>,
    pub route: &'static str,
    pub failover_for: Option<String>,
    /// The subject's home region the router used, if it looked one up.
    pub home: Option<String>,
    /// Regions the router considered available (up, not drained) at the decision.
    pub available: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OpRecord {
    pub op: u64,
    pub issued_ms: u64,
    pub entity: String,
    pub id: String,
    pub merge: MergeKind,
    /// `None` for a read.
    pub write: Option<Write>,
    pub via: Via,
    pub route: Option<RouteRecord>,
    pub outcome: Outcome,
    /// Status and code of a refusal.
    pub refusal: Option<(u16, &'static str)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Index into `History::ops`.
    Op(usize),
    Delivery {
        at_ms: u64,
        from: String,
        to: String,
        path: Path,
        next_seq: u64,
        /// `(entity, id, origin)` of each entry.
        entries: Vec<(String, String, String)>,
        /// `(entity, id)` the receiver refused to store (residency).
        refused: Vec<(String, String)>,
    },
    Fault {
        at_ms: u64,
        what: String,
    },
    /// A region's stability horizon after a tick, beside what every region
    /// had durably applied then: `applied[(p, o)]` is `p`'s direct cursor
    /// into `o`'s log, or `o`'s own durable position when `p == o`.
    Horizon {
        at_ms: u64,
        region: String,
        horizon: std::collections::BTreeMap<String, u64>,
        applied: std::collections::BTreeMap<(String, String), u64>,
    },
}

#[derive(Debug, Clone, Default)]
pub struct History {
    pub ops: Vec<OpRecord>,
    pub events: Vec<Event>,
}

impl History {
    pub fn push_op(&mut self, op: OpRecord) {
        self.events.push(Event::Op(self.ops.len()));
        self.ops.push(op);
    }

    pub fn fault(&mut self, at_ms: u64, what: String) {
        self.events.push(Event::Fault { at_ms, what });
    }

    /// The events touching one record (its operations and the batches that
    /// carried it) and every fault, in order.
    pub fn render_for(&self, entity: &str, id: &str) -> String {
        let mut out = String::new();
        for e in &self.events {
            match e {
                Event::Op(i) => {
                    let op = &self.ops[*i];
                    if op.entity == entity && op.id == id {
                        out.push_str(&render_op(op));
                        out.push('\n');
                    }
                }
                Event::Delivery { at_ms, from, to, path, next_seq, entries, refused } => {
                    let mine = |(e, i): (&String, &String)| e == entity && i == id;
                    let carried: Vec<&String> = entries
                        .iter()
                        .filter(|(e, i, _)| mine((e, i)))
                        .map(|(_, _, o)| o)
                        .collect();
                    let refusal = refused.iter().any(|(e, i)| mine((e, i)));
                    if !carried.is_empty() || refusal {
                        let _ = writeln!(
                            out,
                            "{at_ms:>6} ms  {from} -> {to} {path:?} batch up to {next_seq}: origin {:?}{}",
                            carried,
                            if refusal { " REFUSED by receiver" } else { "" }
                        );
                    }
                }
                Event::Fault { at_ms, what } => {
                    let _ = writeln!(out, "{at_ms:>6} ms  fault: {what}");
                }
                Event::Horizon { .. } => {}
            }
        }
        out
    }

    /// Everything, for a run small enough to read (or a debugger).
    pub fn render_all(&self) -> String {
        let mut out = String::new();
        for e in &self.events {
            match e {
                Event::Op(i) => {
                    out.push_str(&render_op(&self.ops[*i]));
                    out.push('\n');
                }
                other => {
                    let _ = writeln!(out, "{other:?}");
                }
            }
        }
        out
    }
}

pub fn render_op(op: &OpRecord) -> String {
    let what = match &op.write {
        None => "read".to_string(),
        Some(w) => format!("{w:?}"),
    };
    let via = match &op.via {
        Via::Router { caller } => format!("router from {caller}"),
        Via::Direct { region, failover_header: None } => format!("direct at {region}"),
        Via::Direct { region, failover_header: Some(h) } => {
            format!("direct at {region} (X-Tandem-Failover: {h})")
        }
    };
    let route = match &op.route {
        None => String::new(),
        Some(r) => format!(
            " -> {} ({}{})",
            r.region.as_deref().unwrap_or("none"),
            r.route,
            r.failover_for.as_ref().map(|h| format!(", failover for {h}")).unwrap_or_default()
        ),
    };
    let outcome = match (&op.outcome, &op.refusal) {
        (Outcome::Acked { region, version }, _) => format!("ACK by {region} {version:?}"),
        (Outcome::Refused, Some((s, c))) => format!("refused {s} {c}"),
        (Outcome::Refused, None) if op.write.is_none() => "served".into(),
        (Outcome::Refused, None) => "refused".into(),
        (Outcome::Unknown, _) => "UNKNOWN outcome".into(),
    };
    format!(
        "{:>6} ms  #{} {}/{} {what} via {via}{route}: {outcome}",
        op.issued_ms, op.op, op.entity, op.id
    )
}

/// FNV-1a, 64 bits: a stable hash (std's hashers may change between releases).
#[derive(Debug, Clone)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so that ("ab","c") and ("a","bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}
