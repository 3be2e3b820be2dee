//! Group commit. One writer thread owns every write to the store: it takes the
//! queued commands (local writes and batches of replicated changes, up to
//! `commit_batch_max` at a time), applies each inside one transaction, commits
//! durably once, and only then answers every command of the batch. While a
//! commit is in flight new commands queue up and go into the next batch, so one
//! fsync serves many clients. The queue is bounded: when it is full a local
//! write is refused at once with `overloaded` rather than buffered.
//!
//! Replicated changes are merged into the local record; a change that alters
//! nothing (a duplicate, or one already received by another path) is not
//! logged again, and the peer's cursor advances in the same transaction, so
//! apply is idempotent and a crash can neither lose nor double-apply a batch.

use std::sync::Arc;
use std::time::Instant;

use tandem_clock::{Hlc, HlcClock, VersionVector};
use tandem_config::{Config, ConflictPolicy};
use tandem_merge::{Conflict, MergeError, MergeKind, Op, State};
use tandem_store::{ChangeOrigin, LogEntry, Store, StoreError, StoredRecord, SUBJECT_ENTITY};
use tokio::sync::{mpsc, oneshot, watch};

use crate::conflicts::{ConflictEntry, ConflictLog};
use crate::error::ApiError;
use crate::metrics::{ConflictLabels, EntityLabels, Metrics, ReasonLabels};
use crate::replication::filter;

/// A check made inside the write transaction, against the record as it is
/// there, before the operation applies (e.g. refusing a cross-jurisdiction
/// subject move). Returning an error refuses only this write.
pub type Precondition = Box<dyn Fn(Option<&StoredRecord>) -> Result<(), ApiError> + Send>;

/// What a durable local write answers.
#[derive(Debug, Clone)]
pub struct WriteAck {
    pub hlc: Hlc,
    pub version: VersionVector,
    pub seq: u64,
}

pub struct LocalWrite {
    pub entity: String,
    pub id: String,
    pub kind: MergeKind,
    pub op: Op,
    pub precondition: Option<Precondition>,
    /// Taken when the answer is sent.
    pub reply: Option<oneshot::Sender<Result<WriteAck, ApiError>>>,
}

/// Changes pulled from a peer, to merge and to advance that peer's cursor.
pub struct RemoteApply {
    pub peer: String,
    /// Which of the peer's cursors advances (`direct` or `forward` stream).
    pub cursor_key: String,
    pub entries: Vec<LogEntry>,
    pub next_seq: u64,
    pub reply: Option<oneshot::Sender<Result<ApplyReport, ApiError>>>,
}

#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    /// Entries that changed local state (and were logged for forwarding).
    pub changed: usize,
    pub conflicts: usize,
    /// Entries refused because this region may not hold them.
    pub refused: usize,
    /// Their entity types (for the audit log).
    pub refused_entities: Vec<String>,
    pub cursor: u64,
}

pub enum WriteCommand {
    Local(LocalWrite),
    Apply(RemoteApply),
}

/// The handle the HTTP layer and the replication loops use to queue work.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<WriteCommand>,
    capacity: usize,
}

