//! Group commit, pipelined: the thread that decides batches and the thread
//! that makes them durable. The planner takes the queued commands (local
//! writes and batches of replicated changes, up to `commit_batch_max` at a
//! time) and has the engine decide them (`Engine::plan_over`) against the
//! store *with the effects of the batches still being committed on top*;
//! the committer commits each batch's effects durably in one transaction,
//! in order, and only then answers its commands and records what the engine
//! found (metrics, conflicts, refusals). So the next batch is decided while
//! one is in its fsync: the planner keeps deciding what arrives into a
//! hand-over slot, and the committer takes everything in the slot as one
//! transaction when it is free, so one fsync still serves many clients.
//!
//! Nothing that is not durable is visible: reads, log scans and replication
//! senders read the store, which holds only committed transactions, and the
//! durable sequence moves after the commit. When a commit fails, the batches
//! decided on top of it are refused too (none was answered) and the planner
//! starts again from the store. The queue is bounded: a local write finding
//! it full is refused at once with `overloaded`.

use std::collections::VecDeque;
use std::sync::{mpsc as std_mpsc, Arc, Condvar, Mutex};
use std::time::Instant;

use tandem_clock::HlcClock;
use tandem_engine::apply::{ApplyReport, FoundConflict, RemoteBatch, Skipped};
use tandem_engine::write::{Ack, LocalWrite};
use tandem_engine::{Command, Effects, Engine, Outcome, Store, StoreError};
use tokio::sync::{mpsc, oneshot, watch};

use crate::conflicts::{ConflictEntry, ConflictLog};
use crate::error::ApiError;
use crate::metrics::{ConflictLabels, EntityLabels, Metrics, ReasonLabels};

/// The exit status of a node that stops because its storage failed in a way
/// it cannot recover from while running (a failed sync).
pub const EXIT_STORAGE_FAILED: i32 = 3;

enum Reply {
    Local(oneshot::Sender<Result<Ack, ApiError>>),
    Transaction(oneshot::Sender<Result<Vec<Ack>, ApiError>>),
    Apply(oneshot::Sender<Result<ApplyReport, ApiError>>),
}

struct Queued {
    command: Command,
    reply: Reply,
}

/// What waits for the writer's answer to one queued command.
async fn answer_of<T>(rx: oneshot::Receiver<Result<T, ApiError>>) -> Result<T, ApiError> {
    rx.await.map_err(|_| ApiError::unavailable("the writer stopped before answering"))?
}

/// The handle the HTTP layer and the replication loops use to queue work.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Queued>,
    capacity: usize,
}

impl Writer {
    /// Queue a write and wait until it is durable (or refused).
    pub async fn write(&self, w: LocalWrite) -> Result<Ack, ApiError> {
        self.submit(w)?.await
    }

    /// Queue a write now (in call order: writes queued one after another
    /// apply in that order, and may share a commit) and return what waits
    /// for it to be durable.
    pub fn submit(
        &self,
        w: LocalWrite,
    ) -> Result<impl std::future::Future<Output = Result<Ack, ApiError>>, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(Queued { command: Command::Local(w), reply: Reply::Local(reply) })?;
        Ok(answer_of(rx))
    }

    /// Queue writes that apply together in one commit or not at all, and
    /// return what waits for them to be durable.
    pub fn submit_transaction(
        &self,
        writes: Vec<LocalWrite>,
    ) -> Result<impl std::future::Future<Output = Result<Vec<Ack>, ApiError>>, ApiError> {
        let (reply, rx) = oneshot::channel();
        let command = Command::Transaction(writes);
        self.enqueue(Queued { command, reply: Reply::Transaction(reply) })?;
        Ok(answer_of(rx))
    }

    fn enqueue(&self, queued: Queued) -> Result<(), ApiError> {
        match self.tx.try_send(queued) {
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
        Ok(())
    }

    /// Queue replicated changes (waiting for room: replication backs off
    /// rather than being refused) and wait until they are durable.
    pub async fn apply(&self, batch: RemoteBatch) -> Result<ApplyReport, ApiError> {
        self.submit_apply(batch).await?.await
    }

    /// Queue replicated changes (waiting for room), in call order, and
    /// return what waits for them to be durable.
    pub async fn submit_apply(
        &self,
        batch: RemoteBatch,
    ) -> Result<impl std::future::Future<Output = Result<ApplyReport, ApiError>>, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Queued { command: Command::Apply(batch), reply: Reply::Apply(reply) })
            .await
            .map_err(|_| ApiError::unavailable("the node is shutting down"))?;
        Ok(answer_of(rx))
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
    pub queue_len: usize,
    pub batch_max: usize,
    /// Test-only: acknowledge before the batch is durable (to prove that the
    /// crash tests and the drill catch a node that lies). Never set in production.
    pub unsafe_ack_before_commit: bool,
}

