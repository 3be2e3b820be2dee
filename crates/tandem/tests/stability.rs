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
