//! The stability horizon on real processes (issue 16, item 2, its first
//! part): regions acknowledge their durable positions to each other over TLS,
//! and each keeps, per origin, the position every region has applied. It
//! follows the writes while every region is reachable, stops at what an
//! isolated region had applied (its age growing, in `/v1/status` and the
//! metric the `TandemStabilityHorizonStuck` alert reads), and catches up
//! once the region returns.

use std::time::Duration;

use serde_json::{json, Value};
use tandem_testkit::config::ALL;
use tandem_testkit::metrics::first;
use tandem_testkit::{wait_until, Deployment, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));

fn stability(d: &Deployment, region: &str) -> Value {
    d.status(region)["stability"].clone()
}

/// The position of `origin` every region has applied, as `region` sees it.
fn horizon(d: &Deployment, region: &str, origin: &str) -> Option<u64> {
    stability(d, region)["horizon"][origin].as_u64()
}

fn last_seq(d: &Deployment, region: &str) -> u64 {
    d.status(region)["log"]["last_seq"].as_u64().unwrap()
}

fn write(d: &Deployment, n: usize, tag: &str) {
    for i in 0..n {
        d.op("eu-west", "likes", &format!("{tag}{}", i % 20), json!({"op": "incr", "by": 1}));
    }
}

#[test]
fn the_stability_horizon_follows_writes_and_stops_at_an_isolated_region() {
    let d = TANDEM.deployment().prefix("tandem-stab-").without_router().start();
    let within = Duration::from_secs(30);
    write(&d, 40, "s");
    let written = last_seq(&d, "eu-west");
    for region in ALL {
        let caught_up = wait_until(within, || horizon(&d, region, "eu-west") >= Some(written));
        assert!(caught_up, "{region}: {} (eu-west wrote {written})", stability(&d, region));
        let age = stability(&d, region)["age_ms"].as_u64().unwrap();
        assert!(age < 10_000, "{region}'s horizon is {age} ms old while every region is up");
    }

    // us-east is cut off: what eu-west writes now is not stable anywhere.
    d.admin("us-east", "isolate");
    let before = horizon(&d, "eu-west", "eu-west").unwrap();
    write(&d, 40, "t");
    let written_alone = last_seq(&d, "eu-west");
    d.wait_value(&["eu-central"], "likes", "t0", Some(&json!(2)), within);
    std::thread::sleep(Duration::from_secs(4));
    for region in ["eu-west", "eu-central"] {
        let h = horizon(&d, region, "eu-west").unwrap();
        assert!(h >= before && h < written_alone, "{region}: {h} with us-east cut off at {before}");
        let s = stability(&d, region);
        assert!(s["age_ms"].as_u64().unwrap() >= 3_000, "{region}: {s}");
        assert!(s["acked_ms_ago"]["us-east"].as_u64().unwrap() >= 3_000, "{region}: {s}");
    }
    let age_s = first(&d.metrics("eu-west"), "tandem_stability_horizon_age_seconds", &[]).unwrap();
    assert!(age_s >= 3.0, "the age metric reads {age_s}");

    // Back: the horizon covers everything eu-west wrote, and is fresh again.
    d.admin("us-east", "rejoin");
    for region in ALL {
        let caught_up =
            wait_until(within, || horizon(&d, region, "eu-west") >= Some(written_alone));
        assert!(caught_up, "{region}: {}", stability(&d, region));
    }
    let fresh = wait_until(within, || {
        stability(&d, "eu-west")["age_ms"].as_u64().is_some_and(|a| a < 5_000)
    });
    assert!(fresh, "{}", stability(&d, "eu-west"));
}

/// A region silent past `[replication] peer_retention` is evicted: the
/// horizon moves on without it; when it returns, it and its peers resync by
/// anti-entropy, and every acknowledged increment is everywhere.
#[test]
fn a_region_silent_past_its_retention_is_evicted_and_resynced_on_return() {
    let config = tandem_testkit::config::example_text().replacen(
        "peer_retention = \"1day\"",
        "peer_retention = \"3s\"",
        1,
    );
    assert_ne!(config, tandem_testkit::config::example_text(), "the example sets the retention");
    let d =
        TANDEM.deployment().prefix("tandem-evict-").config_text(&config).without_router().start();
    let within = Duration::from_secs(30);
    write(&d, 20, "e");
    d.admin("us-east", "isolate");
    write(&d, 40, "f");
    let written = last_seq(&d, "eu-west");
    let evicted = wait_until(within, || stability(&d, "eu-west")["evicted"] == json!(["us-east"]));
    assert!(evicted, "{}", stability(&d, "eu-west"));
    // Without us-east holding it back, the horizon covers what the others have.
    let moved = wait_until(within, || horizon(&d, "eu-west", "eu-west") >= Some(written));
    assert!(moved, "{}", stability(&d, "eu-west"));
    let gauge = first(&d.metrics("eu-west"), "tandem_stability_evicted_peers", &[]);
    assert_eq!(gauge, Some(1.0));

    d.admin("us-east", "rejoin");
    let resynced =
        |region: &str| first(&d.metrics(region), "tandem_peer_resyncs_total", &[]).unwrap_or(0.0);
    let both = wait_until(within, || resynced("eu-west") >= 1.0 && resynced("us-east") >= 2.0);
    assert!(both, "resyncs: eu-west {}, us-east {}", resynced("eu-west"), resynced("us-east"));
    assert!(wait_until(within, || stability(&d, "eu-west")["evicted"] == json!([])));
    d.wait_converged("likes", &ALL, within);
    for region in ALL {
        // e0..e19 once each, f0..f19 twice each.
        for i in 0..20 {
            assert_eq!(d.value(region, "likes", &format!("e{i}")), Some(json!(1)), "{region}");
            assert_eq!(d.value(region, "likes", &format!("f{i}")), Some(json!(2)), "{region}");
        }
    }
}