/// What the writer reports to, besides its callers.
pub struct WriterSinks {
    pub metrics: Arc<Metrics>,
    pub conflicts: Arc<ConflictLog>,
    /// The newest durable log position (wakes the replication senders).
    pub durable_seq: Arc<watch::Sender<u64>>,
    /// Whether the disk has room; a full disk refuses writes with 507.
    pub disk: Arc<crate::disk::DiskGuard>,
}

/// Decided batches waiting for the committer, taken all at once.
#[derive(Default)]
struct Slot {
    parts: Vec<Decided>,
    /// Commands in `parts`.
    commands: usize,
    /// The planner has stopped: take what is left, then stop.
    closed: bool,
}

/// The hand-over between planner and committer.
#[derive(Default)]
struct HandOver {
    slot: Mutex<Slot>,
    /// Signalled when the slot gains parts, is emptied, or closes.
    changed: Condvar,
}

/// Start the writer threads. They run until every `Writer` handle is dropped
/// and the queue is drained; join the returned handle to wait for the last
/// commit.
pub fn spawn(
    store: Arc<dyn Store>,
    engine: Arc<Engine>,
    clock: Arc<HlcClock>,
    sinks: WriterSinks,
    cfg: WriterConfig,
) -> (Writer, std::thread::JoinHandle<()>) {
    assert!(cfg.queue_len > 0 && cfg.batch_max > 0, "writer limits must be positive");
    let (tx, rx) = mpsc::channel(cfg.queue_len);
    let capacity = cfg.queue_len;
    let sinks = Arc::new(sinks);
    let handle = std::thread::Builder::new()
        .name("tandem-writer".into())
        .spawn(move || {
            let hand_over = Arc::new(HandOver::default());
            let (done_tx, done_rx) = std_mpsc::channel();
            let committer =
                Committer { store: store.clone(), clock: clock.clone(), sinks: sinks.clone() };
            let committing = std::thread::Builder::new()
                .name("tandem-commit".into())
                .spawn({
                    let hand_over = hand_over.clone();
                    move || committer.run(&hand_over, &done_tx)
                })
                .expect("spawn the commit thread");
            let planner = Planner { store, engine, clock, sinks, cfg };
            planner.run(rx, &hand_over, &done_rx);
            hand_over.slot.lock().expect("hand-over lock").closed = true;
            hand_over.changed.notify_all();
            committing.join().expect("the commit thread");
            tracing::info!("writer drained its queue and stopped");
        })
        .expect("spawn writer thread");
    (Writer { tx, capacity }, handle)
}

/// A decided batch on its way to the disk.
struct Decided {
    /// The planner's epoch when it was decided (see `Done`).
    epoch: u64,
    commands: Vec<Command>,
    /// Empty when the batch was answered before its commit (a fault).
    replies: Vec<Reply>,
    outcomes: Vec<Outcome>,
    /// The effects of each batch merged into this one, in order (one at
    /// first), committed as one transaction.
    effects: Vec<Arc<Effects>>,
    started: Instant,
}

/// What the committer tells the planner of each transaction it made or
/// failed: how many decided batches (`parts`) it held. A failure ends the
/// epoch: the planner forgets every pending batch and decides from the store
/// again; the committer refuses the rest of that epoch's batches, which were
/// decided on top of the failed one.
struct Done {
    epoch: u64,
    parts: usize,
    committed: bool,
}

impl Decided {
    /// Append `later` (decided after this one, over it) as one transaction.
    fn absorb(&mut self, later: Decided) {
        self.effects.extend(later.effects);
        self.commands.extend(later.commands);
        self.replies.extend(later.replies);
        self.outcomes.extend(later.outcomes);
    }
}

