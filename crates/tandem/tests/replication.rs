//! Replication between real region processes on loopback (DESIGN.md
//! invariants 1, 3, 5 and 6): concurrent writes of every merge type converge
//! to the same state everywhere they may be held, with counters exact and
//! or-sets add-wins; a causally later write wins over a region whose clock
//! runs 5 s behind; conflicts are counted with their labels and listed,
//! sequential updates are not conflicts, and a conflict on a
//! `conflicts = "never"` type is an invariant violation; and when two regions
//! cannot talk, their changes still meet through the third, while personal
//! records never reach a region outside their jurisdiction. (`catch_up.rs`
//! has the isolated and killed regions.) Each test runs its own deployment,
//! so the tests run in parallel.

use std::collections::BTreeSet;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tandem_testkit::config::{ALL, EU};
use tandem_testkit::{metrics, wait_until, Deployment, Method, Tandem, CONVERGE_TIMEOUT};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));
/// The personal entity types of the example config.
const PERSONAL: [&str; 4] = ["credential", "profile", "balance", "cart"];
/// Its non-personal entity types.
const SHARED: [&str; 5] = ["article", "likes", "page_views", "tags", "settings"];

#[test]
fn converge_after_concurrent_writes_of_every_type() {
    let started = Instant::now();
    // eu-west's clock runs 5 s behind: its HLC lags every peer's by that much
    // (it refuses to jump to stamps further ahead than max_clock_offset_ms).
    let d = TANDEM
        .deployment()
        .prefix("tandem-repl-")
        .separate_nodes()
        .clock_skew("eu-west", -5000)
        .start();
    d.register("alice", "eu-west");
    d.register("bob", "us-east");

    // Causality over clocks: a write made after seeing another wins, even with
    // a smaller timestamp, and is not a conflict.
    let first = d.put_record("us-east", "article", "causal", json!(1));
    d.wait_value(&["eu-west"], "article", "causal", Some(&json!(1)), CONVERGE_TIMEOUT);
    let second = d.put_record("eu-west", "article", "causal", json!(2));
    assert!(
        hlc(&second) < hlc(&first),
        "the skewed region's write should carry the smaller timestamp: {second} vs {first}"
    );
    d.wait_value(&ALL, "article", "causal", Some(&json!(2)), CONVERGE_TIMEOUT);
    for region in ALL {
        assert_eq!(conflict_count(&d, region, "article"), 0.0, "a causal overwrite at {region}");
    }

    // Concurrent writes of every type, in every region allowed to take them.
    const ROUNDS: usize = 10;
    let barrier = Barrier::new(ALL.len());
    std::thread::scope(|s| {
        for region in ALL {
            let (d, barrier) = (&d, &barrier);
            s.spawn(move || {
                barrier.wait();
                for i in 0..ROUNDS {
                    d.put_record(
                        region,
                        "article",
                        "concurrent",
                        json!({"by": region, "round": i}),
                    );
                    d.op(region, "likes", "l1", json!({"op": "incr", "by": 3}));
                    if region == "eu-central" {
                        d.op(region, "likes", "l1", json!({"op": "decr", "by": 1}));
                    }
                    d.op(region, "page_views", "pv1", json!({"op": "incr", "by": 1}));
                    let mut add = vec![format!("{region}-{i}")];
                    if i == 0 {
                        add.push("shared".into());
                    }
                    d.op(region, "tags", "t1", json!({"op": "add", "elements": add}));
                    // `settings` is pinned to its subject's home region:
                    // eu-central writes alice's as an in-jurisdiction failover
                    // for eu-west; us-east is refused (421) and writes bob's.
                    let failover: &[(&str, &str)] = if region == "eu-central" {
                        &[("x-tandem-failover", "eu-west")]
                    } else {
                        &[]
                    };
                    let url = format!("{}/v1/records/settings/alice:prefs", d.url(region));
                    let body = json!({"fields": {region: i, "theme": region}});
                    // Sent as the router sends a failover (its certificate).
                    let client = if failover.is_empty() { d.http() } else { d.router_http() };
                    let (status, resp) =
                        client.call(Method::PATCH, &url, Some(&body), failover).pair();
                    if region == "us-east" {
                        assert_eq!(status, 421, "settings of an EU subject at us-east: {resp}");
                        assert_eq!(resp["error"]["code"], "misdirected_write", "{resp}");
                        assert_eq!(resp["error"]["home_region"], "eu-west", "{resp}");
                        d.patch_record(region, "settings", "bob:prefs", json!({"round": i}));
                    } else {
                        assert_eq!(status, 200, "settings at {region}: {resp}");
                    }
                    if EU.contains(&region) {
                        d.op(
                            region,
                            "cart",
                            "alice:cart",
                            json!({"op": "add", "elements": [format!("{region}-{i}")]}),
                        );
                        // Pinned to eu-west like settings.
                        let url = format!("{}/v1/records/balance/alice:acct/ops", d.url(region));
                        let incr = json!({"op": "incr", "by": 5});
                        let (status, resp) =
                            client.call(Method::POST, &url, Some(&incr), failover).pair();
                        assert_eq!(status, 200, "balance at {region}: {resp}");
                    }
                }
            });
        }
    });
    d.patch_record("eu-west", "profile", "alice:main", json!({"name": "Alice", "city": "Dublin"}));
    d.put_record("eu-west", "credential", "alice:pw", json!("hash-1"));

    // Add-wins: with us-east cut off, it re-adds `x` while eu-west removes `x`
    // and `y` (which it had seen added); the concurrent add survives.
    d.op("us-east", "tags", "aw", json!({"op": "add", "elements": ["x", "y"]}));
    d.wait_value(&ALL, "tags", "aw", Some(&json!(["x", "y"])), CONVERGE_TIMEOUT);
    d.partition("us-east", "eu-west");
    d.partition("us-east", "eu-central");
    d.op("us-east", "tags", "aw", json!({"op": "add", "elements": ["x"]}));
    d.op("eu-west", "tags", "aw", json!({"op": "remove", "elements": ["x", "y"]}));
    d.heal("*", "*");

    let t = Instant::now();
    d.wait_value(&ALL, "likes", "l1", Some(&json!(3 * 3 * ROUNDS - ROUNDS)), CONVERGE_TIMEOUT);
    d.wait_value(&ALL, "page_views", "pv1", Some(&json!(3 * ROUNDS)), CONVERGE_TIMEOUT);
    let mut tags: Vec<String> = vec!["shared".into()];
    let mut cart = Vec::new();
    for region in ALL {
        for i in 0..ROUNDS {
            tags.push(format!("{region}-{i}"));
            if EU.contains(&region) {
                cart.push(format!("{region}-{i}"));
            }
        }
    }
    d.wait_value(&ALL, "tags", "t1", Some(&set_of(&tags)), CONVERGE_TIMEOUT);
    d.wait_value(&ALL, "tags", "aw", Some(&json!(["x"])), CONVERGE_TIMEOUT);
    d.wait_value(&EU, "cart", "alice:cart", Some(&set_of(&cart)), CONVERGE_TIMEOUT);
    d.wait_value(&EU, "balance", "alice:acct", Some(&json!(2 * 5 * ROUNDS)), CONVERGE_TIMEOUT);
    for entity in SHARED {
        d.wait_converged(entity, &ALL, CONVERGE_TIMEOUT);
    }
    for entity in PERSONAL {
        d.wait_converged(entity, &EU, CONVERGE_TIMEOUT);
    }
    let converged_in = t.elapsed();

    // The concurrent lww writes settled on one region's last write.
    let article = d.value("us-east", "article", "concurrent").expect("article");
    assert_eq!(article["round"], json!(ROUNDS - 1), "{article}");
    assert!(ALL.iter().any(|r| article["by"] == *r), "{article}");
    // Both EU regions' fields survived; the field both wrote holds one of them.
    let settings = d.value("us-east", "settings", "alice:prefs").expect("settings");
    for region in EU {
        assert_eq!(settings[region], json!(ROUNDS - 1), "{settings}");
    }
    assert!(EU.iter().any(|r| settings["theme"] == *r), "{settings}");
    assert_eq!(settings.as_object().map(serde_json::Map::len), Some(3), "{settings}");
    let bob = d.value("eu-west", "settings", "bob:prefs");
    assert_eq!(bob, Some(json!({"round": ROUNDS - 1})));
    // The add-wins merge was a real concurrent update somewhere.
    let add_wins = || {
        ALL.iter().any(|r| {
            conflicts_of(&d, r, "tags", "aw")
                .iter()
                .any(|c| c["conflict_type"] == "concurrent_update" && c["resolution"] == "add_wins")
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), add_wins),
        "the add and the remove of `x` were not concurrent"
    );
    // The causal overwrite was never a conflict.
    for region in ALL {
        assert!(conflicts_of(&d, region, "article", "causal").is_empty());
    }
    // Residency: the EU subject's personal records never reached us-east.
    for (entity, id) in [
        ("cart", "alice:cart"),
        ("balance", "alice:acct"),
        ("profile", "alice:main"),
        ("credential", "alice:pw"),
    ] {
        assert_eq!(d.value("us-east", entity, id), None, "{entity}/{id} reached us-east");
        assert!(d.value("eu-central", entity, id).is_some(), "{entity}/{id} missing in eu-central");
        assert_eq!(d.digest("us-east", entity).1, 0, "us-east holds {entity} records");
    }
    eprintln!(
        "converge_after_concurrent_writes_of_every_type: converged in {converged_in:?}, total {:?}",
        started.elapsed()
    );
}

