#![allow(clippy::result_large_err)] // test helpers hand refusals back as they are
//! One engine over the in-memory store, with a manual clock: plan a batch,
//! commit it, look at what it did. Shared by the engine's tests.
#![allow(dead_code)]

use std::sync::Arc;

use tandem_clock::{HlcClock, ManualTime};
use tandem_config::Config;
use tandem_engine::apply::{ApplyReport, RemoteBatch};
use tandem_engine::write::{Ack, LocalWrite};
use tandem_engine::{Command, Engine, LogEntry, Outcome, Path, Plan, Refusal, Store};
use tandem_merge::Op;
use tandem_store::MemoryStore;

pub const T0: u64 = 1_800_000_000_000;

pub struct Region {
    pub engine: Engine,
    pub store: MemoryStore,
    pub time: ManualTime,
    pub clock: HlcClock,
}

impl Region {
    pub fn new(region: &str) -> Region {
        Region::with_config(Config::example(), region)
    }

    pub fn with_config(config: Config, region: &str) -> Region {
        let time = ManualTime::new(T0);
        let clock = HlcClock::new(Arc::new(time.clone()), 500);
        let mut engine = Engine::new(Arc::new(config), region, region);
        engine.pseudonymizer = Some(tandem_engine::analytics::Pseudonymizer::new([9; 32]));
        Region { engine, store: MemoryStore::new(), time, clock }
    }

    /// Plan `cmds`, commit, and return the plan.
    pub fn run(&self, cmds: Vec<Command>) -> Plan {
        let plan = self.engine.plan(&self.store, &self.clock, &cmds).expect("plans");
        self.store.commit(&plan.effects).expect("commits");
        self.time.advance_ms(1);
        plan
    }

    pub fn write(&self, entity: &str, id: &str, op: Op) -> Result<Ack, Refusal> {
        self.write_as(entity, id, op, None)
    }

    pub fn write_as(
        &self,
        entity: &str,
        id: &str,
        op: Op,
        failover: Option<&str>,
    ) -> Result<Ack, Refusal> {
        let plan = self.run(vec![local(entity, id, op, failover)]);
        match plan.outcomes.into_iter().next() {
            Some(Outcome::Local(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    pub fn register(&self, subject: &str, home: &str) {
        let v = serde_json::json!({ "home_region": home }).to_string();
        self.write("_subject", subject, Op::Put(v)).expect("registers");
    }

    pub fn apply(
        &self,
        peer: &str,
        path: Path,
        entries: Vec<LogEntry>,
        next_seq: u64,
    ) -> ApplyReport {
        let plan = self.run(vec![Command::Apply(RemoteBatch {
            peer: peer.into(),
            path,
            entries,
            continues_from: 0,
            next_seq,
        })]);
        match plan.outcomes.into_iter().next() {
            Some(Outcome::Apply(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    pub fn value(&self, entity: &str, id: &str) -> Option<serde_json::Value> {
        self.store.get(entity, id).unwrap().and_then(|r| r.state.value())
    }

    pub fn log(&self) -> Vec<LogEntry> {
        self.store.log_after(0, usize::MAX).unwrap()
    }
}

pub fn local(entity: &str, id: &str, op: Op, failover: Option<&str>) -> Command {
    Command::Local(LocalWrite {
        entity: entity.into(),
        id: id.into(),
        op,
        failover_for: failover.map(Into::into),
        only_if_present: None,
        only_if_member_absent: None,
    })
}

pub fn put(v: &str) -> Op {
    Op::Put(v.to_owned())
}

pub fn patch(field: &str, v: &str) -> Op {
    Op::Patch([(field.to_owned(), Some(v.to_owned()))].into_iter().collect())
}
