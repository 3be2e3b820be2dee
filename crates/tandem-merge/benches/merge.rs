//! Merge throughput of tandem's `pn-counter` and `or-set` against the `crdts`
//! crate (`PNCounter`, `Orswot`) on the same workload. The timed operation is a
//! state-based replication apply: R received replica states merged into one
//! fresh accumulator. Every workload is derived from one seed, and before any
//! timing the setup asserts that both libraries materialize the same value, so
//! the two sides compute the same thing.
//!
//! Results and the command that produced them are in `BENCHMARKS.md`.

use std::collections::BTreeSet;

use crdts::{CmRDT, CvRDT, Orswot, PNCounter};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};
use tandem_clock::Hlc;
use tandem_merge::{MergeKind, Op, State};

/// How many replica states one timed merge combines.
const REPLICA_COUNTS: [usize; 2] = [3, 16];
/// Operations each replica applies at its own region before the merge.
const OPS_PER_REPLICA: usize = 1_000;
/// Largest single increment or decrement of a counter step.
const COUNTER_STEP_MAX: u64 = 10;
/// Distinct or-set elements the workload draws from.
const ELEMENT_POOL_SIZE: usize = 200;
/// Share of or-set operations that are adds; the rest are removes.
const ADD_PERCENT: u32 = 70;
/// The or-set ops are applied in this many rounds; after each round every
/// replica merges its ring neighbour's state, so the final states overlap.
const EXCHANGE_ROUNDS: usize = 10;
/// Wall time of the first op (the HLC value only orders stamps here).
const WALL_MS_START: u64 = 1_700_000_000_000;
/// ChaCha seed; every workload is derived from it.
const SEED: [u8; 32] = *b"tandem-merge-bench-seed-00000001";

/// One counter operation of the shared workload.
#[derive(Debug, Clone, Copy)]
enum CounterStep {
    Incr(u64),
    Decr(u64),
}

/// One or-set operation of the shared workload; the index is into the pool.
#[derive(Debug, Clone, Copy)]
enum SetStep {
    Add(usize),
    Remove(usize),
}

fn rng_for(replica_count: usize, salt: u8) -> TestRng {
    let mut seed = SEED;
    seed[0] ^= replica_count as u8;
    seed[1] ^= salt;
    TestRng::from_seed(RngAlgorithm::ChaCha, &seed)
}

fn region(replica: usize) -> String {
    format!("region-{replica:02}")
}

fn element(index: usize) -> String {
    format!("element-{index:03}")
}

fn hlc_at(op_index: usize) -> Hlc {
    Hlc::new(WALL_MS_START + op_index as u64, 0)
}

/// Per replica, the counter steps it applies.
fn counter_plan(replica_count: usize) -> Vec<Vec<CounterStep>> {
    let mut rng = rng_for(replica_count, 1);
    (0..replica_count)
        .map(|_| {
            (0..OPS_PER_REPLICA)
                .map(|_| {
                    let by = rng.random_range(1..=COUNTER_STEP_MAX);
                    if rng.random_bool(0.5) {
                        CounterStep::Incr(by)
                    } else {
                        CounterStep::Decr(by)
                    }
                })
                .collect()
        })
        .collect()
}

/// Per replica, the or-set steps it applies.
fn set_plan(replica_count: usize) -> Vec<Vec<SetStep>> {
    let mut rng = rng_for(replica_count, 2);
    (0..replica_count)
        .map(|_| {
            (0..OPS_PER_REPLICA)
                .map(|_| {
                    let index = rng.random_range(0..ELEMENT_POOL_SIZE);
                    if rng.random_range(0..100) < ADD_PERCENT {
                        SetStep::Add(index)
                    } else {
                        SetStep::Remove(index)
                    }
                })
                .collect()
        })
        .collect()
}

