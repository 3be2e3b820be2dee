//! The configuration schema: one struct per TOML section, their defaults, and
//! the lookups the rest of tandem asks of a deployment (which jurisdiction a
//! region is in, which data class an entity has, how far apart two regions are).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use tandem_merge::MergeKind;

const MIB: usize = 1024 * 1024;

/// One deployment: its regions, the router in front of them, the simulated
/// links between them, and the entity types they store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub deployment: DeploymentConfig,
    /// At least one; `validate` refuses an empty list.
    #[serde(default)]
    pub regions: Vec<RegionConfig>,
    pub router: RouterConfig,
    #[serde(default)]
    pub links: Vec<LinkConfig>,
    /// Lag budgets by class name. When the `[data_classes]` section is absent the
    /// reference article's table is used ([`reference_lag_budgets`]); when it is
    /// present it is the complete list.
    #[serde(default = "reference_lag_budgets")]
    pub data_classes: BTreeMap<String, DataClass>,
    #[serde(default)]
    pub entities: BTreeMap<String, EntityConfig>,
    #[serde(default)]
    pub node: NodeConfig,
    #[serde(default)]
    pub replication: ReplicationConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    /// The Redis protocol front end: the entity types keys without ':' map to.
    #[serde(default)]
    pub resp: RespConfig,
    /// Declared legal bases for moving personal data from one jurisdiction to
    /// another. Without one, personal data never leaves its jurisdiction; with
    /// one, it crosses only encrypted with a key the source jurisdiction holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transfers: Vec<TransferConfig>,
    /// Per-jurisdiction settings: backup destinations, pseudonym keys.
    #[serde(default)]
    pub jurisdictions: BTreeMap<String, JurisdictionConfig>,
}

/// `[[transfers]]`: a legal basis for a jurisdiction pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferConfig {
    /// The jurisdiction the personal data belongs to, e.g. `EU`.
    pub from: String,
    /// Where it may be stored as ciphertext, e.g. `US`.
    pub to: String,
    /// The documented basis, e.g. a standard contractual clauses reference.
    pub legal_basis: String,
    /// Environment variable holding the 32-byte key as 64 hex digits. Only
    /// regions of `from` need it; regions of `to` never see it.
    pub key_env: String,
}

/// `[deployment]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    pub name: String,
    /// Root of every region's store (`<data_dir>/<region>`), default `./data`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
}

/// `[[regions]]`: one node process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// `[a-z0-9-]{1,32}`, e.g. `eu-west`.
    pub name: String,
    /// Legal area, e.g. `EU`. Required; it is defaulted to empty here only so
    /// that `validate` can refuse it with the region's index in the key.
    #[serde(default)]
    pub jurisdiction: String,
    pub listen: SocketAddr,
    /// Where the region speaks the Redis protocol (RESP2/RESP3); none when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp_listen: Option<SocketAddr>,
}

/// `[router]`: the global routing layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    pub listen: SocketAddr,
    /// Where the router also speaks RESP2/RESP3, routing each command like
    /// the HTTP data plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp_listen: Option<SocketAddr>,
    /// Where a caller without `X-Tandem-Client-Region` is assumed to be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_region: Option<String>,
    #[serde(default = "default_probe_interval", with = "crate::duration")]
    pub probe_interval: Duration,
    /// Consecutive failed probes before a region is marked down.
    #[serde(default = "default_probe_failure_threshold")]
    pub probe_failure_threshold: u32,
    #[serde(default = "default_probe_timeout", with = "crate::duration")]
    pub probe_timeout: Duration,
    /// How long a subject's home region is cached; zero disables the cache.
    #[serde(default = "default_home_cache_ttl", with = "crate::duration")]
    pub home_cache_ttl: Duration,
    #[serde(default = "default_upstream_timeout", with = "crate::duration")]
    pub upstream_timeout: Duration,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// A request head that has begun must be complete within this (then 408).
    #[serde(default = "default_header_read_timeout", with = "crate::duration")]
    pub header_read_timeout: Duration,
    /// A keep-alive client connection that sends nothing for this long is closed.
    #[serde(default = "default_idle_timeout", with = "crate::duration")]
    pub idle_timeout: Duration,
}

/// `[[links]]`: simulated one-way latency between two regions (`tandem up`).
/// Links are symmetric: one entry covers both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    pub between: [String; 2],
    pub latency_ms: u64,
}

/// `[data_classes.<name>]`: a lag budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataClass {
    #[serde(with = "crate::duration")]
    pub max_lag: Duration,
    pub on_breach: OnBreach,
}

