//! One simulated region: its store (record states and the replication log, in
//! memory; everything in here survives a crash, like the durable store), its
//! durable replication cursors, and its hybrid logical clock over simulated,
//! possibly skewed, time. The decisions are the product's own pure functions:
//! `residency::check_write` for local writes, `State::apply_as` and
//! `State::merge` for changes, and `filter::{direct, forward, may_hold}` for
//! what is served to and accepted from a peer. The glue mirrors
//! `writer::apply_local`, `writer::apply_remote`, `sender::select_direct` and
//! `sender::forward` step by step (those are bound to the store and the async
//! runtime, so they cannot be called here); a `Mutation` can break one step on
//! purpose to show that the checker notices.

use std::collections::BTreeMap;
use std::sync::Arc;

use tandem_clock::{HlcClock, ManualTime, TimeSource, VersionVector};
use tandem_config::{Config, EntityConfig};
use tandem_merge::{MergeKind, Op, State};
use tandem_node::replication::filter::{self, ForwardDecision};
use tandem_store::{LogEntry, SUBJECT_ENTITY};

use crate::Mutation;

/// Milliseconds since the epoch at simulated time zero (so that a negative
/// clock skew stays positive).
pub const EPOCH_MS: u64 = 1_700_000_000_000;
/// Log entries scanned per forward request (`sender::FORWARD_SCAN_MAX` is
/// 8192; the simulated logs are short, so a smaller page exercises paging).
pub const FORWARD_SCAN_MAX: usize = 64;
/// `Timings::forward_delay`.
pub const FORWARD_DELAY_MS: u64 = 500;

/// A write the region accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub region: String,
    pub version: VersionVector,
}

/// A write the region refused: status and error code, as the API answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
}

/// Which of a peer's cursors a batch advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Path {
    Direct,
    Forward,
}

/// What `apply_remote` did with a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub changed: usize,
    /// Entries refused because this region may not hold them (`inbound_refused`).
    pub refused: Vec<(String, String)>,
}

pub struct Region {
    pub name: String,
    pub jurisdiction: String,
    /// Durable: record states by `(entity, id)`.
    pub records: BTreeMap<(String, String), State>,
    /// Durable: the replication log; `log[i].seq == i + 1`.
    pub log: Vec<LogEntry>,
    /// Durable: per peer and path, the peer's log position applied up to.
    pub cursors: BTreeMap<(String, Path), u64>,
    pub up: bool,
    pub skew_ms: i64,
    time: ManualTime,
    clock: HlcClock,
    /// Writes acknowledged but not yet applied (only under
    /// `Mutation::AckBeforeDurable`): a crash loses them.
    pub unflushed: Vec<(String, String, MergeKind, Op)>,
}

impl Region {
    pub fn new(name: &str, jurisdiction: &str, skew_ms: i64, max_clock_offset_ms: u64) -> Region {
        let time = ManualTime::new(EPOCH_MS);
        let clock = HlcClock::new(Arc::new(time.clone()), max_clock_offset_ms);
        Region {
            name: name.to_owned(),
            jurisdiction: jurisdiction.to_owned(),
            records: BTreeMap::new(),
            log: Vec::new(),
            cursors: BTreeMap::new(),
            up: true,
            skew_ms,
            time,
            clock,
            unflushed: Vec::new(),
        }
    }

    /// Advance this region's physical clock to simulated time `now_ms`.
    pub fn tick(&self, now_ms: u64) {
        self.time.set_ms(self.physical_at(now_ms));
    }

    pub fn physical_at(&self, now_ms: u64) -> u64 {
        (EPOCH_MS + now_ms).saturating_add_signed(self.skew_ms)
    }

    pub fn physical_ms(&self) -> u64 {
        self.clock.physical_ms()
    }

    /// A crash: the process dies. Durable state stays; the clock's memory
    /// (`HlcClock::last`) and anything not yet durable are gone.
    pub fn crash(&mut self) {
        self.up = false;
        self.unflushed.clear();
    }

    /// Start again, possibly with another clock skew; the HLC restarts from
    /// physical time, as a restarted `tandem node` does.
    pub fn restart(&mut self, skew_ms: i64, max_clock_offset_ms: u64) {
        self.up = true;
        self.skew_ms = skew_ms;
        let time = ManualTime::new(self.time.now_ms());
        self.clock = HlcClock::new(Arc::new(time.clone()), max_clock_offset_ms);
        self.time = time;
    }

    pub fn cursor(&self, peer: &str, path: Path) -> u64 {
        self.cursors.get(&(peer.to_owned(), path)).copied().unwrap_or(0)
    }

    pub fn last_seq(&self) -> u64 {
        self.log.len() as u64
    }