/// The counter total the plan must produce, computed without either library.
fn counter_plan_total(plan: &[Vec<CounterStep>]) -> i64 {
    plan.iter()
        .flatten()
        .map(|step| match *step {
            CounterStep::Incr(by) => by as i64,
            CounterStep::Decr(by) => -(by as i64),
        })
        .sum()
}

fn tandem_counters(plan: &[Vec<CounterStep>]) -> Vec<State> {
    plan.iter()
        .enumerate()
        .map(|(replica, steps)| {
            let region = region(replica);
            let mut state = State::new(MergeKind::PnCounter);
            for (i, step) in steps.iter().enumerate() {
                let op = match *step {
                    CounterStep::Incr(by) => Op::Incr(by),
                    CounterStep::Decr(by) => Op::Decr(by),
                };
                state.apply(&op, &region, hlc_at(i)).expect("counter op applies");
            }
            state
        })
        .collect()
}

fn crdts_counters(plan: &[Vec<CounterStep>]) -> Vec<PNCounter<String>> {
    plan.iter()
        .enumerate()
        .map(|(replica, steps)| {
            let actor = region(replica);
            let mut counter = PNCounter::new();
            for step in steps {
                let op = match *step {
                    CounterStep::Incr(by) => counter.inc_many(actor.clone(), by),
                    CounterStep::Decr(by) => counter.dec_many(actor.clone(), by),
                };
                counter.apply(op);
            }
            counter
        })
        .collect()
}

/// Run the set plan on one library: `EXCHANGE_ROUNDS` rounds of local ops, each
/// followed by every replica merging a snapshot of its ring neighbour. Both
/// libraries go through this one schedule, so their histories are the same.
fn exchange<S: Clone>(
    plan: &[Vec<SetStep>],
    empty: impl Fn() -> S,
    apply: impl Fn(&mut S, SetStep, &str, Hlc),
    merge: impl Fn(&mut S, &S),
) -> Vec<S> {
    let regions: Vec<String> = (0..plan.len()).map(region).collect();
    let mut replicas: Vec<S> = plan.iter().map(|_| empty()).collect();
    let round_len = OPS_PER_REPLICA / EXCHANGE_ROUNDS;
    for round in 0..EXCHANGE_ROUNDS {
        let ops = round * round_len..(round + 1) * round_len;
        for (replica, state) in replicas.iter_mut().enumerate() {
            for i in ops.clone() {
                apply(state, plan[replica][i], &regions[replica], hlc_at(i));
            }
        }
        let snapshots = replicas.clone();
        for (replica, state) in replicas.iter_mut().enumerate() {
            merge(state, &snapshots[(replica + 1) % snapshots.len()]);
        }
    }
    replicas
}

fn tandem_sets(plan: &[Vec<SetStep>]) -> Vec<State> {
    exchange(
        plan,
        || State::new(MergeKind::OrSet),
        |state, step, region, at| {
            let op = match step {
                SetStep::Add(i) => Op::Add(vec![element(i)]),
                SetStep::Remove(i) => Op::Remove(vec![element(i)]),
            };
            state.apply(&op, region, at).expect("set op applies");
        },
        |state, other| {
            state.merge(other).expect("same kind");
        },
    )
}

fn crdts_sets(plan: &[Vec<SetStep>]) -> Vec<Orswot<String, String>> {
    exchange(
        plan,
        Orswot::new,
        |set, step, region, _at| {
            let op = match step {
                SetStep::Add(i) => {
                    let ctx = set.read_ctx().derive_add_ctx(region.to_owned());
                    set.add(element(i), ctx)
                }
                SetStep::Remove(i) => {
                    let member = element(i);
                    let ctx = set.contains(&member).derive_rm_ctx();
                    set.rm(member, ctx)
                }
            };
            set.apply(op);
        },
        |set, other| set.merge(other.clone()),
    )
}

/// The timed operation for tandem: merge received states into a fresh state.
fn tandem_merge_all(kind: MergeKind, received: Vec<State>) -> State {
    let mut acc = State::new(kind);
    for state in received {
        acc.merge(&state).expect("same kind");
    }
    acc
}