#[test]
fn conflicts_are_counted_with_labels() {
    let started = Instant::now();
    let d = up();
    d.register("carol", "eu-west");

    // Nobody can exchange anything: the two writes are concurrent.
    d.cut("*", "*");
    let west = d.put_record("eu-west", "article", "clash", json!("from eu-west"));
    let east = d.put_record("us-east", "article", "clash", json!("from us-east"));
    d.heal("*", "*");
    // The greater (HLC, region) wins.
    let expected = if (hlc(&west), "eu-west") > (hlc(&east), "us-east") {
        "from eu-west"
    } else {
        "from us-east"
    };
    d.wait_value(&ALL, "article", "clash", Some(&json!(expected)), CONVERGE_TIMEOUT);
    wait_merged(&d, &ALL, "article", "clash", &["eu-west", "us-east"]);
    d.wait_converged("article", &ALL, CONVERGE_TIMEOUT);
    let labelled = |region: &str| {
        let text = d.metrics(region);
        ["hlc_wins", "region_tiebreak"]
            .iter()
            .map(|resolution| {
                metrics::sum(
                    &text,
                    "replication_conflicts_total",
                    &[
                        ("conflict_type", "concurrent_write"),
                        ("resolution", resolution),
                        ("entity_type", "article"),
                    ],
                )
            })
            .sum::<f64>()
    };
    // Some region merged one side into the other: the first to hold both
    // values necessarily did. (A region that receives the second value already
    // merged, forwarded by a third region, sees it causally after its own and
    // rightly counts nothing.)
    assert!(
        wait_until(Duration::from_secs(10), || ALL.iter().map(|r| labelled(r)).sum::<f64>() >= 1.0),
        "no region counted a concurrent_write conflict of article:\n{}",
        ALL.map(|r| d.metrics(r)).join("\n")
    );
    // Each region lists what it counted (the list is written just after the
    // counter, hence the wait).
    let listed_as_counted =
        || ALL.iter().all(|r| conflicts_of(&d, r, "article", "clash").len() as f64 == labelled(r));
    assert!(
        wait_until(Duration::from_secs(10), listed_as_counted),
        "counts and lists differ: {:?}",
        ALL.map(|r| (labelled(r), conflicts_of(&d, r, "article", "clash")))
    );
    let mut listed_total = 0;
    for region in ALL {
        let listed = conflicts_of(&d, region, "article", "clash");
        listed_total += listed.len();
        for c in &listed {
            assert_eq!(c["conflict_type"], "concurrent_write", "{c}");
            assert!(c["resolution"] == "hlc_wins" || c["resolution"] == "region_tiebreak", "{c}");
            assert_eq!(c["invariant_violation"], false, "{c}");
            let both: BTreeSet<&str> = [
                c["local"]["value"].as_str().expect("local"),
                c["remote"]["value"].as_str().expect("remote"),
            ]
            .into();
            assert_eq!(both, BTreeSet::from(["from eu-west", "from us-east"]), "{c}");
            let winner = c["winner"].as_str().expect("winner");
            assert!(winner == "local" || winner == "remote", "{c}");
            assert_eq!(c[winner]["value"], json!(expected), "{c}");
            assert_eq!(c["merged"], json!(expected), "{c}");
        }
    }
    assert!(listed_total >= 1, "GET /v1/conflicts lists the clash nowhere");

    // Sequential updates from different regions are not conflicts.
    let before: Vec<f64> = ALL.iter().map(|r| conflict_count(&d, r, "article")).collect();
    for (i, region) in ["eu-west", "us-east", "eu-central", "eu-west", "us-east"].iter().enumerate()
    {
        d.put_record(region, "article", "sequential", json!(i));
        d.wait_value(&ALL, "article", "sequential", Some(&json!(i)), CONVERGE_TIMEOUT);
    }
    d.wait_converged("article", &ALL, CONVERGE_TIMEOUT);
    let after: Vec<f64> = ALL.iter().map(|r| conflict_count(&d, r, "article")).collect();
    assert_eq!(before, after, "sequential updates were counted as conflicts");
    for region in ALL {
        assert!(conflicts_of(&d, region, "article", "sequential").is_empty());
    }

    // A concurrent write on a `conflicts = "never"` type is an invariant violation.
    d.partition("eu-west", "eu-central");
    d.put_record("eu-west", "credential", "carol:pw", json!("hash-a"));
    let url = format!("{}/v1/records/credential/carol:pw", d.url("eu-central"));
    let (status, resp) = d
        .router_http()
        .call(
            Method::PUT,
            &url,
            Some(&json!({"value": "hash-b"})),
            &[("x-tandem-failover", "eu-west")],
        )
        .pair();
    assert_eq!(status, 200, "{resp}");
    d.heal("eu-west", "eu-central");
    d.heal("eu-central", "eu-west");
    wait_merged(&d, &EU, "credential", "carol:pw", &["eu-west", "eu-central"]);
    d.wait_converged("credential", &EU, CONVERGE_TIMEOUT);
    let violations = || {
        EU.iter()
            .map(|r| {
                metrics::sum(
                    &d.metrics(r),
                    "replication_invariant_violations_total",
                    &[("entity_type", "credential")],
                )
            })
            .sum::<f64>()
    };
    assert!(
        wait_until(Duration::from_secs(10), || violations() >= 1.0),
        "no invariant violation counted"
    );
    let flagged = || {
        EU.iter().any(|r| {
            conflicts_of(&d, r, "credential", "carol:pw")
                .iter()
                .any(|c| c["invariant_violation"] == true)
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), flagged),
        "the credential conflict is not flagged as an invariant violation"
    );
    assert_eq!(d.value("us-east", "credential", "carol:pw"), None);
    eprintln!("conflicts_are_counted_with_labels: {:?}", started.elapsed());
}

