//! The audit log's files in a region's directory: the active segment
//! `audit.jsonl`, sealed segments `audit/<first>-<last>.jsonl` (sequence
//! numbers, 20 digits, so that names sort in chain order), a marker
//! `audit/<first>-<last>.exported` once a sealed segment was copied out, and
//! `audit.anchor`, the last entry of the newest dropped segment, where the
//! retained chain starts. A segment's first entry carries the hash of the
//! previous segment's last entry (its `prev`), so segments chain like entries.

use std::io::{BufRead, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::chain::genesis;
use super::{AuditEntry, AuditError, Head, AUDIT_FILE};

pub const SEGMENTS_DIR: &str = "audit";
pub const ANCHOR_FILE: &str = "audit.anchor";

/// One sealed segment on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub first_seq: u64,
    pub last_seq: u64,
    pub path: PathBuf,
}

impl Sealed {
    /// The segment's file name: also its name in an export.
    pub fn name(&self) -> String {
        segment_name(self.first_seq, self.last_seq)
    }

    pub fn exported_marker(&self) -> PathBuf {
        self.path.with_extension("exported")
    }

    pub fn is_exported(&self) -> bool {
        self.exported_marker().exists()
    }
}

pub fn segment_name(first_seq: u64, last_seq: u64) -> String {
    format!("{first_seq:020}-{last_seq:020}.jsonl")
}

/// `(first, last)` from a segment's file name.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".jsonl")?;
    let (first, last) = stem.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?))
}

/// The sealed segments in `dir`, oldest first.
pub fn sealed(dir: &Path) -> Result<Vec<Sealed>, AuditError> {
    let seg_dir = dir.join(SEGMENTS_DIR);
    let read = match std::fs::read_dir(&seg_dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AuditError::Io(format!("{}: {e}", seg_dir.display()))),
    };
    let mut out = Vec::new();
    for item in read {
        let item = item.map_err(|e| AuditError::Io(e.to_string()))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if let Some((first_seq, last_seq)) = parse_segment_name(&name) {
            out.push(Sealed { first_seq, last_seq, path: item.path() });
        }
    }
    out.sort_by_key(|s| s.first_seq);
    Ok(out)
}

/// Where the retained chain starts: the anchor file, or genesis.
pub fn read_anchor(dir: &Path) -> Result<Head, AuditError> {
    match std::fs::read_to_string(dir.join(ANCHOR_FILE)) {
        Ok(text) => {
            serde_json::from_str(&text).map_err(|e| AuditError::Io(format!("{ANCHOR_FILE}: {e}")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(genesis()),
        Err(e) => Err(AuditError::Io(format!("{ANCHOR_FILE}: {e}"))),
    }
}

/// Replace a small file durably: write a temporary beside it, sync, rename,
/// sync the directory.
pub fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The newest entry of a segment's text (its last whole line).
pub fn last_entry(text: &str) -> Option<AuditEntry> {
    text.lines().rev().find(|l| !l.trim().is_empty()).and_then(|l| serde_json::from_str(l).ok())
}

/// The text of every retained segment in chain order, with the anchor it
/// starts from: sealed segments wholly before the anchor (a drop that
/// stopped between writing the anchor and removing the file) are left out,
/// and a last line of the active segment still being written is cut off.
pub fn retained_texts(dir: &Path) -> Result<(Head, Vec<(String, String)>), AuditError> {
    // A drop may run meanwhile: read the anchor before and after listing,
    // and again if it moved.
    for _ in 0..3 {
        let anchor = read_anchor(dir)?;
        let mut parts = Vec::new();
        let mut vanished = false;
        for s in sealed(dir)? {
            if s.last_seq <= anchor.seq {
                continue;
            }
            match std::fs::read_to_string(&s.path) {
                Ok(text) => parts.push((format!("{SEGMENTS_DIR}/{}", s.name()), text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => vanished = true,
                Err(e) => return Err(AuditError::Io(format!("{}: {e}", s.path.display()))),
            }
        }
        let mut active = std::fs::read_to_string(dir.join(AUDIT_FILE)).unwrap_or_default();
        if !active.is_empty() && !active.ends_with('\n') {
            active.truncate(active.rfind('\n').map_or(0, |i| i + 1));
        }
        parts.push((AUDIT_FILE.to_owned(), active));
        if !vanished && read_anchor(dir)? == anchor {
            return Ok((anchor, parts));
        }
    }
    Err(AuditError::Io("the audit segments kept changing while being read".into()))
}

/// Cut a last line that a crash left half written off the active segment,
/// so that the next entry starts on a line of its own.
pub fn cut_torn_line(path: &Path) -> Result<(), AuditError> {
    let Ok(mut f) = std::fs::OpenOptions::new().read(true).write(true).open(path) else {
        return Ok(());
    };
    let io = |e: std::io::Error| AuditError::Io(format!("{}: {e}", path.display()));
    let mut keep = 0u64;
    let mut offset = 0u64;
    let mut reader = std::io::BufReader::new(&mut f);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io)?;
        if n == 0 {
            break;
        }
        offset += n as u64;
        if line.ends_with(b"\n") {
            keep = offset;
        }
    }
    drop(reader);
    if keep < offset {
        f.set_len(keep).map_err(io)?;
        f.seek(SeekFrom::End(0)).map_err(io)?;
        f.sync_data().map_err(io)?;
    }
    Ok(())
}
