//! Anti-entropy repair on real processes (issue 16, item 3: `tandem repair
//! --config F --region R`): a region whose store lost records that its
//! cursors say it has (replication alone never sends them again) gets them
//! back from its peers by comparing digest trees and exchanging the ranges
//! that differ, a region holding what a peer lacks sends it, only what both
//! may hold is compared or sent (no EU personal record reaches us-east), and
//! a second repair finds nothing to do.

use std::time::Duration;

use serde_json::json;
use tandem_store::Store;
use tandem_testkit::config::ALL;
use tandem_testkit::{Deployment, Method, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));

fn repair(d: &Deployment, region: &str) -> (bool, String) {
    let out = d.cli(&["repair", "--config", d.config_arg(), "--region", region], &[]);
    (out.code == Some(0), format!("{}{}", out.stdout, out.stderr))
}

/// Take records away from a stopped region's store behind replication's
/// back: records and their log entries go, the cursors stay.
fn lose_records(d: &Deployment, region: &str, lost: &[(&str, &str)]) {
    let store =
        tandem_store::RedbStore::open(d.data_dir(), region).expect("open the stopped store");
    let mut snap = store.snapshot(region).expect("snapshot");
    let gone = |e: &str, i: &str| lost.iter().any(|(le, li)| *le == e && *li == i);
    let before = snap.records.len();
    snap.records.retain(|(e, i, _)| !gone(e, i));
    assert_eq!(snap.records.len(), before - lost.len(), "the records were there");
    snap.log.retain(|entry| !gone(&entry.entity, &entry.id));
    let floor = snap.last_seq + 1;
    store.restore(&snap, floor).expect("restore without them");
}

#[test]
fn repair_brings_back_what_a_store_lost_and_sends_only_what_both_may_hold() {
    let d = TANDEM.deployment().prefix("tandem-repair-").without_router().start();
    let within = Duration::from_secs(60);
    d.register("rpanna", "eu-west");
    for i in 0..30 {
        d.put_record("eu-west", "article", &format!("r{i}"), json!({"title": format!("t{i}")}));
    }
    d.patch_record("eu-west", "profile", "rpanna:main", json!({"name": "Anna"}));
    d.wait_converged("article", &ALL, within);
    d.wait_converged("profile", &["eu-west", "eu-central"], within);

    // eu-central loses four articles and the profile; us-east loses one
    // article that only it will have an update of.
    d.stop_process("eu-central");
    lose_records(
        &d,
        "eu-central",
        &[
            ("article", "r0"),
            ("article", "r1"),
            ("article", "r2"),
            ("article", "r3"),
            ("profile", "rpanna:main"),
        ],
    );
    d.start_region("eu-central");
    d.stop_process("us-east");
    lose_records(&d, "us-east", &[("article", "r9")]);
    d.start_region("us-east");
    assert_ne!(d.digest("eu-central", "article"), d.digest("eu-west", "article"));
    assert_eq!(d.value("eu-central", "profile", "rpanna:main"), None);
    assert_eq!(d.value("us-east", "article", "r9"), None);
    // Replication does not bring them back: the cursors say they were applied.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(d.value("eu-central", "article", "r0"), None);

    let (ok, out) = repair(&d, "eu-central");
    eprintln!("{out}");
    assert!(ok, "{out}");
    assert!(out.contains("eu-central from eu-west"), "{out}");
    assert!(out.contains("records received"), "{out}");
    d.wait_converged("article", &["eu-west", "eu-central"], within);
    d.wait_converged("profile", &["eu-west", "eu-central"], within);
    assert_eq!(d.value("eu-central", "profile", "rpanna:main"), Some(json!({"name": "Anna"})));
    // us-east's lost article comes back from its repair with eu-central
    // (both ways) or through eu-central's stream of what it repaired.
    let (ok, out) = repair(&d, "us-east");
    assert!(ok, "{out}");
    d.wait_converged("article", &ALL, within);
    assert!(d.value("us-east", "article", "r9").is_some());
    // Never a personal EU record in us-east.
    assert!(d.scan("us-east", "profile").is_empty(), "{:?}", d.scan("us-east", "profile"));

    // A second repair finds nothing to do.
    let (ok, again) = repair(&d, "eu-central");
    assert!(ok, "{again}");
    assert!(
        again.lines().filter(|l| l.contains(" from ")).all(|l| l.contains("0 records received")),
        "{again}"
    );
}