/// What happens when replication lag exceeds a class's `max_lag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnBreach {
    /// Page someone.
    Alert,
    /// Alert, and refuse reads served from a region other than the data's home.
    HaltCrossRegionReads,
    /// A warning only.
    Warn,
}

impl OnBreach {
    pub const ALL: [OnBreach; 3] =
        [OnBreach::Alert, OnBreach::HaltCrossRegionReads, OnBreach::Warn];

    pub fn as_str(self) -> &'static str {
        match self {
            OnBreach::Alert => "alert",
            OnBreach::HaltCrossRegionReads => "halt-cross-region-reads",
            OnBreach::Warn => "warn",
        }
    }
}

impl fmt::Display for OnBreach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[entities.<name>]`: a kind of record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "EntityToml")]
pub struct EntityConfig {
    pub merge: MergeKind,
    /// Name of a `[data_classes.<name>]` entry.
    pub data_class: String,
    /// Residency rules apply: a record never leaves its subject's jurisdiction.
    pub personal: bool,
    /// Ids have the form `<subject>:<rest>`, or `<subject>` for the subject's own record (see [`crate::subject_of`]).
    /// Defaults to `personal`.
    pub subjects: bool,
    pub writes: WritePolicy,
    pub conflicts: ConflictPolicy,
    /// An anonymized projection replicated to every region for analytics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analytics: Option<AnalyticsProjection>,
}

/// `[entities.<name>.analytics]`: the fields of a personal record that may be
/// analysed anywhere, with the subject replaced by a keyed pseudonym.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsProjection {
    /// The entity type the projection is written to (non-personal, `lww-fields`).
    pub into: String,
    /// Fields copied into the projection.
    pub keep: Vec<String>,
    /// Fields known to be dropped (documentation; every field not kept is dropped).
    #[serde(default)]
    pub drop: Vec<String>,
}

/// `[jurisdictions.<name>]`: what belongs to one legal area.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JurisdictionConfig {
    /// URL prefixes where backups of this jurisdiction's regions may be written
    /// (e.g. `file:///var/backups/eu/`, `s3://eu-backups/`). None declared: no backups.
    #[serde(default)]
    pub backup_destinations: Vec<String>,
    /// Environment variable holding this jurisdiction's pseudonym key (64 hex
    /// digits) for analytics projections. The key never leaves the jurisdiction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pseudonym_key_env: Option<String>,
}

/// Where writes of an entity type are accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WritePolicy {
    /// Pinned: only the subject's home region accepts writes (failover aside).
    HomeRegion,
    /// Any region accepts writes; concurrent ones merge.
    #[default]
    AnyRegion,
}

/// Whether conflicts of an entity type are expected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    /// Conflicts are merged and counted.
    #[default]
    Allow,
    /// Any conflict is an invariant violation (still merged, and counted as a violation).
    Never,
}

/// The file form of an entity: `subjects` defaults to `personal`, which serde
/// defaults cannot express, and the merge type gets a message naming the value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityToml {
    #[serde(deserialize_with = "merge_kind")]
    merge: MergeKind,
    data_class: String,
    #[serde(default)]
    personal: bool,
    #[serde(default)]
    subjects: Option<bool>,
    #[serde(default)]
    writes: WritePolicy,
    #[serde(default)]
    conflicts: ConflictPolicy,
    #[serde(default)]
    analytics: Option<AnalyticsProjection>,
}

impl From<EntityToml> for EntityConfig {
    fn from(raw: EntityToml) -> EntityConfig {
        EntityConfig {
            merge: raw.merge,
            data_class: raw.data_class,
            personal: raw.personal,
            subjects: raw.subjects.unwrap_or(raw.personal),
            writes: raw.writes,
            conflicts: raw.conflicts,
            analytics: raw.analytics,
        }
    }
}

fn merge_kind<'de, D: Deserializer<'de>>(deserializer: D) -> Result<MergeKind, D::Error> {
    let name = String::deserialize(deserializer)?;
    name.parse().map_err(serde::de::Error::custom)
}