struct Planner {
    store: Arc<dyn Store>,
    engine: Arc<Engine>,
    clock: Arc<HlcClock>,
    sinks: Arc<WriterSinks>,
    cfg: WriterConfig,
}

impl Planner {
    fn run(
        &self,
        mut rx: mpsc::Receiver<Queued>,
        hand_over: &HandOver,
        done: &std_mpsc::Receiver<Done>,
    ) {
        // Effects of the batches handed to the committer and not durable
        // yet, oldest first: what the next batch must see as written.
        let mut pending: VecDeque<Arc<Effects>> = VecDeque::new();
        let mut epoch = 0u64;
        while let Some(first) = rx.blocking_recv() {
            let mut commands = Vec::with_capacity(self.cfg.batch_max);
            let mut replies = Vec::with_capacity(self.cfg.batch_max);
            commands.push(first.command);
            replies.push(first.reply);
            while commands.len() < self.cfg.batch_max {
                match rx.try_recv() {
                    Ok(q) => {
                        commands.push(q.command);
                        replies.push(q.reply);
                    }
                    Err(_) => break,
                }
            }
            self.sinks.metrics.write_queue_depth.set(rx.len() as i64);
            for d in done.try_iter() {
                if d.epoch != epoch {
                    continue;
                }
                if d.committed {
                    for _ in 0..d.parts {
                        pending.pop_front().expect("a committed batch was pending");
                    }
                } else {
                    epoch += 1;
                    pending.clear();
                }
            }
            let Some(batch) = self.decide(epoch, commands, replies, pending.make_contiguous())
            else {
                continue;
            };
            pending.extend(batch.effects.iter().cloned());
            let mut slot = hand_over.slot.lock().expect("hand-over lock");
            // Bounded: past a batch's worth of commands waiting, wait for the
            // committer to take them.
            while slot.commands >= self.cfg.batch_max {
                slot = hand_over.changed.wait(slot).expect("hand-over lock");
            }
            slot.commands += batch.commands.len();
            slot.parts.push(batch);
            drop(slot);
            hand_over.changed.notify_all();
        }
    }

    /// Decide one batch over the pending ones; `None` when it was refused.
    fn decide(
        &self,
        epoch: u64,
        commands: Vec<Command>,
        mut replies: Vec<Reply>,
        pending: &[Arc<Effects>],
    ) -> Option<Decided> {
        if self.sinks.disk.is_full() {
            refuse(&mut replies, &full_error());
            return None;
        }
        let started = Instant::now();
        let plan = match self.engine.plan_over(self.store.as_ref(), pending, &self.clock, &commands)
        {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, commands = commands.len(), "reading the batch failed; refusing it");
                refuse(&mut replies, &store_error(&e));
                return None;
            }
        };
        let mut outcomes = plan.outcomes;
        if plan.reply_before_commit || self.cfg.unsafe_ack_before_commit {
            // Deliberately broken: answer now, commit later. A kill in this
            // window loses acknowledged writes, which the crash tests, the
            // drill and the simulation must detect.
            answer(&mut replies, &mut outcomes);
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        Some(Decided {
            epoch,
            commands,
            replies,
            outcomes,
            effects: vec![Arc::new(plan.effects)],
            started,
        })
    }
}

struct Committer {
    store: Arc<dyn Store>,
    clock: Arc<HlcClock>,
    sinks: Arc<WriterSinks>,
}

impl Committer {
    fn run(&self, hand_over: &HandOver, done: &std_mpsc::Sender<Done>) {
        // The epoch whose batch failed, and the answer its successors get.
        let mut failed: Option<(u64, ApiError)> = None;
        loop {
            let parts = {
                let mut slot = hand_over.slot.lock().expect("hand-over lock");
                while slot.parts.is_empty() && !slot.closed {
                    slot = hand_over.changed.wait(slot).expect("hand-over lock");
                }
                if slot.parts.is_empty() {
                    return; // closed and drained
                }
                slot.commands = 0;
                std::mem::take(&mut slot.parts)
            };
            hand_over.changed.notify_all();
            // Refuse what was decided on top of a failed batch; commit the
            // rest as one transaction per epoch (an epoch changes only after
            // a failure, so this is one transaction but right after one).
            let mut batch: Option<Decided> = None;
            let mut merged = 0;
            for mut part in parts {
                if let Some((epoch, error)) = &failed {
                    if part.epoch <= *epoch {
                        refuse(&mut part.replies, error);
                        continue;
                    }
                }
                match &mut batch {
                    Some(b) if b.epoch == part.epoch => b.absorb(part),
                    Some(_) => unreachable!("a new epoch begins only after a failure"),
                    None => batch = Some(part),
                }
                merged += 1;
            }
            let Some(mut batch) = batch else { continue };
            let committed = self.commit(&mut batch);
            if let Err(error) = &committed {
                failed = Some((batch.epoch, error.clone()));
            }
            // The planner may have stopped (shutdown): nothing to tell then.
            let _ =
                done.send(Done { epoch: batch.epoch, parts: merged, committed: committed.is_ok() });
        }
    }

