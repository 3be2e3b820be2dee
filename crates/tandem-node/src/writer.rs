//! Group commit. One writer thread owns every write to the store: it takes the
//! queued writes (up to `commit_batch_max`), applies each to its record inside
//! one transaction, commits durably once, and only then answers every request of
//! the batch. While a commit is in flight, new writes queue up and go into the
//! next batch, so one fsync serves many clients. The queue is bounded: when it
//! is full a write is refused at once with `overloaded` rather than buffered.

use std::sync::Arc;
use std::time::Instant;

use tandem_clock::{Hlc, HlcClock, VersionVector};
use tandem_merge::{MergeError, MergeKind, Op, State};
use tandem_store::{ChangeOrigin, Store, StoreError, StoredRecord};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::metrics::{EntityLabels, Metrics};

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

pub enum WriteCommand {
    Local(LocalWrite),
}

/// The handle the HTTP layer uses to queue writes.
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

    /// Writes waiting for the committer.
    pub fn queue_depth(&self) -> usize {
        self.capacity - self.tx.capacity()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

pub struct WriterConfig {
    pub region: String,
    pub queue_len: usize,
    pub batch_max: usize,
    /// Test-only: acknowledge before the batch is durable (to prove that the
    /// crash tests and the drill catch a node that lies). Never set in production.
    pub unsafe_ack_before_commit: bool,
}

/// Start the writer thread. It runs until every `Writer` handle is dropped and
/// the queue is drained; join the returned handle to wait for the last commit.
pub fn spawn(
    store: Arc<dyn Store>,
    clock: Arc<HlcClock>,
    metrics: Arc<Metrics>,
    cfg: WriterConfig,
) -> (Writer, std::thread::JoinHandle<()>) {
    assert!(cfg.queue_len > 0 && cfg.batch_max > 0, "writer limits must be positive");
    let (tx, rx) = mpsc::channel(cfg.queue_len);
    let capacity = cfg.queue_len;
    let handle = std::thread::Builder::new()
        .name("tandem-writer".into())
        .spawn(move || run(store, clock, metrics, cfg, rx))
        .expect("spawn writer thread");
    (Writer { tx, capacity }, handle)
}

fn run(
    store: Arc<dyn Store>,
    clock: Arc<HlcClock>,
    metrics: Arc<Metrics>,
    cfg: WriterConfig,
    mut rx: mpsc::Receiver<WriteCommand>,
) {
    let mut batch: Vec<LocalWrite> = Vec::with_capacity(cfg.batch_max);
    while let Some(first) = rx.blocking_recv() {
        batch.clear();
        let WriteCommand::Local(w) = first;
        batch.push(w);
        while batch.len() < cfg.batch_max {
            match rx.try_recv() {
                Ok(WriteCommand::Local(w)) => batch.push(w),
                Err(_) => break,
            }
        }
        metrics.write_queue_depth.set(rx.len() as i64);
        commit_local_batch(store.as_ref(), &clock, &metrics, &cfg, &mut batch);
    }
    tracing::info!("writer drained its queue and stopped");
}

fn commit_local_batch(
    store: &dyn Store,
    clock: &HlcClock,
    metrics: &Metrics,
    cfg: &WriterConfig,
    batch: &mut Vec<LocalWrite>,
) {
    let started = Instant::now();
    let mut results: Vec<Result<WriteAck, ApiError>> = Vec::with_capacity(batch.len());
    let outcome = store.write(&mut |txn| {
        results.clear();
        for w in batch.iter() {
            let current = txn.get(&w.entity, &w.id)?;
            if let Some(check) = &w.precondition {
                if let Err(e) = check(current.as_ref()) {
                    results.push(Err(e));
                    continue;
                }
            }
            let mut state = match current {
                Some(r) => r.state,
                None => State::new(w.kind),
            };
            let hlc = clock.now();
            if let Err(e) = state.apply(&w.op, &cfg.region, hlc) {
                results.push(Err(merge_error(e)));
                continue;
            }
            let now_ms = clock.physical_ms();
            let record = StoredRecord { state, updated_at_ms: now_ms };
            let origin = ChangeOrigin {
                origin: cfg.region.clone(),
                origin_seq: None,
                committed_at_ms: now_ms,
                logged_at_ms: now_ms,
            };
            let seq = txn.put(&w.entity, &w.id, &record, &origin)?;
            results.push(Ok(WriteAck { hlc, version: record.state.version(), seq }));
        }
        if cfg.unsafe_ack_before_commit {
            // Deliberately broken: answer now, commit later. A kill in this
            // window loses acknowledged writes, which the crash tests and the
            // drill must detect.
            for (w, r) in batch.iter_mut().zip(results.iter()) {
                if let Some(reply) = w.reply.take() {
                    let _ = reply.send(r.clone());
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        Ok(())
    });
    metrics.commit_duration_seconds.observe(started.elapsed().as_secs_f64());
    metrics.commit_batch_writes.observe(batch.len() as f64);
    match outcome {
        Ok(()) => {
            assert_eq!(results.len(), batch.len(), "one result per write");
            for (w, result) in batch.drain(..).zip(results.drain(..)) {
                if result.is_ok() {
                    metrics
                        .writes
                        .get_or_create(&EntityLabels { entity_type: w.entity.clone() })
                        .inc();
                }
                // The client may have gone away; the write is durable regardless.
                if let Some(reply) = w.reply {
                    let _ = reply.send(result);
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, writes = batch.len(), "commit failed; refusing the batch");
            for w in batch.drain(..) {
                if let Some(reply) = w.reply {
                    let _ = reply.send(Err(store_error(&e)));
                }
            }
        }
    }
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
