//! The deployment rules a well-formed file must also follow: names, uniqueness,
//! references between sections, and non-zero limits. Each refusal names the key.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::parse::push_key;
use crate::{Config, ConfigError, WritePolicy};

const REGION_NAME_LEN_MAX: usize = 32;
const ENTITY_NAME_LEN_MAX: usize = 64;
const DATA_CLASS_NAME_LEN_MAX: usize = 64;
/// A simulated link slower than a minute is a typo, not a network.
const LINK_LATENCY_MS_MAX: u64 = 60_000;
/// Smallest write-ahead log checkpoint size (`node.wal_checkpoint_bytes`).
const WAL_CHECKPOINT_BYTES_MIN: u64 = 64 * 1024;
/// Smallest audit segment (`audit.segment_bytes`): a few entries.
const AUDIT_SEGMENT_BYTES_MIN: u64 = 4 * 1024;

impl Config {
    /// Checks the rules a parsed config must follow; the first broken rule is
    /// returned, naming its key. Checks run in file order, so the result is
    /// deterministic.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_deployment()?;
        self.validate_regions()?;
        self.validate_router()?;
        self.validate_listen_ports()?;
        self.validate_links()?;
        self.validate_data_classes()?;
        self.validate_entities()?;
        self.validate_node()?;
        self.validate_replication()?;
        self.validate_audit()?;
        self.validate_resp()?;
        self.validate_transfers()?;
        self.validate_jurisdictions()?;
        self.validate_analytics()
    }

    fn validate_resp(&self) -> Result<(), ConfigError> {
        use crate::MergeKind as K;
        let families: [(&str, &Option<String>, &[K]); 4] = [
            ("resp.strings", &self.resp.strings, &[K::Lww]),
            ("resp.counters", &self.resp.counters, &[K::GCounter, K::PnCounter]),
            ("resp.sets", &self.resp.sets, &[K::OrSet]),
            ("resp.hashes", &self.resp.hashes, &[K::LwwFields]),
        ];
        for (key, entity, kinds) in families {
            let Some(entity) = entity else { continue };
            let Some(cfg) = self.entities.get(entity) else {
                return Err(ConfigError::invalid(key, format!("no entity type {entity:?}")));
            };
            if !kinds.contains(&cfg.merge) {
                return Err(ConfigError::invalid(
                    key,
                    format!("entity type {entity:?} merges as `{}`, not as this family", cfg.merge),
                ));
            }
        }
        Ok(())
    }

    fn validate_jurisdictions(&self) -> Result<(), ConfigError> {
        for (name, j) in &self.jurisdictions {
            if !self.regions.iter().any(|r| &r.jurisdiction == name) {
                return Err(ConfigError::invalid(
                    format!("jurisdictions.{name}"),
                    format!("no region is in jurisdiction {name:?}"),
                ));
            }
            for (i, d) in j.backup_destinations.iter().enumerate() {
                if !(d.starts_with("file:///") || d.starts_with("s3://")) || d.len() < 8 {
                    return Err(ConfigError::invalid(
                        format!("jurisdictions.{name}.backup_destinations[{i}]"),
                        format!(
                            "{d:?} must be a file:///absolute/path/ or s3://bucket/ URL prefix"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_analytics(&self) -> Result<(), ConfigError> {
        for (name, e) in &self.entities {
            let Some(a) = &e.analytics else { continue };
            let key = format!("entities.{name}.analytics");
            if !e.personal || !e.subjects {
                return Err(ConfigError::invalid(
                    key,
                    "only personal entity types with subjects have an analytics projection",
                ));
            }
            if e.merge != tandem_merge::MergeKind::LwwFields {
                return Err(ConfigError::invalid(
                    key,
                    "the source of a projection must be lww-fields",
                ));
            }
            // The projection is derived where the source is written: with one
            // writer per subject it cannot drift from the merged source.
            if e.writes != WritePolicy::HomeRegion {
                return Err(ConfigError::invalid(
                    format!("entities.{name}.writes"),
                    "the source of an analytics projection must be written in its home region (writes = \"home-region\")",
                ));
            }
            let Some(target) = self.entities.get(&a.into) else {
                return Err(ConfigError::invalid(
                    format!("{key}.into"),
                    format!("unknown entity type {:?}", a.into),
                ));
            };
            if target.personal
                || target.subjects
                || target.merge != tandem_merge::MergeKind::LwwFields
            {
                return Err(ConfigError::invalid(
                    format!("{key}.into"),
                    format!("{:?} must be a non-personal lww-fields type without subjects", a.into),
                ));
            }
            if a.keep.is_empty() {
                return Err(ConfigError::invalid(format!("{key}.keep"), "keep at least one field"));
            }
            if let Some(f) = a.keep.iter().find(|f| a.drop.contains(f)) {
                return Err(ConfigError::invalid(
                    format!("{key}.drop"),
                    format!("field {f:?} is both kept and dropped"),
                ));
            }
            for r in &self.regions {
                let has_key = self
                    .jurisdictions
                    .get(&r.jurisdiction)
                    .is_some_and(|j| j.pseudonym_key_env.is_some());
                if !has_key {
                    return Err(ConfigError::invalid(
                        format!("jurisdictions.{}.pseudonym_key_env", r.jurisdiction),
                        format!("entity {name:?} has an analytics projection: every jurisdiction needs a pseudonym key"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_transfers(&self) -> Result<(), ConfigError> {
        let jurisdictions: std::collections::BTreeSet<&str> =
            self.regions.iter().map(|r| r.jurisdiction.as_str()).collect();
        for (i, t) in self.transfers.iter().enumerate() {
            for (field, value) in [("from", &t.from), ("to", &t.to)] {
                if !jurisdictions.contains(value.as_str()) {
                    return Err(ConfigError::invalid(
                        format!("transfers[{i}].{field}"),
                        format!("no region is in jurisdiction {value:?}"),
                    ));
                }
            }
            if t.from == t.to {
                return Err(ConfigError::invalid(
                    format!("transfers[{i}].to"),
                    "a transfer must go to another jurisdiction",
                ));
            }
            if t.legal_basis.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("transfers[{i}].legal_basis"),
                    "a transfer needs a documented legal basis",
                ));
            }
            if t.key_env.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("transfers[{i}].key_env"),
                    "name the environment variable that holds the key",
                ));
            }
            if self.transfers[..i].iter().any(|o| o.from == t.from && o.to == t.to) {
                return Err(ConfigError::invalid(
                    format!("transfers[{i}]"),
                    format!("a second transfer from {} to {}", t.from, t.to),
                ));
            }
        }
        Ok(())
    }

    fn validate_deployment(&self) -> Result<(), ConfigError> {
        if self.deployment.name.trim().is_empty() {
            return Err(ConfigError::invalid("deployment.name", "must not be empty"));
        }
        if self.deployment.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("deployment.data_dir", "must not be empty"));
        }
        Ok(())
    }

    fn validate_regions(&self) -> Result<(), ConfigError> {
        if self.regions.is_empty() {
            return Err(ConfigError::invalid("regions", "at least one region is required"));
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (index, region) in self.regions.iter().enumerate() {
            let key = format!("regions[{index}]");
            if !is_name(&region.name, REGION_NAME_LEN_MAX, |b| b == b'-') {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    format!(
                        "invalid region name {:?}: use 1 to {REGION_NAME_LEN_MAX} of a-z, 0-9 and '-'",
                        region.name
                    ),
                ));
            }
            if let Some(first) = seen.insert(&region.name, index) {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    format!(
                        "duplicate region name {:?} (already used by regions[{first}])",
                        region.name
                    ),
                ));
            }
            if region.jurisdiction.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("{key}.jurisdiction"),
                    format!("region {:?} has no jurisdiction; every region belongs to one (e.g. \"EU\")", region.name),
                ));
            }
        }
        Ok(())
    }

    fn validate_router(&self) -> Result<(), ConfigError> {
        let router = &self.router;
        if let Some(default) = &router.default_region {
            if self.region(default).is_none() {
                return Err(ConfigError::invalid(
                    "router.default_region",
                    format!("unknown region {default:?} (known: {})", self.region_list()),
                ));
            }
        }
        non_zero_duration("router.probe_interval", router.probe_interval)?;
        non_zero("router.probe_failure_threshold", u64::from(router.probe_failure_threshold))?;
        non_zero_duration("router.probe_timeout", router.probe_timeout)?;
        non_zero_duration("router.upstream_timeout", router.upstream_timeout)?;
        non_zero_duration("router.header_read_timeout", router.header_read_timeout)?;
        non_zero_duration("router.idle_timeout", router.idle_timeout)?;
        non_zero("router.max_body_bytes", router.max_body_bytes as u64)
    }

    /// Every process of a deployment runs on one machine under `tandem up`, so a
    /// port may be used once whatever the host.
    fn validate_listen_ports(&self) -> Result<(), ConfigError> {
        let listeners = self
            .regions
            .iter()
            .enumerate()
            .flat_map(|(index, region)| {
                let resp = region.resp_listen.map(|a| (format!("regions[{index}].resp_listen"), a));
                std::iter::once((format!("regions[{index}].listen"), region.listen)).chain(resp)
            })
            .chain(std::iter::once(("router.listen".to_owned(), self.router.listen)))
            .chain(self.router.resp_listen.map(|a| ("router.resp_listen".to_owned(), a)));
        let mut seen: BTreeMap<u16, String> = BTreeMap::new();
        for (key, addr) in listeners {
            if addr.port() == 0 {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "port 0 in {addr} is not allowed: peers and the router must know the port"
                    ),
                ));
            }
            if let Some(first) = seen.get(&addr.port()) {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "duplicate listen port {} in {addr} (already used by {first})",
                        addr.port()
                    ),
                ));
            }
            seen.insert(addr.port(), key);
        }
        Ok(())
    }

    fn validate_links(&self) -> Result<(), ConfigError> {
        let mut seen: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (index, link) in self.links.iter().enumerate() {
            let key = format!("links[{index}].between");
            for name in &link.between {
                if self.region(name).is_none() {
                    return Err(ConfigError::invalid(
                        key,
                        format!("unknown region {name:?} (known: {})", self.region_list()),
                    ));
                }
            }
            let [a, b] = &link.between;
            if a == b {
                return Err(ConfigError::invalid(key, format!("link from region {a:?} to itself")));
            }
            let pair = if a < b { (a.as_str(), b.as_str()) } else { (b.as_str(), a.as_str()) };
            if let Some(first) = seen.insert(pair, index) {
                return Err(ConfigError::invalid(
                    key,
                    format!("duplicate link between {a:?} and {b:?} (already declared by links[{first}]; links are symmetric)"),
                ));
            }
            if link.latency_ms > LINK_LATENCY_MS_MAX {
                return Err(ConfigError::invalid(
                    format!("links[{index}].latency_ms"),
                    format!(
                        "latency {} ms is above the maximum of {LINK_LATENCY_MS_MAX} ms",
                        link.latency_ms
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_data_classes(&self) -> Result<(), ConfigError> {
        for (name, class) in &self.data_classes {
            let key = table_key("data_classes", name);
            if !is_name(name, DATA_CLASS_NAME_LEN_MAX, |b| b == b'_' || b == b'-') {
                return Err(ConfigError::invalid(
                    key,
                    format!("invalid data class name {name:?}: use 1 to {DATA_CLASS_NAME_LEN_MAX} of a-z, 0-9, '_' and '-'"),
                ));
            }
            non_zero_duration(&format!("{key}.max_lag"), class.max_lag)?;
        }
        Ok(())
    }

    fn validate_entities(&self) -> Result<(), ConfigError> {
        for (name, entity) in &self.entities {
            let key = table_key("entities", name);
            if !is_name(name, ENTITY_NAME_LEN_MAX, |b| b == b'_') {
                return Err(ConfigError::invalid(
                    key,
                    format!("invalid entity name {name:?}: use 1 to {ENTITY_NAME_LEN_MAX} of a-z, 0-9 and '_'"),
                ));
            }
            if name.starts_with('_') {
                return Err(ConfigError::invalid(
                    key,
                    format!("entity names starting with '_' are reserved for tandem ({name:?})"),
                ));
            }
            if !self.data_classes.contains_key(&entity.data_class) {
                let known: Vec<&str> = self.data_classes.keys().map(String::as_str).collect();
                return Err(ConfigError::invalid(
                    format!("{key}.data_class"),
                    format!(
                        "unknown data class {:?} (known: {})",
                        entity.data_class,
                        known.join(", ")
                    ),
                ));
            }
            if entity.personal && !entity.subjects {
                return Err(ConfigError::invalid(
                    format!("{key}.subjects"),
                    "a personal entity must have subjects: residency is decided by the subject's home region",
                ));
            }
            if entity.writes == WritePolicy::HomeRegion && !entity.subjects {
                return Err(ConfigError::invalid(
                    format!("{key}.writes"),
                    "writes = \"home-region\" needs subjects (set `subjects = true` or `personal = true`): \
                     without a subject there is no home region",
                ));
            }
        }
        Ok(())
    }

    fn validate_node(&self) -> Result<(), ConfigError> {
        let node = &self.node;
        let limits = [
            ("node.max_body_bytes", node.max_body_bytes as u64),
            ("node.write_queue_len", node.write_queue_len as u64),
            ("node.commit_batch_max", node.commit_batch_max as u64),
            ("node.max_connections", node.max_connections as u64),
            ("node.id_len_max", node.id_len_max as u64),
            ("node.scan_limit_max", node.scan_limit_max as u64),
            ("node.conflicts_kept", node.conflicts_kept as u64),
            ("node.max_clock_offset_ms", node.max_clock_offset_ms),
        ];
        for (key, value) in limits {
            non_zero(key, value)?;
        }
        if node.wal_checkpoint_bytes < WAL_CHECKPOINT_BYTES_MIN {
            return Err(ConfigError::invalid(
                "node.wal_checkpoint_bytes",
                format!(
                    "must be at least {WAL_CHECKPOINT_BYTES_MIN} (64 KiB), got {}",
                    node.wal_checkpoint_bytes
                ),
            ));
        }
        non_zero_duration("node.request_timeout", node.request_timeout)?;
        non_zero_duration("node.header_read_timeout", node.header_read_timeout)?;
        non_zero_duration("node.idle_timeout", node.idle_timeout)
    }

    fn validate_replication(&self) -> Result<(), ConfigError> {
        let replication = &self.replication;
        non_zero_duration("replication.poll_interval", replication.poll_interval)?;
        non_zero("replication.batch_max", replication.batch_max as u64)?;
        non_zero("replication.batch_bytes_max", replication.batch_bytes_max as u64)?;
        non_zero_duration("replication.backoff_max", replication.backoff_max)?;
        non_zero_duration("replication.peer_retention", replication.peer_retention)?;
        if replication.secret.as_deref().is_some_and(|secret| secret.trim().is_empty()) {
            return Err(ConfigError::invalid(
                "replication.secret",
                "must not be empty; leave the key out instead",
            ));
        }
        Ok(())
    }

    fn validate_audit(&self) -> Result<(), ConfigError> {
        let audit = &self.audit;
        if audit.segment_bytes < AUDIT_SEGMENT_BYTES_MIN {
            return Err(ConfigError::invalid(
                "audit.segment_bytes",
                format!(
                    "must be at least {AUDIT_SEGMENT_BYTES_MIN} (4 KiB), got {}",
                    audit.segment_bytes
                ),
            ));
        }
        non_zero_duration("audit.retention", audit.retention)?;
        if audit.export {
            for region in &self.regions {
                let declared = self
                    .jurisdictions
                    .get(&region.jurisdiction)
                    .is_some_and(|j| !j.backup_destinations.is_empty());
                if !declared {
                    return Err(ConfigError::invalid(
                        "audit.export",
                        format!(
                            "region {} is in {}, which declares no backup destinations to export its audit segments to",
                            region.name, region.jurisdiction
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn region_list(&self) -> String {
        let names: Vec<&str> = self.regions.iter().map(|region| region.name.as_str()).collect();
        names.join(", ")
    }
}

/// `1..=len_max` bytes of `a-z`, `0-9` and whatever `extra` allows.
fn is_name(name: &str, len_max: usize, extra: impl Fn(u8) -> bool) -> bool {
    (1..=len_max).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra(b))
}

fn table_key(table: &str, name: &str) -> String {
    let mut key = table.to_owned();
    push_key(&mut key, name);
    key
}

fn non_zero(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(key, "must be greater than zero"));
    }
    Ok(())
}

fn non_zero_duration(key: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::invalid(key, "must be greater than zero"));
    }
    Ok(())
}