/// A record deleted while a region is isolated stays deleted after that
/// region returns with its old state, after the logs are compacted and after
/// a repair exchanges the full states of both sides.
#[test]
fn a_record_deleted_while_a_region_was_away_stays_deleted_through_compaction_and_repair() {
    let d = TANDEM.deployment().prefix("tandem-repair-del-").without_router().start();
    let within = Duration::from_secs(60);
    for i in 0..20 {
        d.put_record("eu-west", "article", &format!("d{i}"), json!({"title": format!("old{i}")}));
    }
    d.wait_converged("article", &ALL, within);
    d.admin("us-east", "isolate");
    for i in 0..10 {
        let answer =
            d.direct(Method::DELETE, "eu-west", &format!("/v1/records/article/d{i}"), None, &[]);
        assert!(answer.status < 300, "delete d{i}: {answer:?}");
    }
    // Rewrites while us-east is away, so that eu-west's log has something to
    // compact, and us-east still holds every old value.
    for _ in 0..150 {
        for i in 10..20 {
            d.put_record("eu-west", "article", &format!("d{i}"), json!({"title": "new"}));
        }
    }
    d.wait_converged("article", &["eu-west", "eu-central"], within);
    let compacted = || {
        tandem_testkit::metrics::first(
            &d.metrics("eu-west"),
            "tandem_log_compacted_entries_total",
            &[],
        )
        .unwrap_or(0.0)
    };
    assert!(
        // At least one pass over the 1,500 rewrites (how many it removes
        // depends on how many were older than the horizon at that moment).
        tandem_testkit::wait_until(within, || compacted() > 400.0),
        "compacted {}",
        compacted()
    );
    assert!(d.value("us-east", "article", "d0").is_some(), "us-east still has the old state");
    d.admin("us-east", "rejoin");
    d.wait_converged("article", &ALL, within);
    let (ok, out) = repair(&d, "us-east");
    assert!(ok, "{out}");
    let (ok, out) = repair(&d, "eu-west");
    assert!(ok, "{out}");
    d.wait_converged("article", &ALL, within);
    for region in ALL {
        for i in 0..10 {
            assert_eq!(d.value(region, "article", &format!("d{i}")), None, "d{i} at {region}");
        }
        assert_eq!(d.value(region, "article", "d15"), Some(json!({"title": "new"})), "{region}");
    }
}

/// Hostile repair traffic is refused with the documented status and code,
/// and changes nothing stored.
#[test]
fn bad_repair_and_acknowledgement_requests_are_refused_and_change_nothing() {
    use tandem_testkit::refusals::{case, run_cases};
    let d = TANDEM.deployment().prefix("tandem-repair-bad-").start();
    d.put_record("eu-west", "article", "b1", json!({"title": "kept"}));
    let n = d.url("eu-west").to_owned();
    let too_many_tops =
        tandem_engine::wire::encode_message(&tandem_engine::repair::DigestRequest {
            tops: (0..=255).collect(),
        });
    let too_many_leaves =
        tandem_engine::wire::encode_message(&tandem_engine::repair::StatesRequest {
            leaves: (0..5000).collect(),
            after: None,
            limit: 10,
        });
    let big = vec![0u8; 65 * 1024];
    let mut cases = Vec::new();
    for path in ["/v1/replication/digests", "/v1/replication/states", "/v1/replication/ack"] {
        let url = format!("{n}{path}");
        cases.push(
            case(
                &format!("{path}: garbage"),
                "POST",
                url.clone(),
                Some(b"\x01garbage"),
                400,
                "bad_request",
            )
            .as_holder("eu-central"),
        );
        cases.push(
            case(
                &format!("{path}: over 64 KiB"),
                "POST",
                url,
                Some(&big),
                413,
                "payload_too_large",
            )
            .as_holder("eu-central"),
        );
    }
    cases.push(
        case(
            "256 tops",
            "POST",
            format!("{n}/v1/replication/digests"),
            Some(&too_many_tops),
            400,
            "bad_request",
        )
        .as_holder("eu-central"),
    );
    cases.push(
        case(
            "5,000 leaves",
            "POST",
            format!("{n}/v1/replication/states"),
            Some(&too_many_leaves),
            400,
            "bad_request",
        )
        .as_holder("eu-central"),
    );
    cases.push(
        case(
            "repair from a region that is not a peer",
            "POST",
            format!("{n}/v1/admin/repair?peer=mars"),
            None,
            400,
            "bad_request",
        )
        .as_holder("operator"),
    );
    cases.push(
        case(
            "repair with an unknown query key",
            "POST",
            format!("{n}/v1/admin/repair?from=eu-central"),
            None,
            400,
            "bad_request",
        )
        .as_holder("operator"),
    );
    run_cases(&d, cases);
    assert_eq!(d.value("eu-west", "article", "b1"), Some(json!({"title": "kept"})));
}
