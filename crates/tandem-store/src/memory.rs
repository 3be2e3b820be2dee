//! The in-memory backend, for tests and the simulation. A commit applies a
//! batch's effects under one lock, so readers see all of a batch or none of
//! it; nothing survives the process (the simulation keeps the store across a
//! simulated crash, as a disk would).

use std::collections::BTreeMap;
use std::sync::Mutex;

use tandem_engine::compaction::Superseded;

use crate::{
    Committed, Compacted, Effects, LogEntry, PeerCursor, RecordKey, Snapshot, Store, StoreError,
    StoredRecord,
};

#[derive(Default)]
struct Inner {
    records: BTreeMap<RecordKey, StoredRecord>,
    log: BTreeMap<u64, LogEntry>,
    cursors: BTreeMap<String, PeerCursor>,
    /// The next sequence number to hand out (never reused).
    next_seq: u64,
    incarnation: Option<u64>,
    own_have: Option<u64>,
}

/// A store that lives and dies with the process.
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore { inner: Mutex::new(Inner { next_seq: 1, ..Inner::default() }) }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Append one put's log entry (shared with the redb backend's shape).
pub(crate) fn log_entry(seq: u64, put: &crate::Put) -> LogEntry {
    tandem_engine::model::LogEntryRef::of(seq, put).to_owned_entry()
}

impl Store for MemoryStore {
    fn get_many(&self, keys: &[RecordKey]) -> Result<Vec<Option<StoredRecord>>, StoreError> {
        let inner = self.inner.lock().expect("store lock");
        Ok(keys.iter().map(|k| inner.records.get(k).cloned()).collect())
    }

    fn scan(
        &self,
        entity: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StoredRecord)>, StoreError> {
        let inner = self.inner.lock().expect("store lock");
        let start = (entity.to_owned(), after.unwrap_or("").to_owned());
        Ok(inner
            .records
            .range(start..)
            .take_while(|((e, _), _)| e == entity)
            .filter(|((_, id), _)| after != Some(id.as_str()))
            .take(limit)
            .map(|((_, id), r)| (id.clone(), r.clone()))
            .collect())
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &str, &StoredRecord)) -> Result<(), StoreError> {
        let inner = self.inner.lock().expect("store lock");
        for ((e, id), r) in &inner.records {
            f(e, id, r);
        }
        Ok(())
    }

    fn log_after(&self, after: u64, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
        let inner = self.inner.lock().expect("store lock");
        Ok(inner.log.range(after.saturating_add(1)..).take(limit).map(|(_, e)| e.clone()).collect())
    }

    fn durable_seq(&self) -> Result<u64, StoreError> {
        Ok(self.inner.lock().expect("store lock").next_seq - 1)
    }

    fn log_entries(&self) -> Result<u64, StoreError> {
        Ok(self.inner.lock().expect("store lock").log.len() as u64)
    }

    fn compact_log(&self, horizon_ms: u64, _step_max: usize) -> Result<Compacted, StoreError> {
        let mut inner = self.inner.lock().expect("store lock");
        let mut walk = Superseded::new(horizon_ms);
        let mut removable = Vec::new();
        for e in inner.log.values().rev() {
            if walk.removable(&e.head()) {
                removable.push(e.seq);
            }
        }
        let scanned = inner.log.len() as u64;
        for seq in &removable {
            inner.log.remove(seq);
        }
        Ok(Compacted { scanned, removed: removable.len() as u64, young: walk.young() })
    }

    fn cursor(&self, key: &str) -> Result<PeerCursor, StoreError> {
        let inner = self.inner.lock().expect("store lock");
        Ok(inner.cursors.get(key).cloned().unwrap_or_default())
    }

    fn commit_all(&self, parts: &[&Effects]) -> Result<Committed, StoreError> {
        let mut inner = self.inner.lock().expect("store lock");
        let first_seq = inner.next_seq;
        for put in parts.iter().flat_map(|e| e.puts.iter()) {
            let seq = inner.next_seq;
            inner.next_seq += 1;
            inner.log.insert(seq, log_entry(seq, put));
            inner.records.insert((put.entity.clone(), put.id.clone()), put.record.clone());
        }
        for (k, c) in parts.iter().flat_map(|e| e.cursors.iter()) {
            inner.cursors.insert(k.clone(), c.clone());
        }
        Ok(Committed { first_seq, durable_seq: inner.next_seq - 1 })
    }

    fn snapshot(&self, region: &str) -> Result<Snapshot, StoreError> {
        let inner = self.inner.lock().expect("store lock");
        Ok(Snapshot {
            region: region.to_owned(),
            format_version: crate::FORMAT_VERSION,
            last_seq: inner.next_seq - 1,
            records: inner
                .records
                .iter()
                .map(|((e, i), r)| (e.clone(), i.clone(), r.clone()))
                .collect(),
            log: inner.log.values().cloned().collect(),
            cursors: inner.cursors.iter().map(|(k, c)| (k.clone(), c.clone())).collect(),
        })
    }

    fn restore(&self, snapshot: &Snapshot, seq_floor: u64) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().expect("store lock");
        inner.records =
            snapshot.records.iter().map(|(e, i, r)| ((e.clone(), i.clone()), r.clone())).collect();
        inner.log = snapshot.log.iter().map(|e| (e.seq, e.clone())).collect();
        inner.cursors = snapshot.cursors.iter().cloned().collect();
        inner.next_seq = seq_floor.max(snapshot.last_seq + 1);
        inner.incarnation = Some(seq_floor);
        inner.own_have = Some(snapshot.last_seq);
        Ok(())
    }

    fn incarnation(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.inner.lock().expect("store lock").incarnation)
    }

    fn own_have(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.inner.lock().expect("store lock").own_have)
    }
}