    /// Commit one batch durably, then answer it; the answer its commands got
    /// when it failed.
    fn commit(&self, batch: &mut Decided) -> Result<(), ApiError> {
        let parts: Vec<&Effects> = batch.effects.iter().map(|e| &**e).collect();
        let result = self.store.commit_all(&parts);
        let m = &self.sinks.metrics;
        m.commit_duration_seconds.observe(batch.started.elapsed().as_secs_f64());
        m.commit_batch_writes.observe(batch.commands.len() as f64);
        match result {
            Ok(committed) => {
                if parts.iter().any(|e| !e.puts.is_empty()) {
                    self.sinks.durable_seq.send_if_modified(|v| {
                        let newer = committed.durable_seq > *v;
                        *v = (*v).max(committed.durable_seq);
                        newer
                    });
                }
                self.record(&batch.commands, &batch.outcomes);
                if !batch.replies.is_empty() {
                    answer(&mut batch.replies, &mut batch.outcomes);
                }
                Ok(())
            }
            Err(StoreError::Full(detail)) => {
                tracing::error!(%detail, commands = batch.commands.len(), "commit failed: the disk is full; refusing the batch");
                self.sinks.disk.on_full(self.clock.physical_ms());
                let error = full_error();
                refuse(&mut batch.replies, &error);
                // Back to the last commit, so reads go on; a failure here is
                // retried by the node until space returns.
                if let Err(e) = self.store.recover() {
                    tracing::error!(error = %e, "the store could not be reopened yet");
                }
                Err(error)
            }
            Err(StoreError::Fatal(detail)) => {
                // What the operating system holds of the file is unknown now:
                // retrying could acknowledge writes that never reach the disk.
                // Stop; a restart recovers from what is on disk.
                tracing::error!(%detail, "storage failed (a sync or a write): stopping so that a restart recovers from disk; nothing of this batch was acknowledged");
                eprintln!("tandem node: storage failed ({detail}); stopping, restart to recover from disk");
                std::process::exit(EXIT_STORAGE_FAILED);
            }
            Err(e) => {
                tracing::error!(error = %e, commands = batch.commands.len(), "commit failed; refusing the batch");
                let error = store_error(&e);
                refuse(&mut batch.replies, &error);
                Err(error)
            }
        }
    }

    /// Metrics, conflicts and logs of a committed batch.
    fn record(&self, commands: &[Command], outcomes: &[Outcome]) {
        let m = &self.sinks.metrics;
        let now_ms = self.clock.physical_ms();
        // Counted per entity type, then each counter looked up once per batch.
        let mut writes: Vec<(&str, u64)> = Vec::new();
        for (cmd, outcome) in commands.iter().zip(outcomes) {
            match (cmd, outcome) {
                (Command::Local(w), Outcome::Local(Ok(_))) => count_write(&mut writes, w),
                (Command::Transaction(ws), Outcome::Transaction(Ok(_))) => {
                    ws.iter().for_each(|w| count_write(&mut writes, w));
                }
                (Command::Local(w), Outcome::Local(Err(r))) => self.record_refusal(w, r),
                (Command::Transaction(ws), Outcome::Transaction(Err(r))) => {
                    self.record_refusal(&ws[0], r);
                }
                (Command::Apply(a), Outcome::Apply(report)) => {
                    for c in &report.conflicts {
                        self.record_conflict(&a.peer, c, now_ms);
                    }
                    for (entity, _id) in &report.refused {
                        m.residency_denials
                            .get_or_create(&ReasonLabels { reason: "replication_inbound".into() })
                            .inc();
                        tracing::error!(%entity, peer = %a.peer, "refused a personal record of another jurisdiction from a peer");
                    }
                    for (entity, why) in &report.skipped {
                        let why = match why {
                            Skipped::UnknownEntity => "an entity type this region does not know",
                            Skipped::OtherMergeType => "a merge type other than the configured one",
                        };
                        tracing::warn!(%entity, peer = %a.peer, "skipped a change of {why}");
                    }
                }
                _ => unreachable!("outcomes follow commands"),
            }
        }
        for (entity, n) in writes {
            m.writes.get_or_create(&EntityLabels { entity_type: entity.to_owned() }).inc_by(n);
        }
    }