    /// The home region this region's replica of the subject registry holds.
    pub fn home_of(&self, subject: &str) -> Option<String> {
        let state = self.records.get(&(SUBJECT_ENTITY.to_owned(), subject.to_owned()))?;
        let v = state.value()?;
        v.get("home_region")?.as_str().map(str::to_owned)
    }

    /// Store a record and log the change: a local write (`from: None`, its
    /// origin sequence number is its own log position) or a remote change
    /// (keeping the origin's name, sequence number and commit time).
    fn append(&mut self, entity: &str, id: &str, state: State, from: Option<&LogEntry>) -> u64 {
        let seq = self.log.len() as u64 + 1;
        let now = self.clock.physical_ms();
        let (origin, origin_seq, committed_at_ms) = match from {
            None => (self.name.clone(), seq, now),
            Some(e) => (e.origin.clone(), e.origin_seq, e.committed_at_ms),
        };
        self.log.push(LogEntry {
            seq,
            origin,
            origin_seq,
            committed_at_ms,
            logged_at_ms: now,
            entity: entity.to_owned(),
            id: id.to_owned(),
            state: state.clone(),
        });
        self.records.insert((entity.to_owned(), id.to_owned()), state);
        seq
    }

    /// A client write at this region: the checks of `api::records::write`
    /// (merge type, then `residency::check_write` against this region's
    /// replica of the registry) and `writer::apply_local`.
    #[allow(clippy::too_many_arguments)]
    pub fn local_write(
        &mut self,
        config: &Config,
        entity: &str,
        cfg: &EntityConfig,
        id: &str,
        op: &Op,
        failover_for: Option<&str>,
        mutation: Mutation,
    ) -> Result<Ack, Refusal> {
        assert!(self.up, "a write reached a region that is down");
        if !op.allowed_for(cfg.merge) {
            return Err(Refusal { status: 409, code: "wrong_merge_type" });
        }
        if cfg.subjects {
            let subject = tandem_config::subject_of(id);
            let home = subject.and_then(|s| self.home_of(s));
            if let Err(d) = tandem_node::residency::check_write(
                config,
                &self.name,
                entity,
                cfg,
                subject,
                home.as_deref(),
                failover_for,
            ) {
                return Err(Refusal { status: d.error.status.as_u16(), code: d.error.code });
            }
        }
        if mutation == Mutation::AckBeforeDurable {
            // Deliberately broken: answer now, apply at the next flush.
            let state = self
                .records
                .get(&(entity.to_owned(), id.to_owned()))
                .cloned()
                .unwrap_or_else(|| State::new(cfg.merge));
            let mut preview = state;
            let hlc = self.clock.now();
            if preview.apply_as(op, &self.name, &self.name, hlc).is_err() {
                return Err(Refusal { status: 400, code: "bad_request" });
            }
            self.unflushed.push((entity.to_owned(), id.to_owned(), cfg.merge, op.clone()));
            return Ok(Ack { region: self.name.clone(), version: preview.version() });
        }
        self.apply_local(entity, id, cfg.merge, op)
    }

    /// `writer::apply_local`: read, apply at a fresh HLC, log if it changed.
    fn apply_local(
        &mut self,
        entity: &str,
        id: &str,
        kind: MergeKind,
        op: &Op,
    ) -> Result<Ack, Refusal> {
        let key = (entity.to_owned(), id.to_owned());
        let mut state = self.records.get(&key).cloned().unwrap_or_else(|| State::new(kind));
        let hlc = self.clock.now();
        let may_be_noop = matches!(op, Op::Remove(_) | Op::Delete);
        let before = may_be_noop.then(|| state.clone());
        if let Err(e) = state.apply_as(op, &self.name, &self.name, hlc) {
            let code = match e {
                tandem_merge::MergeError::WrongMergeType { .. }
                | tandem_merge::MergeError::KindMismatch { .. } => "wrong_merge_type",
                _ => "bad_request",
            };
            return Err(Refusal { status: if code == "bad_request" { 400 } else { 409 }, code });
        }
        if before.as_ref() == Some(&state) {
            return Ok(Ack { region: self.name.clone(), version: state.version() });
        }
        let version = state.version();
        self.append(entity, id, state, None);
        Ok(Ack { region: self.name.clone(), version })
    }

    /// Make the writes acknowledged early durable (`Mutation::AckBeforeDurable`).
    pub fn flush(&mut self) {
        for (entity, id, kind, op) in std::mem::take(&mut self.unflushed) {
            let _ = self.apply_local(&entity, &id, kind, &op);
        }
    }

