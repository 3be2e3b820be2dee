//! The audit log of cross-region data flows: one entry per replication batch a
//! region served to a peer (peer, its jurisdiction, record counts by entity
//! type, how many were personal, whether encrypted) and per refused flow. It
//! holds counts and entity type names only, never ids or values, so it can be
//! read anywhere.
//!
//! Entries are JSON lines, hash-chained: each carries the SHA-256 of the
//! previous entry's hash and its own content, so a modified, removed or
//! re-ordered entry breaks the chain (`chain`). They are kept in segments
//! (`segments`): the active one, `<data_dir>/<region>/audit.jsonl`, is sealed
//! under `audit/` once it holds `[audit] segment_bytes`; sealed segments are
//! exported and dropped after `[audit] retention` (`retention`), leaving
//! `audit.anchor`, the entry the retained chain starts after. `audit.head`
//! holds the newest sequence number and hash, so cutting entries off the end
//! is detected too. `verify_dir` checks the retained chain from its anchor to
//! the head.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

pub mod chain;
pub mod retention;
pub mod segments;

pub use chain::{entry_hash, Verified};
pub use segments::{Sealed, ANCHOR_FILE, SEGMENTS_DIR};

pub const AUDIT_FILE: &str = "audit.jsonl";
pub const HEAD_FILE: &str = "audit.head";
/// The hash before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at_ms: u64,
    /// `batch_served`, `flow_refused`, `inbound_refused`, `backup`, `restore`.
    pub kind: String,
    pub peer: String,
    pub peer_jurisdiction: String,
    /// Records sent, by entity type.
    pub records: BTreeMap<String, u64>,
    /// How many of them were personal.
    pub personal: u64,
    pub encrypted: bool,
    /// Records withheld from the peer (residency), by entity type.
    pub withheld: BTreeMap<String, u64>,
    /// Free text for flows that are not replication (a backup destination).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    pub prev: String,
    pub hash: String,
}

