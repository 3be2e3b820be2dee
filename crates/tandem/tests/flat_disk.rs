//! Bounded disk on a deployment (issue 16's first acceptance point): three
//! regions replicating the same 1,000 records rewritten 200,000 times, then
//! another 200,000 times; every region's data directory (store, log, audit
//! log, everything in it) is at most 1.2 times its size after the first
//! 200,000. Compaction keeps about one log entry per record and origin, the
//! store's checkpoints keep the data file at its working size, and audit
//! segments go after a short retention (one entry per batch served would
//! otherwise grow with the writes). Every acknowledged increment is there.

use std::path::Path;
use std::time::Duration;

use tandem_testkit::config::{example_text, ALL};
use tandem_testkit::metrics::first;
use tandem_testkit::{wait_until, Deployment, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));
const KEYS: u64 = 1000;
const WRITES_PER_PHASE: u64 = 200_000;
const CLIENTS: u64 = 32;

#[test]
fn every_regions_data_directory_stays_flat_over_another_200000_writes() {
    let config = edit(example_text(), "segment_bytes = 16777216", "segment_bytes = 65536");
    let config = edit(&config, "retention = \"30days\"", "retention = \"5s\"");
    let d = TANDEM
        .deployment()
        .prefix("tandem-flat-")
        .config_text(&config)
        .insecure()
        .without_router()
        .start();
    let first_acked = phase(&d);
    let sizes_1: Vec<Sizes> = ALL.iter().map(|r| Sizes::of(&d.data_dir().join(r))).collect();
    let second_acked = phase(&d);
    let sizes_2: Vec<Sizes> = ALL.iter().map(|r| Sizes::of(&d.data_dir().join(r))).collect();
    eprintln!("acked {first_acked} + {second_acked}; sizes {sizes_1:?} -> {sizes_2:?}");
    for (i, region) in ALL.iter().enumerate() {
        let (a, b) = (&sizes_1[i], &sizes_2[i]);
        // The whole directory, and what it holds besides the fixed ballast
        // and the write-ahead log (between 0 and a checkpoint's worth,
        // whenever it is looked at; bounded on its own below).
        assert!(b.total * 10 <= a.total * 12, "{region}: {a:?} -> {b:?}");
        assert!(
            b.kept() * 10 <= a.kept() * 12,
            "{region}'s data directory grew from {a:?} to {b:?} over {second_acked} more writes of the same {KEYS} records"
        );
        assert!(b.wal <= 9 * 1024 * 1024, "{region}: the log past its checkpoint size: {b:?}");
    }
    // Every acknowledged increment, in every region (the load generator
    // abandons up to one request per client at each deadline).
    let acked = first_acked + second_acked;
    for region in ALL {
        let total: u64 = (0..KEYS)
            .map(|k| {
                d.value(region, "likes", &format!("load:{k}")).and_then(|v| v.as_u64()).unwrap_or(0)
            })
            .sum();
        assert!(
            total >= acked && total <= acked + 40 * CLIENTS,
            "{region}: {total} for {acked} acked"
        );
    }
}

/// Write at least `WRITES_PER_PHASE` increments at eu-west, wait until
/// every region has them and has compacted its log; the writes acknowledged.
fn phase(d: &Deployment) -> u64 {
    let mut acked = 0;
    while acked < WRITES_PER_PHASE {
        acked += load(d.url("eu-west"));
    }
    d.wait_converged("likes", &ALL, Duration::from_secs(120));
    for region in ALL {
        let settled = wait_until(Duration::from_secs(60), || {
            let m = d.metrics(region);
            first(&m, "tandem_log_entries", &[]).is_some_and(|e| e <= 2.0 * KEYS as f64)
        });
        assert!(settled, "{region}'s log was not compacted: {}", d.status(region)["log"]);
    }
    // Audit segments past their retention go in the next upkeep round.
    std::thread::sleep(Duration::from_secs(7));
    acked
}

fn load(url: &str) -> u64 {
    tandem_testkit::load::increments(TANDEM, url, "likes", KEYS, CLIENTS, 20)
}

/// A region directory's bytes: all of it, the write-ahead log, the ballast.
#[derive(Debug, Default)]
struct Sizes {
    total: u64,
    wal: u64,
    ballast: u64,
}

impl Sizes {
    fn of(dir: &Path) -> Sizes {
        let mut s = Sizes::default();
        s.add(dir);
        s
    }

    fn add(&mut self, dir: &Path) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                self.add(&path);
                continue;
            }
            let len = std::fs::metadata(&path).map_or(0, |m| m.len());
            self.total += len;
            match path.file_name().and_then(|n| n.to_str()) {
                Some("tandem.wal") => self.wal += len,
                Some("EMERGENCY_BALLAST") => self.ballast += len,
                _ => {}
            }
        }
    }

    /// Everything but the write-ahead log and the ballast.
    fn kept(&self) -> u64 {
        self.total - self.wal - self.ballast
    }
}

fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "test bug: {from:?} not in the example");
    text.replacen(from, to, 1)
}
