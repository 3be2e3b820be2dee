//! The run: a 10 ms tick loop over simulated time. Each tick delivers the
//! messages that are due, lets each region answer or start pulls from its
//! peers, issues client operations (through the router or straight at a
//! region) and, during the fault phase, injects faults: link cuts (both ways,
//! one way, a whole region), heals, latency spikes, message loss, duplication
//! and jitter, crashes and restarts of regions (with a new clock skew) and of
//! the router, drains. Then every fault is healed and the run continues,
//! without client operations, until replication is quiescent.

use std::collections::BTreeMap;

use tandem_router::decide::Kind;

use crate::check::writes::Outcome;
use crate::history::{Event, History, OpRecord, Via};
use crate::net::{Conditions, Message, Net, Payload};
use crate::region::{Path, Region};
use crate::rng::Rng;
use crate::router::{Routed, RouterSim, PROBE_INTERVAL_MS};
use crate::workload;
use crate::world::World;
use crate::{Mutation, Options};

mod acks;

pub const TICK_MS: u64 = 10;
/// The direct stream's heartbeat: a held long poll is answered after this.
const HEARTBEAT_MS: u64 = 250;
/// `Timings::link_timeout`: no answer for this long and the pull is retried.
const DIRECT_TIMEOUT_MS: u64 = 1_500;
/// The forward request time-out (`link_timeout * 4`).
const FORWARD_TIMEOUT_MS: u64 = 6_000;
/// `Timings::forward_interval` (`poll_interval`, at least 100 ms).
const FORWARD_INTERVAL_MS: u64 = 100;
/// Pause after a failed pull (the product backs off 50 ms doubling to 2 s).
const RETRY_MS: u64 = 200;
/// How often writes acknowledged early become durable (`AckBeforeDurable`).
const FLUSH_MS: u64 = 300;
/// How often each region compacts its replication log.
const COMPACT_MS: u64 = 500;
/// How often regions acknowledge their positions and take a stability
/// snapshot (the node's `stability::ACK_INTERVAL`).
const ACK_MS: u64 = 500;
/// Most simulated time the heal phase may take before the run is called stuck.
pub const QUIESCE_MAX_MS: u64 = 60_000;
/// Quiet time (no log growth, every cursor caught up) that ends the run.
const QUIET_MS: u64 = 1_000;

#[derive(Debug, Clone, Default)]
struct Pull {
    outstanding_since: Option<u64>,
    next_at: u64,
}

/// A direct-stream request a sender holds until it has something or the
/// heartbeat is due.
#[derive(Debug, Clone)]
struct Held {
    sender: String,
    receiver: String,
    after: u64,
    since: u64,
}

pub struct Sim {
    pub world: World,
    pub regions: BTreeMap<String, Region>,
    pub history: History,
    pub opts: Options,
    net: Net,
    router: RouterSim,
    rng_net: Rng,
    rng_work: Rng,
    rng_fault: Rng,
    now: u64,
    pulls: BTreeMap<(String, String, Path), Pull>,
    held: Vec<Held>,
    next_op: u64,
    restart_region_at: BTreeMap<String, u64>,
    restart_router_at: Option<u64>,
    faults_on: bool,
    /// Set when the heal phase did not reach quiescence.
    pub stuck: Option<String>,
    /// Log entries removed by compaction, all regions (a seed's report).
    pub compacted: u64,
    /// Delta entries delivered, and deliveries that stopped at one whose
    /// context had not arrived yet.
    pub deltas: (u64, u64),
}

