//! The data plane's API keys (DESIGN.md, Security): `<data_dir>/api-keys`,
//! one `name key` per line (blank lines and `#` comments allowed). A call
//! presents `Authorization: Bearer <key>`; the key is compared with every key
//! in constant time, so neither the answer's timing nor its content says how
//! close a guess was. The file is read again when it changes (`reload`), so
//! keys are added and withdrawn without a restart.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

use crate::auth::secret_matches;

/// Longest key accepted in the file (and compared).
pub const KEY_LEN_MAX: usize = 512;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApiKeysError {
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("{path} line {line}: {problem}")]
    Line { path: String, line: usize, problem: String },
}

/// Parse the file's text into `(name, key)` pairs.
pub fn parse(path: &str, text: &str) -> Result<Vec<(String, String)>, ApiKeysError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |problem: &str| ApiKeysError::Line {
            path: path.into(),
            line: i + 1,
            problem: problem.into(),
        };
        let mut parts = line.split_whitespace();
        let (Some(name), Some(key), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected `name key`"));
        };
        if key.len() < 16 {
            return Err(bad("the key is shorter than 16 characters"));
        }
        if key.len() > KEY_LEN_MAX {
            return Err(bad("the key is longer than 512 characters"));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(bad("a second key with this name"));
        }
        out.push((name.to_owned(), key.to_owned()));
    }
    Ok(out)
}

/// The current keys, reloadable.
pub struct ApiKeys {
    path: PathBuf,
    keys: RwLock<Vec<(String, String)>>,
    stamp: RwLock<Option<SystemTime>>,
}

fn stamp_of(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ApiKeys {
    /// Read the keys file; a missing file is an error (its path is named).
    pub fn load(path: &Path) -> Result<ApiKeys, ApiKeysError> {
        let keys = read(path)?;
        Ok(ApiKeys {
            path: path.to_owned(),
            keys: RwLock::new(keys),
            stamp: RwLock::new(stamp_of(path)),
        })
    }

    /// No keys at all (every call with a key is refused).
    pub fn none(path: &Path) -> ApiKeys {
        ApiKeys { path: path.to_owned(), keys: RwLock::new(Vec::new()), stamp: RwLock::new(None) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name of the key presented, if it is one of ours.
    pub fn check(&self, presented: &str) -> Option<String> {
        let keys = self.keys.read().expect("keys lock");
        let mut found = None;
        // No early exit: every key is compared.
        for (name, key) in keys.iter() {
            if secret_matches(presented, key) && found.is_none() {
                found = Some(name.clone());
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.keys.read().expect("keys lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn changed_on_disk(&self) -> bool {
        *self.stamp.read().expect("keys lock") != stamp_of(&self.path)
    }

    /// Read the file again; on an error the current keys stay.
    pub fn reload(&self) -> Result<(), ApiKeysError> {
        let stamp = stamp_of(&self.path);
        let keys = read(&self.path)?;
        *self.keys.write().expect("keys lock") = keys;
        *self.stamp.write().expect("keys lock") = stamp;
        Ok(())
    }
}

fn read(path: &Path) -> Result<Vec<(String, String)>, ApiKeysError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ApiKeysError::Read { path: shown.clone(), message: e.to_string() })?;
    parse(&shown, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_name_key_lines() {
        let keys =
            parse("k", "# keys\n\ndefault 0123456789abcdef0123\n  ops   fedcba9876543210ffff \n")
                .unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1], ("ops".into(), "fedcba9876543210ffff".into()));
        let err = |t: &str| parse("k", t).unwrap_err().to_string();
        assert_eq!(err("lonely\n"), "k line 1: expected `name key`");
        assert!(err("a b c\n").contains("expected `name key`"));
        assert!(err("a short\n").contains("shorter than 16"));
        assert!(err("a 0123456789abcdef\na 0123456789abcdeg\n").contains("line 2: a second key"));
    }

    #[test]
    fn keys_are_checked_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-keys");
        std::fs::write(&path, "default 0123456789abcdef0123\n").unwrap();
        let keys = ApiKeys::load(&path).unwrap();
        assert_eq!(keys.check("0123456789abcdef0123").as_deref(), Some("default"));
        assert_eq!(keys.check("0123456789abcdef0124"), None);
        assert_eq!(keys.check(""), None);
        std::fs::write(&path, "other fedcba9876543210ffff\n").unwrap();
        keys.reload().unwrap();
        assert_eq!(keys.check("0123456789abcdef0123"), None, "withdrawn");
        assert_eq!(keys.check("fedcba9876543210ffff").as_deref(), Some("other"));
        std::fs::write(&path, "broken\n").unwrap();
        assert!(keys.reload().is_err());
        assert_eq!(keys.len(), 1, "a bad file keeps the keys there were");
        assert!(ApiKeys::load(&dir.path().join("missing")).is_err());
    }
}
