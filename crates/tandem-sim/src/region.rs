//! One simulated region: the product's engine (`tandem_engine::Engine`) over
//! the in-memory store (everything in it survives a crash, like the durable
//! store), with its hybrid logical clock over simulated, possibly skewed,
//! time. This file holds no replication logic of its own: local writes,
//! remote apply and what is served to a peer are `Engine::plan`,
//! `Engine::serve_direct` and `Engine::serve_forward`, executed the way the
//! node's writer and sender execute them (plan, commit, answer). The
//! simulation's deliberate bugs are `tandem_engine::Faults`, set on the engine.

use std::collections::BTreeMap;
use std::sync::Arc;

use tandem_clock::{HlcClock, ManualTime, TimeSource, VersionVector};
use tandem_config::Config;
use tandem_engine::apply::RemoteBatch;
use tandem_engine::receive::forward_have;
use tandem_engine::serve::{ForwardAsk, Served};
use tandem_engine::stability::{Report, Stability};
use tandem_engine::write::{home_region_of, LocalWrite};
use tandem_engine::{
    Command, Engine, Faults, LogEntry, Outcome, Refusal as EngineRefusal, Store, Timings,
    SUBJECT_ENTITY,
};
use tandem_merge::{Op, State};
use tandem_store::MemoryStore;

pub use tandem_engine::Path;

/// Milliseconds since the epoch at simulated time zero (so that a negative
/// clock skew stays positive).
pub const EPOCH_MS: u64 = 1_700_000_000_000;
/// Log entries read per forward request and per direct batch. The node reads
/// `protocol::FORWARD_SCAN_MAX` and `DIRECT_SCAN_MAX` (8192); the simulated
/// logs are short, so a smaller page exercises paging. It is the runtime's
/// read size, not a rule.
pub const FORWARD_SCAN_MAX: usize = 64;
pub const DIRECT_SCAN_MAX: usize = 64;

/// A write the region accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub region: String,
    pub version: VersionVector,
}

/// A write the region refused: status and error code, as the API answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
}

impl From<&EngineRefusal> for Refusal {
    fn from(r: &EngineRefusal) -> Refusal {
        let (status, code) = r.status_and_code();
        Refusal { status, code }
    }
}

/// What a batch of a peer's changes did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub changed: usize,
    /// Entries refused because this region may not hold them (`inbound_refused`).
    pub refused: Vec<(String, String)>,
    /// The batch stopped at a delta whose context is not here yet.
    pub waiting: bool,
}

pub struct Region {
    pub name: String,
    pub jurisdiction: String,
    /// Durable: records, the replication log, cursors.
    store: MemoryStore,
    engine: Engine,
    pub up: bool,
    pub skew_ms: i64,
    time: ManualTime,
    clock: HlcClock,
    /// Writes acknowledged but not yet durable (only under
    /// `Faults::ack_before_durable`): a crash loses them.
    pub unflushed: Vec<LocalWrite>,
    /// The stability horizon from the peers' acknowledgements (in memory,
    /// like the node's: a crash forgets it).
    stability: Stability,
    /// Every region of the world (for a fresh `Stability` after a crash).
    regions: Vec<String>,
}

impl Region {
    pub fn new(
        config: Arc<Config>,
        name: &str,
        skew_ms: i64,
        max_clock_offset_ms: u64,
        faults: Faults,
    ) -> Region {
        let time = ManualTime::new(EPOCH_MS);
        let clock = HlcClock::new(Arc::new(time.clone()), max_clock_offset_ms);
        let regions: Vec<String> = config.regions.iter().map(|r| r.name.clone()).collect();
        let mut engine = Engine::new(config, name, name);
        engine.faults = faults;
        // The workload's sets and field records are small: ship deltas from
        // the first member on, so every history exercises them.
        engine.delta_members_min = 1;
        let stability = new_stability(name, &regions, faults, EPOCH_MS);
        Region {
            name: name.to_owned(),
            jurisdiction: engine.jurisdiction.clone(),
            store: MemoryStore::new(),
            engine,
            up: true,
            skew_ms,
            time,
            clock,
            unflushed: Vec::new(),
            stability,
            regions,
        }
    }

    /// Advance this region's physical clock to simulated time `now_ms`.
    pub fn tick(&self, now_ms: u64) {
        self.time.set_ms(self.physical_at(now_ms));
    }

