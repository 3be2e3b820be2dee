//! `Engine`: one region's identity and keys, and the batch decision. A batch
//! is a list of commands in queue order; `plan` fetches every record they
//! touch in one read, decides each command in order against that view (so a
//! later command sees what an earlier one wrote), and returns the effects to
//! commit and one outcome per command. Outcomes are answered only after the
//! effects are durable (unless `Faults::ack_before_durable` breaks that on
//! purpose, for the simulation).

use std::sync::Arc;

use tandem_clock::HlcClock;
use tandem_config::{Config, ConflictPolicy, EntityConfig, WritePolicy};
use tandem_merge::MergeKind;

use crate::analytics::Pseudonymizer;
use crate::apply::{ApplyReport, RemoteBatch};
use crate::error::{Refusal, StoreError};
use crate::faults::Faults;
use crate::model::SUBJECT_ENTITY;
use crate::seal::{Sealer, SEALED_ENTITY};
use crate::store::{BatchView, Effects, RecordKey, Store};
use crate::write::{Ack, LocalWrite};

/// One region's engine.
#[derive(Debug)]
pub struct Engine {
    pub config: Arc<Config>,
    pub region: String,
    pub jurisdiction: String,
    /// The name this region's dots and counter slots are written under: the
    /// region's name, or `<region>+<incarnation>` after a restore from backup,
    /// so a restored region never reuses a dot it handed out before.
    pub actor: String,
    /// This jurisdiction's pseudonym key, for analytics projections.
    pub pseudonymizer: Option<Pseudonymizer>,
    /// Keys for sealed transfers out of this region's jurisdiction.
    pub sealer: Sealer,
    pub faults: Faults,
    /// Records of a non-personal type with at least this many members ship
    /// deltas (`tandem_merge::delta`); a simulation lowers it to exercise them.
    pub delta_members_min: usize,
}

/// Work for the writer.
#[derive(Debug, Clone)]
pub enum Command {
    Local(LocalWrite),
    /// Local writes that apply together or not at all (MULTI ... EXEC).
    Transaction(Vec<LocalWrite>),
    Apply(RemoteBatch),
}

/// What one command came to.
#[derive(Debug, Clone)]
pub enum Outcome {
    Local(Result<Ack, Refusal>),
    /// Every write's acknowledgement, or the first refusal (nothing applied).
    Transaction(Result<Vec<Ack>, Refusal>),
    Apply(ApplyReport),
}

/// A decided batch.
#[derive(Debug, Clone)]
pub struct Plan {
    /// One per command, in order.
    pub outcomes: Vec<Outcome>,
    pub effects: Effects,
    /// Answer before the effects are durable (a deliberate bug, see `Faults`).
    pub reply_before_commit: bool,
}

/// The entity type of the subject registry: `lww`, written anywhere.
pub fn subject_entity() -> EntityConfig {
    EntityConfig {
        merge: MergeKind::Lww,
        data_class: String::new(),
        personal: false,
        subjects: false,
        writes: WritePolicy::AnyRegion,
        conflicts: ConflictPolicy::Allow,
        analytics: None,
    }
}

impl Engine {
    /// An engine for `region` of `config`, without faults.
    pub fn new(config: Arc<Config>, region: &str, actor: &str) -> Engine {
        let jurisdiction = config.jurisdiction_of(region).expect("a configured region").to_owned();
        Engine {
            config,
            region: region.to_owned(),
            jurisdiction,
            actor: actor.to_owned(),
            pseudonymizer: None,
            sealer: Sealer::default(),
            faults: Faults::NONE,
            delta_members_min: tandem_merge::DELTA_MEMBERS_MIN,
        }
    }

    /// The entity type of `entity` (the reserved ones included), if any.
    pub fn entity(&self, entity: &str) -> Option<EntityConfig> {
        match entity {
            SUBJECT_ENTITY => Some(subject_entity()),
            _ => self.config.entity(entity).cloned(),
        }
    }

    /// The merge type a stored or replicated record of `entity` must have.
    pub fn merge_kind(&self, entity: &str) -> Option<MergeKind> {
        match entity {
            SUBJECT_ENTITY | SEALED_ENTITY => Some(MergeKind::Lww),
            _ => self.config.entity(entity).map(|e| e.merge),
        }
    }

    /// Every record a batch of `cmds` will read, so they can be fetched at once.
    pub fn keys_of(&self, cmds: &[Command]) -> Vec<RecordKey> {
        let mut keys = Vec::new();
        for cmd in cmds {
            match cmd {
                Command::Local(w) => self.write_keys(w, &mut keys),
                Command::Transaction(ws) => ws.iter().for_each(|w| self.write_keys(w, &mut keys)),
                Command::Apply(a) => {
                    keys.extend(a.entries.iter().map(|e| (e.entity.clone(), e.id.clone())));
                }
            }
        }
        keys
    }

    /// Local writes as one: each decided over the ones before it; at the
    /// first refusal every put of the transaction is undone.
    fn transaction(
        &self,
        view: &mut BatchView<'_>,
        clock: &HlcClock,
        writes: &[LocalWrite],
    ) -> Result<Result<Vec<Ack>, Refusal>, StoreError> {
        let mark = view.mark();
        let mut acks = Vec::with_capacity(writes.len());
        for w in writes {
            match self.local_write(view, clock, w)? {
                Ok(ack) => acks.push(ack),
                Err(refusal) => {
                    view.rollback(mark);
                    return Ok(Err(refusal));
                }
            }
        }
        Ok(Ok(acks))
    }

    /// Decide a batch.
    pub fn plan(
        &self,
        store: &dyn Store,
        clock: &HlcClock,
        cmds: &[Command],
    ) -> Result<Plan, StoreError> {
        self.plan_over(store, &[], clock, cmds)
    }

    /// Decide a batch as if the effects of `pending` (batches decided
    /// before it, not durable yet, oldest first) were already stored.
    pub fn plan_over(
        &self,
        store: &dyn Store,
        pending: &[Arc<Effects>],
        clock: &HlcClock,
        cmds: &[Command],
    ) -> Result<Plan, StoreError> {
        let mut view = BatchView::fetch_over(store, pending, self.keys_of(cmds))?;
        let mut outcomes = Vec::with_capacity(cmds.len());
        for cmd in cmds {
            outcomes.push(match cmd {
                Command::Local(w) => Outcome::Local(self.local_write(&mut view, clock, w)?),
                Command::Transaction(ws) => {
                    Outcome::Transaction(self.transaction(&mut view, clock, ws)?)
                }
                Command::Apply(a) => Outcome::Apply(self.apply_remote(&mut view, clock, a)?),
            });
        }
        assert_eq!(outcomes.len(), cmds.len(), "one outcome per command");
        Ok(Plan {
            outcomes,
            effects: view.into_effects(),
            reply_before_commit: self.faults.ack_before_durable,
        })
    }
}
