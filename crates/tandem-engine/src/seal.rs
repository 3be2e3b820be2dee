//! Sealed transfers: personal data crossing jurisdictions under a declared
//! legal basis (`[[transfers]]`), and only as ciphertext. The source
//! jurisdiction's regions hold the key; the destination stores the sealed copy
//! as an opaque record of the reserved entity `_sealed` and never serves it:
//! it cannot decrypt it.
//!
//! A sealed copy is made only of a change at its origin (the direct stream), so
//! `(origin, origin_seq)` names one plaintext. The nonce is derived from the key
//! and the whole plaintext (a synthetic nonce), so the same change sealed twice
//! gives the same bytes and two different plaintexts never share a nonce.
//! The copy's version vector is `{origin: origin_seq}`: a newer change of the
//! same record from the same origin supersedes the older copy.

use std::collections::BTreeMap;

use crate::model::LogEntry;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};
use tandem_clock::VersionVector;
use tandem_config::Config;
use tandem_merge::{Lww, State};

/// The reserved entity of sealed copies.
pub const SEALED_ENTITY: &str = "_sealed";

/// The keys this region may seal with, by destination jurisdiction.
#[derive(Default)]
pub struct Sealer {
    keys: BTreeMap<String, ([u8; 32], String)>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("destinations", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Sealer {
    /// The keys of the transfers out of `jurisdiction` that `key_of` (given a
    /// transfer's `key_env`) can supply; the others stay withheld. Returns the
    /// sealer and the transfers left without a usable key (to be logged).
    pub fn from_keys(
        config: &Config,
        jurisdiction: &str,
        key_of: impl Fn(&str) -> Option<String>,
    ) -> (Sealer, Vec<(String, String)>) {
        let mut keys = BTreeMap::new();
        let mut missing = Vec::new();
        for t in config.transfers.iter().filter(|t| t.from == jurisdiction) {
            match key_of(&t.key_env).and_then(|h| parse_key(&h)) {
                Some(k) => {
                    keys.insert(t.to.clone(), (k, t.legal_basis.clone()));
                }
                None => missing.push((t.to.clone(), t.key_env.clone())),
            }
        }
        (Sealer { keys }, missing)
    }

    pub fn with_key(to: &str, key: [u8; 32], legal_basis: &str) -> Sealer {
        Sealer { keys: BTreeMap::from([(to.to_owned(), (key, legal_basis.to_owned()))]) }
    }

    /// The sealed copy of `entry` for a region of `jurisdiction`.
    pub fn seal(&self, entry: &LogEntry, jurisdiction: &str) -> Option<LogEntry> {
        let (key, basis) = self.keys.get(jurisdiction)?;
        let cipher = ChaCha20Poly1305::new(&Key::from(*key));
        let plaintext = postcard::to_allocvec(&entry.state).expect("state encodes");
        let id = sealed_id(&entry.entity, &entry.id);
        let aad = format!("{}|{id}|{}", entry.origin, entry.origin_seq);
        let mut h = Sha256::new();
        h.update(key);
        h.update(aad.as_bytes());
        h.update(&plaintext);
        let digest = h.finalize();
        let nonce = Nonce::try_from(&digest[..12]).expect("12 of 32 bytes");
        let ciphertext = cipher
            .encrypt(&nonce, Payload { msg: &plaintext, aad: aad.as_bytes() })
            .expect("encryption does not fail for in-memory buffers");
        let value = serde_json::json!({
            "legal_basis": basis,
            "aad": aad,
            "nonce": hex::encode(nonce),
            "ciphertext": hex::encode(ciphertext),
        });
        let vv: VersionVector = [(entry.origin.clone(), entry.origin_seq)].into_iter().collect();
        let state = State::Lww(Lww::with_version(vv, entry.state.stamp(), value.to_string()));
        Some(LogEntry {
            seq: entry.seq,
            origin: entry.origin.clone(),
            origin_seq: entry.origin_seq,
            committed_at_ms: entry.committed_at_ms,
            logged_at_ms: entry.logged_at_ms,
            entity: SEALED_ENTITY.to_owned(),
            id,
            state,
        })
    }
}

/// The id of a record's sealed copy. The `hash` keeps the subject's id out of
/// the destination's keys: only the key holder can tell which record it is.
pub fn sealed_id(entity: &str, id: &str) -> String {
    let mut h = Sha256::new();
    h.update(entity.as_bytes());
    h.update([0]);
    h.update(id.as_bytes());
    hex::encode(&h.finalize()[..16])
}

fn parse_key(hex_key: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_key.trim()).ok()?;
    bytes.try_into().ok()
}

/// Open a sealed copy (only a key holder can). For tests and recovery tools.
pub fn open(key: &[u8; 32], value_json: &str) -> Option<State> {
    let v: serde_json::Value = serde_json::from_str(value_json).ok()?;
    let nonce = Nonce::try_from(hex::decode(v["nonce"].as_str()?).ok()?.as_slice()).ok()?;
    let ct = hex::decode(v["ciphertext"].as_str()?).ok()?;
    let aad = v["aad"].as_str()?;
    let cipher = ChaCha20Poly1305::new(&Key::from(*key));
    let plain = cipher.decrypt(&nonce, Payload { msg: &ct, aad: aad.as_bytes() }).ok()?;
    postcard::from_bytes(&plain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_clock::Hlc;
    use tandem_merge::{MergeKind, Op};

    fn entry(value: &str, origin_seq: u64) -> LogEntry {
        let mut state = State::new(MergeKind::Lww);
        state.apply(&Op::Put(format!("\"{value}\"")), "eu-west", Hlc::new(origin_seq, 0)).unwrap();
        LogEntry {
            seq: origin_seq,
            origin: "eu-west".into(),
            origin_seq,
            committed_at_ms: 1,
            logged_at_ms: 1,
            entity: "credential".into(),
            id: "alice:pw".into(),
            state,
        }
    }

    #[test]
    fn keys_are_taken_only_when_well_formed_and_never_printed() {
        let mut c = tandem_config::Config::example();
        for (to, env) in [("US", "K_US"), ("APAC", "K_APAC")] {
            c.transfers.push(tandem_config::TransferConfig {
                from: "EU".into(),
                to: to.into(),
                legal_basis: "SCC".into(),
                key_env: env.into(),
            });
        }
        let key = "ab".repeat(32);
        let (s, missing) = Sealer::from_keys(&c, "EU", |var| match var {
            "K_US" => Some(key.clone()),
            _ => Some("not-hex".into()),
        });
        assert_eq!(missing, vec![("APAC".to_owned(), "K_APAC".to_owned())]);
        assert!(s.seal(&entry("x", 1), "US").is_some());
        let shown = format!("{s:?}");
        assert!(shown.contains("US") && !shown.contains("abab"), "{shown}");
        let (none, missing) = Sealer::from_keys(&c, "US", |_| Some(key.clone()));
        assert!(
            missing.is_empty() && none.seal(&entry("x", 1), "US").is_none(),
            "no transfer out of US"
        );
        assert_eq!(parse_key(&"00".repeat(31)), None, "31 bytes");
        assert_eq!(parse_key(&format!(" {} ", "01".repeat(32))), Some([1; 32]));
    }

    #[test]
    fn sealed_ids_name_one_record_without_showing_it() {
        let a = sealed_id("credential", "alice:pw");
        assert_eq!(a, sealed_id("credential", "alice:pw"));
        assert_ne!(a, sealed_id("credential", "alice:px"));
        assert_ne!(a, sealed_id("credentiaL", "alice:pw"));
        assert_eq!(a.len(), 32);
        assert!(!a.contains("alice"));
    }

    #[test]
    fn sealed_copies_hide_the_data_and_open_with_the_key() {
        let key = [7u8; 32];
        let s = Sealer::with_key("US", key, "SCC");
        let e = entry("MARKER-secret", 3);
        let sealed = s.seal(&e, "US").unwrap();
        let text = format!("{sealed:?}");
        assert!(!text.contains("MARKER"), "no plaintext in the sealed copy");
        assert!(!text.contains("alice"), "no subject id in the sealed copy");
        assert_eq!(sealed.entity, SEALED_ENTITY);
        // Deterministic: the same change seals to the same bytes.
        assert_eq!(s.seal(&e, "US").unwrap(), sealed);
        let value = sealed.state.value_json().unwrap();
        assert_eq!(open(&key, &value).unwrap(), e.state);
        assert!(open(&[8u8; 32], &value).is_none(), "a wrong key cannot open it");
        let tampered = value.replacen("\"ciphertext\":\"", "\"ciphertext\":\"00", 1);
        assert!(open(&key, &tampered).is_none(), "tampering is detected");
        assert!(s.seal(&e, "APAC").is_none(), "no basis, no transfer");
        // A newer change of the same record supersedes the older copy.
        let newer = s.seal(&entry("MARKER-2", 9), "US").unwrap();
        let mut merged = sealed.state.clone();
        merged.merge(&newer.state).unwrap();
        assert_eq!(merged, newer.state);
        assert_eq!(newer.id, sealed.id);
    }
}