    pub fn physical_at(&self, now_ms: u64) -> u64 {
        (EPOCH_MS + now_ms).saturating_add_signed(self.skew_ms)
    }

    pub fn physical_ms(&self) -> u64 {
        self.clock.physical_ms()
    }

    /// A crash: the process dies. Durable state stays; the clock's memory
    /// (`HlcClock::last`) and anything not yet durable are gone.
    pub fn crash(&mut self) {
        self.up = false;
        self.unflushed.clear();
        self.stability =
            new_stability(&self.name, &self.regions, self.engine.faults, self.physical_ms());
    }

    /// Start again, possibly with another clock skew; the HLC restarts from
    /// physical time, as a restarted `tandem node` does.
    pub fn restart(&mut self, skew_ms: i64, max_clock_offset_ms: u64) {
        self.up = true;
        self.skew_ms = skew_ms;
        let time = ManualTime::new(self.time.now_ms());
        self.clock = HlcClock::new(Arc::new(time.clone()), max_clock_offset_ms);
        self.time = time;
    }

    /// Plan one command and commit it, as the node's writer does.
    fn execute(&mut self, cmd: Command) -> (Outcome, bool) {
        let plan =
            self.engine.plan(&self.store, &self.clock, &[cmd]).expect("the memory store reads");
        let early = plan.reply_before_commit;
        let outcome = plan.outcomes.into_iter().next().expect("one outcome");
        if !early {
            self.store.commit(&plan.effects).expect("the memory store commits");
        }
        (outcome, early)
    }

    /// A client write at this region (the API has validated its shape).
    pub fn local_write(
        &mut self,
        entity: &str,
        id: &str,
        op: &Op,
        failover_for: Option<&str>,
    ) -> Result<Ack, Refusal> {
        assert!(self.up, "a write reached a region that is down");
        let w = LocalWrite {
            entity: entity.to_owned(),
            id: id.to_owned(),
            op: op.clone(),
            failover_for: failover_for.map(str::to_owned),
            only_if_present: None,
            only_if_member_absent: None,
        };
        let (outcome, early) = self.execute(Command::Local(w.clone()));
        let Outcome::Local(result) = outcome else { unreachable!("a local outcome") };
        match result {
            Ok(ack) => {
                if early {
                    // Acknowledged before durable (a deliberate bug): it is
                    // made durable at the next flush, unless a crash comes first.
                    self.unflushed.push(w);
                }
                Ok(Ack { region: self.name.clone(), version: ack.version })
            }
            Err(r) => Err(Refusal::from(&r)),
        }
    }

    /// Make the writes acknowledged early durable (`Faults::ack_before_durable`).
    pub fn flush(&mut self) {
        for w in std::mem::take(&mut self.unflushed) {
            let plan =
                self.engine.plan(&self.store, &self.clock, &[Command::Local(w)]).expect("reads");
            self.store.commit(&plan.effects).expect("the memory store commits");
        }
    }

    /// Register a subject here (`PUT /v1/subjects/{s}` at its home).
    pub fn register(&mut self, subject: &str, home: &str) -> Ack {
        let value = serde_json::json!({ "home_region": home }).to_string();
        self.local_write(SUBJECT_ENTITY, subject, &Op::Put(value), None)
            .expect("a registration applies")
    }

    /// The direct-stream batch for `receiver` after its cursor `after`.
    pub fn serve_direct(
        &self,
        config: &Config,
        receiver: &str,
        after: u64,
    ) -> (Vec<LogEntry>, u64) {
        let page = self
            .store
            .log_page(
                after,
                DIRECT_SCAN_MAX,
                config.replication.batch_max,
                &mut self.engine.direct_scan(),
            )
            .expect("reads");
        let Served { entries, next_seq, .. } =
            self.engine.serve_direct(receiver, page, after, config.replication.batch_bytes_max);
        (entries, next_seq)
    }

    /// The forward batch for `receiver`, per its high-water marks.
    pub fn serve_forward(
        &self,
        config: &Config,
        receiver: &str,
        after: u64,
        have: &BTreeMap<String, u64>,
        limit: usize,
    ) -> (Vec<LogEntry>, u64) {
        let ask = ForwardAsk {
            have,
            after,
            limit,
            now_ms: self.clock.physical_ms(),
            delay_ms: Timings::from_config(&config.replication).forward_delay.as_millis() as u64,
        };
        let page = self
            .store
            .log_page(
                after,
                FORWARD_SCAN_MAX,
                self.engine.forward_limit(&ask),
                &mut self.engine.forward_scan(receiver, ask),
            )
            .expect("reads");
        let Served { entries, next_seq, .. } =
            self.engine.serve_forward(receiver, ask, page, config.replication.batch_bytes_max);
        (entries, next_seq)
    }