    fn record_refusal(&self, w: &LocalWrite, r: &tandem_engine::Refusal) {
        if let Some(reason) = r.residency_reason() {
            let m = &self.sinks.metrics;
            m.residency_denials.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
            // The id names the subject: it stays out of this region's logs.
            tracing::warn!(entity = %w.entity, reason, "write refused");
        }
    }

    fn record_conflict(&self, peer: &str, found: &FoundConflict, now_ms: u64) {
        let m = &self.sinks.metrics;
        let c = &found.conflict;
        let entity = found.entity.as_str();
        m.conflicts
            .get_or_create(&ConflictLabels {
                conflict_type: c.conflict_type.as_str().into(),
                resolution: c.resolution.as_str().into(),
                entity_type: entity.into(),
            })
            .inc();
        let entry =
            ConflictEntry::new(entity, &found.id, peer, c, now_ms, found.invariant_violation);
        m.conflict_age_seconds.observe(entry.age_seconds);
        if found.invariant_violation {
            m.invariant_violations
                .get_or_create(&EntityLabels { entity_type: entity.into() })
                .inc();
            tracing::error!(
                entity,
                id = %found.id,
                peer,
                conflict_type = c.conflict_type.as_str(),
                "conflict on an entity type declared conflicts = \"never\""
            );
        } else {
            tracing::debug!(
                entity,
                peer,
                conflict_type = c.conflict_type.as_str(),
                "conflict resolved"
            );
        }
        self.sinks.conflicts.push(entry);
    }
}

/// Count a durable write by entity type; tandem's own entities are not data
/// writes: they stay out of the conflict-rate denominator.
fn count_write<'a>(writes: &mut Vec<(&'a str, u64)>, w: &'a LocalWrite) {
    if !w.entity.starts_with('_') {
        match writes.iter_mut().find(|(e, _)| *e == w.entity) {
            Some((_, n)) => *n += 1,
            None => writes.push((&w.entity, 1)),
        }
    }
}

/// Answer each command with its outcome (the client may have gone away; a
/// durable write stays durable).
fn answer(replies: &mut Vec<Reply>, outcomes: &mut [Outcome]) {
    assert_eq!(replies.len(), outcomes.len(), "one outcome per command");
    for (reply, outcome) in replies.drain(..).zip(outcomes.iter()) {
        match (reply, outcome) {
            (Reply::Local(tx), Outcome::Local(r)) => {
                let _ = tx.send(r.clone().map_err(ApiError::from));
            }
            (Reply::Transaction(tx), Outcome::Transaction(r)) => {
                let _ = tx.send(r.clone().map_err(ApiError::from));
            }
            (Reply::Apply(tx), Outcome::Apply(report)) => {
                let _ = tx.send(Ok(report.clone()));
            }
            _ => unreachable!("outcomes follow commands"),
        }
    }
}

/// Answer every command of a batch that was not committed.
fn refuse(replies: &mut Vec<Reply>, error: &ApiError) {
    for reply in replies.drain(..) {
        match reply {
            Reply::Local(tx) => _ = tx.send(Err(error.clone())),
            Reply::Transaction(tx) => _ = tx.send(Err(error.clone())),
            Reply::Apply(tx) => _ = tx.send(Err(error.clone())),
        }
    }
}

/// The answer to writes while the disk is full.
fn full_error() -> ApiError {
    ApiError::insufficient_storage(
        "the region's disk is full: the write was not stored; retry later or write to another region",
    )
}

pub fn store_error(e: &StoreError) -> ApiError {
    ApiError::unavailable(format!("storage error: {e}"))
}