/// What a caller records; the log adds sequence, time and chain.
#[derive(Debug, Clone, Default)]
pub struct Flow {
    pub kind: &'static str,
    pub peer: String,
    pub peer_jurisdiction: String,
    pub records: BTreeMap<String, u64>,
    pub personal: u64,
    pub encrypted: bool,
    pub withheld: BTreeMap<String, u64>,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuditError {
    #[error("audit log: cannot read {0}")]
    Io(String),
    #[error("audit entry at {file} line {line}: {problem}")]
    Broken { file: String, line: usize, problem: String },
    #[error("audit head says entry {head_seq} is the newest, but the log ends at {log_seq}: entries were removed or the head was changed")]
    HeadMismatch { head_seq: u64, log_seq: u64 },
    #[error("exported audit segments: {0}")]
    Export(String),
}

/// Verify the files of one region's audit log: the retained segments, from
/// the anchor, against the head.
///
/// The head is read before the log, so a region appending meanwhile only adds
/// entries after the head; a last line still being written is left out.
pub fn verify_dir(dir: &Path) -> Result<Verified, AuditError> {
    let head_text = std::fs::read_to_string(dir.join(HEAD_FILE));
    let (anchor, parts) = segments::retained_texts(dir)?;
    let empty = parts.iter().all(|(_, t)| t.trim().is_empty());
    let head = match head_text {
        Ok(s) => Some(
            serde_json::from_str::<Head>(&s)
                .map_err(|e| AuditError::Io(format!("{HEAD_FILE}: {e}")))?,
        ),
        Err(_) if empty && anchor.seq == 0 => None,
        Err(e) => return Err(AuditError::Io(format!("{HEAD_FILE}: {e}"))),
    };
    chain::verify_chain(&anchor, &parts, head.as_ref(), anchor.seq)
}

/// The writer side: appends entries, keeps the head up to date, seals the
/// active segment once it holds `segment_bytes`.
pub struct AuditLog {
    dir: PathBuf,
    segment_bytes: u64,
    inner: Mutex<Inner>,
}

struct Inner {
    file: Option<std::fs::File>,
    head: Head,
    /// Sequence number of the active segment's first entry (or of the next
    /// entry, while it is empty).
    active_first: u64,
    active_bytes: u64,
}

impl AuditLog {
    /// Open the log in `dir`, continuing its chain. A log that does not verify
    /// is refused: a region must not write on top of a tampered audit trail.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<AuditLog, AuditError> {
        std::fs::create_dir_all(dir).map_err(|e| AuditError::Io(e.to_string()))?;
        let path = dir.join(AUDIT_FILE);
        segments::cut_torn_line(&path)?;
        let verified = verify_dir(dir)?;
        let head = verified.last;
        let active_text = std::fs::read_to_string(&path).unwrap_or_default();
        let active_first = active_text
            .lines()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| serde_json::from_str::<AuditEntry>(l).ok())
            .map_or(head.seq + 1, |e| e.seq);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| AuditError::Io(format!("{}: {e}", path.display())))?;
        Ok(AuditLog {
            dir: dir.to_owned(),
            segment_bytes,
            inner: Mutex::new(Inner {
                file: Some(file),
                head,
                active_first,
                active_bytes: active_text.len() as u64,
            }),
        })
    }

    /// A log that records nothing (in-memory nodes in tests).
    pub fn disabled() -> AuditLog {
        AuditLog {
            dir: PathBuf::new(),
            segment_bytes: u64::MAX,
            inner: Mutex::new(Inner {
                file: None,
                head: chain::genesis(),
                active_first: 1,
                active_bytes: 0,
            }),
        }
    }

    /// Append one entry. When it cannot be written (a full disk), the file is
    /// cut back to where it was, so the chain stays whole, and the caller must
    /// not perform the flow it describes.
    pub fn append(&self, flow: Flow, at_ms: u64) -> Result<(), AuditError> {
        let mut inner = self.inner.lock().expect("audit lock");
        if inner.file.is_none() {
            return Ok(());
        }
        let mut e = AuditEntry {
            seq: inner.head.seq + 1,
            at_ms,
            kind: flow.kind.to_owned(),
            peer: flow.peer,
            peer_jurisdiction: flow.peer_jurisdiction,
            records: flow.records,
            personal: flow.personal,
            encrypted: flow.encrypted,
            withheld: flow.withheld,
            detail: flow.detail,
            prev: inner.head.hash.clone(),
            hash: String::new(),
        };
        e.hash = entry_hash(&e);
        let mut line = serde_json::to_string(&e).expect("entry encodes");
        line.push('\n');
        let file = inner.file.as_mut().expect("checked above");
        let before = file.metadata().map(|m| m.len()).map_err(|e| AuditError::Io(e.to_string()))?;
        if let Err(err) = file.write_all(line.as_bytes()) {
            // A part of the line may be out: cut it, or the chain breaks there.
            let _ = file.set_len(before);
            tracing::error!(error = %err, "cannot append to the audit log");
            return Err(AuditError::Io(err.to_string()));
        }
        inner.head = Head { seq: e.seq, hash: e.hash };
        inner.active_bytes += line.len() as u64;
        let head = serde_json::to_vec(&inner.head).expect("head encodes");
        let tmp = self.dir.join(format!("{HEAD_FILE}.tmp"));
        if std::fs::write(&tmp, head)
            .and_then(|_| std::fs::rename(&tmp, self.dir.join(HEAD_FILE)))
            .is_err()
        {
            // The log itself is whole; the head catches up with the next entry.
            tracing::error!("cannot update the audit head");
        }
        if inner.active_bytes >= self.segment_bytes {
            if let Err(err) = self.seal(&mut inner) {
                // The active segment goes on; sealing is tried again.
                tracing::error!(error = %err, "cannot seal the audit segment");
            }
        }
        Ok(())
    }

    /// Seal the active segment: sync it, move it under `audit/` by its
    /// sequence numbers, start an empty one.
    fn seal(&self, inner: &mut Inner) -> std::io::Result<()> {
        let file = inner.file.as_mut().expect("an open log");
        file.sync_data()?;
        let seg_dir = self.dir.join(SEGMENTS_DIR);
        std::fs::create_dir_all(&seg_dir)?;
        let name = segments::segment_name(inner.active_first, inner.head.seq);
        std::fs::rename(self.dir.join(AUDIT_FILE), seg_dir.join(&name))?;
        std::fs::File::open(&seg_dir)?.sync_all()?;
        let path = self.dir.join(AUDIT_FILE);
        inner.file = Some(std::fs::OpenOptions::new().create(true).append(true).open(&path)?);
        std::fs::File::open(&self.dir)?.sync_all()?;
        inner.active_first = inner.head.seq + 1;
        inner.active_bytes = 0;
        tracing::info!(segment = %name, "audit segment sealed");
        Ok(())
    }

    /// Entries after `after`, at most `limit`, across the retained segments.
    pub fn read(&self, after: u64, limit: usize) -> Vec<AuditEntry> {
        if !self.enabled() {
            return Vec::new();
        }
        let mut paths: Vec<PathBuf> = segments::sealed(&self.dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s.last_seq > after)
            .map(|s| s.path)
            .collect();
        paths.push(self.dir.join(AUDIT_FILE));
        let mut out = Vec::new();
        for path in paths {
            let Ok(f) = std::fs::File::open(path) else { continue };
            let entries = std::io::BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| serde_json::from_str::<AuditEntry>(&l).ok())
                .filter(|e| e.seq > after);
            for e in entries {
                if out.len() >= limit {
                    return out;
                }
                out.push(e);
            }
        }
        out
    }

    pub fn head(&self) -> Head {
        self.inner.lock().expect("audit lock").head.clone()
    }

    /// The region directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the log writes anything (not `disabled`).
    pub fn enabled(&self) -> bool {
        self.inner.lock().expect("audit lock").file.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(n: u64) -> Flow {
        Flow {
            kind: "batch_served",
            peer: "us-east".into(),
            peer_jurisdiction: "US".into(),
            records: BTreeMap::from([("article".to_string(), n)]),
            withheld: BTreeMap::from([("credential".to_string(), 1)]),
            ..Flow::default()
        }
    }

    #[test]
    fn chain_verifies_and_detects_tampering() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = AuditLog::open(dir.path(), u64::MAX).unwrap();
            for i in 1..=5 {
                log.append(flow(i), 1000 + i).unwrap();
            }
        }
        // Reopening continues the chain.
        let log = AuditLog::open(dir.path(), u64::MAX).unwrap();
        log.append(flow(6), 2000).unwrap();
        assert_eq!(entries(dir.path()), Ok(6));
        assert_eq!(log.read(4, 10).len(), 2);

        let path = dir.path().join(AUDIT_FILE);
        let original = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = original.lines().collect();

        let modified = original.replacen("\"article\":3", "\"article\":4", 1);
        std::fs::write(&path, &modified).unwrap();
        assert!(matches!(verify_dir(dir.path()), Err(AuditError::Broken { line: 3, .. })));

        let removed: String = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        std::fs::write(&path, removed).unwrap();
        assert!(matches!(verify_dir(dir.path()), Err(AuditError::Broken { line: 3, .. })));

        let mut swapped = lines.clone();
        swapped.swap(1, 2);
        std::fs::write(&path, swapped.join("\n") + "\n").unwrap();
        assert!(matches!(verify_dir(dir.path()), Err(AuditError::Broken { line: 2, .. })));

        let truncated: String = lines[..5].iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, truncated).unwrap();
        assert!(matches!(
            verify_dir(dir.path()),
            Err(AuditError::HeadMismatch { head_seq: 6, log_seq: 5 })
        ));

        std::fs::write(&path, &original).unwrap();
        assert_eq!(entries(dir.path()), Ok(6));
        // A reader racing an append: the log is ahead of the head it read,
        // and its last line may be half written. Both are fine.
        let old_head =
            Head { seq: 5, hash: serde_json::from_str::<AuditEntry>(lines[4]).unwrap().hash };
        let parts = [(AUDIT_FILE.to_owned(), original.clone())];
        let raced = chain::verify_chain(&chain::genesis(), &parts, Some(&old_head), 0);
        assert_eq!(raced.map(|v| v.entries()), Ok(6));
        std::fs::write(&path, format!("{original}{{\"seq\":7,\"at_")).unwrap();
        assert_eq!(entries(dir.path()), Ok(6));
        std::fs::write(&path, &original).unwrap();
        // A tampered log is not written on top of.
        std::fs::write(&path, &modified).unwrap();
        assert!(AuditLog::open(dir.path(), u64::MAX).is_err());
    }

    fn entries(dir: &Path) -> Result<u64, AuditError> {
        verify_dir(dir).map(|v| v.entries())
    }

    /// A log of small segments: `n` entries appended at `1000 + i` ms.
    fn segmented(dir: &Path, n: u64) -> AuditLog {
        let log = AuditLog::open(dir, 1024).unwrap();
        for i in 1..=n {
            log.append(flow(i), 1000 + i).unwrap();
        }
        log
    }

    #[test]
    fn segments_seal_chain_and_drop_from_an_anchor() {
        let dir = tempfile::tempdir().unwrap();
        let log = segmented(dir.path(), 40);
        let sealed = log.sealed();
        assert!(sealed.len() >= 5, "{} segments", sealed.len());
        // Segments follow each other by sequence number, the active one last.
        for pair in sealed.windows(2) {
            assert_eq!(pair[1].first_seq, pair[0].last_seq + 1);
        }
        assert_eq!(entries(dir.path()), Ok(40));
        assert_eq!(log.read(0, 100).len(), 40);
        assert_eq!(log.read(35, 100).first().map(|e| e.seq), Some(36));

        // Nothing is older than the retention yet; then the first two are.
        assert_eq!(log.drop_expired(1000 + 40, 1000, false), Ok(0));
        let cut = sealed[1].last_seq;
        assert_eq!(log.drop_expired(1000 + cut + 1000, 1000, false), Ok(2));
        let v = verify_dir(dir.path()).unwrap();
        assert_eq!((v.anchor.seq, v.last.seq), (cut, 40));
        assert_eq!(log.read(0, 100).first().map(|e| e.seq), Some(cut + 1));
        // The chain goes on across reopening, from the anchor.
        drop(log);
        let log = AuditLog::open(dir.path(), 1024).unwrap();
        log.append(flow(41), 5000).unwrap();
        assert_eq!(verify_dir(dir.path()).unwrap().last.seq, 41);

        // Exporting first: an unexported segment is kept whatever its age.
        assert_eq!(log.drop_expired(u64::MAX, 1, true), Ok(0));
        std::fs::write(log.sealed()[0].exported_marker(), b"").unwrap();
        assert_eq!(log.drop_expired(u64::MAX, 1, true), Ok(1));

        // An edited retained segment breaks the chain; so does a removed one.
        let first = log.sealed()[0].clone();
        let text = std::fs::read_to_string(&first.path).unwrap();
        std::fs::write(&first.path, text.replacen("\"US\"", "\"EU\"", 1)).unwrap();
        let err = verify_dir(dir.path()).unwrap_err();
        assert!(
            matches!(&err, AuditError::Broken { file, .. } if file.contains(&first.name())),
            "{err}"
        );
        std::fs::write(&first.path, &text).unwrap();
        std::fs::remove_file(&log.sealed()[1].path).unwrap();
        assert!(matches!(verify_dir(dir.path()), Err(AuditError::Broken { .. })));
    }

    #[test]
    fn a_drop_that_stopped_after_the_anchor_and_a_torn_last_line_are_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let log = segmented(dir.path(), 20);
        let first = log.sealed()[0].clone();
        let text = std::fs::read_to_string(&first.path).unwrap();
        let last = segments::last_entry(&text).unwrap();
        // The anchor moved, the file is still there.
        let anchor = serde_json::to_vec(&Head { seq: last.seq, hash: last.hash }).unwrap();
        segments::write_durably(dir.path(), ANCHOR_FILE, &anchor).unwrap();
        assert_eq!(verify_dir(dir.path()).unwrap().anchor.seq, first.last_seq);
        assert_eq!(log.drop_expired(0, u64::MAX, false), Ok(0));
        assert!(!first.path.exists(), "the leftover segment is removed");
        // A crash in the middle of an append leaves half a line: cut at open.
        drop(log);
        let active = dir.path().join(AUDIT_FILE);
        let mut bytes = std::fs::read(&active).unwrap();
        bytes.extend_from_slice(b"{\"seq\":21,\"at_");
        std::fs::write(&active, bytes).unwrap();
        let log = AuditLog::open(dir.path(), 1024).unwrap();
        log.append(flow(21), 3000).unwrap();
        assert_eq!(verify_dir(dir.path()).unwrap().last.seq, 21);
    }

    #[test]
    fn an_export_must_reach_the_anchor_with_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let log = segmented(dir.path(), 30);
        let sealed = log.sealed();
        let exported: Vec<(String, String)> = sealed[..3]
            .iter()
            .map(|s| (s.name(), std::fs::read_to_string(&s.path).unwrap()))
            .collect();
        let anchor_of = |s: &Sealed| {
            let e = segments::last_entry(&std::fs::read_to_string(&s.path).unwrap()).unwrap();
            Head { seq: e.seq, hash: e.hash }
        };
        let anchor = anchor_of(&sealed[2]);
        assert!(chain::verify_export(&exported, &anchor).is_ok());
        // Short of the anchor: segments missing from the export.
        let short = chain::verify_export(&exported[..2], &anchor).unwrap_err();
        assert!(short.to_string().contains("missing"), "{short}");
        // An anchor that is not the exported entry.
        let forged = Head { seq: anchor.seq, hash: GENESIS.to_owned() };
        assert!(matches!(chain::verify_export(&exported, &forged), Err(AuditError::Export(_))));
        // An edited exported segment.
        let mut edited = exported.clone();
        edited[1].1 = edited[1].1.replacen("\"US\"", "\"EU\"", 1);
        assert!(matches!(chain::verify_export(&edited, &anchor), Err(AuditError::Broken { .. })));
    }
}
