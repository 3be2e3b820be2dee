//! `State`: the merge state of one record, whichever its type, with the
//! operations the API accepts (`Op`), their application at the local region, and
//! the merge of a remote state that reports conflicts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tandem_clock::{Causality, Hlc, VersionVector};

use crate::conflict::{Conflict, ConflictSide, ConflictType, MergeOutcome, Resolution, Winner};
use crate::counter::{CounterOverflow, GCounter, PnCounter};
use crate::delta::{NotYet, OrSetDelta, SetChange};
use crate::lww::{ExpiryChange, Lww, LwwExpiring};
use crate::lww_fields::LwwFields;
use crate::or_set::OrSet;
use crate::{MergeKind, Stamp};

/// An operation on a record, as the API receives it. JSON values arrive as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `lww`: replace the value (canonical JSON text).
    Put(String),
    /// `lww-fields`: set fields (`Some`) or remove them (`None`).
    Patch(BTreeMap<String, Option<String>>),
    /// Counters.
    Incr(u64),
    /// `pn-counter`.
    Decr(u64),
    /// `or-set`.
    Add(Vec<String>),
    /// `or-set`.
    Remove(Vec<String>),
    /// `lww`, `lww-fields`, `or-set`.
    Delete,
    /// `lww`: replace the value and keep its expiry (`SET ... KEEPTTL`).
    PutKeepExpiry(String),
    /// `lww`: replace the value, expiring at an HLC wall-clock time in ms
    /// (`SET ... EX`).
    PutExpiring(String, u64),
    /// `lww`: expire at an HLC wall-clock time in ms (`EXPIRE`).
    Expire(u64),
    /// `lww`: no longer expire (`PERSIST`).
    Persist,
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Put(_) => "put",
            Op::Patch(_) => "patch",
            Op::Incr(_) => "incr",
            Op::Decr(_) => "decr",
            Op::Add(_) => "add",
            Op::Remove(_) => "remove",
            Op::Delete => "delete",
            Op::PutKeepExpiry(_) | Op::PutExpiring(..) => "put",
            Op::Expire(_) => "expire",
            Op::Persist => "persist",
        }
    }

    /// Whether a record of `kind` accepts this operation.
    pub fn allowed_for(&self, kind: MergeKind) -> bool {
        matches!(
            (self, kind),
            (
                Op::Put(_)
                    | Op::PutKeepExpiry(_)
                    | Op::PutExpiring(..)
                    | Op::Expire(_)
                    | Op::Persist,
                MergeKind::Lww
            ) | (Op::Patch(_), MergeKind::LwwFields)
                | (Op::Incr(_), MergeKind::GCounter | MergeKind::PnCounter)
                | (Op::Decr(_), MergeKind::PnCounter)
                | (Op::Add(_) | Op::Remove(_), MergeKind::OrSet)
                | (Op::Delete, MergeKind::Lww | MergeKind::LwwFields | MergeKind::OrSet)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("operation `{op}` does not apply to a `{kind}` record")]
    WrongMergeType { kind: MergeKind, op: &'static str },
    #[error("cannot merge a `{remote}` state into a `{local}` state")]
    KindMismatch { local: MergeKind, remote: MergeKind },
    #[error("counter would overflow")]
    CounterOverflow,
    #[error("invalid operation: {0}")]
    InvalidOp(&'static str),
    /// A delta that needs changes this replica has not seen yet: give it
    /// again once they are here (`crate::delta`).
    #[error("{}", NotYet)]
    NotYet,
}

impl From<CounterOverflow> for MergeError {
    fn from(_: CounterOverflow) -> Self {
        MergeError::CounterOverflow
    }
}

/// The merge state of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Lww(Lww),
    LwwFields(LwwFields),
    GCounter {
        counter: GCounter,
        ops: VersionVector,
        stamp: Stamp,
    },
    PnCounter {
        counter: PnCounter,
        ops: VersionVector,
        stamp: Stamp,
    },
    OrSet {
        set: OrSet,
        stamp: Stamp,
    },
    /// `lww` once an expiry was set (a variant of its own, after the others,
    /// so that every record written before expiry existed decodes as it was).
    LwwExpiring(LwwExpiring),
    /// A log entry's delta of a big `or-set` (`crate::delta`); never a record's state.
    OrSetDelta(OrSetDelta),
    /// A log entry's delta of a big `lww-fields` record: the changed fields.
    LwwFieldsPart(LwwFields),
}

impl State {
    pub fn new(kind: MergeKind) -> State {
        match kind {
            MergeKind::Lww => State::Lww(Lww::default()),
            MergeKind::LwwFields => State::LwwFields(LwwFields::default()),
            MergeKind::GCounter => State::GCounter {
                counter: GCounter::default(),
                ops: VersionVector::new(),
                stamp: Stamp::default(),
            },
            MergeKind::PnCounter => State::PnCounter {
                counter: PnCounter::default(),
                ops: VersionVector::new(),
                stamp: Stamp::default(),
            },
            MergeKind::OrSet => State::OrSet { set: OrSet::default(), stamp: Stamp::default() },
        }
    }

    pub fn kind(&self) -> MergeKind {
        match self {
            State::Lww(_) | State::LwwExpiring(_) => MergeKind::Lww,
            State::LwwFields(_) | State::LwwFieldsPart(_) => MergeKind::LwwFields,
            State::GCounter { .. } => MergeKind::GCounter,
            State::PnCounter { .. } => MergeKind::PnCounter,
            State::OrSet { .. } | State::OrSetDelta(_) => MergeKind::OrSet,
        }
    }

    /// Apply a local operation made at `region` at time `hlc`. The resulting
    /// version causally follows everything this state had seen. On error the
    /// state is unchanged.
    pub fn apply(&mut self, op: &Op, region: &str, hlc: Hlc) -> Result<(), MergeError> {
        self.apply_as(op, region, region, hlc)
    }

    /// As `apply`, with the dots, counter slots and version entries named by
    /// `actor` (a region's incarnation: a region restored from a backup writes
    /// as a new actor, so it can never reuse a dot it handed out before) and the
    /// stamp naming `region`.
    pub fn apply_as(
        &mut self,
        op: &Op,
        actor: &str,
        region: &str,
        hlc: Hlc,
    ) -> Result<(), MergeError> {
        if !op.allowed_for(self.kind()) {
            return Err(MergeError::WrongMergeType { kind: self.kind(), op: op.name() });
        }
        let here = Stamp::new(hlc, region);
        let region = actor;
        if matches!(op, Op::PutExpiring(..) | Op::Expire(_) | Op::Persist) {
            self.make_expiring();
        }
        match (self, op) {
            (State::Lww(r), Op::Put(v) | Op::PutKeepExpiry(v)) => {
                r.write_as(Some(v.clone()), region, here);
            }
            (State::LwwExpiring(e), op) => {
                let (value, expiry) = match op {
                    Op::Put(v) => (Some(Some(v.clone())), ExpiryChange::Clear),
                    Op::Delete => (Some(None), ExpiryChange::Clear),
                    Op::PutKeepExpiry(v) => (Some(Some(v.clone())), ExpiryChange::Keep),
                    Op::PutExpiring(v, at) => (Some(Some(v.clone())), ExpiryChange::At(*at)),
                    Op::Expire(at) => (None, ExpiryChange::At(*at)),
                    Op::Persist => (None, ExpiryChange::Clear),
                    other => unreachable!("lww accepted {}", other.name()),
                };
                e.write_as(value, expiry, region, here);
            }
            (State::Lww(r), Op::Delete) => r.write_as(None, region, here),
            (State::LwwFields(f), Op::Patch(changes)) => {
                if changes.is_empty() {
                    return Err(MergeError::InvalidOp("a patch needs at least one field"));
                }
                f.write_as(changes, region, here);
            }
            (State::LwwFields(f), Op::Delete) => f.delete_as(region, here),
            (State::GCounter { counter, ops, stamp }, Op::Incr(by)) => {
                nonzero(*by)?;
                counter.increment(region, *by)?;
                ops.increment(region);
                stamp.join(&here);
            }
            (State::PnCounter { counter, ops, stamp }, Op::Incr(by)) => {
                nonzero(*by)?;
                counter.increment(region, *by)?;
                ops.increment(region);
                stamp.join(&here);
            }
            (State::PnCounter { counter, ops, stamp }, Op::Decr(by)) => {
                nonzero(*by)?;
                counter.decrement(region, *by)?;
                ops.increment(region);
                stamp.join(&here);
            }
            (State::OrSet { set, stamp }, Op::Add(elements)) => {
                if elements.is_empty() {
                    return Err(MergeError::InvalidOp("add needs at least one element"));
                }
                set.add(elements, region);
                stamp.join(&here);
            }
            (State::OrSet { set, stamp }, Op::Remove(elements)) => {
                if elements.is_empty() {
                    return Err(MergeError::InvalidOp("remove needs at least one element"));
                }
                if set.remove(elements, region) {
                    stamp.join(&here);
                }
            }
            (State::OrSet { set, stamp }, Op::Delete) => {
                if set.clear(region) {
                    stamp.join(&here);
                }
            }
            (state, op) => unreachable!("{} accepted {}", state.kind(), op.name()),
        }
        Ok(())
    }

    /// Merge a remote replica's state of the same record into this one. The
    /// result is the same whatever the order and multiplicity of merges. A
    /// conflict is reported exactly when the two versions were concurrent and
    /// their values differed (counters never conflict: every increment counts).
    pub fn merge(&mut self, remote: &State) -> Result<MergeOutcome, MergeError> {
        if self.is_delta() {
            return Err(MergeError::InvalidOp("a delta is not a record's state"));
        }
        if self.kind() != remote.kind() {
            return Err(MergeError::KindMismatch { local: self.kind(), remote: remote.kind() });
        }
        // Counters never conflict, so they skip the causal comparison and the
        // snapshot taken to describe a conflict.
        let can_conflict = !matches!(self.kind(), MergeKind::GCounter | MergeKind::PnCounter);
        let concurrent =
            can_conflict && self.version().compare(&remote.version()) == Causality::Concurrent;
        // A conflict with a delta shows the members it touched, not the
        // whole record (which may have 100,000 of them).
        let before = concurrent.then(|| self.touched_by(remote));
        if matches!(remote, State::LwwExpiring(e) if e.has_expiry()) {
            self.make_expiring();
        }
        let changed = match (&mut *self, remote) {
            (State::Lww(a), State::Lww(b)) => a.merge(b),
            (State::LwwExpiring(a), State::LwwExpiring(b)) => a.merge(b),
            (State::LwwExpiring(a), State::Lww(b)) => a.lww.merge(b),
            (State::Lww(a), State::LwwExpiring(b)) => a.merge(&b.lww),
            (State::LwwFields(a), State::LwwFields(b) | State::LwwFieldsPart(b)) => a.merge(b),
            (
                State::GCounter { counter, ops, stamp },
                State::GCounter { counter: c2, ops: o2, stamp: s2 },
            ) => {
                let changed = counter.merge(c2);
                ops.join(o2);
                stamp.join(s2);
                changed
            }
            (
                State::PnCounter { counter, ops, stamp },
                State::PnCounter { counter: c2, ops: o2, stamp: s2 },
            ) => {
                let changed = counter.merge(c2);
                ops.join(o2);
                stamp.join(s2);
                changed
            }
            (State::OrSet { set, stamp }, State::OrSet { set: s2, stamp: st2 }) => {
                let changed = set.merge(s2);
                stamp.join(st2);
                changed
            }
            (State::OrSet { set, stamp }, State::OrSetDelta(d)) => {
                let changed = set.apply_delta(d).map_err(|NotYet| MergeError::NotYet)?;
                stamp.join(&d.stamp);
                changed
            }
            _ => unreachable!("kinds checked above"),
        };
        let conflict = before.and_then(|local| match remote.is_delta() {
            true => describe_conflict(&local, remote, &self.touched_by(remote)),
            false => describe_conflict(&local, remote, self),
        });
        Ok(MergeOutcome { changed, conflict })
    }

    /// The materialized value as JSON text; `None` when the record is absent
    /// (never written, or deleted).
    pub fn value_json(&self) -> Option<String> {
        match self {
            State::Lww(r) => r.value().map(str::to_owned),
            State::LwwExpiring(e) => e.lww.value().map(str::to_owned),
            State::LwwFields(f) | State::LwwFieldsPart(f) => {
                let mut out = String::from("{");
                let mut any = false;
                for (k, v) in f.live() {
                    if any {
                        out.push(',');
                    }
                    any = true;
                    out.push_str(&serde_json::to_string(k).expect("string encodes"));
                    out.push(':');
                    out.push_str(v);
                }
                out.push('}');
                any.then_some(out)
            }
            State::GCounter { counter, ops, .. } => {
                (!ops.is_empty()).then(|| clamp_i64(counter.total()).to_string())
            }
            State::PnCounter { counter, ops, .. } => {
                (!ops.is_empty()).then(|| clamp_i64(counter.total()).to_string())
            }
            // An empty set is an absent record: removing the last element and
            // deleting the set are the same thing.
            State::OrSet { set, .. } => (!set.is_empty()).then(|| {
                serde_json::to_string(&set.elements().collect::<Vec<_>>()).expect("encodes")
            }),
            // A delta's value is what it added (a remove has none).
            State::OrSetDelta(d) => match &d.change {
                SetChange::Add(e) => {
                    let sorted: std::collections::BTreeSet<&String> = e.iter().collect();
                    Some(serde_json::to_string(&sorted).expect("encodes"))
                }
                SetChange::Remove(_) => None,
            },
        }
    }

    /// Whether the record is present (written and not deleted).
    pub fn is_present(&self) -> bool {
        match self {
            State::Lww(r) => r.value().is_some(),
            State::LwwExpiring(e) => e.lww.value().is_some(),
            State::LwwFields(f) | State::LwwFieldsPart(f) => f.live().next().is_some(),
            State::GCounter { ops, .. } | State::PnCounter { ops, .. } => !ops.is_empty(),
            State::OrSet { set, .. } => !set.is_empty(),
            State::OrSetDelta(d) => matches!(d.change, SetChange::Add(_)),
        }
    }

    /// Whether `member` is a live element (`or-set`) or field (`lww-fields`).
    pub fn has_member(&self, member: &str) -> bool {
        match self {
            State::OrSet { set, .. } => set.contains(member),
            State::LwwFields(f) => f.fields().get(member).is_some_and(|r| r.value().is_some()),
            _ => false,
        }
    }

    /// A counter's total (`None` for the other types).
    pub fn counter_total(&self) -> Option<i64> {
        match self {
            State::GCounter { counter, .. } => Some(clamp_i64(counter.total())),
            State::PnCounter { counter, .. } => Some(clamp_i64(counter.total())),
            _ => None,
        }
    }

    /// How many members (elements, fields) `op` will add or remove when
    /// applied to `before`; for a delete, 1 when the record is present.
    pub fn members_changed(before: &State, op: &Op) -> usize {
        match op {
            Op::Add(elements) => {
                let mut seen = std::collections::BTreeSet::new();
                elements.iter().filter(|e| seen.insert(*e) && !before.has_member(e)).count()
            }
            Op::Remove(elements) => {
                let mut seen = std::collections::BTreeSet::new();
                elements.iter().filter(|e| seen.insert(*e) && before.has_member(e)).count()
            }
            Op::Patch(changes) => {
                changes.iter().filter(|(k, v)| before.has_member(k) != v.is_some()).count()
            }
            Op::Delete => usize::from(before.is_present()),
            Op::Put(_)
            | Op::Incr(_)
            | Op::Decr(_)
            | Op::PutKeepExpiry(_)
            | Op::PutExpiring(..)
            | Op::Expire(_)
            | Op::Persist => 0,
        }
    }

    /// When the record expires (HLC wall-clock ms); `None`: it does not.
    pub fn expires_at_ms(&self) -> Option<u64> {
        match self {
            State::LwwExpiring(e) => e.deadline_ms(),
            _ => None,
        }
    }

    /// Whether the record is present and not expired at `now_ms` (HLC
    /// wall-clock ms): what every read sees. An expired record reads as
    /// absent everywhere, and its state stays as a marker like a delete's.
    pub fn is_live_at(&self, now_ms: u64) -> bool {
        self.is_present() && self.expires_at_ms().is_none_or(|at| at > now_ms)
    }

    /// An `lww` record's state with room for an expiry.
    fn make_expiring(&mut self) {
        if let State::Lww(lww) = self {
            *self = State::LwwExpiring(LwwExpiring::from(std::mem::take(lww)));
        }
    }

    /// The materialized value as JSON.
    pub fn value(&self) -> Option<serde_json::Value> {
        self.value_json().map(|s| serde_json::from_str(&s).expect("stored JSON is valid"))
    }

    /// Everything this record has seen, as a version vector.
    pub fn version(&self) -> VersionVector {
        match self {
            State::Lww(r) => r.version(),
            State::LwwExpiring(e) => e.version(),
            State::LwwFields(f) | State::LwwFieldsPart(f) => f.version(),
            State::GCounter { ops, .. } | State::PnCounter { ops, .. } => ops.clone(),
            State::OrSet { set, .. } => set.version(),
            State::OrSetDelta(d) => d.version(),
        }
    }

    /// The stamp shown with the record: the visible version's for `lww`, the
    /// latest write's for the other types.
    pub fn stamp(&self) -> Stamp {
        match self {
            State::Lww(r) => r.stamp().cloned().unwrap_or_default(),
            State::LwwExpiring(e) => e.lww.stamp().cloned().unwrap_or_default(),
            State::LwwFields(f) | State::LwwFieldsPart(f) => f.stamp().cloned().unwrap_or_default(),
            State::GCounter { stamp, .. }
            | State::PnCounter { stamp, .. }
            | State::OrSet { stamp, .. } => stamp.clone(),
            State::OrSetDelta(d) => d.stamp.clone(),
        }
    }
}

fn nonzero(by: u64) -> Result<(), MergeError> {
    if by == 0 {
        return Err(MergeError::InvalidOp("`by` must be at least 1"));
    }
    Ok(())
}

fn clamp_i64(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

fn resolution_between(a: &Stamp, b: &Stamp) -> Resolution {
    if a.hlc == b.hlc {
        Resolution::RegionTiebreak
    } else {
        Resolution::HlcWins
    }
}

/// Describe the conflict between `local` (before the merge) and `remote`, whose
/// versions are concurrent, given the merged result. `None` when the values
/// were equal (concurrent but not different) or the type never conflicts.
fn describe_conflict(local: &State, remote: &State, merged: &State) -> Option<Conflict> {
    let local_value = local.value_json();
    let remote_value = remote.value_json();
    if local_value == remote_value {
        return None;
    }
    let merged_value = merged.value_json();
    let winner = if merged_value == local_value {
        Winner::Local
    } else if merged_value == remote_value {
        Winner::Remote
    } else {
        Winner::Merged
    };
    let side = |s: &State, v: Option<String>| ConflictSide { stamp: s.stamp(), value: v };
    let (conflict_type, resolution, field) = match (local, remote) {
        (State::Lww(_) | State::LwwExpiring(_), State::Lww(_) | State::LwwExpiring(_)) => {
            let ty = if local_value.is_none() || remote_value.is_none() {
                ConflictType::UpdateDelete
            } else {
                ConflictType::ConcurrentWrite
            };
            (ty, resolution_between(&local.stamp(), &remote.stamp()), None)
        }
        (State::LwwFields(a), State::LwwFields(b) | State::LwwFieldsPart(b)) => {
            // A field both sides wrote concurrently with different visible values.
            let clash = a.fields().iter().find_map(|(name, ra)| {
                let rb = b.fields().get(name)?;
                let (wa, wb) = (ra.winner()?, rb.winner()?);
                (ra.vv().compare(&rb.vv()) == Causality::Concurrent && wa.value != wb.value)
                    .then(|| (name.clone(), resolution_between(&wa.stamp, &wb.stamp)))
            });
            match clash {
                Some((name, res)) => (ConflictType::ConcurrentFieldWrite, res, Some(name)),
                None => (ConflictType::ConcurrentUpdate, Resolution::FieldsMerged, None),
            }
        }
        (State::OrSet { .. }, State::OrSet { .. } | State::OrSetDelta(_)) => {
            (ConflictType::ConcurrentUpdate, Resolution::AddWins, None)
        }
        // Counters: concurrent increments both count; nothing was resolved.
        _ => return None,
    };
    Some(Conflict {
        conflict_type,
        resolution,
        field,
        local: side(local, local_value),
        remote: side(remote, remote_value),
        winner,
        merged: merged_value,
    })
}
