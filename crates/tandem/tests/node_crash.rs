//! No acknowledged write is lost across `kill -9` (DESIGN.md invariant 2). Many
//! client threads write to a real `tandem node` (redb store) — counter
//! increments and decrements, or-set adds, and increasing values per thread on
//! `lww` keys — and record each write with its outcome in the kit's history of
//! acknowledged writes. The node is killed with SIGKILL in the middle of the
//! load and restarted on the same data, and the kit's checker must find every
//! acknowledged write there. A write that got no answer may or may not have
//! landed, so the checks are bounds: a counter lies between what was
//! acknowledged and that plus every unanswered attempt, a set holds every
//! acknowledged element and nothing never attempted, a register holds its
//! thread's last acknowledged value or a later attempt, and every acknowledged
//! version is in the final one. A last test runs a node that lies
//! (`--unsafe-ack-before-commit`) to show that these checks do catch lost writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::json;
use tandem_config::Config;
use tandem_testkit::acked::{self, History, Key, Outcome, Write};
use tandem_testkit::config::example_text;
use tandem_testkit::{Node, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));
/// Concurrent client threads.
const THREADS: usize = 32;
/// How long the load runs before the node is killed.
const LOAD_BEFORE_KILL: Duration = Duration::from_millis(1500);
/// Shared keys per entity type (many threads write each).
const SHARED_KEYS: usize = 4;
/// Acknowledged writes one cycle must reach for the test to mean something.
const ACKED_MIN: usize = 300;

#[test]
fn no_acknowledged_write_is_lost_across_kill_9() {
    let started = Instant::now();
    let mut node = TANDEM.node(example_text(), "eu-west", &[]);
    let mut history = History::new();
    for cycle in 1..=2 {
        let acked = load_then_kill(&mut node, cycle, &mut history);
        assert!(
            acked >= ACKED_MIN,
            "cycle {cycle}: only {acked} writes acknowledged before the kill; the test means little"
        );
        node.restart();
        let violations = lost(&history, &node);
        assert!(
            violations.is_empty(),
            "cycle {cycle}: acknowledged writes lost after kill -9:\n{}\nstderr:\n{}",
            violations.join("\n"),
            node.stderr()
        );
        eprintln!(
            "cycle {cycle}: {acked} writes acknowledged, {} unanswered in total; all acknowledged writes survived ({:?} so far)",
            history.unknown() + history.refused(),
            started.elapsed()
        );
    }
    // Every kind of key was exercised, each by many acknowledged writes.
    assert_eq!(keys_of(&history, &["page_views", "likes"]).len(), 2 * SHARED_KEYS);
    assert_eq!(keys_of(&history, &["tags"]).len(), SHARED_KEYS);
    assert_eq!(keys_of(&history, &["article"]).len(), THREADS);
    assert!(keys_of(&history, &["article"])
        .iter()
        .all(|k| history.writes(k).iter().any(|w| matches!(w.outcome, Outcome::Acked { .. }))));
    // The restarted node still takes writes.
    let (status, body) =
        node.post("/v1/records/likes/crash-0/ops", &json!({"op": "incr", "by": 1}));
    assert_eq!(status, 200, "{body}");
}

/// A node that acknowledges before committing loses writes on `kill -9`, and
/// the checker reports it. Without this, a checker that never fails would
/// look the same as a node that never loses.
#[test]
fn the_check_catches_a_node_that_acknowledges_before_commit() {
    let mut node = TANDEM.node(example_text(), "eu-west", &["--unsafe-ack-before-commit"]);
    let config = Config::example();
    let mut history = History::new();
    for value in 1..=3 {
        let (key, w) = (Key::new("article", "lie"), Write::Put(json!(value)));
        let (method, path, body) = acked::request_of(&key.entity, &key.id, Some(&w));
        let answer = node.call(method, &path, body.as_ref());
        assert_eq!(answer.status, 200, "{}", answer.body);
        record(&mut history, &config, key, w, acked::outcome_of(&Ok(answer)));
    }
    let (key, w) = (Key::new("tags", "lie"), Write::Add("acked".to_owned()));
    let (method, path, body) = acked::request_of(&key.entity, &key.id, Some(&w));
    let answer = node.call(method, &path, body.as_ref());
    assert_eq!(answer.status, 200, "{}", answer.body);
    record(&mut history, &config, key, w, acked::outcome_of(&Ok(answer)));
    // The node sleeps 300 ms between acknowledging and committing: kill it now.
    node.kill9();
    node.restart();
    let violations = lost(&history, &node);
    assert!(
        !violations.is_empty(),
        "a node that acknowledges before commit lost nothing; the check cannot catch lost writes"
    );
    eprintln!("as expected, the check caught: {violations:?}");
}

