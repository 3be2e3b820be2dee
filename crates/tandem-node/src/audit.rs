//! The audit log of cross-region data flows: one entry per replication batch a
//! region served to a peer (peer, its jurisdiction, record counts by entity
//! type, how many were personal, whether encrypted) and per refused flow. It
//! holds counts and entity type names only, never ids or values, so it can be
//! read anywhere.
//!
//! The log is a JSON-lines file, `<data_dir>/<region>/audit.jsonl`. Entries are
//! hash-chained: each carries the SHA-256 of the previous entry's hash and its
//! own content, so a modified, removed or re-ordered entry breaks the chain.
//! `audit.head` holds the newest sequence number and hash, so cutting entries
//! off the end is detected too. `verify` checks both.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

fn entry_hash(e: &AuditEntry) -> String {
    let mut body = e.clone();
    body.hash = String::new();
    let json = serde_json::to_vec(&body).expect("entry encodes");
    let mut h = Sha256::new();
    h.update(e.prev.as_bytes());
    h.update(&json);
    hex::encode(h.finalize())
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
    #[error("audit entry at line {line}: {problem}")]
    Broken { line: usize, problem: String },
    #[error("audit head says entry {head_seq} is the newest, but the log ends at {log_seq}: entries were removed or the head was changed")]
    HeadMismatch { head_seq: u64, log_seq: u64 },
}

/// Check a whole log (its text) against its head.
pub fn verify(text: &str, head: Option<&Head>) -> Result<u64, AuditError> {
    let mut prev = GENESIS.to_owned();
    let mut seq = 0u64;
    let mut hashes: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let e: AuditEntry = serde_json::from_str(line).map_err(|err| AuditError::Broken {
            line: line_no,
            problem: format!("not an entry: {err}"),
        })?;
        if e.seq != seq + 1 {
            return Err(AuditError::Broken {
                line: line_no,
                problem: format!("sequence {} follows {seq}: an entry was removed or moved", e.seq),
            });
        }
        if e.prev != prev {
            return Err(AuditError::Broken {
                line: line_no,
                problem: "does not chain to the entry before it".into(),
            });
        }
        if entry_hash(&e) != e.hash {
            return Err(AuditError::Broken {
                line: line_no,
                problem: "content does not match its hash: modified".into(),
            });
        }
        prev = e.hash.clone();
        hashes.push(e.hash.clone());
        seq = e.seq;
    }
    if let Some(h) = head {
        // The log may have grown past the head (appended after it was read),
        // never fallen short of it, and the head's entry must be the one logged.
        let head_entry_ok =
            h.seq == 0 || hashes.get(h.seq as usize - 1).is_some_and(|x| *x == h.hash);
        if h.seq > seq || !head_entry_ok {
            return Err(AuditError::HeadMismatch { head_seq: h.seq, log_seq: seq });
        }
    }
    Ok(seq)
}

/// Verify the files of one region's audit log.
///
/// The head is read before the log, so a region appending meanwhile only adds
/// entries after the head; a last line still being written is left out.
pub fn verify_dir(dir: &Path) -> Result<u64, AuditError> {
    let head_text = std::fs::read_to_string(dir.join(HEAD_FILE));
    let mut text = std::fs::read_to_string(dir.join(AUDIT_FILE)).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        let keep = text.rfind('\n').map(|i| i + 1).unwrap_or(0);
        text.truncate(keep);
    }
    let head = match head_text {
        Ok(s) => Some(
            serde_json::from_str::<Head>(&s)
                .map_err(|e| AuditError::Io(format!("{HEAD_FILE}: {e}")))?,
        ),
        Err(_) if text.is_empty() => None,
        Err(e) => return Err(AuditError::Io(format!("{HEAD_FILE}: {e}"))),
    };
    verify(&text, head.as_ref())
}

/// The writer side: appends entries and keeps the head up to date.
pub struct AuditLog {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    file: Option<std::fs::File>,
    head: Head,
}

impl AuditLog {
    /// Open the log in `dir`, continuing its chain. A log that does not verify
    /// is refused: a region must not write on top of a tampered audit trail.
    pub fn open(dir: &Path) -> Result<AuditLog, AuditError> {
        std::fs::create_dir_all(dir).map_err(|e| AuditError::Io(e.to_string()))?;
        let path = dir.join(AUDIT_FILE);
        verify_dir(dir)?;
        let mut head = Head { seq: 0, hash: GENESIS.to_owned() };
        if let Ok(f) = std::fs::File::open(&path) {
            if let Some(last) = std::io::BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .filter(|l| !l.trim().is_empty())
                .last()
            {
                let e: AuditEntry =
                    serde_json::from_str(&last).map_err(|e| AuditError::Io(e.to_string()))?;
                head = Head { seq: e.seq, hash: e.hash };
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| AuditError::Io(format!("{}: {e}", path.display())))?;
        Ok(AuditLog { dir: dir.to_owned(), inner: Mutex::new(Inner { file: Some(file), head }) })
    }

    /// A log that records nothing (in-memory nodes in tests).
    pub fn disabled() -> AuditLog {
        AuditLog {
            dir: PathBuf::new(),
            inner: Mutex::new(Inner {
                file: None,
                head: Head { seq: 0, hash: GENESIS.to_owned() },
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
        let tmp = self.dir.join(format!("{HEAD_FILE}.tmp"));
        let head = serde_json::to_vec(&inner.head).expect("head encodes");
        if std::fs::write(&tmp, head)
            .and_then(|_| std::fs::rename(&tmp, self.dir.join(HEAD_FILE)))
            .is_err()
        {
            // The log itself is whole; the head catches up with the next entry.
            tracing::error!("cannot update the audit head");
        }
        Ok(())
    }

    /// Entries after `after`, at most `limit`.
    pub fn read(&self, after: u64, limit: usize) -> Vec<AuditEntry> {
        let Ok(f) = std::fs::File::open(self.dir.join(AUDIT_FILE)) else { return Vec::new() };
        std::io::BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<AuditEntry>(&l).ok())
            .filter(|e| e.seq > after)
            .take(limit)
            .collect()
    }

    pub fn head(&self) -> Head {
        self.inner.lock().expect("audit lock").head.clone()
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
            let log = AuditLog::open(dir.path()).unwrap();
            for i in 1..=5 {
                log.append(flow(i), 1000 + i).unwrap();
            }
        }
        // Reopening continues the chain.
        let log = AuditLog::open(dir.path()).unwrap();
        log.append(flow(6), 2000).unwrap();
        assert_eq!(verify_dir(dir.path()), Ok(6));
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
        assert_eq!(verify_dir(dir.path()), Ok(6));
        // A reader racing an append: the log is ahead of the head it read,
        // and its last line may be half written. Both are fine.
        let old_head =
            Head { seq: 5, hash: serde_json::from_str::<AuditEntry>(lines[4]).unwrap().hash };
        assert_eq!(verify(&original, Some(&old_head)), Ok(6));
        std::fs::write(&path, format!("{original}{{\"seq\":7,\"at_")).unwrap();
        assert_eq!(verify_dir(dir.path()), Ok(6));
        std::fs::write(&path, &original).unwrap();
        // A tampered log is not written on top of.
        std::fs::write(&path, &modified).unwrap();
        assert!(AuditLog::open(dir.path()).is_err());
    }
}
