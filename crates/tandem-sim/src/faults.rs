//! The fault schedule, drawn from the run's fault stream every 100 ms of the
//! fault phase: a partition of two regions (both directions: the others still
//! reach both), a one-way cut, a whole region cut off, heals, latency spikes,
//! message loss, duplication and jitter, `kill -9` and restart of a region
//! (restarting with a new clock skew) or of the router, drain and restore.

use std::collections::BTreeSet;

use crate::net::Conditions;
use crate::sim::Sim;
use crate::world::World;

/// Chance per 100 ms that a fault is injected, per mille.
const FAULT_PER_MILLE: u32 = 250;

pub fn maybe_inject(sim: &mut Sim) {
    if !sim.rng_fault().chance(FAULT_PER_MILLE) {
        return;
    }
    let regions = sim.world.regions.clone();
    let now = sim.now_ms();
    let rng = sim.rng_fault();
    let a = rng.pick(&regions).clone();
    let b = loop {
        let b = rng.pick(&regions).clone();
        if b != a {
            break b;
        }
    };
    let choice = rng.below(12);
    match choice {
        0 | 1 => {
            sim.net_mut().cut(&a, &b);
            sim.net_mut().cut(&b, &a);
            sim.history.fault(now, format!("partition {a} <-> {b}"));
        }
        2 => {
            sim.net_mut().cut(&a, &b);
            sim.history.fault(now, format!("cut one way {a} -> {b}"));
        }
        3 => {
            for other in regions.iter().filter(|r| **r != a) {
                sim.net_mut().cut(&a, other);
                sim.net_mut().cut(other, &a);
            }
            sim.history.fault(now, format!("isolate {a}"));
        }
        4 | 5 => {
            let cuts: Vec<(String, String)> = sim.net_mut().cuts().cloned().collect();
            if cuts.is_empty() {
                return;
            }
            let (x, y) = sim.rng_fault().pick(&cuts).clone();
            sim.net_mut().heal(&x, &y);
            sim.history.fault(now, format!("heal {x} -> {y}"));
        }
        6 => {
            sim.net_mut().heal_all();
            sim.history.fault(now, "heal every link".into());
        }
        7 => {
            let ms = sim.rng_fault().range(100, 2_000);
            sim.net_mut().extra_latency_ms.insert((a.clone(), b.clone()), ms);
            sim.history.fault(now, format!("latency {a} -> {b} +{ms} ms"));
        }
        8 => {
            let rng = sim.rng_fault();
            let c = Conditions {
                loss_per_mille: rng.range(0, 300) as u32,
                dup_per_mille: rng.range(0, 300) as u32,
                jitter_ms: rng.range(0, 300),
            };
            sim.history.fault(
                now,
                format!(
                    "network: loss {}‰ duplication {}‰ jitter {} ms",
                    c.loss_per_mille, c.dup_per_mille, c.jitter_ms
                ),
            );
            sim.net_mut().conditions = c;
        }
        9 => {
            let ms = sim.rng_fault().range(100, 3_000);
            sim.crash_region(&a, ms);
        }
        10 => {
            let ms = sim.rng_fault().range(100, 1_500);
            sim.crash_router(ms);
        }
        _ => {
            let drain = sim.rng_fault().chance(600);
            sim.set_drained(&a, drain);
        }
    }
}

/// Links to leave cut after the fault phase such that replication can still
/// reach everywhere it must: the directed graph of open links is strongly
/// connected, and so is each jurisdiction's own part (personal records travel
/// only through regions of their jurisdiction). Used by the stronger liveness
/// check that partial partitions alone never stop convergence.
pub fn connected_cuts(rng: &mut crate::rng::Rng, world: &World) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = Vec::new();
    for a in &world.regions {
        for b in &world.regions {
            if a != b {
                all.push((a.clone(), b.clone()));
            }
        }
    }
    let mut cut: BTreeSet<(String, String)> = BTreeSet::new();
    for _ in 0..all.len() {
        let candidate = rng.pick(&all).clone();
        cut.insert(candidate.clone());
        if !still_connected(world, &cut) {
            cut.remove(&candidate);
        }
    }
    cut.into_iter().collect()
}

fn still_connected(world: &World, cut: &BTreeSet<(String, String)>) -> bool {
    let mut groups: Vec<Vec<&String>> = vec![world.regions.iter().collect()];
    for j in ["EU", "US"] {
        groups.push(world.regions.iter().filter(|r| world.jurisdiction_of(r) == j).collect());
    }
    groups.iter().all(|g| strongly_connected(g, cut))
}

fn strongly_connected(nodes: &[&String], cut: &BTreeSet<(String, String)>) -> bool {
    let Some(start) = nodes.first() else { return true };
    let open = |a: &String, b: &String| !cut.contains(&(a.clone(), b.clone()));
    for forward in [true, false] {
        let mut seen: BTreeSet<&String> = BTreeSet::from([*start]);
        let mut stack = vec![*start];
        while let Some(n) = stack.pop() {
            for m in nodes {
                let edge = if forward { open(n, m) } else { open(m, n) };
                if *m != n && edge && seen.insert(*m) {
                    stack.push(*m);
                }
            }
        }
        if seen.len() != nodes.len() {
            return false;
        }
    }
    true
}