/// The same concurrent load and check as the real crash test, against the lying
/// node: with a 300 ms gap between every acknowledgement and its commit, a kill
/// in the middle of the load lands in that gap and acknowledged writes vanish.
#[test]
fn the_crash_test_fails_against_a_node_that_acknowledges_before_commit() {
    let mut node = TANDEM.node(example_text(), "eu-west", &["--unsafe-ack-before-commit"]);
    let mut history = History::new();
    let acked = load_then_kill(&mut node, 1, &mut history);
    assert!(acked > 0, "the lying node acknowledged nothing");
    node.restart();
    let violations = lost(&history, &node);
    assert!(
        !violations.is_empty(),
        "{acked} writes acknowledged before commit and none lost by kill -9?"
    );
    eprintln!(
        "as expected, {} contradictions of the {acked} acknowledged writes, e.g. {:?}",
        violations.len(),
        &violations[..violations.len().min(3)]
    );
}

/// What one client thread did.
#[derive(Default)]
struct ThreadReport {
    writes: Vec<(Key, Write, Outcome)>,
    /// Answers other than 200 (none are expected: only the kill stops writes).
    unexpected: Vec<String>,
}

/// The `i`-th write of thread `t` in cycle `cycle`: a mix over shared counter
/// and set keys, and increasing values on the thread's own register.
fn nth_write(t: usize, cycle: usize, i: usize) -> (Key, Write) {
    let shared = format!("crash-{}", (t + i) % SHARED_KEYS);
    // Every third `likes` write of a thread is a decrement.
    match (i % 4, (i / 4 + t) % 3) {
        (0, _) => (Key::new("page_views", &shared), Write::Incr((t % 3 + 1) as u64)),
        (1, 0) => (Key::new("likes", &shared), Write::Decr(1)),
        (1, _) => (Key::new("likes", &shared), Write::Incr(2)),
        (2, _) => (Key::new("tags", &shared), Write::Add(format!("c{cycle}-t{t}-{i}"))),
        _ => (
            Key::new("article", &format!("crash-t{t}")),
            // Above every value of earlier cycles.
            Write::Put(json!((cycle as u64) * 1_000_000 + i as u64)),
        ),
    }
}

/// Load the node from `THREADS` threads, SIGKILL it after `LOAD_BEFORE_KILL`,
/// wait for the threads and add what they saw to `history`; answers how many
/// writes this cycle got acknowledged.
fn load_then_kill(node: &mut Node, cycle: usize, history: &mut History) -> usize {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(THREADS + 1));
    let url = node.url().to_owned();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (stop, start, url) = (stop.clone(), start.clone(), url.clone());
            let client = node.http().clone();
            std::thread::spawn(move || {
                let mut report = ThreadReport::default();
                start.wait();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (key, w) = nth_write(t, cycle, i);
                    let (method, path, body) = acked::request_of(&key.entity, &key.id, Some(&w));
                    let result = client.try_call(
                        method.clone(),
                        &format!("{url}{path}"),
                        body.as_ref(),
                        &[],
                    );
                    let outcome = acked::outcome_of(&result);
                    match result {
                        Ok(a) if a.status == 200 => report.writes.push((key, w, outcome)),
                        Ok(a) => {
                            report.unexpected.push(format!("{method} {path}: {a}"));
                            report.writes.push((key, w, outcome));
                            break;
                        }
                        // The node is gone: this write may or may not have landed.
                        Err(_) => {
                            report.writes.push((key, w, outcome));
                            break;
                        }
                    }
                }
                report
            })
        })
        .collect();
    start.wait();
    std::thread::sleep(LOAD_BEFORE_KILL);
    node.kill9();
    stop.store(true, Ordering::Relaxed);
    let before = history.acked();
    let config = Config::example();
    let mut unexpected = Vec::new();
    for h in handles {
        let report = h.join().expect("client thread");
        for (key, w, outcome) in report.writes {
            record(history, &config, key, w, outcome);
        }
        unexpected.extend(report.unexpected);
    }
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:#?}");
    history.acked() - before
}

/// Add one write to the history; a register's values increase per key.
fn record(history: &mut History, config: &Config, key: Key, w: Write, outcome: Outcome) {
    if let Write::Put(v) = &w {
        let earlier = history.writes(&key).iter().filter_map(|e| match &e.write {
            Write::Put(e) => e.as_u64(),
            _ => None,
        });
        assert!(earlier.max() < v.as_u64(), "values increase per key");
    }
    let shape = acked::shape_of(config, &key.entity);
    history.record(key, shape, w, outcome);
}

/// Every way the restarted node contradicts the history (empty: all good).
fn lost(history: &History, node: &Node) -> Vec<String> {
    let read = |key: &Key| {
        let answer = node.answer(&format!("/v1/records/{}/{}", key.entity, key.id));
        vec![("eu-west".to_owned(), acked::final_of(&answer))]
    };
    history.check(read).iter().map(ToString::to_string).collect()
}

/// The records of these entity types the history holds.
fn keys_of<'a>(history: &'a History, entities: &[&str]) -> Vec<&'a Key> {
    history.keys().filter(|k| entities.contains(&k.entity.as_str())).collect()
}