impl Sim {
    pub fn new(seed: u64, opts: Options) -> Sim {
        let mut root = Rng::new(seed);
        let mut rng_world = root.fork(1);
        let four = opts.four_regions.unwrap_or_else(|| rng_world.chance(500));
        let world = World::new(&mut rng_world, four);
        let max_offset = world.config.node.max_clock_offset_ms;
        let config = world.config.clone();
        let faults = opts.mutation.engine_faults();
        let regions = world
            .regions
            .iter()
            .map(|name| {
                let skew = skew_for(&mut rng_world, opts.max_skew_ms);
                (name.clone(), Region::new(config.clone(), name, skew, max_offset, faults))
            })
            .collect();
        let router = RouterSim::new(&world.config);
        Sim {
            regions,
            router,
            history: History::default(),
            net: Net::default(),
            rng_net: root.fork(2),
            rng_work: root.fork(3),
            rng_fault: root.fork(4),
            now: 0,
            pulls: BTreeMap::new(),
            held: Vec::new(),
            next_op: 1,
            restart_region_at: BTreeMap::new(),
            restart_router_at: None,
            faults_on: false,
            stuck: None,
            compacted: 0,
            deltas: (0, 0),
            world,
            opts,
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.now
    }

    /// The whole run: registration, faults with load, heal, quiescence.
    pub fn run(&mut self) {
        // Subjects are registered at their homes before anything else.
        for s in self.world.subjects.clone() {
            let home = self.regions.get_mut(&s.home).expect("home region");
            home.tick(0);
            home.register(&s.name, &s.home);
        }
        self.net.conditions = Conditions { loss_per_mille: 0, dup_per_mille: 0, jitter_ms: 20 };
        self.faults_on = true;
        let fault_end = self.opts.fault_ms;
        while self.now < fault_end {
            self.step(true);
        }
        self.faults_on = false;
        self.heal_everything();
        let heal_start = self.now;
        let mut quiet_since = self.now;
        let mut last_total = self.total_log();
        loop {
            self.step(false);
            let total = self.total_log();
            if total != last_total || !self.caught_up() {
                quiet_since = self.now;
                last_total = total;
            }
            if self.now - quiet_since >= QUIET_MS {
                break;
            }
            if self.now - heal_start > QUIESCE_MAX_MS {
                self.stuck = Some(self.lag_report());
                break;
            }
        }
    }

    fn total_log(&self) -> u64 {
        self.regions.values().map(Region::last_seq).sum()
    }

    /// Every region has pulled every peer up to the peer's last entry on
    /// both paths (over the links that are not cut).
    fn caught_up(&self) -> bool {
        self.regions.values().all(|r| {
            self.regions.values().filter(|p| p.name != r.name).all(|p| {
                let link = (p.name.clone(), r.name.clone());
                self.net.is_cut(&link)
                    || (r.cursor(&p.name, Path::Direct) == p.last_seq()
                        && r.cursor(&p.name, Path::Forward) == p.last_seq())
            })
        })
    }

    fn lag_report(&self) -> String {
        let mut out = String::new();
        for r in self.regions.values() {
            for p in self.regions.values().filter(|p| p.name != r.name) {
                out.push_str(&format!(
                    "{} <- {}: direct {} forward {} of {}{}\n",
                    r.name,
                    p.name,
                    r.cursor(&p.name, Path::Direct),
                    r.cursor(&p.name, Path::Forward),
                    p.last_seq(),
                    if self.net.is_cut(&(p.name.clone(), r.name.clone())) { " (cut)" } else { "" }
                ));
            }
        }
        out
    }

    fn heal_everything(&mut self) {
        let keep: Vec<(String, String)> = if self.opts.keep_connected_cuts {
            crate::faults::connected_cuts(&mut self.rng_fault, &self.world)
        } else {
            Vec::new()
        };
        self.net.heal_all();
        for (a, b) in &keep {
            self.net.cut(a, b);
        }
        self.net.conditions.loss_per_mille = 0;
        let down: Vec<String> =
            self.regions.values().filter(|r| !r.up).map(|r| r.name.clone()).collect();
        for name in down {
            self.restart_region(&name);
        }
        self.restart_region_at.clear();
        if !self.router.up {
            self.router.restart();
        }
        self.restart_router_at = None;
        self.router.drained.clear();
        let mut what = "heal: every link, region, the router and every drain".to_string();
        if !keep.is_empty() {
            what.push_str(&format!("; links kept cut: {keep:?}"));
        }
        self.history.fault(self.now, what);
    }

    fn restart_region(&mut self, name: &str) {
        let skew = skew_for(&mut self.rng_fault, self.opts.max_skew_ms);
        let max_offset = self.world.config.node.max_clock_offset_ms;
        self.regions.get_mut(name).expect("region").restart(skew, max_offset);
        self.history.fault(self.now, format!("restart {name} (clock skew {skew} ms)"));
    }

    fn actually_up(&self) -> BTreeMap<String, bool> {
        self.regions.iter().map(|(n, r)| (n.clone(), r.up)).collect()
    }

    fn step(&mut self, load: bool) {
        self.now += TICK_MS;
        for r in self.regions.values() {
            r.tick(self.now);
        }
        // Scheduled restarts.
        let due: Vec<String> = self
            .restart_region_at
            .iter()
            .filter(|(_, at)| **at <= self.now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.restart_region_at.remove(&name);
            self.restart_region(&name);
        }
        if self.restart_router_at.is_some_and(|at| at <= self.now) {
            self.restart_router_at = None;
            self.router.restart();
            self.history.fault(self.now, "restart router".into());
        }
        if self.router.up && self.now >= self.router.next_probe_ms {
            let up = self.actually_up();
            self.router.probe(&up);
            self.router.next_probe_ms = self.now + PROBE_INTERVAL_MS;
        }
        if self.opts.mutation == Mutation::AckBeforeDurable && self.now.is_multiple_of(FLUSH_MS) {
            for r in self.regions.values_mut().filter(|r| r.up) {
                r.flush();
            }
        }
        // Log compaction, as the node runs it in the background (more
        // often here, so that catch-up and forwarding meet compacted logs).
        if self.now.is_multiple_of(COMPACT_MS) {
            for r in self.regions.values().filter(|r| r.up) {
                self.compacted += r.compact(&self.world.config);
            }
        }
        if self.now.is_multiple_of(ACK_MS) {
            self.acknowledge();
        }
        for m in self.net.due(self.now) {
            self.deliver(m);
        }
        self.answer_held();
        self.start_pulls();
        if load {
            let n = self.rng_work.range(0, self.opts.ops_per_tick_max);
            for _ in 0..n {
                self.client_op();
            }
        }
        if self.faults_on && self.now.is_multiple_of(100) {
            crate::faults::maybe_inject(self);
        }
    }

    fn latency(&self, a: &str, b: &str) -> u64 {
        self.world.config.link_latency_ms(a, b)
    }

    fn send(&mut self, from: &str, to: &str, link: (String, String), payload: Payload) {
        let base = self.latency(from, to);
        self.net.send(&mut self.rng_net, self.now, base, from, to, link, payload);
    }

    fn start_pulls(&mut self) {
        let names: Vec<String> = self.world.regions.clone();
        for r in &names {
            if !self.regions[r].up {
                continue;
            }
            for p in names.iter().filter(|p| *p != r) {
                for path in [Path::Direct, Path::Forward] {
                    let key = (r.clone(), p.clone(), path);
                    let pull = self.pulls.entry(key.clone()).or_default();
                    if let Some(since) = pull.outstanding_since {
                        let timeout = match path {
                            Path::Direct => DIRECT_TIMEOUT_MS + HEARTBEAT_MS,
                            Path::Forward | Path::Repair => FORWARD_TIMEOUT_MS,
                        };
                        if self.now - since < timeout {
                            continue;
                        }
                        pull.outstanding_since = None;
                        pull.next_at = self.now + RETRY_MS;
                    }
                    if self.now < pull.next_at {
                        continue;
                    }
                    pull.outstanding_since = Some(self.now);
                    let region = &self.regions[r];
                    let after = region.cursor(p, path);
                    let payload = match path {
                        Path::Direct | Path::Repair => Payload::DirectRequest { after },
                        Path::Forward => Payload::ForwardRequest {
                            after,
                            have: region.have(&names),
                            limit: self.world.config.replication.batch_max,
                        },
                    };
                    self.send(r, p, (p.clone(), r.clone()), payload);
                }
            }
        }
    }

    fn deliver(&mut self, m: Message) {
        if !self.regions[&m.to].up {
            return;
        }
        let config = self.world.config.clone();
        match m.payload {
            Payload::DirectRequest { after } => {
                let sender = &self.regions[&m.to];
                if sender.last_seq() > after {
                    let (entries, next_seq) = sender.serve_direct(&config, &m.from, after);
                    let payload = Payload::Batch { path: Path::Direct, next_seq, entries };
                    self.send(&m.to, &m.from, m.link, payload);
                } else {
                    self.held.push(Held { sender: m.to, receiver: m.from, after, since: self.now });
                }
            }
            Payload::ForwardRequest { after, have, limit } => {
                let sender = &self.regions[&m.to];
                let (entries, next_seq) =
                    sender.serve_forward(&config, &m.from, after, &have, limit);
                let payload = Payload::Batch { path: Path::Forward, next_seq, entries };
                self.send(&m.to, &m.from, m.link, payload);
            }
            Payload::Ack { report } => {
                self.regions.get_mut(&m.to).expect("region").receive_ack(&m.from, report);
            }
            Payload::Batch { path, next_seq, entries } => {
                let receiver = self.regions.get_mut(&m.to).expect("region");
                let report = receiver.apply_remote(&m.from, path, &entries, next_seq);
                self.deltas.0 += entries.iter().filter(|e| e.state.is_delta()).count() as u64;
                self.deltas.1 += u64::from(report.waiting);
                let full = entries.len() >= config.replication.batch_max;
                // Heartbeats (nothing carried, nothing refused) are not history.
                if !entries.is_empty() || !report.refused.is_empty() {
                    self.history.events.push(Event::Delivery {
                        at_ms: self.now,
                        from: m.from.clone(),
                        to: m.to.clone(),
                        path,
                        next_seq,
                        entries: entries
                            .iter()
                            .map(|e| (e.entity.clone(), e.id.clone(), e.origin.clone()))
                            .collect(),
                        refused: report.refused,
                    });
                }
                let pull = self.pulls.entry((m.to.clone(), m.from.clone(), path)).or_default();
                pull.outstanding_since = None;
                pull.next_at = match path {
                    // A delta waits for changes coming by another path.
                    Path::Direct if report.waiting => self.now + FORWARD_INTERVAL_MS,
                    Path::Direct => self.now,
                    Path::Forward if full => self.now,
                    Path::Forward | Path::Repair => self.now + FORWARD_INTERVAL_MS,
                };
            }
        }
    }

    fn answer_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        let config = self.world.config.clone();
        for h in held {
            let sender = &self.regions[&h.sender];
            if !sender.up {
                continue;
            }
            let news = sender.last_seq() > h.after;
            if !news && self.now - h.since < HEARTBEAT_MS {
                self.held.push(h);
                continue;
            }
            let (entries, next_seq) = if news {
                sender.serve_direct(&config, &h.receiver, h.after)
            } else {
                (Vec::new(), h.after)
            };
            let payload = Payload::Batch { path: Path::Direct, next_seq, entries };
            let link = (h.sender.clone(), h.receiver.clone());
            self.send(&h.sender, &h.receiver, link, payload);
        }
    }

