//! Keeping the audit log's disk bounded: sealed segments are exported to the
//! jurisdiction's backup destination (`[audit] export`) and dropped, oldest
//! first, once their newest entry is older than `[audit] retention` (and, when
//! exporting, once exported). Before a segment's file goes, `audit.anchor`
//! durably names its last entry, so the retained chain still verifies from
//! there, and an export verifies up to it.

use std::path::Path;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::segments::{self, last_entry, read_anchor, write_durably, Sealed, ANCHOR_FILE};
use super::{AuditError, AuditLog, Head};

/// Where a region's audit segments are exported: the object store and the
/// prefix under it (`<destination>/audit/<region>/`).
pub struct ExportTarget {
    pub store: Box<dyn ObjectStore>,
    pub prefix: ObjectPath,
    /// For messages: the destination URL.
    pub url: String,
}

impl ExportTarget {
    /// The target for `region` under the backup destination `url`.
    pub fn new(url: &str, region: &str) -> Result<ExportTarget, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let (store, base) = object_store::parse_url(&parsed).map_err(|e| {
            format!(
                "unsupported destination `{url}` (file:/// URLs; s3:// with the s3 feature): {e}"
            )
        })?;
        let prefix = base.join("audit").join(region);
        Ok(ExportTarget { store, prefix, url: url.to_owned() })
    }

    /// The target of `region`'s exports in `config`: the first backup
    /// destination of its jurisdiction.
    pub fn for_region(
        config: &tandem_config::Config,
        region: &str,
    ) -> Result<ExportTarget, String> {
        let url = config
            .jurisdiction_of(region)
            .and_then(|j| config.jurisdictions.get(j))
            .and_then(|j| j.backup_destinations.first())
            .ok_or_else(|| format!("{region}'s jurisdiction declares no backup destination"))?;
        ExportTarget::new(url, region)
    }

    /// The exported segments, oldest first, with their texts.
    pub async fn read_all(&self) -> Result<Vec<(String, String)>, String> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map_err(|e| format!("listing {}: {e}", self.url))?;
        let mut names: Vec<String> = listed
            .objects
            .iter()
            .filter_map(|o| o.location.filename().map(str::to_owned))
            .filter(|n| segments::parse_segment_name(n).is_some())
            .collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let location = self.prefix.clone().join(name.as_str());
            let read = |e: object_store::Error| format!("reading {name} from {}: {e}", self.url);
            let got = self.store.get(&location).await.map_err(read)?;
            let bytes = got.bytes().await.map_err(read)?;
            out.push((format!("export/{name}"), String::from_utf8_lossy(&bytes).into_owned()));
        }
        Ok(out)
    }
}

/// What one round of upkeep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Upkeep {
    pub exported: u64,
    pub dropped: u64,
}

impl AuditLog {
    /// The sealed segments on disk now, oldest first.
    pub fn sealed(&self) -> Vec<Sealed> {
        if !self.enabled() {
            return Vec::new();
        }
        segments::sealed(self.dir()).unwrap_or_default()
    }

    /// Copy every sealed segment not exported yet to `target`, oldest first;
    /// each gets its marker once the copy is written.
    pub async fn export_sealed(&self, target: &ExportTarget) -> Result<u64, String> {
        let mut exported = 0;
        for s in self.sealed() {
            if s.is_exported() {
                continue;
            }
            let bytes = std::fs::read(&s.path).map_err(|e| format!("{}: {e}", s.path.display()))?;
            let to = target.prefix.clone().join(s.name().as_str());
            target
                .store
                .put(&to, bytes.into())
                .await
                .map_err(|e| format!("writing {} to {}: {e}", s.name(), target.url))?;
            std::fs::write(s.exported_marker(), b"")
                .map_err(|e| format!("{}: {e}", s.exported_marker().display()))?;
            exported += 1;
        }
        Ok(exported)
    }

    /// Drop sealed segments, oldest first, while their newest entry is older
    /// than `retention_ms` at `now_ms` (and, with `require_export`, they were
    /// exported). The anchor moves to a segment's last entry before its file
    /// is removed.
    pub fn drop_expired(
        &self,
        now_ms: u64,
        retention_ms: u64,
        require_export: bool,
    ) -> Result<u64, AuditError> {
        let dir = self.dir();
        let anchor = read_anchor(dir)?;
        let mut dropped = 0;
        for s in self.sealed() {
            if s.last_seq <= anchor.seq {
                // Left by a drop that stopped after moving the anchor.
                remove(&s)?;
                continue;
            }
            let text = std::fs::read_to_string(&s.path)
                .map_err(|e| AuditError::Io(format!("{}: {e}", s.path.display())))?;
            let Some(last) = last_entry(&text) else { break };
            if now_ms.saturating_sub(last.at_ms) < retention_ms
                || (require_export && !s.is_exported())
            {
                break;
            }
            let head = Head { seq: last.seq, hash: last.hash };
            let json = serde_json::to_vec(&head).expect("anchor encodes");
            write_durably(dir, ANCHOR_FILE, &json)
                .map_err(|e| AuditError::Io(format!("{ANCHOR_FILE}: {e}")))?;
            remove(&s)?;
            dropped += 1;
            tracing::info!(segment = %s.name(), "audit segment dropped after its retention");
        }
        Ok(dropped)
    }

    /// Bytes the retained segments take on disk, and how many there are
    /// (the active one included).
    pub fn disk_usage(&self) -> (u64, u64) {
        if !self.enabled() {
            return (0, 0);
        }
        let sealed = self.sealed();
        let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let bytes: u64 = sealed.iter().map(|s| len(&s.path)).sum::<u64>()
            + len(&self.dir().join(super::AUDIT_FILE));
        (bytes, sealed.len() as u64 + 1)
    }
}

fn remove(s: &Sealed) -> Result<(), AuditError> {
    let io = |e: std::io::Error| AuditError::Io(format!("{}: {e}", s.path.display()));
    match std::fs::remove_file(&s.path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    match std::fs::remove_file(s.exported_marker()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
        _ => Ok(()),
    }
}