    /// The `have` map of a forward request: this region's direct cursors.
    pub fn have(&self, peers: &[String]) -> BTreeMap<String, u64> {
        let cursors = peers
            .iter()
            .filter(|p| **p != self.name)
            .map(|p| (p.clone(), self.cursor(p, Path::Direct)));
        forward_have(cursors, &self.name, None)
    }

    /// Merge a peer's batch and advance that path's cursor, in one commit.
    pub fn apply_remote(
        &mut self,
        peer: &str,
        path: Path,
        entries: &[LogEntry],
        next_seq: u64,
    ) -> ApplyReport {
        let batch = RemoteBatch {
            peer: peer.to_owned(),
            path,
            entries: entries.to_vec(),
            continues_from: 0,
            next_seq,
        };
        let (outcome, _) = self.execute(Command::Apply(batch));
        let Outcome::Apply(report) = outcome else { unreachable!("an apply outcome") };
        ApplyReport { changed: report.changed, refused: report.refused, waiting: report.waiting }
    }

    pub fn cursor(&self, peer: &str, path: Path) -> u64 {
        self.store.cursor(&path.cursor_key(peer)).expect("reads").seq
    }

    pub fn last_seq(&self) -> u64 {
        self.store.durable_seq().expect("reads")
    }

    /// The home region this region's replica of the subject registry holds.
    pub fn home_of(&self, subject: &str) -> Option<String> {
        self.store.get(SUBJECT_ENTITY, subject).expect("reads").as_ref().and_then(home_region_of)
    }

    /// Every record's state, by `(entity, id)`.
    pub fn records(&self) -> BTreeMap<(String, String), State> {
        let mut out = BTreeMap::new();
        self.store
            .for_each(&mut |e, id, r| {
                out.insert((e.to_owned(), id.to_owned()), r.state.clone());
            })
            .expect("reads");
        out
    }

    /// One compaction pass over this region's log, with the node's horizon
    /// (`tandem_engine::compaction::horizon`): entries removed.
    pub fn compact(&self, config: &Config) -> u64 {
        let forward_delay = Timings::from_config(&config.replication).forward_delay;
        let horizon = tandem_engine::compaction::horizon(forward_delay);
        let before = self.physical_ms().saturating_sub(horizon.as_millis() as u64);
        self.store.compact_log(before, usize::MAX).expect("compaction").removed
    }

    /// The whole replication log.
    pub fn log(&self) -> Vec<LogEntry> {
        self.store.log_after(0, usize::MAX).expect("reads")
    }

    /// What this region acknowledges to its peers, as the node's `ack` loop
    /// does: its durable direct cursors and its durable log position.
    pub fn own_report(&self) -> Report {
        let cursors = self
            .regions
            .iter()
            .filter(|p| **p != self.name)
            .map(|p| (p.clone(), self.cursor(p, Path::Direct)))
            .collect();
        Report { cursors, durable_seq: self.last_seq() }
    }

    /// A peer's acknowledgement arrived.
    pub fn receive_ack(&mut self, from: &str, report: Report) {
        let now = self.physical_ms();
        self.stability.report(from, report, now);
    }

    /// Take a snapshot and mature what can be (the `ack` loop's tick).
    pub fn tick_stability(&mut self) {
        let own = self.own_report();
        let now = self.physical_ms();
        self.stability.tick(&own, now);
    }

    /// The stability horizon, once one has matured.
    pub fn horizon(&self) -> Option<&BTreeMap<String, u64>> {
        self.stability.horizon()
    }
}

fn new_stability(name: &str, regions: &[String], faults: Faults, now_ms: u64) -> Stability {
    let mut s = Stability::new(name, regions.iter().cloned());
    // The product's default retention (a day) never passes in a run; the
    // deliberate bug evicts after 2 s, and nothing resyncs in the simulation.
    if faults.horizon_ignores_silent_regions {
        s.set_retention(2_000, now_ms);
    }
    s
}
