//! The background compaction of the region's replication log
//! (`tandem_engine::compaction` decides, `Store::compact_log` removes): a pass
//! runs once the log has doubled since the last one (and holds at least
//! `COMPACTION_MIN_ENTRIES`), so its cost is amortized over the writes that
//! grew the log, and the log stays within twice its compacted size: about one
//! entry per record and origin, plus the entries younger than the horizon.
//! When a quarter or more of what a pass kept was only too young, one more
//! pass follows once the horizon has passed, so a log stops at about one
//! entry per record after the writes stop.
//! Removal goes in steps of `COMPACTION_STEP_MAX` entries between commits.
//! The same loop keeps the log, store size and free space gauges current.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_engine::{Compacted, StoreError};

use crate::node::Node;

/// How often the log's size is looked at.
pub const COMPACTION_CHECK: Duration = Duration::from_secs(1);
/// A log smaller than this is left alone.
pub const COMPACTION_MIN_ENTRIES: u64 = 1024;
/// Removals per write transaction (a commit waits for one step at most).
pub const COMPACTION_STEP_MAX: usize = 512;

/// Whether a pass is due: the log holds `entries`, and held `after_last`
/// when the last pass ended; `follow_up` when the last pass asked for one
/// and its horizon has passed.
pub fn due(entries: u64, after_last: u64, follow_up: bool) -> bool {
    entries >= COMPACTION_MIN_ENTRIES && (entries >= after_last.saturating_mul(2) || follow_up)
}

/// Whether a pass that left `left` entries, `young` of them kept only for
/// being younger than the horizon, asks for a follow-up pass.
pub fn wants_follow_up(young: u64, left: u64) -> bool {
    young > 0 && young.saturating_mul(4) >= left
}

pub async fn run(node: Arc<Node>) {
    let mut shutdown = node.shutdown.subscribe();
    let mut after_last = 0u64;
    let mut follow_up_at: Option<Instant> = None;
    let horizon = tandem_engine::compaction::horizon(node.replication.timings.forward_delay);
    let horizon_ms = horizon.as_millis() as u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(COMPACTION_CHECK) => {}
            _ = shutdown.changed() => return,
        }
        let n = node.clone();
        let follow_up = follow_up_at.is_some_and(|at| Instant::now() >= at);
        let pass =
            tokio::task::spawn_blocking(move || step(&n, after_last, follow_up, horizon_ms)).await;
        match pass {
            Ok(Ok(Some((done, left, took)))) => {
                after_last = left;
                follow_up_at = wants_follow_up(done.young, left).then(|| Instant::now() + horizon);
                node.metrics.log_compacted_entries.inc_by(done.removed);
                node.metrics.log_entries.set(i64::try_from(left).unwrap_or(i64::MAX));
                tracing::info!(
                    scanned = done.scanned,
                    removed = done.removed,
                    left,
                    ms = took.as_millis() as u64,
                    "compacted the replication log"
                );
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "log compaction failed; retried later"),
            Err(e) => tracing::error!(error = %e, "log compaction panicked"),
        }
    }
}

/// Refresh the gauges, and run a pass when one is due: what it did, the
/// entries left and how long it took.
fn step(
    node: &Node,
    after_last: u64,
    follow_up: bool,
    horizon_ms: u64,
) -> Result<Option<(Compacted, u64, Duration)>, StoreError> {
    let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    node.metrics.store_bytes.set(gauge(store_bytes(node)));
    if let Some((total, free)) = node.disk.space() {
        node.metrics.storage_filesystem_bytes.set(gauge(total));
        node.metrics.storage_free_bytes.set(gauge(free));
    }
    let entries = node.store.log_entries()?;
    node.metrics.log_entries.set(i64::try_from(entries).unwrap_or(i64::MAX));
    if !due(entries, after_last, follow_up) || node.disk.is_full() {
        return Ok(None);
    }
    let started = Instant::now();
    let done =
        node.store.compact_log(node.now_ms().saturating_sub(horizon_ms), COMPACTION_STEP_MAX)?;
    let left = node.store.log_entries()?;
    Ok(Some((done, left, started.elapsed())))
}

/// Bytes of the store's files (0 in memory).
pub fn store_bytes(node: &Node) -> u64 {
    let dir = node.data_dir.join(&node.region);
    [tandem_store::upgrade::DATA_FILE, tandem_store::WAL_FILE]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_is_due_once_the_log_doubled_or_a_follow_up_is() {
        assert!(!due(COMPACTION_MIN_ENTRIES - 1, 0, false));
        assert!(due(COMPACTION_MIN_ENTRIES, 0, false));
        assert!(!due(3_999, 2_000, false));
        assert!(due(4_000, 2_000, false));
        assert!(due(3_999, 2_000, true));
        assert!(!due(COMPACTION_MIN_ENTRIES - 1, 0, true));
    }

    #[test]
    fn a_follow_up_is_wanted_when_a_quarter_was_only_too_young() {
        assert!(wants_follow_up(250, 1000));
        assert!(!wants_follow_up(249, 1000));
        assert!(!wants_follow_up(0, 0));
    }
}
