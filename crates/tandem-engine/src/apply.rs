//! Applying a batch of a peer's changes, decided: each entry of a known type
//! and the configured merge type, that this region may hold (checked again
//! whatever the sender did), merges into the local record; its HLC stamp
//! advances the local clock (within the offset bound). Only a change that
//! altered something is stored and logged: a pure relay (the merged state is
//! the remote one) keeps its origin, so per-origin high-water marks
//! deduplicate it downstream; a merge that combined it with changes held
//! here is a new state this region vouches for and is logged as its own, so
//! its direct stream carries it to every peer, including peers that cannot
//! reach the origins of the changes folded into it. A delta
//! (`tandem_merge::delta`) is logged as it came, keeping its origin; one
//! whose causal context is not here yet stops the batch just before it
//! (`ApplyReport::waiting`): the cursor stays there and the puller asks
//! again, once the change it depends on has come by another path. The
//! path's cursor advances in the same batch, so apply is idempotent and
//! survives crashes. A puller may hand over several batches of a stream
//! before the first is durable; each names the position it continues from,
//! and one that does not continue from the path's cursor (a batch before it
//! stopped at a delta, or its commit failed) is applied not at all
//! (`ApplyReport::gap`), so nothing is ever skipped.

use tandem_clock::HlcClock;
use tandem_config::ConflictPolicy;
use tandem_merge::{Conflict, MergeError, State};

use crate::engine::Engine;
use crate::error::StoreError;
use crate::model::{ChangeOrigin, LogEntry, StoredRecord};
use crate::protocol::Path;
use crate::seal::SEALED_ENTITY;
use crate::store::BatchView;

/// Changes pulled from a peer over one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteBatch {
    pub peer: String,
    pub path: Path,
    pub entries: Vec<LogEntry>,
    /// The position in the peer's log the batch continues from: it is applied
    /// only once the path's cursor has reached it (0: wherever the cursor is).
    pub continues_from: u64,
    /// The position in the peer's log the batch covers up to.
    pub next_seq: u64,
}

/// A conflict found while merging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundConflict {
    pub entity: String,
    pub id: String,
    pub conflict: Conflict,
    /// The type is declared `conflicts = "never"`: an invariant violation.
    pub invariant_violation: bool,
}

/// Why an entry was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// An entity type this region does not know.
    UnknownEntity,
    /// A merge type other than the configured one.
    OtherMergeType,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Entries that changed local state (and were logged).
    pub changed: usize,
    /// `(entity, id)` of entries refused because this region may not hold
    /// them (the ids name subjects: count them, never log them).
    pub refused: Vec<(String, String)>,
    pub conflicts: Vec<FoundConflict>,
    /// Entries left out, with their entity type.
    pub skipped: Vec<(String, Skipped)>,
    /// The path's cursor after the batch.
    pub cursor: u64,
    /// The batch stopped at a delta that needs changes this region has not
    /// applied yet: the cursor stays before it, so it comes again.
    pub waiting: bool,
    /// The batch does not continue from the path's cursor (one before it
    /// was not applied whole): nothing of it was applied.
    pub gap: bool,
}

impl Engine {
    /// Decide one batch of a peer's changes.
    pub fn apply_remote(
        &self,
        view: &mut BatchView<'_>,
        clock: &HlcClock,
        batch: &RemoteBatch,
    ) -> Result<ApplyReport, StoreError> {
        let mut report = ApplyReport::default();
        let key = batch.path.cursor_key(&batch.peer);
        let mut cursor = view.cursor(&key)?;
        if batch.continues_from > cursor.seq {
            report.gap = true;
            report.cursor = cursor.seq;
            return Ok(report);
        }
        let mut waiting_at = None;
        for (i, e) in batch.entries.iter().enumerate() {
            let Some(kind) = self.merge_kind(&e.entity) else {
                report.skipped.push((e.entity.clone(), Skipped::UnknownEntity));
                continue;
            };
            if e.state.kind() != kind {
                report.skipped.push((e.entity.clone(), Skipped::OtherMergeType));
                continue;
            }
            // Defence in depth: whatever the sender did, never store what this
            // region's jurisdiction may not hold.
            let check = !self.faults.skip_residency_when_applying;
            if check && crate::filter::may_hold(&self.config, &self.region, e).is_err() {
                report.refused.push((e.entity.clone(), e.id.clone()));
                continue;
            }
            // The remote stamp advances the local clock (unless it is too far
            // ahead: then it is refused and counted, and the data still merges).
            let _ = clock.observe(e.state.stamp().hlc);
            let current = view.take(&e.entity, &e.id)?;
            // A delta merges into an empty state when the record is new here.
            let current = match current {
                None if e.state.is_delta() => Some(State::new(kind)),
                other => other.map(|r| r.state),
            };
            let (state, changed) = match current {
                None => (e.state.clone(), true),
                Some(mut s) => {
                    if self.faults.merge_overwrites && !e.state.is_delta() {
                        // Deliberately broken: whole-state last-writer-wins.
                        let newer = e.state.stamp() > s.stamp();
                        if newer {
                            s = e.state.clone();
                        }
                        (s, newer)
                    } else {
                        let outcome = match s.merge(&e.state) {
                            Ok(outcome) => outcome,
                            // Its context is not here yet: stop before it.
                            Err(MergeError::NotYet) => {
                                waiting_at = Some(i);
                                break;
                            }
                            Err(e) => unreachable!("kinds checked above: {e}"),
                        };
                        if let Some(c) = outcome.conflict {
                            let never = self
                                .config
                                .entity(&e.entity)
                                .is_some_and(|c| c.conflicts == ConflictPolicy::Never);
                            report.conflicts.push(FoundConflict {
                                entity: e.entity.clone(),
                                id: e.id.clone(),
                                conflict: c,
                                invariant_violation: never,
                            });
                        }
                        (s, outcome.changed)
                    }
                }
            };
            if !changed {
                continue;
            }
            let now_ms = clock.physical_ms();
            // A repair's states carry no log position of their origin: what
            // they change is this region's own change, streamed to every peer.
            // A delta goes on as it came (never as this region's whole state).
            let relay = batch.path != Path::Repair
                && (state == e.state || e.entity == SEALED_ENTITY || e.state.is_delta());
            let origin = if relay {
                ChangeOrigin {
                    origin: e.origin.clone(),
                    origin_seq: Some(e.origin_seq),
                    committed_at_ms: e.committed_at_ms,
                    logged_at_ms: now_ms,
                }
            } else {
                self.own_origin(now_ms)
            };
            let record = StoredRecord { state, updated_at_ms: now_ms };
            let delta = (relay && e.state.is_delta()).then(|| e.state.clone());
            view.put_logging(&e.entity, &e.id, record, origin, delta);
            report.changed += 1;
        }
        report.waiting = waiting_at.is_some();
        let covered = match waiting_at {
            // Everything before the waiting entry is applied.
            Some(i) => batch.entries[i].seq - 1,
            None => batch.next_seq,
        };
        if covered > cursor.seq {
            cursor.seq = covered;
            view.set_cursor(&key, cursor.clone());
        }
        report.cursor = cursor.seq;
        Ok(report)
    }
}
