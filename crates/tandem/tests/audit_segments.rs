//! The audit log in segments on real processes (issue 16, item 4): a region
//! serving replication batches seals small segments, exports each to its
//! jurisdiction's backup destination and drops it after a short retention;
//! `tandem audit verify` checks the exported part from the first entry and the
//! retained part from its anchor, and fails when an exported or a retained
//! segment is edited. The region restarts on its segmented log and goes on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tandem_testkit::config::example_text;
use tandem_testkit::metrics::first;
use tandem_testkit::{wait_until, Deployment, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));

fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "test bug: {from:?} not in the example");
    text.replacen(from, to, 1)
}

#[test]
fn sealed_audit_segments_are_exported_dropped_and_still_verify() {
    let config = edit(example_text(), "segment_bytes = 16777216", "segment_bytes = 4096");
    let config = edit(&config, "retention = \"30days\"", "retention = \"2s\"");
    let config = edit(&config, "export = false", "export = true");
    let d = TANDEM
        .deployment()
        .prefix("tandem-audit-")
        .config_text(&config)
        .backup_dirs()
        .without_router()
        .start();
    let dropped = |d: &Deployment| {
        first(&d.metrics("eu-west"), "tandem_audit_segments_dropped_total", &[]).unwrap_or(0.0)
    };
    // Writes in separate batches: each batch eu-west serves is an entry.
    let mut n = 0;
    let wrote_enough = wait_until(Duration::from_secs(90), || {
        for _ in 0..5 {
            n += 1;
            d.op("eu-west", "likes", &format!("a{}", n % 50), json!({"op": "incr", "by": 1}));
        }
        std::thread::sleep(Duration::from_millis(50));
        dropped(&d) >= 3.0
    });
    let metrics = d.metrics("eu-west");
    assert!(wrote_enough, "no segments dropped after {n} writes: {}", audit_lines(&metrics));
    let exported = first(&metrics, "tandem_audit_segments_exported_total", &[]).unwrap_or(0.0);
    assert!(exported >= dropped(&d), "dropped only what was exported: {}", audit_lines(&metrics));
    // The disk holds only the young segments: a few, whatever was written.
    let on_disk = first(&metrics, "tandem_audit_segments", &[]).unwrap_or(f64::MAX);
    assert!(on_disk < 40.0, "{}", audit_lines(&metrics));

    let export_dir = d.backup_dir("eu").join("audit").join("eu-west");
    let exports = segment_files(&export_dir);
    assert!(exports.len() >= 3, "exported: {exports:?}");
    // Served entries past the anchor are still readable over the API.
    let entries = d.audit("eu-west");
    assert!(entries.first().is_some_and(|e| e["seq"].as_u64() > Some(1)), "{:?}", entries.first());

    let ok = verify(&d);
    eprintln!("{n} writes; {}; {} exported files\n{}", audit_lines(&metrics), exports.len(), ok.1);
    assert!(ok.0, "verify failed: {}", ok.1);
    assert!(ok.1.contains("exported segments intact"), "{}", ok.1);
    assert!(ok.1.contains("(the anchor)"), "{}", ok.1);

    // An edited exported segment breaks the chain.
    let original = std::fs::read_to_string(&exports[1]).unwrap();
    std::fs::write(&exports[1], tamper(&original)).unwrap();
    let broken = verify(&d);
    assert!(!broken.0 && broken.1.contains("export/"), "{}", broken.1);
    std::fs::write(&exports[1], &original).unwrap();
    // So does a missing one.
    let moved = exports[0].with_extension("moved");
    std::fs::rename(&exports[0], &moved).unwrap();
    assert!(!verify(&d).0, "an export without its first segment verified");
    std::fs::rename(&moved, &exports[0]).unwrap();

    // Retained segments: with the region stopped, so that none is dropped
    // while the test edits it.
    d.stop_process("eu-west");
    let region_dir = d.data_dir().join("eu-west");
    let retained = segment_files(&region_dir.join("audit"));
    assert!(!retained.is_empty(), "no sealed segment retained");
    let text = std::fs::read_to_string(&retained[0]).unwrap();
    std::fs::write(&retained[0], tamper(&text)).unwrap();
    let broken = verify(&d);
    assert!(!broken.0 && broken.1.contains("audit/"), "{}", broken.1);
    std::fs::write(&retained[0], &text).unwrap();
    assert!(verify(&d).0);

    // The region starts again on its segments and the chain goes on.
    d.start_region("eu-west");
    d.op("eu-west", "likes", "after-restart", json!({"op": "incr", "by": 1}));
    d.wait_present("us-east", "likes", "after-restart");
    let after = verify(&d);
    assert!(after.0, "{}", after.1);
}

/// `tandem audit verify` for eu-west: success, and what it printed.
fn verify(d: &Deployment) -> (bool, String) {
    let out = d.cli(&["audit", "verify", "--config", d.config_arg(), "--region", "eu-west"], &[]);
    (out.code == Some(0), format!("{}{}", out.stdout, out.stderr))
}

/// An entry's content changed (the peer's jurisdiction of its first entry).
fn tamper(text: &str) -> String {
    let at = text.find("\"peer_jurisdiction\":\"").expect("an entry naming a peer");
    let mut out = text.to_owned();
    let start = at + "\"peer_jurisdiction\":\"".len();
    out.replace_range(start..start + 2, "XX");
    assert_ne!(out, text);
    out
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "jsonl"));
    files.sort();
    files
}

fn audit_lines(metrics: &str) -> String {
    metrics.lines().filter(|l| l.starts_with("tandem_audit")).collect::<Vec<_>>().join("; ")
}