/// `[node]`: per-region limits. Every limit is bounded and non-zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Writes waiting for the committer; a full queue answers `overloaded`.
    pub write_queue_len: usize,
    /// Most writes made durable by one commit.
    pub commit_batch_max: usize,
    /// The store's write-ahead log is checkpointed into the data file each
    /// time it holds this much (docs/STORAGE.md, Durability): larger means
    /// longer commit stalls at each checkpoint and a longer replay at start.
    pub wal_checkpoint_bytes: u64,
    /// Concurrent client connections.
    pub max_connections: usize,
    /// Longest record id, in bytes.
    pub id_len_max: usize,
    /// Largest `limit` a scan may ask for.
    pub scan_limit_max: usize,
    /// Conflicts kept for `GET /v1/conflicts`.
    pub conflicts_kept: usize,
    /// Remote HLC timestamps further ahead of the local clock than this are refused.
    pub max_clock_offset_ms: u64,
    #[serde(with = "crate::duration")]
    pub request_timeout: Duration,
    /// A request head that has begun must be complete within this (then 408).
    #[serde(with = "crate::duration")]
    pub header_read_timeout: Duration,
    /// A keep-alive connection that sends nothing for this long is closed.
    #[serde(with = "crate::duration")]
    pub idle_timeout: Duration,
}

impl Default for NodeConfig {
    fn default() -> NodeConfig {
        NodeConfig {
            max_body_bytes: MIB,
            write_queue_len: 4096,
            commit_batch_max: 1024,
            wal_checkpoint_bytes: 8 * MIB as u64,
            max_connections: 1024,
            id_len_max: 256,
            scan_limit_max: 1000,
            conflicts_kept: 1000,
            max_clock_offset_ms: 500,
            request_timeout: Duration::from_secs(10),
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
        }
    }
}

/// `[audit]`: the audit log is kept in hash-chained segments
/// (docs/OPERATIONS.md, Audit log). The active segment is sealed once it holds
/// `segment_bytes`; a sealed segment whose newest entry is older than
/// `retention` is dropped, after it was exported when `export` is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// The active segment is sealed once it holds this many bytes.
    pub segment_bytes: u64,
    /// How long sealed segments are kept on the region's disk.
    #[serde(with = "crate::duration")]
    pub retention: Duration,
    /// Copy each sealed segment to the first backup destination of the
    /// region's jurisdiction (under `audit/<region>/`) before dropping it.
    pub export: bool,
}

impl Default for AuditConfig {
    fn default() -> AuditConfig {
        AuditConfig {
            segment_bytes: 16 * MIB as u64,
            retention: Duration::from_secs(30 * 24 * 3600),
            export: false,
        }
    }
}

/// `[resp]`: for keys without ':' (`myset`, `myhash`, as `redis-benchmark`
/// uses them), the entity type each family of commands addresses: strings
/// (`lww`), counters (`g-counter`/`pn-counter`), sets (`or-set`) and hashes
/// (`lww-fields`). A family without one refuses such keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RespConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strings: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counters: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sets: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hashes: Option<String>,
}

/// `[replication]`: how regions pull each other's logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    /// Pause between pulls when a peer had nothing new.
    #[serde(with = "crate::duration")]
    pub poll_interval: Duration,
    /// Most log entries in one batch.
    pub batch_max: usize,
    /// Most encoded bytes in one batch.
    pub batch_bytes_max: usize,
    /// Longest pause between retries against an unreachable peer.
    #[serde(with = "crate::duration")]
    pub backoff_max: Duration,
    /// A peer that has not acknowledged for this long no longer holds the
    /// stability horizon back; when it returns, the two resync by
    /// anti-entropy (docs/STORAGE.md, Acknowledgements).
    #[serde(with = "crate::duration")]
    pub peer_retention: Duration,
    /// Shared secret that authenticates replication between regions. Never
    /// printed by `Debug`. `Serialize` writes it, so that a serialized config
    /// still works; do not log serialized configs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl Default for ReplicationConfig {
    fn default() -> ReplicationConfig {
        ReplicationConfig {
            poll_interval: Duration::from_millis(50),
            batch_max: 512,
            batch_bytes_max: 4 * MIB,
            backoff_max: Duration::from_secs(2),
            peer_retention: Duration::from_secs(24 * 3600),
            secret: None,
        }
    }
}

impl fmt::Debug for ReplicationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicationConfig")
            .field("poll_interval", &self.poll_interval)
            .field("batch_max", &self.batch_max)
            .field("batch_bytes_max", &self.batch_bytes_max)
            .field("backoff_max", &self.backoff_max)
            .field("peer_retention", &self.peer_retention)
            .field("secret", &self.secret.as_ref().map(|_| Redacted))
            .finish()
    }
}

struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The reference article's lag budget table, the default `[data_classes]`.
pub fn reference_lag_budgets() -> BTreeMap<String, DataClass> {
    let class = |secs: u64, on_breach| DataClass { max_lag: Duration::from_secs(secs), on_breach };
    BTreeMap::from([
        ("credentials".to_owned(), class(5, OnBreach::Alert)),
        ("financial".to_owned(), class(30, OnBreach::HaltCrossRegionReads)),
        ("user_profile".to_owned(), class(2 * 60, OnBreach::Alert)),
        ("content".to_owned(), class(5 * 60, OnBreach::Warn)),
        ("analytics".to_owned(), class(15 * 60, OnBreach::Warn)),
    ])
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}
fn default_probe_interval() -> Duration {
    Duration::from_millis(200)
}
fn default_probe_failure_threshold() -> u32 {
    3
}
fn default_probe_timeout() -> Duration {
    Duration::from_millis(500)
}
fn default_home_cache_ttl() -> Duration {
    Duration::from_secs(5)
}
fn default_upstream_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_body_bytes() -> usize {
    MIB
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

impl Config {
    /// Parses a TOML document and validates it. The error names the offending key.
    pub fn from_toml_str(text: &str) -> Result<Config, crate::ConfigError> {
        let config = crate::parse::parse(text)?;
        config.validate()?;
        Ok(config)
    }

    /// The built-in example deployment ([`crate::EXAMPLE_TOML`]).
    pub fn example() -> Config {
        match Config::from_toml_str(crate::EXAMPLE_TOML) {
            Ok(config) => config,
            Err(err) => panic!("the built-in example config is invalid: {err}"),
        }
    }

    pub fn region(&self, name: &str) -> Option<&RegionConfig> {
        self.regions.iter().find(|region| region.name == name)
    }

    /// Whether `entity` is the target of another type's analytics projection
    /// (such types are derived, never written by clients).
    pub fn is_projection(&self, entity: &str) -> bool {
        self.entities.values().any(|e| e.analytics.as_ref().is_some_and(|a| a.into == entity))
    }

    pub fn entity(&self, name: &str) -> Option<&EntityConfig> {
        self.entities.get(name)
    }

    pub fn jurisdiction_of(&self, region: &str) -> Option<&str> {
        self.region(region).map(|region| region.jurisdiction.as_str())
    }

    /// The regions of `jurisdiction`, in file order.
    pub fn regions_in<'a>(
        &'a self,
        jurisdiction: &'a str,
    ) -> impl Iterator<Item = &'a RegionConfig> + 'a {
        self.regions.iter().filter(move |region| region.jurisdiction == jurisdiction)
    }

    /// Simulated one-way latency between two regions, in either direction; 0 when
    /// no link is declared (and between a region and itself).
    pub fn link_latency_ms(&self, a: &str, b: &str) -> u64 {
        self.links
            .iter()
            .find(|link| {
                let [x, y] = &link.between;
                (x == a && y == b) || (x == b && y == a)
            })
            .map_or(0, |link| link.latency_ms)
    }

    /// Whether `url` is a backup destination declared for `region`'s
    /// jurisdiction. The error says what is permitted.
    pub fn backup_permitted(&self, region: &str, url: &str) -> Result<(), String> {
        let j = self.jurisdiction_of(region).ok_or_else(|| format!("unknown region `{region}`"))?;
        let declared =
            self.jurisdictions.get(j).map(|c| c.backup_destinations.as_slice()).unwrap_or(&[]);
        // A destination must not climb out of its prefix. URL parsing resolves
        // `..` and also `%2e%2e`, backslashes and dot segments split by a tab or
        // newline (it drops those), so refuse all of them: the string checked
        // here must be the place that is written.
        if let Some(c) = url
            .chars()
            .find(|c| matches!(c, '%' | '\\' | '?' | '#') || c.is_whitespace() || c.is_control())
        {
            return Err(format!("{url:?} contains {c:?}, which a backup destination may not"));
        }
        if url.split('/').any(|s| s == "." || s == "..") {
            return Err(format!("{url} contains `..`"));
        }
        if declared.iter().any(|p| url.starts_with(p.as_str())) {
            Ok(())
        } else if declared.is_empty() {
            Err(format!("{region} is in {j}, which declares no backup destinations"))
        } else {
            Err(format!(
                "{url} is not a backup destination of {j} (declared: {})",
                declared.join(", ")
            ))
        }
    }

    /// The declared transfer basis from one jurisdiction to another, if any.
    pub fn transfer(&self, from: &str, to: &str) -> Option<&TransferConfig> {
        self.transfers.iter().find(|t| t.from == from && t.to == to)
    }

    /// The lag budget of an entity type.
    pub fn data_class_of(&self, entity: &str) -> Option<&DataClass> {
        self.entity(entity).and_then(|entity| self.data_classes.get(&entity.data_class))
    }
}

impl std::str::FromStr for Config {
    type Err = crate::ConfigError;
    fn from_str(text: &str) -> Result<Config, crate::ConfigError> {
        Config::from_toml_str(text)
    }
}