impl Writer {
    /// Queue a write and wait until it is durable (or refused).
    pub async fn write(&self, cmd: LocalWrite) -> Result<WriteAck, ApiError> {
        let (reply, rx) = oneshot::channel();
        let cmd = LocalWrite { reply: Some(reply), ..cmd };
        match self.tx.try_send(WriteCommand::Local(cmd)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(ApiError::overloaded(format!(
                    "the write queue is full ({} writes waiting); retry later",
                    self.capacity
                )))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(ApiError::unavailable("the node is shutting down"))
            }
        }
        rx.await.map_err(|_| ApiError::unavailable("the writer stopped before answering"))?
    }

    /// Queue replicated changes (waiting for room: replication backs off
    /// rather than being refused) and wait until they are durable.
    pub async fn apply(&self, cmd: RemoteApply) -> Result<ApplyReport, ApiError> {
        let (reply, rx) = oneshot::channel();
        let cmd = RemoteApply { reply: Some(reply), ..cmd };
        self.tx
            .send(WriteCommand::Apply(cmd))
            .await
            .map_err(|_| ApiError::unavailable("the node is shutting down"))?;
        rx.await.map_err(|_| ApiError::unavailable("the writer stopped before answering"))?
    }

    /// Commands waiting for the committer.
    pub fn queue_depth(&self) -> usize {
        self.capacity - self.tx.capacity()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

pub struct WriterConfig {
    pub region: String,
    /// The name this region's dots and counter slots are written under: the
    /// region's name, or `<region>+<incarnation>` after a restore from backup,
    /// so a restored region never reuses a dot it handed out before.
    pub actor: String,
    pub config: Arc<Config>,
    pub queue_len: usize,
    pub batch_max: usize,
    /// This jurisdiction's pseudonym key, for analytics projections.
    pub pseudonymizer: Option<crate::analytics::Pseudonymizer>,
    /// Test-only: acknowledge before the batch is durable (to prove that the
    /// crash tests and the drill catch a node that lies). Never set in production.
    pub unsafe_ack_before_commit: bool,
}

/// What the writer reports to, besides its callers.
pub struct WriterSinks {
    pub metrics: Arc<Metrics>,
    pub conflicts: Arc<ConflictLog>,
    /// The newest committed log position (wakes the replication senders).
    pub last_seq: Arc<watch::Sender<u64>>,
    /// Whether the disk has room; a full disk refuses writes with 507.
    pub disk: Arc<crate::disk::DiskGuard>,
}

/// The exit status of a node that stops because its storage failed in a way
/// it cannot recover from while running (a failed sync).
pub const EXIT_STORAGE_FAILED: i32 = 3;

/// Start the writer thread. It runs until every `Writer` handle is dropped and
/// the queue is drained; join the returned handle to wait for the last commit.
pub fn spawn(
    store: Arc<dyn Store>,
    clock: Arc<HlcClock>,
    sinks: WriterSinks,
    cfg: WriterConfig,
) -> (Writer, std::thread::JoinHandle<()>) {
    assert!(cfg.queue_len > 0 && cfg.batch_max > 0, "writer limits must be positive");
    let (tx, rx) = mpsc::channel(cfg.queue_len);
    let capacity = cfg.queue_len;
    let handle = std::thread::Builder::new()
        .name("tandem-writer".into())
        .spawn(move || run(store, clock, sinks, cfg, rx))
        .expect("spawn writer thread");
    (Writer { tx, capacity }, handle)
}

fn run(
    store: Arc<dyn Store>,
    clock: Arc<HlcClock>,
    sinks: WriterSinks,
    cfg: WriterConfig,
    mut rx: mpsc::Receiver<WriteCommand>,
) {
    let mut batch: Vec<WriteCommand> = Vec::with_capacity(cfg.batch_max);
    while let Some(first) = rx.blocking_recv() {
        batch.clear();
        batch.push(first);
        while batch.len() < cfg.batch_max {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        sinks.metrics.write_queue_depth.set(rx.len() as i64);
        commit_batch(store.as_ref(), &clock, &sinks, &cfg, &mut batch);
    }
    tracing::info!("writer drained its queue and stopped");
}

/// The outcome of one command inside the transaction, sent after the commit.
enum Outcome {
    Local(Result<WriteAck, ApiError>),
    Apply(Result<ApplyReport, ApiError>, Vec<(String, String, Conflict)>),
}

fn commit_batch(
    store: &dyn Store,
    clock: &HlcClock,
    sinks: &WriterSinks,
    cfg: &WriterConfig,
    batch: &mut [WriteCommand],
) {
    if sinks.disk.is_full() {
        refuse_batch(batch, &full_error());
        return;
    }
    let started = Instant::now();
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(batch.len());
    let mut last_seq = 0u64;
    let result = store.write(&mut |txn| {
        outcomes.clear();
        for cmd in batch.iter() {
            let outcome = match cmd {
                WriteCommand::Local(w) => {
                    Outcome::Local(apply_local(txn, clock, cfg, w, &mut last_seq)?)
                }
                WriteCommand::Apply(a) => {
                    let (report, conflicts) =
                        apply_remote(txn, clock, sinks, cfg, a, &mut last_seq)?;
                    Outcome::Apply(Ok(report), conflicts)
                }
            };
            outcomes.push(outcome);
        }
        if cfg.unsafe_ack_before_commit {
            // Deliberately broken: answer now, commit later. A kill in this
            // window loses acknowledged writes, which the crash tests and the
            // drill must detect.
            for (cmd, o) in batch.iter_mut().zip(outcomes.iter()) {
                if let (WriteCommand::Local(w), Outcome::Local(r)) = (cmd, o) {
                    if let Some(reply) = w.reply.take() {
                        let _ = reply.send(r.clone());
                    }
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        Ok(())
    });
    sinks.metrics.commit_duration_seconds.observe(started.elapsed().as_secs_f64());
    sinks.metrics.commit_batch_writes.observe(batch.len() as f64);
    match result {
        Ok(()) => {
            assert_eq!(outcomes.len(), batch.len(), "one outcome per command");
            if last_seq > 0 {
                sinks.last_seq.send_if_modified(|v| {
                    let newer = last_seq > *v;
                    *v = (*v).max(last_seq);
                    newer
                });
            }
            let now_ms = clock.physical_ms();
            for (cmd, outcome) in batch.iter_mut().zip(outcomes.drain(..)) {
                match (cmd, outcome) {
                    (WriteCommand::Local(w), Outcome::Local(r)) => {
                        // tandem's own entities are not data writes: they stay
                        // out of the conflict-rate denominator.
                        if r.is_ok() && !w.entity.starts_with('_') {
                            sinks
                                .metrics
                                .writes
                                .get_or_create(&EntityLabels { entity_type: w.entity.clone() })
                                .inc();
                        }
                        // The client may have gone away; the write is durable regardless.
                        if let Some(reply) = w.reply.take() {
                            let _ = reply.send(r);
                        }
                    }
                    (WriteCommand::Apply(a), Outcome::Apply(r, conflicts)) => {
                        for (entity, id, c) in conflicts {
                            record_conflict(sinks, cfg, &a.peer, &entity, &id, &c, now_ms);
                        }
                        if let Some(reply) = a.reply.take() {
                            let _ = reply.send(r);
                        }
                    }
                    _ => unreachable!("outcomes follow commands"),
                }
            }
        }
        Err(StoreError::Full(detail)) => {
            tracing::error!(%detail, commands = batch.len(), "commit failed: the disk is full; refusing the batch");
            sinks.disk.on_full(clock.physical_ms());
            refuse_batch(batch, &full_error());
            // Back to the last commit, so reads go on; a failure here is
            // retried by the node until space returns.
            if let Err(e) = store.recover() {
                tracing::error!(error = %e, "the store could not be reopened yet");
            }
        }
        Err(StoreError::Fatal(detail)) => {
            // What the operating system holds of the file is unknown now:
            // retrying could acknowledge writes that never reach the disk.
            // Stop; a restart recovers from what is on disk.
            tracing::error!(%detail, "storage failed (a sync or a write): stopping so that a restart recovers from disk; nothing of this batch was acknowledged");
            eprintln!(
                "tandem node: storage failed ({detail}); stopping, restart to recover from disk"
            );
            std::process::exit(EXIT_STORAGE_FAILED);
        }
        Err(e) => {
            tracing::error!(error = %e, commands = batch.len(), "commit failed; refusing the batch");
            refuse_batch(batch, &store_error(&e));
        }
    }
}

/// The answer to writes while the disk is full.
fn full_error() -> ApiError {
    ApiError::insufficient_storage(
        "the region's disk is full: the write was not stored; retry later or write to another region",
    )
}

/// Answer every command of a batch that was not committed.
fn refuse_batch(batch: &mut [WriteCommand], error: &ApiError) {
    for cmd in batch.iter_mut() {
        match cmd {
            WriteCommand::Local(w) => {
                if let Some(reply) = w.reply.take() {
                    let _ = reply.send(Err(error.clone()));
                }
            }
            WriteCommand::Apply(a) => {
                if let Some(reply) = a.reply.take() {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

fn apply_local(
    txn: &mut dyn tandem_store::WriteTxn,
    clock: &HlcClock,
    cfg: &WriterConfig,
    w: &LocalWrite,
    last_seq: &mut u64,
) -> Result<Result<WriteAck, ApiError>, StoreError> {
    let current = txn.get(&w.entity, &w.id)?;
    if let Some(check) = &w.precondition {
        if let Err(e) = check(current.as_ref()) {
            return Ok(Err(e));
        }
    }
    let mut state = match current {
        Some(r) => r.state,
        None => State::new(w.kind),
    };
    let hlc = clock.now();
    // Removing what is not there changes nothing: answer without logging a change.
    let may_be_noop = matches!(w.op, Op::Remove(_) | Op::Delete);
    let before = may_be_noop.then(|| state.clone());
    if let Err(e) = state.apply_as(&w.op, &cfg.actor, &cfg.region, hlc) {
        return Ok(Err(merge_error(e)));
    }
    if before.as_ref() == Some(&state) {
        return Ok(Ok(WriteAck { hlc, version: state.version(), seq: 0 }));
    }
    let now_ms = clock.physical_ms();
    let record = StoredRecord { state, updated_at_ms: now_ms };
    let origin = ChangeOrigin {
        origin: cfg.region.clone(),
        origin_seq: None,
        committed_at_ms: now_ms,
        logged_at_ms: now_ms,
    };
    let projection = cfg.config.entity(&w.entity).and_then(|e| e.analytics.as_ref());
    let projected = match (projection, &cfg.pseudonymizer) {
        (None, _) => None,
        (Some(p), Some(ps)) => Some((p, ps)),
        (Some(_), None) => {
            return Ok(Err(ApiError::unavailable(format!(
                "`{}` has an analytics projection but this region has no pseudonym key",
                w.entity
            ))))
        }
    };
    let seq = txn.put(&w.entity, &w.id, &record, &origin)?;
    *last_seq = (*last_seq).max(seq);
    if let Some((p, ps)) = projected {
        // Same transaction: the projection can never disagree with its source.
        if let Some(pid) = ps.projection_id(&w.id) {
            let subject = tandem_config::subject_of(&w.id).unwrap_or("");
            let op = crate::analytics::projection_op(&record.state, p, &ps.pseudonym(subject));
            let current = txn.get(&p.into, &pid)?;
            let mut pstate =
                current.map(|r| r.state).unwrap_or_else(|| State::new(MergeKind::LwwFields));
            let before = pstate.clone();
            pstate
                .apply_as(&op, &cfg.actor, &cfg.region, clock.now())
                .expect("projection ops are valid");
            if pstate != before {
                let seq = txn.put(
                    &p.into,
                    &pid,
                    &StoredRecord { state: pstate, updated_at_ms: now_ms },
                    &origin,
                )?;
                *last_seq = (*last_seq).max(seq);
            }
        }
    }
    Ok(Ok(WriteAck { hlc, version: record.state.version(), seq }))
}

type Conflicts = Vec<(String, String, Conflict)>;

fn apply_remote(
    txn: &mut dyn tandem_store::WriteTxn,
    clock: &HlcClock,
    sinks: &WriterSinks,
    cfg: &WriterConfig,
    a: &RemoteApply,
    last_seq: &mut u64,
) -> Result<(ApplyReport, Conflicts), StoreError> {
    let mut report = ApplyReport::default();
    let mut conflicts = Vec::new();
    for e in &a.entries {
        let kind = if e.entity == SUBJECT_ENTITY
            || e.entity == crate::replication::seal::SEALED_ENTITY
        {
            MergeKind::Lww
        } else if let Some(c) = cfg.config.entity(&e.entity) {
            c.merge
        } else {
            tracing::warn!(entity = %e.entity, peer = %a.peer, "skipping a change of an entity type this region does not know");
            continue;
        };
        if e.state.kind() != kind {
            tracing::warn!(entity = %e.entity, peer = %a.peer, "skipping a change whose merge type differs from the config");
            continue;
        }
        // Defence in depth: whatever the sender did, never store what this
        // region's jurisdiction may not hold.
        if filter::may_hold(&cfg.config, &cfg.region, e).is_err() {
            report.refused += 1;
            sinks
                .metrics
                .residency_denials
                .get_or_create(&ReasonLabels { reason: "replication_inbound".into() })
                .inc();
            tracing::error!(entity = %e.entity, peer = %a.peer, origin = %e.origin, "refused a personal record of another jurisdiction from a peer");
            report.refused_entities.push(e.entity.clone());
            continue;
        }
        // The remote stamp advances the local clock (unless it is too far
        // ahead: then it is refused and counted, and the data still merges).
        let _ = clock.observe(e.state.stamp().hlc);
        let current = txn.get(&e.entity, &e.id)?;
        let (state, changed) = match current {
            None => (e.state.clone(), true),
            Some(r) => {
                let mut s = r.state;
                let outcome = s.merge(&e.state).expect("kinds checked above");
                if let Some(c) = outcome.conflict {
                    conflicts.push((e.entity.clone(), e.id.clone(), c));
                }
                (s, outcome.changed)
            }
        };
        if !changed {
            continue;
        }
        let now_ms = clock.physical_ms();
        // A pure relay (the merged state is the remote one) keeps the change's
        // origin, so per-origin high-water marks deduplicate it downstream.
        // A merge that combined it with changes held here is a new state this
        // region vouches for: it is logged as this region's own, so its direct
        // stream carries it to every peer, including peers that cannot reach
        // the origins of the changes folded into it.
        let relay = state == e.state || e.entity == crate::replication::seal::SEALED_ENTITY;
        let origin = if relay {
            ChangeOrigin {
                origin: e.origin.clone(),
                origin_seq: Some(e.origin_seq),
                committed_at_ms: e.committed_at_ms,
                logged_at_ms: now_ms,
            }
        } else {
            ChangeOrigin {
                origin: cfg.region.clone(),
                origin_seq: None,
                committed_at_ms: now_ms,
                logged_at_ms: now_ms,
            }
        };
        let seq =
            txn.put(&e.entity, &e.id, &StoredRecord { state, updated_at_ms: now_ms }, &origin)?;
        *last_seq = (*last_seq).max(seq);
        report.changed += 1;
    }
    let mut cursor = txn.cursor(&a.cursor_key)?;
    if a.next_seq > cursor.seq {
        cursor.seq = a.next_seq;
        txn.set_cursor(&a.cursor_key, &cursor)?;
    }
    report.cursor = cursor.seq;
    report.conflicts = conflicts.len();
    Ok((report, conflicts))
}

fn record_conflict(
    sinks: &WriterSinks,
    cfg: &WriterConfig,
    peer: &str,
    entity: &str,
    id: &str,
    c: &Conflict,
    now_ms: u64,
) {
    let never = cfg.config.entity(entity).is_some_and(|e| e.conflicts == ConflictPolicy::Never);
    sinks
        .metrics
        .conflicts
        .get_or_create(&ConflictLabels {
            conflict_type: c.conflict_type.as_str().into(),
            resolution: c.resolution.as_str().into(),
            entity_type: entity.into(),
        })
        .inc();
    let entry = ConflictEntry::new(entity, id, peer, c, now_ms, never);
    sinks.metrics.conflict_age_seconds.observe(entry.age_seconds);
    if never {
        sinks
            .metrics
            .invariant_violations
            .get_or_create(&EntityLabels { entity_type: entity.into() })
            .inc();
        tracing::error!(
            entity,
            id,
            peer,
            conflict_type = c.conflict_type.as_str(),
            "conflict on an entity type declared conflicts = \"never\""
        );
    } else {
        tracing::debug!(
            entity,
            id,
            peer,
            conflict_type = c.conflict_type.as_str(),
            "conflict resolved"
        );
    }
    sinks.conflicts.push(entry);
}

pub fn merge_error(e: MergeError) -> ApiError {
    match e {
        MergeError::WrongMergeType { .. } | MergeError::KindMismatch { .. } => {
            ApiError::wrong_merge_type(e.to_string())
        }
        MergeError::CounterOverflow => ApiError::bad_request("counter would overflow"),
        MergeError::InvalidOp(m) => ApiError::bad_request(m),
    }
}

pub fn store_error(e: &StoreError) -> ApiError {
    ApiError::unavailable(format!("storage error: {e}"))
}