/// The timed operation for `crdts`. Its `merge` takes the remote state by
/// value, which a replication apply has anyway (it was just decoded).
fn crdts_merge_all<S: CvRDT + Default>(received: Vec<S>) -> S {
    let mut acc = S::default();
    for state in received {
        acc.merge(state);
    }
    acc
}

fn tandem_counter_total(state: &State) -> String {
    state.value_json().expect("counter was written")
}

fn tandem_elements(state: &State) -> BTreeSet<String> {
    state.value_json().map_or_else(BTreeSet::new, |json| {
        serde_json::from_str(&json).expect("or-set value is a JSON array of strings")
    })
}

fn crdts_elements(set: &Orswot<String, String>) -> BTreeSet<String> {
    set.read().val.into_iter().collect()
}

fn pn_counter_merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("pn_counter_merge");
    for replica_count in REPLICA_COUNTS {
        let plan = counter_plan(replica_count);
        let tandem = tandem_counters(&plan);
        let crdts = crdts_counters(&plan);

        let expected = counter_plan_total(&plan).to_string();
        for (t, c) in tandem.iter().zip(&crdts) {
            assert_eq!(tandem_counter_total(t), c.read().to_string());
        }
        let tandem_total =
            tandem_counter_total(&tandem_merge_all(MergeKind::PnCounter, tandem.clone()));
        let crdts_total = crdts_merge_all(crdts.clone()).read().to_string();
        assert_eq!(tandem_total, expected, "tandem counter total");
        assert_eq!(crdts_total, expected, "crdts counter total");

        group.throughput(Throughput::Elements(replica_count as u64));
        group.bench_with_input(BenchmarkId::new("tandem", replica_count), &tandem, |b, states| {
            b.iter_batched(
                || states.clone(),
                |received| tandem_merge_all(MergeKind::PnCounter, received),
                BatchSize::SmallInput,
            );
        });
        group.bench_with_input(BenchmarkId::new("crdts", replica_count), &crdts, |b, states| {
            b.iter_batched(|| states.clone(), crdts_merge_all, BatchSize::SmallInput);
        });
    }
    group.finish();
}

fn or_set_merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("or_set_merge");
    for replica_count in REPLICA_COUNTS {
        let plan = set_plan(replica_count);
        let tandem = tandem_sets(&plan);
        let crdts = crdts_sets(&plan);

        for (t, c) in tandem.iter().zip(&crdts) {
            assert_eq!(tandem_elements(t), crdts_elements(c), "replica sets differ");
        }
        let tandem_merged = tandem_elements(&tandem_merge_all(MergeKind::OrSet, tandem.clone()));
        let crdts_merged = crdts_elements(&crdts_merge_all(crdts.clone()));
        assert_eq!(tandem_merged, crdts_merged, "merged sets differ");
        // Removes must have mattered, or this would only be a grow-only set.
        // (With many replicas the merged union can still hold the whole pool.)
        assert!(!tandem_merged.is_empty(), "merged set is empty");
        assert!(
            tandem.iter().any(|t| tandem_elements(t).len() < ELEMENT_POOL_SIZE),
            "no replica ever removed an element for good"
        );

        group.throughput(Throughput::Elements(replica_count as u64));
        group.bench_with_input(BenchmarkId::new("tandem", replica_count), &tandem, |b, states| {
            b.iter_batched(
                || states.clone(),
                |received| tandem_merge_all(MergeKind::OrSet, received),
                BatchSize::SmallInput,
            );
        });
        group.bench_with_input(BenchmarkId::new("crdts", replica_count), &crdts, |b, states| {
            b.iter_batched(|| states.clone(), crdts_merge_all, BatchSize::SmallInput);
        });
    }
    group.finish();
}

criterion_group!(benches, pn_counter_merge, or_set_merge);
criterion_main!(benches);
