//! Deltas: what a change to a big `or-set` or `lww-fields` record ships to
//! peers instead of the record's whole state, so that one more member of a
//! 100,000-member set costs a member's bytes on the wire and in the log, not
//! the set's.
//!
//! - `lww-fields`: the changed fields' registers as they are after the
//!   change ([`State::LwwFieldsPart`]). Fields merge independently, so a part
//!   joins into any state of the record, in any order, like a whole state.
//! - `or-set`: the change itself, with its first dot and the causal context
//!   it was made in ([`OrSetDelta`]). It applies to a replica that has seen
//!   that context (its version dominates `base`): then the result is exactly
//!   the merge of the origin's whole state, because a replica's state is
//!   determined by the set of events it has seen. A replica that has not
//!   seen the context yet answers [`NotYet`] and is given the delta again
//!   later, once the changes it depends on arrived (they precede it in every
//!   log, so they always do).
//!
//! Small records ship whole (below [`DELTA_MEMBERS_MIN`] members), and so
//! does a change whose dots cross a multiple of the record's size rounded up
//! to a power of two (the periodic whole state: a log compacted behind it
//! loses nothing, and it costs at most two members' bytes per change,
//! amortized). A delete ships whole: what is left of the record is small.

use serde::{Deserialize, Serialize};
use tandem_clock::VersionVector;

use crate::{Op, Stamp, State};

/// Records with fewer members than this ship their whole state.
pub const DELTA_MEMBERS_MIN: usize = 64;

/// A change to an `or-set` made at `actor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrSetDelta {
    pub actor: String,
    /// The dot of the change's first element (`actor`'s counter); each
    /// further element of an add takes the next one; a remove takes one.
    pub first: u64,
    /// The set's causal context before the change.
    pub base: VersionVector,
    pub change: SetChange,
    /// The record's stamp after the change.
    pub stamp: Stamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetChange {
    Add(Vec<String>),
    Remove(Vec<String>),
}

/// A delta made after changes this replica has not seen yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a delta made after changes this replica has not seen yet")]
pub struct NotYet;

impl OrSetDelta {
    /// The dot of its last element.
    pub fn last(&self) -> u64 {
        match &self.change {
            SetChange::Add(elements) => self.first + elements.len() as u64 - 1,
            SetChange::Remove(_) => self.first,
        }
    }

    /// The elements it adds or removes.
    pub fn elements(&self) -> &[String] {
        match &self.change {
            SetChange::Add(e) | SetChange::Remove(e) => e,
        }
    }

    /// Everything the change had seen, itself included.
    pub fn version(&self) -> VersionVector {
        let mut v = self.base.clone();
        v.set(&self.actor, self.last());
        v
    }
}

/// Whether a change spanning `actor` dots `first..=last` of a record with
/// `members` members ships the whole state: small records always do, big
/// ones when the dots cross a multiple of the size rounded up to a power of
/// two.
pub fn ships_whole(members: usize, members_min: usize, first: u64, last: u64) -> bool {
    if members < members_min.max(1) {
        return true;
    }
    let period = members.next_power_of_two() as u64;
    first.saturating_sub(1) / period != last / period
}

impl State {
    /// What the log carries for `op`, just applied to this state by `actor`
    /// when the version before was `base`: a delta, or `None` for the whole
    /// state. `members_min` is [`DELTA_MEMBERS_MIN`] outside tests.
    pub fn delta_of(
        &self,
        base: &VersionVector,
        op: &Op,
        actor: &str,
        members_min: usize,
    ) -> Option<State> {
        let last = self.version().get(actor);
        match (self, op) {
            (State::OrSet { set, stamp }, Op::Add(elements) | Op::Remove(elements)) => {
                let add = matches!(op, Op::Add(_));
                let first = if add { base.get(actor) + 1 } else { last };
                if last <= base.get(actor) || ships_whole(set.len(), members_min, first, last) {
                    return None;
                }
                let change = if add {
                    SetChange::Add(elements.clone())
                } else {
                    SetChange::Remove(elements.clone())
                };
                debug_assert_eq!(first + (if add { elements.len() as u64 } else { 1 }) - 1, last);
                Some(State::OrSetDelta(OrSetDelta {
                    actor: actor.to_owned(),
                    first,
                    base: base.clone(),
                    change,
                    stamp: stamp.clone(),
                }))
            }
            (State::LwwFields(f), Op::Patch(changes)) => {
                if ships_whole(f.fields().len(), members_min, last, last) {
                    return None;
                }
                Some(State::LwwFieldsPart(f.part(changes.keys())))
            }
            _ => None,
        }
    }

    /// Members of an `or-set` (elements) or `lww-fields` record (fields,
    /// removed ones included: they are kept); 0 for the other types.
    pub fn members(&self) -> usize {
        match self {
            State::OrSet { set, .. } => set.len(),
            State::LwwFields(f) => f.fields().len(),
            _ => 0,
        }
    }

    /// This record restricted to the members `delta` touches (the whole
    /// record when it is not a delta): what a conflict with a delta shows,
    /// bounded by the change rather than by the record.
    pub(crate) fn touched_by(&self, delta: &State) -> State {
        match (self, delta) {
            (State::OrSet { set, stamp }, State::OrSetDelta(d)) => {
                State::OrSet { set: set.only(d.elements()), stamp: stamp.clone() }
            }
            (State::LwwFields(f), State::LwwFieldsPart(p)) => {
                State::LwwFields(f.part(p.fields().keys()))
            }
            _ => self.clone(),
        }
    }

    /// Whether this is a delta (a log entry's), not a record's whole state.
    pub fn is_delta(&self) -> bool {
        matches!(self, State::OrSetDelta(_) | State::LwwFieldsPart(_))
    }
}

/// The first byte of a delta's encoding (postcard writes an enum's variant
/// index first, as one byte below 128): what log compaction reads to tell a
/// delta from a whole state without decoding it.
pub const DELTA_TAGS: [u8; 2] = [6, 7];
