//! The node's Prometheus metrics. The `replication_*` and `residency_*` names are
//! part of the public contract (DESIGN.md); alert rules and dashboards rely on
//! them. prometheus-client appends `_total` to counters itself, so counters are
//! registered without it.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EntityLabels {
    pub entity_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConflictLabels {
    pub conflict_type: String,
    pub resolution: String,
    pub entity_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerClassLabels {
    pub peer: String,
    pub data_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerPathLabels {
    pub peer: String,
    /// `direct` or `forward`.
    pub path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub data_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RespLabels {
    /// A command tandem answers (lowercase), or `unknown`.
    pub command: String,
    /// `ok`, or the error code (`WRONGTYPE`, `RESIDENCY`, `ERR`, ...).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub status: String,
}

/// Conflict age buckets of the contract, in seconds.
pub const CONFLICT_AGE_BUCKETS_SECONDS: [f64; 6] = [0.1, 1.0, 10.0, 60.0, 300.0, 3600.0];

pub struct Metrics {
    pub registry: Registry,
    pub writes: Family<EntityLabels, Counter>,
    pub conflicts: Family<ConflictLabels, Counter>,
    pub conflict_age_seconds: Histogram,
    pub invariant_violations: Family<EntityLabels, Counter>,
    pub lag_seconds: Family<PeerClassLabels, Gauge<f64, AtomicU64>>,
    pub queue_depth: Family<PeerLabels, Gauge>,
    pub lag_budget_breached: Family<ClassLabels, Gauge>,
    pub residency_denials: Family<ReasonLabels, Counter>,
    pub http_requests: Family<RequestLabels, Counter>,
    pub commit_batch_writes: Histogram,
    pub commit_duration_seconds: Histogram,
    pub write_queue_depth: Gauge,
    pub hlc_offset_rejections: Counter,
    /// 1 while the disk is full and writes are refused.
    pub storage_full: Gauge,
    /// Calls refused for want of a key, a certificate or a token, by reason.
    pub auth_refusals: Family<ReasonLabels, Counter>,
    pub resp_commands: Family<RespLabels, Counter>,
    pub resp_connections: Gauge,
    /// Entries in the replication log now (after compaction).
    pub log_entries: Gauge,
    /// Log entries removed by compaction since start.
    pub log_compacted_entries: Counter,
    /// Bytes of the region's store on disk (data file and write-ahead log).
    pub store_bytes: Gauge,
    /// Free and total bytes of the filesystem the store is on.
    pub storage_free_bytes: Gauge,
    pub storage_filesystem_bytes: Gauge,
    /// The audit log's retained segments (the active one included) and bytes.
    pub audit_segments: Gauge,
    pub audit_bytes: Gauge,
    /// Sealed audit segments exported and dropped since start.
    pub audit_segments_exported: Counter,
    pub audit_segments_dropped: Counter,
    /// Rounds of audit upkeep (export or drop) that failed since start.
    pub audit_upkeep_failures: Counter,
    /// Age of the stability horizon (the oldest acknowledgement in it).
    pub stability_horizon_age_seconds: Gauge<f64, AtomicU64>,
    /// Peers evicted from the stability horizon (silent past the retention).
    pub stability_evicted_peers: Gauge,
    /// Resyncs by anti-entropy with peers back from eviction.
    pub peer_resyncs: Counter,
    /// Bytes of changes sent to each peer (encoded batches), by path.
    pub replication_sent_bytes: Family<PeerPathLabels, Counter>,
}

/// The reasons `residency_denials_total` counts.
pub const RESIDENCY_REASONS: [&str; 6] = [
    "unknown_subject",
    "write_outside_jurisdiction",
    "misdirected_write",
    "replication_withheld",
    "replication_inbound",
    "peer_identity_mismatch",
];

impl Metrics {
    pub fn new(region: &str, config: &tandem_config::Config) -> Metrics {
        let m = Self::empty(region);
        m.declare(config);
        m
    }

    /// Every series the contract names, at zero, for the config's entity
    /// types and the reasons that exist: an alert's rate then sees the first
    /// increment, and a dashboard sees every family before anything happened.
    fn declare(&self, config: &tandem_config::Config) {
        for (name, e) in &config.entities {
            let _ = self.writes.get_or_create(&EntityLabels { entity_type: name.clone() });
            for (t, r) in tandem_merge::possible_conflicts(e.merge) {
                let _ = self.conflicts.get_or_create(&ConflictLabels {
                    conflict_type: t.as_str().into(),
                    resolution: r.as_str().into(),
                    entity_type: name.clone(),
                });
            }
            if e.conflicts == tandem_config::ConflictPolicy::Never {
                let _ = self
                    .invariant_violations
                    .get_or_create(&EntityLabels { entity_type: name.clone() });
            }
        }
        for reason in RESIDENCY_REASONS {
            let _ = self.residency_denials.get_or_create(&ReasonLabels { reason: reason.into() });
        }
    }

    fn empty(region: &str) -> Metrics {
        let mut registry = Registry::with_labels(
            [(std::borrow::Cow::Borrowed("region"), std::borrow::Cow::Owned(region.to_owned()))]
                .into_iter(),
        );
        let m = Metrics {
            writes: Family::default(),
            conflicts: Family::default(),
            conflict_age_seconds: Histogram::new(CONFLICT_AGE_BUCKETS_SECONDS),
            invariant_violations: Family::default(),
            lag_seconds: Family::default(),
            queue_depth: Family::default(),
            lag_budget_breached: Family::default(),
            residency_denials: Family::default(),
            http_requests: Family::default(),
            commit_batch_writes: Histogram::new([
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ]),
            commit_duration_seconds: Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
            ]),
            write_queue_depth: Gauge::default(),
            hlc_offset_rejections: Counter::default(),
            storage_full: Gauge::default(),
            auth_refusals: Family::default(),
            resp_commands: Family::default(),
            resp_connections: Gauge::default(),
            log_entries: Gauge::default(),
            log_compacted_entries: Counter::default(),
            store_bytes: Gauge::default(),
            storage_free_bytes: Gauge::default(),
            storage_filesystem_bytes: Gauge::default(),
            audit_segments: Gauge::default(),
            audit_bytes: Gauge::default(),
            audit_segments_exported: Counter::default(),
            audit_segments_dropped: Counter::default(),
            audit_upkeep_failures: Counter::default(),
            stability_horizon_age_seconds: Gauge::default(),
            stability_evicted_peers: Gauge::default(),
            peer_resyncs: Counter::default(),
            replication_sent_bytes: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "tandem_auth_refusals",
            "Calls refused for want of an API key, a certificate or the admin token, by reason",
            m.auth_refusals.clone(),
        );
        registry.register(
            "tandem_resp_commands",
            "Redis-protocol commands answered, by command and outcome (ok or the error code)",
            m.resp_commands.clone(),
        );
        registry.register(
            "tandem_resp_connections",
            "Open Redis-protocol connections",
            m.resp_connections.clone(),
        );
        registry.register(
            "tandem_storage_full",
            "1 while the region's disk is full and writes are refused with 507",
            m.storage_full.clone(),
        );
        registry.register(
            "replication_writes",
            "Local writes accepted, by entity type (the conflict-rate denominator)",
            m.writes.clone(),
        );
        registry.register(
            "replication_conflicts",
            "Conflicts resolved at apply time, by type, resolution and entity type",
            m.conflicts.clone(),
        );
        registry.register(
            "replication_conflict_age_seconds",
            "Age of the older conflicting write when the conflict was resolved",
            m.conflict_age_seconds.clone(),
        );
        registry.register(
            "replication_invariant_violations",
            "Conflicts on entity types declared conflicts = \"never\"",
            m.invariant_violations.clone(),
        );
        registry.register(
            "replication_lag_seconds",
            "Replication lag from a peer, by data class",
            m.lag_seconds.clone(),
        );
        registry.register(
            "replication_queue_depth",
            "Changes in a peer's log not yet applied here",
            m.queue_depth.clone(),
        );
        registry.register(
            "replication_lag_budget_breached",
            "1 while a data class's lag budget is breached",
            m.lag_budget_breached.clone(),
        );
        registry.register(
            "residency_denials",
            "Writes or flows refused by residency rules, by reason",
            m.residency_denials.clone(),
        );
        registry.register(
            "tandem_http_requests",
            "HTTP requests served, by method and status",
            m.http_requests.clone(),
        );
        registry.register(
            "tandem_commit_batch_writes",
            "Writes made durable by one commit (group commit size)",
            m.commit_batch_writes.clone(),
        );
        registry.register(
            "tandem_commit_duration_seconds",
            "Time of one durable commit",
            m.commit_duration_seconds.clone(),
        );
        registry.register(
            "tandem_write_queue_depth",
            "Writes waiting for the committer",
            m.write_queue_depth.clone(),
        );
        registry.register(
            "tandem_hlc_offset_rejections",
            "Remote HLC timestamps refused for being too far ahead of local time",
            m.hlc_offset_rejections.clone(),
        );
        registry.register(
            "tandem_log_entries",
            "Entries in the region's replication log (after compaction)",
            m.log_entries.clone(),
        );
        registry.register(
            "tandem_log_compacted_entries",
            "Replication log entries removed by lossless compaction",
            m.log_compacted_entries.clone(),
        );
        registry.register(
            "tandem_store_bytes",
            "Bytes of the region's store on disk (data file and write-ahead log)",
            m.store_bytes.clone(),
        );
        registry.register(
            "tandem_storage_free_bytes",
            "Free bytes of the filesystem the region's store is on (0 in memory)",
            m.storage_free_bytes.clone(),
        );
        registry.register(
            "tandem_storage_filesystem_bytes",
            "Size of the filesystem the region's store is on (0 in memory)",
            m.storage_filesystem_bytes.clone(),
        );
        registry.register(
            "tandem_audit_segments",
            "Segments of the audit log on the region's disk, the active one included",
            m.audit_segments.clone(),
        );
        registry.register(
            "tandem_audit_bytes",
            "Bytes of the audit log on the region's disk",
            m.audit_bytes.clone(),
        );
        registry.register(
            "tandem_audit_segments_exported",
            "Sealed audit segments copied to the jurisdiction's backup destination",
            m.audit_segments_exported.clone(),
        );
        registry.register(
            "tandem_audit_segments_dropped",
            "Sealed audit segments dropped from the region's disk after their retention",
            m.audit_segments_dropped.clone(),
        );
        registry.register(
            "tandem_audit_upkeep_failures",
            "Audit segment exports or drops that failed (retried at the next round)",
            m.audit_upkeep_failures.clone(),
        );
        registry.register(
            "tandem_stability_horizon_age_seconds",
            "Age of the stability horizon: since the oldest peer acknowledgement it rests on (since start before the first)",
            m.stability_horizon_age_seconds.clone(),
        );
        registry.register(
            "tandem_stability_evicted_peers",
            "Peers silent past replication.peer_retention, evicted from the stability horizon",
            m.stability_evicted_peers.clone(),
        );
        registry.register(
            "tandem_replication_sent_bytes",
            "Bytes of changes sent to each peer (encoded batches), by path (direct, forward)",
            m.replication_sent_bytes.clone(),
        );
        registry.register(
            "tandem_peer_resyncs",
            "Anti-entropy resyncs with peers back from eviction",
            m.peer_resyncs.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