    /// One client operation, start to answer.
    fn client_op(&mut self) {
        let op_id = self.next_op;
        self.next_op += 1;
        let planned = workload::plan(&mut self.rng_work, &self.world, op_id);
        let cfg = self.world.config.entity(&planned.entity).expect("entity").clone();
        let subject = tandem_config::subject_of(&planned.id).map(str::to_owned);
        let kind = if planned.write.is_some() { Kind::Write } else { Kind::Read };
        let through_router = self.rng_work.chance(700);
        let mut record = OpRecord {
            op: op_id,
            issued_ms: self.now,
            entity: planned.entity.clone(),
            id: planned.id.clone(),
            merge: planned.merge,
            write: planned.write.as_ref().map(|(w, _)| w.clone()),
            via: Via::Router { caller: String::new() },
            route: None,
            outcome: Outcome::Refused,
            refusal: None,
        };
        let (target, failover_for) = if through_router {
            let caller = self.rng_work.pick(&self.world.regions).clone();
            record.via = Via::Router { caller: caller.clone() };
            if !self.router.up {
                record.refusal = Some((0, "router_down"));
                self.history.push_op(record);
                return;
            }
            let up = self.actually_up();
            let regions = &self.regions;
            let home_in = |r: &str| subject.as_deref().and_then(|s| regions[r].home_of(s));
            let (routed, route) = self.router.route(
                &self.world.config,
                &caller,
                kind,
                &cfg,
                subject.as_deref(),
                &home_in,
                &up,
                self.opts.mutation,
            );
            record.route = Some(route);
            match routed {
                Routed::To { region, failover_for } => (region, failover_for),
                Routed::Answer { status, code } => {
                    record.refusal = Some((status, code));
                    self.history.push_op(record);
                    return;
                }
            }
        } else {
            let region = self.rng_work.pick(&self.world.regions).clone();
            let header = if self.rng_work.chance(150) {
                Some(self.rng_work.pick(&self.world.regions).clone())
            } else {
                None
            };
            record.via = Via::Direct { region: region.clone(), failover_header: header.clone() };
            (region, header)
        };
        if !self.regions[&target].up {
            record.refusal = Some((0, "connection_refused"));
            self.history.push_op(record);
            return;
        }
        let Some((_, op)) = &planned.write else {
            // A read: only its routing matters to the checker.
            record.outcome = Outcome::Refused;
            self.history.push_op(record);
            return;
        };
        // The request may be lost before it arrives (it never happened) or
        // its answer may be lost (it happened): both leave the client unsure.
        let lost_request = self.faults_on && self.rng_work.chance(self.opts.unknown_per_mille);
        let lost_answer = self.faults_on && self.rng_work.chance(self.opts.unknown_per_mille);
        if lost_request {
            record.outcome = Outcome::Unknown;
            self.history.push_op(record);
            return;
        }
        let region = self.regions.get_mut(&target).expect("region");
        let result = region.local_write(&planned.entity, &planned.id, op, failover_for.as_deref());
        match result {
            Ok(ack) => {
                record.outcome = if lost_answer {
                    Outcome::Unknown
                } else {
                    Outcome::Acked { region: ack.region, version: ack.version }
                };
            }
            Err(refusal) => {
                record.outcome = Outcome::Refused;
                record.refusal = Some((refusal.status, refusal.code));
            }
        }
        self.history.push_op(record);
    }

