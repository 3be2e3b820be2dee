//! A local write, decided: the type accepts the operation, the type is not a
//! read-only projection, the region may take it (residency and pinning,
//! against this region's replica of the subject registry), a subject is not
//! moved out of its jurisdiction, then the operation applies at a fresh HLC
//! under the region's actor, and the new state is stored and logged as this
//! region's own change. A removal that changes nothing is answered without a
//! log entry. A type with an analytics projection updates its projection in
//! the same batch, so the two never disagree.

use tandem_clock::{Hlc, HlcClock, VersionVector};
use tandem_merge::{MergeKind, Op, State};

use crate::engine::Engine;
use crate::error::{Refusal, StoreError};
use crate::model::{ChangeOrigin, StoredRecord, SUBJECT_ENTITY};
use crate::store::{BatchView, RecordKey};

/// A client's write, validated for shape by the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalWrite {
    pub entity: String,
    pub id: String,
    pub op: Op,
    /// The home region this write stands in for, as the router marked it
    /// (`X-Tandem-Failover`); honoured only for that home, inside its
    /// jurisdiction.
    pub failover_for: Option<String>,
    /// Apply only if the record is absent (`Some(false)`) or present
    /// (`Some(true)`), decided in the writer's batch (`SET NX`/`XX`).
    pub only_if_present: Option<bool>,
    /// Apply only if the record has no live member (an `lww-fields` field)
    /// of this name, decided in the writer's batch (`HSETNX`).
    pub only_if_member_absent: Option<String>,
}

impl LocalWrite {
    pub fn new(entity: &str, id: &str, op: Op) -> LocalWrite {
        LocalWrite {
            entity: entity.to_owned(),
            id: id.to_owned(),
            op,
            failover_for: None,
            only_if_present: None,
            only_if_member_absent: None,
        }
    }
}

/// What a durable local write answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub hlc: Hlc,
    pub version: VersionVector,
    /// The index of its put in the batch's effects (`None`: nothing changed).
    pub put: Option<usize>,
    /// What the write found and left, for answers that report it (the Redis
    /// protocol's replies).
    pub outcome: Outcome,
}

/// What a local write found and left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The visible value before, as JSON text (`None`: absent).
    pub previous: Option<String>,
    /// Members added or removed (`State::members_changed`).
    pub members_changed: usize,
    /// A counter's total after the write.
    pub total: Option<i64>,
    /// `false` when `only_if_present` did not hold: nothing was written.
    pub applied: bool,
    /// The record's expiry before the write (HLC wall-clock ms), when it
    /// was live and expiring.
    pub expiry_before_ms: Option<u64>,
}

/// The home region recorded in a subject registry record, if any.
pub fn home_region_of(rec: &StoredRecord) -> Option<String> {
    let v = rec.state.value()?;
    v.get("home_region")?.as_str().map(str::to_owned)
}

impl Engine {
    pub(crate) fn write_keys(&self, w: &LocalWrite, keys: &mut Vec<RecordKey>) {
        keys.push((w.entity.clone(), w.id.clone()));
        let Some(cfg) = self.entity(&w.entity) else { return };
        if cfg.subjects {
            if let Some(subject) = tandem_config::subject_of(&w.id) {
                keys.push((SUBJECT_ENTITY.to_owned(), subject.to_owned()));
            }
        }
        if let (Some(p), Some(ps)) = (&cfg.analytics, &self.pseudonymizer) {
            if let Some(pid) = ps.projection_id(&w.id) {
                keys.push((p.into.clone(), pid));
            }
        }
    }