#[test]
fn partial_partition_converges_through_a_third_region() {
    let started = Instant::now();
    let d = up();
    d.register("dana", "eu-west");
    d.partition("eu-west", "us-east");

    d.put_record("eu-west", "article", "pp-west", json!("west"));
    d.put_record("us-east", "article", "pp-east", json!("east"));
    d.op("eu-west", "likes", "pp", json!({"op": "incr", "by": 2}));
    d.op("us-east", "likes", "pp", json!({"op": "incr", "by": 3}));
    d.op("eu-west", "tags", "pp", json!({"op": "add", "elements": ["w"]}));
    d.op("us-east", "tags", "pp", json!({"op": "add", "elements": ["e"]}));
    d.patch_record("eu-west", "profile", "dana:main", json!({"city": "Dublin"}));
    d.op("eu-west", "cart", "dana:cart", json!({"op": "add", "elements": ["book"]}));
    d.put_record("eu-west", "credential", "dana:pw", json!("hash"));

    // Through eu-central's forwarding, within ~10 s.
    let t = Instant::now();
    let budget = Duration::from_secs(10);
    let left = || budget.saturating_sub(t.elapsed());
    d.wait_value(&ALL, "article", "pp-west", Some(&json!("west")), left());
    d.wait_value(&ALL, "article", "pp-east", Some(&json!("east")), left());
    d.wait_value(&ALL, "likes", "pp", Some(&json!(5)), left());
    d.wait_value(&ALL, "tags", "pp", Some(&json!(["e", "w"])), left());
    for entity in ["article", "likes", "tags"] {
        d.wait_converged(entity, &ALL, left());
    }
    let converged_in = t.elapsed();
    // The direct links were down all along: it was forwarding.
    for (region, peer) in [("us-east", "eu-west"), ("eu-west", "us-east")] {
        let status = d.status(region);
        let link = status["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .find(|p| p["peer"] == peer)
            .expect("peer")
            .clone();
        assert_eq!(link["connected"], false, "{region} <- {peer}: {link}");
        let via = status["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .find(|p| p["peer"] == "eu-central")
            .cloned();
        let forwarded = via.as_ref().and_then(|p| p["forwarded"].as_u64()).unwrap_or(0);
        assert!(forwarded > 0, "{region} got nothing forwarded from eu-central: {via:?}");
    }

    // The EU personal records reached eu-central, and never us-east, although
    // eu-central talks to us-east and forwards eu-west's other changes.
    d.wait_value(
        &["eu-central"],
        "profile",
        "dana:main",
        Some(&json!({"city": "Dublin"})),
        CONVERGE_TIMEOUT,
    );
    d.wait_value(&["eu-central"], "cart", "dana:cart", Some(&json!(["book"])), CONVERGE_TIMEOUT);
    d.wait_value(&["eu-central"], "credential", "dana:pw", Some(&json!("hash")), CONVERGE_TIMEOUT);
    // Longer than the forward delay and a few forward polls.
    std::thread::sleep(Duration::from_millis(1500));
    for (entity, id) in [("profile", "dana:main"), ("cart", "dana:cart"), ("credential", "dana:pw")]
    {
        assert_eq!(d.value("us-east", entity, id), None, "{entity}/{id} reached us-east");
        assert_eq!(d.digest("us-east", entity).1, 0, "us-east holds {entity} records");
    }
    eprintln!(
        "partial_partition_converges_through_a_third_region: converged in {converged_in:?}; total {:?}",
        started.elapsed()
    );
}

/// The `(wall_ms, logical)` of a write answer.
fn hlc(ack: &Value) -> (u64, u64) {
    (
        ack["hlc"]["wall_ms"].as_u64().expect("wall_ms"),
        ack["hlc"]["logical"].as_u64().expect("logical"),
    )
}

/// Conflicts a region lists for one record.
fn conflicts_of(d: &Deployment, region: &str, entity: &str, id: &str) -> Vec<Value> {
    d.conflicts(region).into_iter().filter(|c| c["entity"] == entity && c["id"] == id).collect()
}

/// Wait until every one of `regions` has merged the writes of each of
/// `writers` into a record (its version vector names them all): after that no
/// region can count a conflict between those writes any more.
fn wait_merged(d: &Deployment, regions: &[&str], entity: &str, id: &str, writers: &[&str]) {
    let merged = |r: &&str| {
        let a = d.get(r, &format!("/v1/records/{entity}/{id}"));
        a.status == 200 && writers.iter().all(|w| a.body["version"][w].as_u64().is_some())
    };
    assert!(
        wait_until(CONVERGE_TIMEOUT, || regions.iter().all(merged)),
        "{entity}/{id} did not merge the writes of {writers:?}: {:?}",
        regions
            .iter()
            .map(|r| d.get(r, &format!("/v1/records/{entity}/{id}")).to_string())
            .collect::<Vec<_>>()
    );
}

/// `replication_conflicts_total` of one entity type in a region.
fn conflict_count(d: &Deployment, region: &str, entity: &str) -> f64 {
    metrics::sum(&d.metrics(region), "replication_conflicts_total", &[("entity_type", entity)])
}

fn set_of<'a>(items: impl IntoIterator<Item = &'a String>) -> Value {
    let sorted: BTreeSet<&String> = items.into_iter().collect();
    json!(sorted)
}

/// The example deployment under `tandem up`, without the router.
fn up() -> Deployment {
    TANDEM.deployment().prefix("tandem-repl-").without_router().start()
}
