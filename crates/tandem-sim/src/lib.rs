//! A deterministic simulation of tandem's replication, residency and routing
//! logic: three or four regions in two jurisdictions, a router, and the
//! network between them, all in one thread on simulated time, every choice
//! drawn from one seed. The regions run the product's own pure decisions
//! (`tandem_merge` for apply and merge, `replication::filter` for what a
//! sender serves and a receiver accepts, `residency::check_write` for local
//! writes, `tandem_router::decide` for routing) while the simulator loses,
//! duplicates, re-orders and delays messages, cuts links (both ways, one way,
//! partially), kills and restarts regions and the router, skews clocks and
//! drains regions; every region compacts its replication log as the node does
//! (`tandem_engine::compaction`, every 500 ms of simulated time), so catch-up
//! and forwarding run against compacted logs. After the faults stop and everything heals, a checker that
//! reads only the history and the regions' state judges the invariants of
//! DESIGN.md (see `check`). A failing seed replays exactly: `run(seed, ..)`
//! is a pure function of its arguments.
//!
//! `Mutation` breaks one step on purpose (the merge, the residency filter,
//! the durability of an acknowledgement, the routing) so that tests can show
//! the checker catches each class of bug with a reproducible seed.

pub mod check;
pub mod faults;
pub mod history;
pub mod net;
pub mod region;
pub mod rng;
pub mod router;
pub mod sim;
pub mod workload;
pub mod world;

use history::Fnv;

/// A deliberately introduced bug, to prove the checker finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mutation {
    /// The product as it is.
    #[default]
    None,
    /// Receivers replace their state with a remote one whose stamp is newer
    /// instead of merging (a whole-state last-writer-wins "merge").
    MergeOverwrites,
    /// Senders skip the residency filter on the direct stream (receivers
    /// still refuse to store what they must not hold).
    LeakPersonal,
    /// Senders and receivers both skip the residency check.
    LeakPersonalEverywhere,
    /// Regions acknowledge writes before they are durable; a crash loses them.
    AckBeforeDurable,
    /// The router fails over to any region when none is left in the
    /// subject's jurisdiction.
    RouteAnywhere,
    /// The stability horizon evicts regions silent for 2 s, and nothing
    /// resyncs them.
    HorizonIgnoresSilentRegions,
}

impl Mutation {
    /// The engine faults this mutation sets (the router's is applied by the
    /// simulated router).
    pub fn engine_faults(self) -> tandem_engine::Faults {
        let mut f = tandem_engine::Faults::NONE;
        match self {
            Mutation::None | Mutation::RouteAnywhere => {}
            Mutation::MergeOverwrites => f.merge_overwrites = true,
            Mutation::LeakPersonal => f.skip_residency_when_serving = true,
            Mutation::LeakPersonalEverywhere => {
                f.skip_residency_when_serving = true;
                f.skip_residency_when_applying = true;
            }
            Mutation::AckBeforeDurable => f.ack_before_durable = true,
            Mutation::HorizonIgnoresSilentRegions => f.horizon_ignores_silent_regions = true,
        }
        f
    }
}

/// How a run is shaped (the seed decides everything else).
#[derive(Debug, Clone)]
pub struct Options {
    /// Simulated length of the fault phase, in ms.
    pub fault_ms: u64,
    /// Most client operations per 10 ms tick.
    pub ops_per_tick_max: u64,
    /// `None`: the seed decides between three and four regions.
    pub four_regions: Option<bool>,
    /// Largest clock skew of a region, in ms (either way).
    pub max_skew_ms: u64,
    /// Chance, per mille, that a request or its answer is lost during faults.
    pub unknown_per_mille: u32,
    /// After the fault phase, keep some links cut such that every
    /// jurisdiction stays strongly connected (a stronger liveness check:
    /// partial partitions alone must not stop convergence).
    pub keep_connected_cuts: bool,
    pub mutation: Mutation,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fault_ms: 3_000,
            ops_per_tick_max: 1,
            four_regions: None,
            max_skew_ms: 3_000,
            unknown_per_mille: 20,
            keep_connected_cuts: false,
            mutation: Mutation::None,
        }
    }
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub violations: Vec<check::Violation>,
    /// A hash of everything that happened and of every region's final state:
    /// equal for two runs of one seed.
    pub trace_hash: u64,
    pub ops: usize,
    pub acked: usize,
    pub deliveries: usize,
    pub faults: usize,
    pub simulated_ms: u64,
    /// Log entries compacted away, all regions.
    pub compacted: u64,
    /// Stability horizons recorded (and checked), all regions.
    pub horizons: usize,
    /// Delta entries delivered, and deliveries that waited at one.
    pub deltas: (u64, u64),
    /// The minimal history of the failing records (empty when nothing failed).
    pub minimal_history: String,
    /// The command that replays this run.
    pub replay: String,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// What to print when a seed fails: the seed, how to replay it, each
    /// violation, and the history of the records involved.
    pub fn explain(&self) -> String {
        let mut out = format!(
            "seed {} failed ({} violation(s)); replay with: {}\n",
            self.seed,
            self.violations.len(),
            self.replay
        );
        for v in self.violations.iter().take(20) {
            out.push_str(&format!("  {v}\n"));
        }
        out.push_str("minimal history:\n");
        out.push_str(&self.minimal_history);
        out
    }
}