    /// Decide one local write.
    pub fn local_write(
        &self,
        view: &mut BatchView<'_>,
        clock: &HlcClock,
        w: &LocalWrite,
    ) -> Result<Result<Ack, Refusal>, StoreError> {
        let Some(cfg) = self.entity(&w.entity) else {
            return Ok(Err(Refusal::InvalidOp(format!("unknown entity type `{}`", w.entity))));
        };
        if !w.op.allowed_for(cfg.merge) {
            return Ok(Err(Refusal::WrongMergeType {
                entity: w.entity.clone(),
                kind: cfg.merge,
                op: w.op.name(),
            }));
        }
        if self.config.is_projection(&w.entity) {
            return Ok(Err(Refusal::ReadOnlyProjection { entity: w.entity.clone() }));
        }
        if cfg.subjects {
            let subject = tandem_config::subject_of(&w.id);
            let home = match subject {
                Some(s) => view.get(SUBJECT_ENTITY, s)?.as_ref().and_then(home_region_of),
                None => None,
            };
            if let Err(r) = crate::residency::check_write(
                &self.config,
                &self.region,
                &w.entity,
                &cfg,
                subject,
                home.as_deref(),
                w.failover_for.as_deref(),
            ) {
                return Ok(Err(r));
            }
        }
        let current = view.take(&w.entity, &w.id)?;
        if w.entity == SUBJECT_ENTITY {
            if let Err(r) = self.check_move(&w.id, current.as_ref(), &w.op) {
                return Ok(Err(r));
            }
        }
        let projected = match (&cfg.analytics, &self.pseudonymizer) {
            (None, _) => None,
            (Some(p), Some(ps)) => Some((p, ps)),
            (Some(_), None) => {
                return Ok(Err(Refusal::NoPseudonymKey { entity: w.entity.clone() }));
            }
        };
        let mut state = current.map(|r| r.state).unwrap_or_else(|| State::new(cfg.merge));
        let hlc = clock.now();
        // An expired record is absent to every write's condition and answer.
        let present = state.is_live_at(hlc.wall_ms);
        let visible = || present.then(|| state.value_json()).flatten();
        let member_taken =
            w.only_if_member_absent.as_ref().is_some_and(|m| present && state.has_member(m));
        if member_taken || w.only_if_present.is_some_and(|want| want != present) {
            let outcome = Outcome { previous: visible(), ..Outcome::default() };
            return Ok(Ok(Ack { hlc, version: state.version(), put: None, outcome }));
        }
        let writes_value = matches!(w.op, Op::Put(_) | Op::PutKeepExpiry(_) | Op::PutExpiring(..));
        let previous = writes_value.then(visible).flatten();
        let expiry_before_ms = present.then(|| state.expires_at_ms()).flatten();
        // SET KEEPTTL of an absent (or expired) record keeps no expiry.
        let fresh;
        let op = match (&w.op, present) {
            (Op::PutKeepExpiry(v), false) => {
                fresh = Op::Put(v.clone());
                &fresh
            }
            (op, _) => op,
        };
        let members_changed = State::members_changed(&state, op);
        // Removing what is not there changes nothing: answer without logging a change.
        let may_be_noop = matches!(w.op, Op::Remove(_) | Op::Delete);
        let before = may_be_noop.then(|| state.clone());
        let ships_deltas =
            !cfg.personal && matches!(cfg.merge, MergeKind::OrSet | MergeKind::LwwFields);
        let base = ships_deltas.then(|| state.version());
        if let Err(e) = state.apply_as(op, &self.actor, &self.region, hlc) {
            let mut r = Refusal::from(e);
            if let Refusal::WrongMergeType { entity, .. } = &mut r {
                entity.clone_from(&w.entity);
            }
            return Ok(Err(r));
        }
        let outcome = Outcome {
            previous,
            members_changed,
            total: state.counter_total(),
            applied: true,
            expiry_before_ms,
        };
        if before.as_ref() == Some(&state) {
            return Ok(Ok(Ack { hlc, version: state.version(), put: None, outcome }));
        }
        // A record's whole state must fit one replication batch, or it could
        // never replicate whole (a big record's periodic whole state).
        if ships_deltas && state.members() >= self.delta_members_min {
            let bytes = postcard::experimental::serialized_size(&state).unwrap_or(usize::MAX);
            let limit = self.config.replication.batch_bytes_max;
            if bytes > limit {
                return Ok(Err(Refusal::RecordTooLarge { entity: w.entity.clone(), bytes, limit }));
            }
        }
        let now_ms = clock.physical_ms();
        let version = state.version();
        let delta =
            base.and_then(|base| state.delta_of(&base, op, &self.actor, self.delta_members_min));
        // Same batch: the projection can never disagree with its source.
        let projection = projected.and_then(|(p, ps)| {
            let pid = ps.projection_id(&w.id)?;
            let subject = tandem_config::subject_of(&w.id).unwrap_or("");
            Some((p, pid, crate::analytics::projection_op(&state, p, &ps.pseudonym(subject))))
        });
        let record = StoredRecord { state, updated_at_ms: now_ms };
        let origin = self.own_origin(now_ms);
        let put = view.put_logging(&w.entity, &w.id, record, origin.clone(), delta);
        if let Some((p, pid, op)) = projection {
            let current = view.get(&p.into, &pid)?;
            let mut pstate =
                current.map(|r| r.state).unwrap_or_else(|| State::new(MergeKind::LwwFields));
            let before = pstate.clone();
            pstate
                .apply_as(&op, &self.actor, &self.region, clock.now())
                .expect("projection ops are valid");
            if pstate != before {
                view.put(
                    &p.into,
                    &pid,
                    StoredRecord { state: pstate, updated_at_ms: now_ms },
                    origin,
                );
            }
        }
        Ok(Ok(Ack { hlc, version, put: Some(put), outcome }))
    }

    /// A change first written here, at local time `now_ms`.
    pub(crate) fn own_origin(&self, now_ms: u64) -> ChangeOrigin {
        ChangeOrigin {
            origin: self.region.clone(),
            origin_seq: None,
            committed_at_ms: now_ms,
            logged_at_ms: now_ms,
        }
    }

    /// A subject registration may move a subject within its jurisdiction only:
    /// its personal data could not follow it out.
    #[allow(clippy::result_large_err)] // refusals are the cold path: not worth a box
    fn check_move(
        &self,
        subject: &str,
        current: Option<&StoredRecord>,
        op: &Op,
    ) -> Result<(), Refusal> {
        let Some(home) = current.and_then(home_region_of) else { return Ok(()) };
        let Op::Put(value) = op else { return Ok(()) };
        let target: Option<String> = serde_json::from_str::<serde_json::Value>(value)
            .ok()
            .and_then(|v| v.get("home_region")?.as_str().map(str::to_owned));
        let Some(target) = target else { return Ok(()) };
        let from = self.config.jurisdiction_of(&home).unwrap_or("");
        let to = self.config.jurisdiction_of(&target).unwrap_or("");
        if from != to {
            return Err(Refusal::CrossJurisdictionMove {
                subject: subject.to_owned(),
                home: home.clone(),
                from: from.to_owned(),
                to: to.to_owned(),
            });
        }
        Ok(())
    }
}
