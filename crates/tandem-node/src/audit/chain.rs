//! Checking a hash chain of audit entries, pure over the texts of its
//! segments: each entry follows the one before it by sequence number, names
//! that entry's hash as `prev`, and matches its own hash. The chain starts at
//! an anchor (the genesis hash at sequence 0, or the last entry of the newest
//! dropped segment) and must reach the head, so entries cut off either end
//! are seen too.

use sha2::{Digest, Sha256};

use super::{AuditEntry, AuditError, Head, GENESIS};

/// The hash of an entry: SHA-256 of the previous hash and the entry's JSON
/// with its own hash left empty.
pub fn entry_hash(e: &AuditEntry) -> String {
    let mut body = e.clone();
    body.hash = String::new();
    let json = serde_json::to_vec(&body).expect("entry encodes");
    let mut h = Sha256::new();
    h.update(e.prev.as_bytes());
    h.update(&json);
    hex::encode(h.finalize())
}

/// What a whole chain came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Where it started (sequence 0 and the genesis hash, or an anchor).
    pub anchor: Head,
    /// Its newest entry.
    pub last: Head,
    /// The hash of the entry at the sequence asked for, when the chain holds it.
    pub watched: Option<String>,
}

impl Verified {
    /// Entries in the chain after its anchor.
    pub fn entries(&self) -> u64 {
        self.last.seq - self.anchor.seq
    }
}

/// The genesis anchor: nothing before the first entry.
pub fn genesis() -> Head {
    Head { seq: 0, hash: GENESIS.to_owned() }
}

/// Check the segments `parts` (name, text), in order, as one chain from
/// `anchor`; with `head`, the chain must reach the head's entry (it may go on
/// past it: entries appended after the head was read). The hash of the entry
/// at sequence `watch` is kept in the answer.
pub fn verify_chain(
    anchor: &Head,
    parts: &[(String, String)],
    head: Option<&Head>,
    watch: u64,
) -> Result<Verified, AuditError> {
    let mut last = anchor.clone();
    let mut watched = (watch == anchor.seq).then(|| anchor.hash.clone());
    let mut head_hash = None;
    for (name, text) in parts {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let broken =
                |problem: String| AuditError::Broken { file: name.clone(), line: i + 1, problem };
            let e: AuditEntry =
                serde_json::from_str(line).map_err(|err| broken(format!("not an entry: {err}")))?;
            if e.seq != last.seq + 1 {
                return Err(broken(format!(
                    "sequence {} follows {}: an entry was removed or moved",
                    e.seq, last.seq
                )));
            }
            if e.prev != last.hash {
                return Err(broken("does not chain to the entry before it".into()));
            }
            if entry_hash(&e) != e.hash {
                return Err(broken("content does not match its hash: modified".into()));
            }
            if e.seq == watch {
                watched = Some(e.hash.clone());
            }
            if head.is_some_and(|h| h.seq == e.seq) {
                head_hash = Some(e.hash.clone());
            }
            last = Head { seq: e.seq, hash: e.hash };
        }
    }
    if let Some(h) = head {
        // The head's entry must be the one logged (or the anchor itself).
        let at_anchor = h.seq == anchor.seq && h.hash == anchor.hash;
        if h.seq > last.seq || !(at_anchor || head_hash.as_deref() == Some(h.hash.as_str())) {
            return Err(AuditError::HeadMismatch { head_seq: h.seq, log_seq: last.seq });
        }
    }
    Ok(Verified { anchor: anchor.clone(), last, watched })
}

/// Check exported segments (a chain from genesis) against the local anchor:
/// the export must hold the anchor's entry with the anchor's hash, so that
/// the dropped part of the chain is whole and joins the retained part.
pub fn verify_export(parts: &[(String, String)], anchor: &Head) -> Result<Verified, AuditError> {
    let exported = verify_chain(&genesis(), parts, None, anchor.seq)?;
    match exported.watched.as_deref() {
        Some(h) if h == anchor.hash => Ok(exported),
        Some(_) => Err(AuditError::Export(format!(
            "the exported entry {} is not the one the retained chain starts after",
            anchor.seq
        ))),
        None => Err(AuditError::Export(format!(
            "the exported segments end at entry {}, before the retained chain's anchor {}: segments are missing",
            exported.last.seq, anchor.seq
        ))),
    }
}