/// Run one seed to the end and check it.
pub fn run(seed: u64, opts: &Options) -> Report {
    let mut sim = sim::Sim::new(seed, opts.clone());
    sim.run();
    let violations = check::check(&sim.world, &sim.regions, &sim.history, sim.stuck.as_deref());
    let mut hash = Fnv::default();
    for e in &sim.history.events {
        match e {
            history::Event::Op(i) => {
                hash.write(history::render_op(&sim.history.ops[*i]).as_bytes());
            }
            other => hash.write(format!("{other:?}").as_bytes()),
        }
    }
    for r in sim.regions.values() {
        hash.write(r.name.as_bytes());
        for ((e, i), s) in &r.records() {
            hash.write(format!("{e}/{i}={:?}", s.value_json()).as_bytes());
        }
        hash.write(&r.last_seq().to_le_bytes());
    }
    let mut minimal = String::new();
    let mut shown = std::collections::BTreeSet::new();
    for v in &violations {
        if let Some((e, i)) = &v.record {
            if shown.insert((e.clone(), i.clone())) && shown.len() <= 3 {
                minimal.push_str(&format!("--- {e}/{i}\n{}", sim.history.render_for(e, i)));
            }
        }
    }
    if !violations.is_empty() && minimal.is_empty() {
        minimal = sim
            .history
            .events
            .iter()
            .filter_map(|e| match e {
                history::Event::Fault { at_ms, what } => {
                    Some(format!("{at_ms:>6} ms  fault: {what}\n"))
                }
                _ => None,
            })
            .collect();
    }
    let mut replay = format!(
        "TANDEM_SIM_SEED={seed} TANDEM_SIM_FAULT_MS={} TANDEM_SIM_OPS={} TANDEM_SIM_SKEW_MS={}",
        opts.fault_ms, opts.ops_per_tick_max, opts.max_skew_ms
    );
    if let Some(four) = opts.four_regions {
        replay.push_str(if four { " TANDEM_SIM_REGIONS=4" } else { " TANDEM_SIM_REGIONS=3" });
    }
    if opts.keep_connected_cuts {
        replay.push_str(" TANDEM_SIM_KEEP_CUTS=1");
    }
    replay.push_str(" cargo test -p tandem-sim --test seeds replay_one_seed -- --nocapture");
    if opts.mutation != Mutation::None {
        replay.push_str(&format!(" (with Mutation::{:?})", opts.mutation));
    }
    Report {
        seed,
        replay,
        trace_hash: hash.finish(),
        ops: sim.history.ops.len(),
        acked: sim
            .history
            .ops
            .iter()
            .filter(|o| matches!(o.outcome, check::writes::Outcome::Acked { .. }))
            .count(),
        deliveries: sim
            .history
            .events
            .iter()
            .filter(|e| matches!(e, history::Event::Delivery { .. }))
            .count(),
        faults: sim
            .history
            .events
            .iter()
            .filter(|e| matches!(e, history::Event::Fault { .. }))
            .count(),
        simulated_ms: sim.now_ms(),
        compacted: sim.compacted,
        deltas: sim.deltas,
        horizons: sim
            .history
            .events
            .iter()
            .filter(|e| matches!(e, history::Event::Horizon { .. }))
            .count(),
        minimal_history: minimal,
        violations,
    }
}
