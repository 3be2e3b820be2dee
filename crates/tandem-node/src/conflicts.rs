//! The conflicts kept for inspection (`GET /v1/conflicts`): a bounded ring of the
//! newest conflicts with both versions, the winner and the resolution.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use tandem_merge::Conflict;

#[derive(Debug, Clone, Serialize)]
pub struct ConflictEntry {
    pub entity: String,
    pub id: String,
    pub peer: String,
    pub detected_at_ms: u64,
    pub age_seconds: f64,
    pub conflict_type: &'static str,
    pub resolution: &'static str,
    pub field: Option<String>,
    pub winner: &'static str,
    pub local: VersionView,
    pub remote: VersionView,
    pub merged: Option<serde_json::Value>,
    pub invariant_violation: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    pub value: Option<serde_json::Value>,
    pub hlc: tandem_clock::Hlc,
    pub origin: String,
}

impl ConflictEntry {
    pub fn new(
        entity: &str,
        id: &str,
        peer: &str,
        c: &Conflict,
        now_ms: u64,
        invariant_violation: bool,
    ) -> Self {
        let view = |s: &tandem_merge::ConflictSide| VersionView {
            value: s.value.as_deref().map(json),
            hlc: s.stamp.hlc,
            origin: s.stamp.origin.clone(),
        };
        ConflictEntry {
            entity: entity.to_owned(),
            id: id.to_owned(),
            peer: peer.to_owned(),
            detected_at_ms: now_ms,
            age_seconds: now_ms.saturating_sub(c.older().hlc.wall_ms) as f64 / 1000.0,
            conflict_type: c.conflict_type.as_str(),
            resolution: c.resolution.as_str(),
            field: c.field.clone(),
            winner: c.winner.as_str(),
            local: view(&c.local),
            remote: view(&c.remote),
            merged: c.merged.as_deref().map(json),
            invariant_violation,
        }
    }
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).expect("stored values are valid JSON")
}

/// The newest `capacity` conflicts.
pub struct ConflictLog {
    capacity: usize,
    entries: Mutex<VecDeque<ConflictEntry>>,
}

impl ConflictLog {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0);
        ConflictLog { capacity, entries: Mutex::new(VecDeque::with_capacity(capacity.min(4096))) }
    }

    pub fn push(&self, entry: ConflictEntry) {
        let mut q = self.entries.lock().expect("conflict log lock");
        if q.len() == self.capacity {
            q.pop_front();
        }
        q.push_back(entry);
    }

    /// Newest first, at most `limit`.
    pub fn newest(&self, limit: usize) -> Vec<ConflictEntry> {
        let q = self.entries.lock().expect("conflict log lock");
        q.iter().rev().take(limit).cloned().collect()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}