    // ---- used by faults ----------------------------------------------------

    pub fn net_mut(&mut self) -> &mut Net {
        &mut self.net
    }

    pub fn crash_region(&mut self, name: &str, for_ms: u64) {
        let regions = self.world.regions.clone();
        let r = self.regions.get_mut(name).expect("region");
        if !r.up {
            return;
        }
        r.crash();
        self.net.reset_region(name, &regions);
        self.held.retain(|h| h.sender != name && h.receiver != name);
        for ((a, b, _), pull) in &mut self.pulls {
            if a == name || b == name {
                pull.outstanding_since = None;
            }
        }
        self.restart_region_at.insert(name.to_owned(), self.now + for_ms);
        self.history.fault(self.now, format!("kill -9 {name} for {for_ms} ms"));
    }

    pub fn crash_router(&mut self, for_ms: u64) {
        if !self.router.up {
            return;
        }
        self.router.up = false;
        self.restart_router_at = Some(self.now + for_ms);
        self.history.fault(self.now, format!("kill -9 router for {for_ms} ms"));
    }

    pub fn set_drained(&mut self, region: &str, drained: bool) {
        if !self.router.up {
            return;
        }
        if drained {
            self.router.drained.insert(region.to_owned());
        } else {
            self.router.drained.remove(region);
        }
        let what = if drained { "drain" } else { "restore" };
        self.history.fault(self.now, format!("{what} {region}"));
    }

    pub fn rng_fault(&mut self) -> &mut Rng {
        &mut self.rng_fault
    }
}

fn skew_for(rng: &mut Rng, max_skew_ms: u64) -> i64 {
    if max_skew_ms == 0 || rng.chance(500) {
        return 0;
    }
    rng.range(0, 2 * max_skew_ms) as i64 - max_skew_ms as i64
}
