//! Lossless log compaction on real processes (issue 16, item 1): a region
//! that rewrites the same records stays flat on disk, its log holds about one
//! entry per record, numbering goes on, and every acknowledged increment is
//! there; a region isolated while its peer compacts away the entries it has
//! not received catches up from the compacted log to the same values.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};
use tandem_testkit::config::{example_text, ALL};
use tandem_testkit::metrics::first;
use tandem_testkit::{wait_until, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));
/// Distinct records rewritten.
const KEYS: u64 = 1000;
/// Seconds of load per phase.
const PHASE_SECS: u64 = 6;
/// Load generator clients.
const CLIENTS: u64 = 16;

/// The write-ahead log's checkpoint size here: several checkpoints per
/// phase, so that the data file reaches its steady size in the first (pages
/// freed between checkpoints are reused only after the next one).
const CHECKPOINT_BYTES: u64 = 512 * 1024;

/// The tests here measure a node under load: one at a time, so that one's
/// load does not change the other's working size or timing.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn a_region_rewriting_the_same_records_stays_flat() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let config = example_text().replace(
        "wal_checkpoint_bytes = 8388608",
        &format!("wal_checkpoint_bytes = {CHECKPOINT_BYTES}"),
    );
    assert_ne!(config, example_text(), "the example sets the checkpoint size");
    let node = TANDEM.node(&config, "eu-west", &["--insecure"]);
    let dir = node.data_dir().join("eu-west");
    // Warm-up phases bring the data file to its working size (redb grows it
    // in steps, doubling): until a phase leaves it as it found it, three at
    // most. The two phases after them are compared.
    let (mut warm_up_acked, mut compacted_0, mut warm_size) = (0, 0, 0);
    for _ in 0..3 {
        warm_up_acked += load(node.url());
        compacted_0 = settled(&node, compacted_0).0;
        let size = file_len(&dir.join("tandem.redb"));
        if size == warm_size {
            break;
        }
        warm_size = size;
    }
    let first_acked = load(node.url());
    let (compacted_1, entries_1) = settled(&node, compacted_0);
    let data_1 = file_len(&dir.join("tandem.redb"));
    let second_acked = load(node.url());
    let (compacted_2, entries_2) = settled(&node, compacted_1);
    let data_2 = file_len(&dir.join("tandem.redb"));
    let wal = file_len(&dir.join("tandem.wal"));
    eprintln!(
        "acked {warm_up_acked} + {first_acked} + {second_acked}; data file {data_1} -> {data_2} bytes; \
         log entries {entries_1} -> {entries_2}; compacted {compacted_1} -> {compacted_2}; log {wal} bytes"
    );
    assert!(second_acked * 10 >= first_acked * 8, "the second phase wrote as much as the first");
    assert!(
        data_2 * 10 <= data_1 * 12,
        "the data file grew from {data_1} to {data_2} bytes over {second_acked} more writes of the same {KEYS} records"
    );
    assert!(wal <= CHECKPOINT_BYTES + 1024 * 1024, "the log is bounded by its checkpoint size");
    // About one entry per record: the rest went, and nothing was reused.
    assert!(entries_2 <= 2 * KEYS, "{entries_2} entries left for {KEYS} records");
    // Every acknowledged increment is in the records (the load generator
    // abandons the requests in flight at its deadline: up to one per client
    // and phase, five phases at most, may have landed unacknowledged), one
    // log position each.
    let total: u64 = (0..KEYS).map(|k| counter(&node.value("likes", &format!("load:{k}")))).sum();
    let acked = warm_up_acked + first_acked + second_acked;
    assert!((acked..=acked + 5 * CLIENTS).contains(&total), "{total} increments for {acked} acked");
    let (_, status) = node.get("/v1/status");
    assert_eq!(status["log"]["last_seq"], json!(total), "numbers are never reused");
    assert!(status["log"]["entries"].as_u64().unwrap() <= 2 * KEYS);
}

#[test]
fn an_isolated_region_catches_up_from_a_compacted_log() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = TANDEM.deployment().prefix("tandem-compact-").without_router().start();
    d.admin("us-east", "isolate");
    // eu-west rewrites 100 records 30 times while us-east hears nothing.
    let writes_per_thread = 750u64;
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let d = &d;
            s.spawn(move || {
                for i in 0..writes_per_thread {
                    let id = format!("c{}", (t * writes_per_thread + i) % 100);
                    d.op("eu-west", "likes", &id, json!({"op": "incr", "by": 1}));
                }
            });
        }
    });
    let compacted =
        || first(&d.metrics("eu-west"), "tandem_log_compacted_entries_total", &[]).unwrap_or(0.0);
    assert!(
        wait_until(Duration::from_secs(30), || compacted() >= 2000.0),
        "eu-west compacted {} entries of 3000 rewrites; status {}",
        compacted(),
        d.status("eu-west")["log"]
    );
    let entries = d.status("eu-west")["log"]["entries"].as_u64().unwrap();
    assert!(entries < 1000, "{entries} entries left at eu-west");
    d.admin("us-east", "rejoin");
    d.wait_converged("likes", &ALL, d.converge_timeout());
    for i in 0..100 {
        let id = format!("c{i}");
        for region in ALL {
            assert_eq!(counter(&d.value(region, "likes", &id)), 30, "{id} at {region}");
        }
    }
    // us-east got the records from far fewer entries than were written.
    let status = d.status("us-east");
    let link = status["peers"].as_array().unwrap().iter().find(|p| p["peer"] == "eu-west").unwrap();
    assert!(link["applied"].as_u64().unwrap() < 3000, "us-east applied {}", link["applied"]);
}

/// Run the load generator's counter increments over `KEYS` records at `url`
/// for a phase; the writes acknowledged (it fails on any refused one).
fn load(url: &str) -> u64 {
    tandem_testkit::load::increments(TANDEM, url, "likes", KEYS, CLIENTS, PHASE_SECS)
}

/// Wait until a compaction pass after the load has run and the log has
/// stopped shrinking: (entries compacted so far, entries left).
fn settled(node: &tandem_testkit::Node, compacted_before: u64) -> (u64, u64) {
    let read = || {
        let m = node.get_text("/metrics").1;
        let c = first(&m, "tandem_log_compacted_entries_total", &[]).unwrap_or(0.0) as u64;
        let e = first(&m, "tandem_log_entries", &[]).unwrap_or(f64::MAX) as u64;
        (c, e)
    };
    let ran = wait_until(Duration::from_secs(60), || {
        let (c, e) = read();
        c > compacted_before && e <= 2 * KEYS
    });
    assert!(ran, "no compaction brought the log down: {:?}; {}", read(), node.stderr());
    read()
}

fn counter(v: &Option<Value>) -> u64 {
    v.as_ref().and_then(Value::as_u64).unwrap_or(0)
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