    /// Register a subject here (`PUT /v1/subjects/{s}` at its home).
    pub fn register(&mut self, subject: &str, home: &str) -> Ack {
        let value = serde_json::json!({ "home_region": home }).to_string();
        self.apply_local(SUBJECT_ENTITY, subject, MergeKind::Lww, &Op::Put(value))
            .expect("a registration applies")
    }

    /// `sender::select_direct`: this region's own changes after `after` that
    /// `receiver` may hold, one batch, and the log position it covers.
    pub fn serve_direct(
        &self,
        config: &Config,
        receiver: &str,
        after: u64,
        mutation: Mutation,
    ) -> (Vec<LogEntry>, u64) {
        let batch_max = config.replication.batch_max;
        let mut next_seq = after;
        let mut selected = Vec::new();
        for e in self.log.iter().skip(after as usize).take(batch_max) {
            let leak =
                matches!(mutation, Mutation::LeakPersonal | Mutation::LeakPersonalEverywhere);
            let send = if leak {
                // Deliberately broken: the residency filter is skipped.
                e.origin == self.name
            } else {
                filter::direct(config, &self.name, receiver, e)
            };
            if send {
                selected.push(e.clone());
            }
            next_seq = e.seq;
        }
        (selected, next_seq)
    }

    /// `sender::forward`: changes of third regions `receiver` lacks, per its
    /// high-water marks, stopping at entries younger than the forward delay.
    pub fn serve_forward(
        &self,
        config: &Config,
        receiver: &str,
        after: u64,
        have: &BTreeMap<String, u64>,
        limit: usize,
    ) -> (Vec<LogEntry>, u64) {
        let limit = limit.clamp(1, config.replication.batch_max);
        let now = self.clock.physical_ms();
        let mut next_seq = after;
        let mut entries = Vec::new();
        for e in self.log.iter().skip(after as usize).take(FORWARD_SCAN_MAX) {
            match filter::forward(config, &self.name, receiver, have, e, now, FORWARD_DELAY_MS) {
                ForwardDecision::Wait => break,
                ForwardDecision::Skip => next_seq = e.seq,
                ForwardDecision::Send => {
                    if entries.len() >= limit {
                        break;
                    }
                    next_seq = e.seq;
                    entries.push(e.clone());
                }
            }
        }
        (entries, next_seq)
    }

    /// The `have` map of a forward request: this region's direct cursors.
    pub fn have(&self, peers: &[String]) -> BTreeMap<String, u64> {
        peers
            .iter()
            .filter(|p| **p != self.name)
            .map(|p| (p.clone(), self.cursor(p, Path::Direct)))
            .collect()
    }

    /// `writer::apply_remote`: check, merge, log what changed, advance the
    /// peer's cursor, all at once (one transaction in the product).
    pub fn apply_remote(
        &mut self,
        config: &Config,
        peer: &str,
        path: Path,
        entries: &[LogEntry],
        next_seq: u64,
        mutation: Mutation,
    ) -> ApplyReport {
        let mut report = ApplyReport::default();
        for e in entries {
            let kind = if e.entity == SUBJECT_ENTITY {
                MergeKind::Lww
            } else if let Some(c) = config.entity(&e.entity) {
                c.merge
            } else {
                continue;
            };
            if e.state.kind() != kind {
                continue;
            }
            let inbound_check = mutation != Mutation::LeakPersonalEverywhere;
            if inbound_check && filter::may_hold(config, &self.name, e).is_err() {
                report.refused.push((e.entity.clone(), e.id.clone()));
                continue;
            }
            let _ = self.clock.observe(e.state.stamp().hlc);
            let key = (e.entity.clone(), e.id.clone());
            let (state, changed) = match self.records.get(&key) {
                None => (e.state.clone(), true),
                Some(current) => {
                    let mut s = current.clone();
                    let changed = if mutation == Mutation::MergeOverwrites {
                        // Deliberately broken: whole-state last-writer-wins
                        // instead of the CRDT merge.
                        if e.state.stamp() > s.stamp() {
                            s = e.state.clone();
                            true
                        } else {
                            false
                        }
                    } else {
                        s.merge(&e.state).expect("kinds checked above").changed
                    };
                    (s, changed)
                }
            };
            if !changed {
                continue;
            }
            // As `writer::apply_remote`: a pure relay keeps the change's
            // origin; a merge that combined it with local changes is logged as
            // this region's own.
            let relay =
                state == e.state || e.entity == tandem_node::replication::seal::SEALED_ENTITY;
            self.append(&e.entity, &e.id, state, if relay { Some(e) } else { None });
            report.changed += 1;
        }
        let cursor = self.cursors.entry((peer.to_owned(), path)).or_insert(0);
        if next_seq > *cursor {
            *cursor = next_seq;
        }
        report
    }
}
