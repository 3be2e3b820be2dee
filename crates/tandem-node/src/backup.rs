//! The backup file format: a consistent snapshot of one region, encrypted and
//! authenticated with ChaCha20-Poly1305 under a key the operator holds.
//!
//! Layout: `TNDMBK01` (8 bytes) | header length (u32 LE) | header (JSON:
//! format, region, jurisdiction, created_at_ms, records, last_seq) | nonce
//! (12 bytes) | ciphertext of the snapshot (postcard, tagged). The magic and
//! header are the AEAD's associated data, so changing, truncating or extending
//! any byte of the file makes `open` fail before anything is restored.

use serde::{Deserialize, Serialize};
use tandem_store::Snapshot;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

pub const MAGIC: &[u8; 8] = b"TNDMBK01";
/// Largest header accepted when reading a file.
const HEADER_MAX_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub format: u32,
    pub region: String,
    pub jurisdiction: String,
    pub created_at_ms: u64,
    pub records: u64,
    pub last_seq: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackupError {
    #[error("not a tandem backup (bad magic bytes)")]
    NotABackup,
    #[error("the backup is truncated")]
    Truncated,
    #[error("the backup header is unreadable: {0}")]
    Header(String),
    #[error("the backup failed its integrity check: it was modified, truncated or encrypted with another key")]
    Integrity,
    #[error("the backup's contents are unreadable: {0}")]
    Contents(String),
}

/// Encrypt a snapshot into a backup file. `nonce` must be fresh for the key.
pub fn seal(
    snapshot: &Snapshot,
    jurisdiction: &str,
    created_at_ms: u64,
    key: &[u8; 32],
    nonce: [u8; 12],
) -> Vec<u8> {
    let header = BackupHeader {
        format: 1,
        region: snapshot.region.clone(),
        jurisdiction: jurisdiction.to_owned(),
        created_at_ms,
        records: snapshot.records.len() as u64,
        last_seq: snapshot.last_seq,
    };
    let header = serde_json::to_vec(&header).expect("header encodes");
    let mut out = Vec::with_capacity(header.len() + 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    let aad = out.clone();
    let plain = tandem_store::encode(snapshot);
    let cipher = ChaCha20Poly1305::new(&Key::from(*key));
    let ct = cipher
        .encrypt(&Nonce::from(nonce), Payload { msg: &plain, aad: &aad })
        .expect("in-memory encryption does not fail");
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Read only the header (no key needed, nothing verified).
pub fn header(bytes: &[u8]) -> Result<BackupHeader, BackupError> {
    Ok(split(bytes)?.0)
}

/// A file cut into header, associated data, nonce and ciphertext.
type Parts<'a> = (BackupHeader, &'a [u8], &'a [u8], &'a [u8]);

fn split(bytes: &[u8]) -> Result<Parts<'_>, BackupError> {
    if bytes.len() < 12 {
        return Err(if bytes.starts_with(&MAGIC[..bytes.len().min(8)]) {
            BackupError::Truncated
        } else {
            BackupError::NotABackup
        });
    }
    if &bytes[..8] != MAGIC {
        return Err(BackupError::NotABackup);
    }
    let len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    if len > HEADER_MAX_BYTES {
        return Err(BackupError::Header(format!("header of {len} bytes")));
    }
    let body = 12 + len;
    if bytes.len() < body + 12 + 16 {
        return Err(BackupError::Truncated);
    }
    let header: BackupHeader =
        serde_json::from_slice(&bytes[12..body]).map_err(|e| BackupError::Header(e.to_string()))?;
    Ok((header, &bytes[..body], &bytes[body..body + 12], &bytes[body + 12..]))
}

/// Verify and decrypt a backup file. Nothing is trusted before the tag checks.
pub fn open(bytes: &[u8], key: &[u8; 32]) -> Result<(BackupHeader, Snapshot), BackupError> {
    let (header, aad, nonce, ct) = split(bytes)?;
    let cipher = ChaCha20Poly1305::new(&Key::from(*key));
    let plain = cipher
        .decrypt(&Nonce::try_from(nonce).expect("split cuts 12 bytes"), Payload { msg: ct, aad })
        .map_err(|_| BackupError::Integrity)?;
    let snapshot: Snapshot = tandem_store::decode("backup snapshot", &plain)
        .map_err(|e| BackupError::Contents(e.to_string()))?;
    if snapshot.region != header.region {
        return Err(BackupError::Contents("header and snapshot name different regions".into()));
    }
    Ok((header, snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_clock::Hlc;
    use tandem_merge::{MergeKind, Op, State};
    use tandem_store::StoredRecord;

    fn snapshot() -> Snapshot {
        let mut state = State::new(MergeKind::Lww);
        state.apply(&Op::Put("\"MARKER\"".into()), "eu-west", Hlc::new(1, 0)).unwrap();
        Snapshot {
            region: "eu-west".into(),
            format_version: tandem_store::FORMAT_VERSION,
            last_seq: 1,
            records: vec![(
                "credential".into(),
                "alice:pw".into(),
                StoredRecord { state, updated_at_ms: 1 },
            )],
            log: vec![],
            cursors: vec![],
        }
    }

    #[test]
    fn round_trip_and_every_kind_of_damage_is_refused() {
        let key = [9u8; 32];
        let file = seal(&snapshot(), "EU", 42, &key, [1; 12]);
        assert!(!file.windows(6).any(|w| w == b"MARKER"), "the contents are encrypted");
        let (h, s) = open(&file, &key).unwrap();
        assert_eq!((h.region.as_str(), h.records, h.created_at_ms), ("eu-west", 1, 42));
        assert_eq!(s, snapshot());
        assert_eq!(open(&file, &[8u8; 32]).unwrap_err(), BackupError::Integrity);
        for i in [0usize, 10, 20, file.len() / 2, file.len() - 1] {
            let mut bad = file.clone();
            bad[i] ^= 0x40;
            assert!(open(&bad, &key).is_err(), "a flipped byte at {i} is caught");
        }
        for cut in [3usize, 11, 30, file.len() - 1] {
            assert!(open(&file[..cut], &key).is_err(), "a file cut at {cut} is refused");
        }
        let mut longer = file.clone();
        longer.push(0);
        assert_eq!(open(&longer, &key).unwrap_err(), BackupError::Integrity);
        assert_eq!(open(b"hello world, not a backup", &key).unwrap_err(), BackupError::NotABackup);
    }
}
