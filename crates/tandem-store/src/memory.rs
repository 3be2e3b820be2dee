//! The in-memory backend, for tests and simulation. A write transaction works on
//! an overlay that is applied under the lock only when the batch succeeds.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::{
    ChangeOrigin, LogEntry, PeerCursor, Snapshot, Store, StoreError, StoredRecord, WriteTxn,
};

#[derive(Default)]
struct Inner {
    records: BTreeMap<(String, String), StoredRecord>,
    log: BTreeMap<u64, LogEntry>,
    cursors: BTreeMap<String, PeerCursor>,
    seq_floor: u64,
    own_have: Option<u64>,
}

/// A store that lives and dies with the process.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

struct MemTxn<'a> {
    base: &'a Inner,
    records: BTreeMap<(String, String), StoredRecord>,
    log: Vec<LogEntry>,
    cursors: BTreeMap<String, PeerCursor>,
    next_seq: u64,
}

impl WriteTxn for MemTxn<'_> {
    fn get(&mut self, entity: &str, id: &str) -> Result<Option<StoredRecord>, StoreError> {
        let key = (entity.to_owned(), id.to_owned());
        Ok(self.records.get(&key).or_else(|| self.base.records.get(&key)).cloned())
    }

    fn put(
        &mut self,
        entity: &str,
        id: &str,
        record: &StoredRecord,
        origin: &ChangeOrigin,
    ) -> Result<u64, StoreError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.records.insert((entity.to_owned(), id.to_owned()), record.clone());
        self.log.push(LogEntry {
            seq,
            origin: origin.origin.clone(),
            origin_seq: origin.origin_seq.unwrap_or(seq),
            committed_at_ms: origin.committed_at_ms,
            logged_at_ms: origin.logged_at_ms,
            entity: entity.to_owned(),
            id: id.to_owned(),
            state: record.state.clone(),
        });
        Ok(seq)
    }

    fn cursor(&mut self, peer: &str) -> Result<PeerCursor, StoreError> {
        Ok(self
            .cursors
            .get(peer)
            .or_else(|| self.base.cursors.get(peer))
            .cloned()
            .unwrap_or_default())
    }

    fn set_cursor(&mut self, peer: &str, cursor: &PeerCursor) -> Result<(), StoreError> {
        self.cursors.insert(peer.to_owned(), cursor.clone());
        Ok(())
    }
}

impl Store for MemoryStore {
    fn get(&self, entity: &str, id: &str) -> Result<Option<StoredRecord>, StoreError> {
        let inner = self.inner.lock().expect("store lock");
        Ok(inner.records.get(&(entity.to_owned(), id.to_owned())).cloned())
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

    fn last_seq(&self) -> Result<u64, StoreError> {
        let inner = self.inner.lock().expect("store lock");
        Ok(inner.log.keys().next_back().copied().unwrap_or(0))
    }

    fn cursor(&self, peer: &str) -> Result<PeerCursor, StoreError> {
        let inner = self.inner.lock().expect("store lock");
        Ok(inner.cursors.get(peer).cloned().unwrap_or_default())
    }

    fn snapshot(&self, region: &str) -> Result<Snapshot, StoreError> {
        let inner = self.inner.lock().expect("store lock");
        Ok(Snapshot {
            region: region.to_owned(),
            format_version: crate::FORMAT_VERSION,
            last_seq: inner.log.keys().next_back().copied().unwrap_or(0),
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
        inner.seq_floor = seq_floor;
        inner.own_have = Some(snapshot.last_seq);
        Ok(())
    }

    fn incarnation(&self) -> Result<Option<u64>, StoreError> {
        let inner = self.inner.lock().expect("store lock");
        Ok(inner.own_have.map(|_| inner.seq_floor))
    }

    fn own_have(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.inner.lock().expect("store lock").own_have)
    }

    fn write(
        &self,
        f: &mut dyn FnMut(&mut dyn WriteTxn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().expect("store lock");
        let next_seq =
            (inner.log.keys().next_back().copied().unwrap_or(0) + 1).max(inner.seq_floor);
        let mut txn = MemTxn {
            base: &inner,
            records: BTreeMap::new(),
            log: Vec::new(),
            cursors: BTreeMap::new(),
            next_seq,
        };
        f(&mut txn)?;
        let MemTxn { records, log, cursors, .. } = txn;
        inner.records.extend(records);
        for e in log {
            inner.log.insert(e.seq, e);
        }
        inner.cursors.extend(cursors);
        Ok(())
    }
}
