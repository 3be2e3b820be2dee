//! Log compaction on redb (`Store::compact_log`): the decision
//! (`tandem_engine::compaction`) runs over one read snapshot decoding only
//! entry heads, then the removals go in write transactions of bounded size,
//! each taken between two commits with a pause after it.

use std::sync::atomic::Ordering;

use redb::{Durability, ReadableDatabase, ReadableTable};
use tandem_engine::compaction::Superseded;
use tandem_engine::model::LogHead;

use super::{RedbStore, COMPACTION_STEP_PAUSE, LOG};
use crate::backend_error::OrBackend;
use crate::{Compacted, StoreError};

impl RedbStore {
    /// `Store::compact_log`: decide over one snapshot, remove in steps.
    pub(super) fn compact_in_steps(
        &self,
        horizon_ms: u64,
        step_max: usize,
    ) -> Result<Compacted, StoreError> {
        let restores = self.restores.load(Ordering::SeqCst);
        // Decide over one read snapshot, newest entry first, reading only
        // each entry's head. Entries committed meanwhile are newer: they
        // can only make more of the older ones removable, never fewer.
        let (scanned, young, removable) = self.with_db(|db| {
            let txn = db.begin_read().bk()?;
            let table = txn.open_table(LOG).bk()?;
            let mut walk = Superseded::new(horizon_ms);
            let (mut scanned, mut removable) = (0u64, Vec::new());
            for item in table.iter().bk()?.rev() {
                let (seq, v) = item.bk()?;
                scanned += 1;
                if walk.removable(&LogHead::decode(v.value())?) {
                    removable.push(seq.value());
                }
            }
            Ok((scanned, walk.young(), removable))
        })?;
        let mut removed = 0u64;
        for step in removable.chunks(step_max.max(1)) {
            // One step at a time, between commits. Not through the
            // write-ahead log: a crash before the next checkpoint can only
            // bring removed entries back, which the next pass removes again.
            let mut log = self.log.lock().expect("log lock");
            if self.restores.load(Ordering::SeqCst) != restores {
                break; // the log was replaced: its sequence numbers mean other entries
            }
            let result = self.with_db(|db| {
                let mut txn = db.begin_write().bk()?;
                txn.set_durability(Durability::None).bk()?;
                {
                    let mut log = txn.open_table(LOG).bk()?;
                    for seq in step {
                        log.remove(*seq).bk()?;
                    }
                }
                txn.commit().bk()
            });
            result.map_err(|e| self.classify(e))?;
            removed += step.len() as u64;
            // The pages this step freed are reused only after a checkpoint.
            if log.checkpoint_due(self.checkpoint_bytes.load(Ordering::SeqCst)) {
                self.checkpoint(&mut log)?;
            }
            drop(log);
            // The lock is not fair: without a pause the next step could take
            // it again before the waiting committer does.
            std::thread::sleep(COMPACTION_STEP_PAUSE);
        }
        Ok(Compacted { scanned, removed, young })
    }
}
