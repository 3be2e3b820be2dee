//! Group commit: the thread that executes the engine's batches. It takes the
//! queued commands (local writes and batches of replicated changes, up to
//! `commit_batch_max` at a time), has the engine decide them against one
//! read of everything they touch (`Engine::plan`), commits the effects
//! durably in one transaction, and only then answers every command of the
//! batch and records what the engine found (metrics, conflicts, refusals).
//! While a commit is in flight new commands queue up for the next batch, so
//! one fsync serves many clients. The queue is bounded: a local write finding
//! it full is refused at once with `overloaded`.

use std::sync::Arc;
use std::time::Instant;

use tandem_clock::HlcClock;
use tandem_engine::apply::{ApplyReport, FoundConflict, RemoteBatch, Skipped};
use tandem_engine::write::{Ack, LocalWrite};
use tandem_engine::{Command, Engine, Outcome, Store, StoreError};
use tokio::sync::{mpsc, oneshot, watch};

use crate::conflicts::{ConflictEntry, ConflictLog};
use crate::error::ApiError;
use crate::metrics::{ConflictLabels, EntityLabels, Metrics, ReasonLabels};

/// The exit status of a node that stops because its storage failed in a way
/// it cannot recover from while running (a failed sync).
pub const EXIT_STORAGE_FAILED: i32 = 3;

enum Reply {
    Local(oneshot::Sender<Result<Ack, ApiError>>),
    Apply(oneshot::Sender<Result<ApplyReport, ApiError>>),
}

struct Queued {
    command: Command,
    reply: Reply,
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
        let (reply, rx) = oneshot::channel();
        let queued = Queued { command: Command::Local(w), reply: Reply::Local(reply) };
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
        rx.await.map_err(|_| ApiError::unavailable("the writer stopped before answering"))?
    }

    /// Queue replicated changes (waiting for room: replication backs off
    /// rather than being refused) and wait until they are durable.
    pub async fn apply(&self, batch: RemoteBatch) -> Result<ApplyReport, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Queued { command: Command::Apply(batch), reply: Reply::Apply(reply) })
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

/// Start the writer thread. It runs until every `Writer` handle is dropped and
/// the queue is drained; join the returned handle to wait for the last commit.
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
    let handle = std::thread::Builder::new()
        .name("tandem-writer".into())
        .spawn(move || {
            let w = Committer { store, engine, clock, sinks, cfg };
            w.run(rx);
        })
        .expect("spawn writer thread");
    (Writer { tx, capacity }, handle)
}

struct Committer {
    store: Arc<dyn Store>,
    engine: Arc<Engine>,
    clock: Arc<HlcClock>,
    sinks: WriterSinks,
    cfg: WriterConfig,
}

impl Committer {
    fn run(&self, mut rx: mpsc::Receiver<Queued>) {
        let mut commands: Vec<Command> = Vec::with_capacity(self.cfg.batch_max);
        let mut replies: Vec<Reply> = Vec::with_capacity(self.cfg.batch_max);
        while let Some(first) = rx.blocking_recv() {
            commands.clear();
            replies.clear();
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
            self.commit_batch(&commands, &mut replies);
        }
        tracing::info!("writer drained its queue and stopped");
    }

    fn commit_batch(&self, commands: &[Command], replies: &mut Vec<Reply>) {
        if self.sinks.disk.is_full() {
            refuse(replies, &full_error());
            return;
        }
        let started = Instant::now();
        let plan = match self.engine.plan(self.store.as_ref(), &self.clock, commands) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, commands = commands.len(), "reading the batch failed; refusing it");
                refuse(replies, &store_error(&e));
                return;
            }
        };
        let mut outcomes = plan.outcomes;
        let early = plan.reply_before_commit || self.cfg.unsafe_ack_before_commit;
        if early {
            // Deliberately broken: answer now, commit later. A kill in this
            // window loses acknowledged writes, which the crash tests, the
            // drill and the simulation must detect.
            answer(replies, &mut outcomes);
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        let result = self.store.commit(&plan.effects);
        self.sinks.metrics.commit_duration_seconds.observe(started.elapsed().as_secs_f64());
        self.sinks.metrics.commit_batch_writes.observe(commands.len() as f64);
        match result {
            Ok(committed) => {
                if !plan.effects.puts.is_empty() {
                    self.sinks.durable_seq.send_if_modified(|v| {
                        let newer = committed.durable_seq > *v;
                        *v = (*v).max(committed.durable_seq);
                        newer
                    });
                }
                self.record(commands, &outcomes);
                if !early {
                    answer(replies, &mut outcomes);
                }
            }
            Err(StoreError::Full(detail)) => {
                tracing::error!(%detail, commands = commands.len(), "commit failed: the disk is full; refusing the batch");
                self.sinks.disk.on_full(self.clock.physical_ms());
                refuse(replies, &full_error());
                // Back to the last commit, so reads go on; a failure here is
                // retried by the node until space returns.
                if let Err(e) = self.store.recover() {
                    tracing::error!(error = %e, "the store could not be reopened yet");
                }
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
                tracing::error!(error = %e, commands = commands.len(), "commit failed; refusing the batch");
                refuse(replies, &store_error(&e));
            }
        }
    }

    /// Metrics, conflicts and logs of a committed batch.
    fn record(&self, commands: &[Command], outcomes: &[Outcome]) {
        let m = &self.sinks.metrics;
        let now_ms = self.clock.physical_ms();
        for (cmd, outcome) in commands.iter().zip(outcomes) {
            match (cmd, outcome) {
                (Command::Local(w), Outcome::Local(Ok(_))) => {
                    // tandem's own entities are not data writes: they stay
                    // out of the conflict-rate denominator.
                    if !w.entity.starts_with('_') {
                        m.writes
                            .get_or_create(&EntityLabels { entity_type: w.entity.clone() })
                            .inc();
                    }
                }
                (Command::Local(w), Outcome::Local(Err(r))) => {
                    if let Some(reason) = r.residency_reason() {
                        m.residency_denials
                            .get_or_create(&ReasonLabels { reason: reason.into() })
                            .inc();
                        // The id names the subject: it stays out of this region's logs.
                        tracing::warn!(entity = %w.entity, reason, "write refused");
                    }
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

/// Answer each command with its outcome (the client may have gone away; a
/// durable write stays durable).
fn answer(replies: &mut Vec<Reply>, outcomes: &mut [Outcome]) {
    assert_eq!(replies.len(), outcomes.len(), "one outcome per command");
    for (reply, outcome) in replies.drain(..).zip(outcomes.iter()) {
        match (reply, outcome) {
            (Reply::Local(tx), Outcome::Local(r)) => {
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
            Reply::Local(tx) => {
                let _ = tx.send(Err(error.clone()));
            }
            Reply::Apply(tx) => {
                let _ = tx.send(Err(error.clone()));
            }
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
