//! `Node`: everything one region's handlers share (config, store, writer, clock,
//! metrics, conflicts), and the checks that decide whether a request names a
//! known entity type and a valid record.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tandem_clock::HlcClock;
use tandem_config::{Config, EntityConfig};
use tandem_store::Store;

use crate::conflicts::ConflictLog;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::replication::Replication;
use crate::validate::check_id;
use crate::writer::Writer;

pub struct Node {
    pub config: Arc<Config>,
    pub region: String,
    pub jurisdiction: String,
    pub store: Arc<dyn Store>,
    /// The decisions this region's writer and replication serving carry out.
    pub engine: Arc<tandem_engine::Engine>,
    pub writer: Writer,
    pub clock: Arc<HlcClock>,
    pub metrics: Arc<Metrics>,
    pub conflicts: Arc<ConflictLog>,
    pub audit: crate::audit::AuditLog,
    /// Lag budget state per data class, updated every evaluation interval.
    pub budgets: std::sync::Mutex<std::collections::BTreeMap<String, crate::budget::BudgetState>>,
    pub replication: Replication,
    /// Set once this region has caught up with its peers after starting; it
    /// stays set (readiness is about the restart, not later link trouble).
    pub ready: std::sync::atomic::AtomicBool,
    /// Set once at shutdown: long-lived streams and loops end.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    pub started: Instant,
    /// Bearer token for admin calls; `None` refuses every admin call.
    pub admin_token: Option<String>,
    /// Limits on draining oversized request bodies (shared by every connection).
    pub drain: tandem_http::DrainGate,
    /// Whether the disk has room for writes.
    pub disk: Arc<crate::disk::DiskGuard>,
    /// TLS and API keys, or `--insecure` (see `auth`).
    pub security: crate::auth::Security,
    pub data_dir: PathBuf,
}

impl Node {
    /// One record, read on the calling thread: a B-tree lookup in a read
    /// snapshot, which never waits for the writer (redb's readers do not
    /// block on its write transaction) and is served from the page cache
    /// in the common case. Handing each such read to the blocking pool
    /// cost more than the read itself (BENCHMARKS.md, Redis protocol reads).
    /// Scans, snapshots and log pages still go to the blocking pool.
    pub fn read_point(
        &self,
        entity: &str,
        id: &str,
    ) -> Result<Option<tandem_engine::StoredRecord>, tandem_engine::StoreError> {
        self.store.get(entity, id)
    }

    /// The entity type named in a path, or 404 `unknown_entity`.
    pub fn entity(&self, entity: &str) -> Result<&EntityConfig, ApiError> {
        self.config.entity(entity).ok_or_else(|| ApiError::unknown_entity(entity))
    }

    /// Check an entity/id pair from a path.
    pub fn target(&self, entity: &str, id: &str) -> Result<&EntityConfig, ApiError> {
        let cfg = self.entity(entity)?;
        check_id("record id", id, self.config.node.id_len_max)?;
        if cfg.subjects && tandem_config::subject_of(id).is_none() {
            return Err(ApiError::bad_request(format!(
                "`{entity}` records belong to a subject: the id must be `<subject>` or `<subject>:<name>` with a non-empty subject, got `{id}`"
            )));
        }
        Ok(cfg)
    }

    /// 503 `reads_halted` when `entity` has a `halt-cross-region-reads` budget
    /// and the record's last write came from a peer that is over that budget.
    pub fn check_read_fresh(&self, entity: &EntityConfig, origin: &str) -> Result<(), ApiError> {
        if origin == self.region {
            return Ok(());
        }
        let Some(class) = self.config.data_classes.get(&entity.data_class) else { return Ok(()) };
        if class.on_breach != tandem_config::OnBreach::HaltCrossRegionReads {
            return Ok(());
        }
        let Some(link) = self.replication.links.get(origin) else { return Ok(()) };
        let timeout_ms = self.replication.timings.link_timeout.as_millis() as u64;
        let lag = link.lock().expect("link lock").lag_seconds(
            &entity.data_class,
            self.now_ms(),
            timeout_ms,
        );
        if lag > class.max_lag.as_secs_f64() {
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "reads_halted",
                format!(
                    "`{}` reads of records from {origin} are halted here: replication from {origin} lags {lag:.1} s, over the {} s budget; read it in {origin}",
                    entity.data_class,
                    class.max_lag.as_secs_f64()
                ),
            )
            .with("fresh_region", origin));
        }
        Ok(())
    }

    /// A replication request whose header claimed another region than its
    /// certificate: audited and counted as a residency refusal.
    pub fn audit_identity_refused(&self, certificate: &str, claimed: &str) {
        self.metrics
            .residency_denials
            .get_or_create(&crate::metrics::ReasonLabels {
                reason: "peer_identity_mismatch".into(),
            })
            .inc();
        tracing::error!(%certificate, %claimed, "a region's certificate claimed another region's identity: refused");
        let flow = crate::audit::Flow {
            kind: "identity_refused",
            peer: certificate.to_owned(),
            peer_jurisdiction: self.config.jurisdiction_of(certificate).unwrap_or("").to_owned(),
            detail: format!("claimed to be {claimed}"),
            ..Default::default()
        };
        // Refused either way; a failed append is logged by the audit log.
        let _ = self.audit.append(flow, self.now_ms());
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.physical_ms()
    }
}
