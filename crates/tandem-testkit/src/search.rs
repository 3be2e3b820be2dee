//! Searching for what must not be somewhere: a test writes values that
//! carry a marker unique to its run, then searches the raw bytes of every
//! file of a data directory, a backup or a link capture for it. A search
//! that must find nothing is only worth something next to one that finds
//! what must be there, so tests pair each with a positive control.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A tag unique to this run, made of letters that never occur in hex
/// (pseudonyms, hashes and ciphertext are hex), so that a marker built from
/// it cannot appear by accident.
pub fn unique_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    // Every decimal digit becomes one of q..z.
    format!("{nanos}{}", std::process::id())
        .bytes()
        .map(|b| char::from(b'q' + (b - b'0')))
        .collect()
}

/// Every regular file under `dir`, recursively, sorted (so reports are stable).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// `(file, needle)` for every needle found in any of `files`. A file that
/// vanished since it was listed (a running store's temporary file) is
/// skipped; any other read error fails the search.
pub fn find_in_files(files: &[PathBuf], needles: &[String]) -> Vec<(PathBuf, String)> {
    let mut hits = Vec::new();
    for f in files {
        let bytes = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("read {}: {e}", f.display()),
        };
        for n in needles {
            if contains(&bytes, n.as_bytes()) {
                hits.push((f.clone(), n.clone()));
            }
        }
    }
    hits
}

/// Every file of a directory with its bytes (to prove that nothing changed).
pub fn dir_bytes(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

/// `file://PATH`.
pub fn file_url(p: &Path) -> String {
    format!("file://{}", p.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_not_hex_and_searches_find_markers() {
        let tag = unique_tag();
        assert!(tag.bytes().all(|b| (b'q'..=b'z').contains(&b)), "{tag}");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("a/b")).expect("dirs");
        std::fs::write(dir.path().join("a/b/x.bin"), format!("..{tag}..")).expect("write");
        std::fs::write(dir.path().join("y.bin"), "nothing").expect("write");
        let files = files_under(dir.path());
        assert_eq!(files.len(), 2);
        let hits = find_in_files(&files, &[tag.clone(), "absent".into()]);
        assert_eq!(hits.len(), 1);
        assert!(hits[0].0.ends_with("a/b/x.bin"));
        assert!(!contains(b"abc", b""));
        assert_eq!(dir_bytes(dir.path()).len(), 2);
    }
}
