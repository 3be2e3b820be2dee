//! Region pinning, the router and data residency, proven end to end on the real
//! binary: each test runs its own `tandem up` deployment of the example config
//! (router included) on free loopback ports. They show that EU-homed pinned
//! writes land in their home region and fail over only inside the EU (drain,
//! restore and kills take effect at once or within the probe budget), that a
//! roaming caller is served inside its subject's jurisdiction, and that the
//! node refuses what the router must never send (403, 421, 422, 409).
//! (`data_residency.rs` searches the bytes.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use tandem_testkit::config::{ALL, EU};
use tandem_testkit::http::assert_routed;
use tandem_testkit::{metrics, wait_until, Answer, Builder, Method, Tandem, CONVERGE_TIMEOUT};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));
/// A dead region must be routed around within this time (the 2 s)...
const ROUTE_AROUND_BUDGET: Duration = Duration::from_secs(2);
/// ...plus this much for the test's own polling and a busy machine.
const POLL_MARGIN: Duration = Duration::from_millis(500);
/// Pause between two attempts while waiting for the router to notice a kill.
const KILL_POLL: Duration = Duration::from_millis(20);

#[test]
fn eu_writes_go_home_fail_over_inside_eu_and_never_reach_us() {
    let d = deployment().start();
    let subject = "anna";
    d.register(subject, "eu-west");
    let id = format!("{subject}:password");
    let write = |v: &str| d.put_routed("credential", &id, v, "us-east");

    // Home, even for a caller in the US; replicated to the other EU region.
    let r = write("v1");
    assert_routed(&r, 200, "eu-west", "home", "pinned write from the US");
    assert_eq!(r.body["region"], "eu-west", "{r}");
    d.wait_value(&["eu-central"], "credential", &id, Some(&json!("v1")), CONVERGE_TIMEOUT);

    // Drain and restore are token-protected...
    assert_error(&d.router_admin("eu-west", "drain", None), 401, "unauthorized", "drain, no token");
    let r = d.router_admin("eu-west", "drain", Some("not-the-token"));
    assert_error(&r, 401, "unauthorized", "drain, wrong token");
    assert_eq!(d.route_of("eu-west")["drained"], false, "a refused drain changed nothing");
    // ...and take effect on the very next request.
    d.drain("eu-west");
    assert_eq!(d.route_of("eu-west")["drained"], true);
    let r = write("v2");
    assert_routed(&r, 200, "eu-central", "failover", "first write after draining eu-west");
    d.wait_value(&["eu-west"], "credential", &id, Some(&json!("v2")), CONVERGE_TIMEOUT);
    d.restore("eu-west");
    let r = write("v3");
    assert_routed(&r, 200, "eu-west", "home", "first write after restoring eu-west");

    // Both EU regions drained: 503, never us-east.
    d.drain("eu-west");
    d.drain("eu-central");
    let r = write("v4-must-not-land");
    assert_error(&r, 503, "no_region_available", "pinned write with the EU drained");
    assert_eq!(r.region(), None, "a refused request names no serving region: {r}");
    let r = d.routed(Method::GET, &format!("/v1/records/credential/{id}"), None, "us-east");
    assert_error(&r, 503, "no_region_available", "personal read with the EU drained");
    let cart = format!("/v1/records/cart/{subject}:cart/ops");
    let add = json!({"op": "add", "elements": ["v4-cart"]});
    let r = d.routed(Method::POST, &cart, Some(&add), "eu-west");
    assert_error(&r, 503, "no_region_available", "roaming personal write with the EU drained");
    // Public data is still served, by the nearest region.
    let r = d.put_routed("article", "news-1", "public", "eu-west");
    assert_routed(&r, 200, "us-east", "nearest", "public write with the EU drained");
    assert_eq!(d.value("us-east", "credential", &id), None, "the EU record reached us-east");
    assert_eq!(d.value("us-east", "cart", &format!("{subject}:cart")), None);
    assert_eq!(d.value("eu-west", "credential", &id), Some(json!("v3")), "a refused write landed");
    assert_eq!(d.digest("us-east", "credential").1, 0, "us-east holds credentials");
    d.restore("eu-west");
    d.restore("eu-central");
    let r = write("v5");
    assert_routed(&r, 200, "eu-west", "home", "after restoring both");
    d.wait_value(&["eu-central"], "credential", &id, Some(&json!("v5")), CONVERGE_TIMEOUT);

    let router_metrics = d.metrics_at(d.router());
    let failovers = [("from", "eu-west"), ("to", "eu-central")];
    assert!(
        metrics::sum(&router_metrics, "router_failovers_total", &failovers) >= 1.0,
        "router_failovers_total does not count the failover:\n{router_metrics}"
    );
    let no_region = [("outcome", "no_region")];
    assert!(metrics::sum(&router_metrics, "router_requests_total", &no_region) >= 3.0);

    // A killed home region is routed around by the router on its own: with no
    // traffic at all, its probes find out, and the very next write fails over.
    let started = Instant::now();
    d.kill("eu-west");
    let mut polls = 0;
    while d.route_of("eu-west")["up"] == true {
        polls += 1;
        assert!(started.elapsed() < Duration::from_secs(10), "eu-west never marked down");
        std::thread::sleep(KILL_POLL);
    }
    let r = write("after-kill");
    let route_around = started.elapsed();
    assert_routed(&r, 200, "eu-central", "failover", "the first write after eu-west was killed");
    eprintln!("dead eu-west (no traffic) routed around after {route_around:?} ({polls} polls)");
    assert!(
        route_around < ROUTE_AROUND_BUDGET + POLL_MARGIN,
        "a dead eu-west was routed around only after {route_around:?}"
    );

    // With the whole EU dead, under traffic: 503 within the same budget, never us-east.
    let started = Instant::now();
    d.kill("eu-central");
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let refused = loop {
        let r = write("eu-dead");
        *seen.entry(format!("{} {}", r.status, r.code())).or_default() += 1;
        assert_ne!(r.region(), Some("us-east"), "an EU write left the EU: {r}");
        if r.status == 503 {
            assert_error(&r, 503, "no_region_available", "with the EU dead");
            break started.elapsed();
        }
        // Until the router has seen enough failures the write still goes to
        // the dying region, and fails without being stored anywhere.
        assert_error(&r, 502, "upstream_unavailable", "a write while eu-central is dying");
        assert!(started.elapsed() < Duration::from_secs(10), "never refused: {seen:?}");
        std::thread::sleep(KILL_POLL);
    };
    eprintln!("EU dead: 503 no_region_available after {refused:?} (answers meanwhile: {seen:?})");
    assert!(refused < ROUTE_AROUND_BUDGET + POLL_MARGIN, "503 only after {refused:?}: {seen:?}");
    // The gauge follows at the next probe.
    let gauges_down = || {
        let text = d.metrics_at(d.router());
        EU.iter().all(|r| metrics::sum(&text, "router_region_up", &[("region", r)]) == 0.0)
            && metrics::sum(&text, "router_region_up", &[("region", "us-east")]) == 1.0
    };
    assert!(
        wait_until(Duration::from_secs(2), gauges_down),
        "router_region_up does not show the EU down:\n{}",
        d.metrics_at(d.router())
    );

    // Back: writes go home again, the failover write reached home, and
    // nothing of it ever reached us-east.
    d.start_region("eu-west");
    d.start_region("eu-central");
    let home_again = || write("v6").region() == Some("eu-west");
    assert!(wait_until(Duration::from_secs(10), home_again), "{}", d.routes());
    let r = write("v7");
    assert_routed(&r, 200, "eu-west", "home", "after the EU came back");
    d.wait_value(&["eu-central"], "credential", &id, Some(&json!("v7")), CONVERGE_TIMEOUT);
    assert_eq!(d.value("us-east", "credential", &id), None, "the EU record reached us-east");
    assert_eq!(d.digest("us-east", "credential").1, 0, "us-east holds credentials");
}

#[test]
fn roaming_reads_and_writes_stay_in_the_jurisdiction() {
    let d = deployment().start();
    d.register("bea", "eu-west");
    d.register("cem", "eu-central");
    d.register("dan", "us-east");
    let add = |item: &str| json!({"op": "add", "elements": [item]});
    let in_eu = |r: &Answer, what: &str| {
        assert_eq!(r.status, 200, "{what}: {r}");
        let region = r.region().unwrap_or("");
        assert!(EU.contains(&region), "{what} was served outside the EU: {r}");
        assert!(matches!(r.route(), Some("home" | "nearest")), "{what}: {r}");
    };

    // An EU user roaming in the US adds to her cart (personal, any-region):
    // the nearest EU region takes it, and reads come from the EU too.
    let r = d.routed(Method::POST, "/v1/records/cart/bea:cart/ops", Some(&add("book")), "us-east");
    in_eu(&r, "bea's cart write from the US");
    let r = d.routed(Method::GET, "/v1/records/cart/bea:cart", None, "us-east");
    in_eu(&r, "bea's cart read from the US");
    assert_eq!(r.body["value"], json!(["book"]), "{r}");

    // Homed at eu-central; from the US the nearest EU region is eu-west.
    let r = d.routed(Method::POST, "/v1/records/cart/cem:cart/ops", Some(&add("pen")), "us-east");
    in_eu(&r, "cem's cart write from the US");
    assert_eq!(r.region(), Some("eu-west"), "nearest EU region from us-east: {r}");
    assert_eq!(r.route(), Some("nearest"), "{r}");
    let r = d.routed(Method::GET, "/v1/records/cart/cem:cart", None, "us-east");
    in_eu(&r, "cem's cart read from the US");
    assert_eq!(r.body["value"], json!(["pen"]), "{r}");

    // From eu-central, eu-central serves; it sees the other region's adds
    // once they replicate.
    let r =
        d.routed(Method::POST, "/v1/records/cart/bea:cart/ops", Some(&add("map")), "eu-central");
    assert_routed(&r, 200, "eu-central", "nearest", "bea's cart write from eu-central");
    let both = json!(["book", "map"]);
    let converged = || {
        let r = d.routed(Method::GET, "/v1/records/cart/bea:cart", None, "eu-central");
        r.region() == Some("eu-central") && r.body["value"] == both
    };
    assert!(wait_until(CONVERGE_TIMEOUT, converged), "bea's cart never merged");

    // With eu-west drained the roaming user is still served in the EU.
    d.drain("eu-west");
    let r = d.routed(Method::POST, "/v1/records/cart/bea:cart/ops", Some(&add("hat")), "us-east");
    assert_routed(&r, 200, "eu-central", "nearest", "bea's cart with eu-west drained");
    let r = d.routed(Method::GET, "/v1/records/cart/bea:cart", None, "us-east");
    assert_routed(&r, 200, "eu-central", "nearest", "bea's cart read with eu-west drained");
    d.restore("eu-west");

    // None of it is in the US.
    for id in ["bea:cart", "cem:cart"] {
        assert_eq!(d.value("us-east", "cart", id), None, "{id} reached us-east");
    }

    // Controls: a US user roaming in the EU is served by us-east; public data
    // is served by the caller's nearest region; an unknown caller region is refused.
    let r = d.routed(Method::POST, "/v1/records/cart/dan:cart/ops", Some(&add("cap")), "eu-west");
    assert_routed(&r, 200, "us-east", "home", "dan's cart write from the EU");
    assert_eq!(d.value("eu-west", "cart", "dan:cart"), None, "a US cart reached the EU");
    let r = d.put_routed("article", "roaming-news", "hello", "us-east");
    assert_routed(&r, 200, "us-east", "nearest", "public write from the US");
    let r = d.put_routed("article", "roaming-news", "hello", "mars");
    assert_error(&r, 400, "bad_request", "unknown caller region");
}

#[test]
fn node_enforces_residency_and_pinning() {
    let d = deployment().start();
    d.register("eva", "eu-west");
    d.register("fay", "eu-west");
    d.register("gus", "us-east");
    // Failover markers are sent as the router sends them: a node honours
    // `X-Tandem-Failover` only on a connection with the router's certificate.
    let put = |region: &str, entity: &str, id: &str, value: &str, headers: &[(&str, &str)]| {
        let url = format!("{}/v1/records/{entity}/{id}", d.url(region));
        let client = if headers.is_empty() { d.http() } else { d.router_http() };
        client.call(Method::PUT, &url, Some(&json!({ "value": value })), headers)
    };
    let denials = |region: &str, reason: &str| {
        metrics::sum(&d.metrics_at(d.url(region)), "residency_denials_total", &[("reason", reason)])
    };

    // Straight at us-east, personal data of an EU subject is refused and not stored.
    let digest_before = d.digest("us-east", "credential");
    let cart_before = d.digest("us-east", "cart");
    let denied_before = denials("us-east", "write_outside_jurisdiction");
    let r = put("us-east", "credential", "eva:pw", "eva-secret-value", &[]);
    assert_error(&r, 403, "residency_violation", "EU credential written at us-east");
    assert_eq!(r.body["error"]["home_region"], "eu-west", "{r}");
    let add = json!({"op": "add", "elements": ["eva-cart-item"]});
    let r = d.direct(Method::POST, "us-east", "/v1/records/cart/eva:cart/ops", Some(&add), &[]);
    assert_error(&r, 403, "residency_violation", "EU cart written at us-east");
    assert_eq!(d.value("us-east", "credential", "eva:pw"), None, "the refused write was stored");
    assert_eq!(d.value("us-east", "cart", "eva:cart"), None, "the refused write was stored");
    assert_eq!(d.digest("us-east", "credential"), digest_before);
    assert_eq!(d.digest("us-east", "cart"), cart_before);
    assert_eq!(denials("us-east", "write_outside_jurisdiction"), denied_before + 2.0);
    // A failover marker does not open the US to EU data.
    let eu_failover = [("x-tandem-failover", "eu-west")];
    let r = put("us-east", "credential", "eva:pw", "eva-secret-value", &eu_failover);
    assert!(matches!(r.status, 403 | 421), "failover marker accepted at us-east: {r}");
    assert_eq!(d.value("us-east", "credential", "eva:pw"), None, "the refused write was stored");
    // Not even for pinned non-personal data: failover stays in the jurisdiction.
    let r = put("us-east", "article", "x", "ok", &[]);
    assert_eq!(r.status, 200, "public data is written anywhere: {r}");
    let path = "/v1/records/settings/eva:prefs";
    let patch = json!({"fields": {"theme": "dark"}});
    let url = format!("{}{path}", d.url("us-east"));
    let r = d.router_http().call(Method::PATCH, &url, Some(&patch), &eu_failover);
    assert_error(&r, 421, "misdirected_write", "pinned settings at us-east marked as failover");
    assert_eq!(r.body["error"]["home_region"], "eu-west", "{r}");
    // The value never reached us-east's logs either.
    assert!(!d.log_text().contains("eva-secret-value"), "a refused value was logged");

    // Pinned writes at a non-home region of the same jurisdiction need a valid failover.
    let misdirected_before = denials("eu-central", "misdirected_write");
    let r = put("eu-central", "credential", "eva:pw", "v1", &[]);
    assert_error(&r, 421, "misdirected_write", "pinned write at eu-central without failover");
    assert_eq!(r.body["error"]["home_region"], "eu-west", "{r}");
    let wrong_home = [("x-tandem-failover", "eu-central")];
    let r = put("eu-central", "credential", "eva:pw", "v1", &wrong_home);
    assert_error(&r, 421, "misdirected_write", "failover marker naming the wrong home");
    assert_eq!(denials("eu-central", "misdirected_write"), misdirected_before + 2.0);
    assert_eq!(d.value("eu-central", "credential", "eva:pw"), None);
    // A client's marker is not the router's: ignored, so still misdirected.
    let url = format!("{}/v1/records/credential/eva:pw", d.url("eu-central"));
    let r = d.call(Method::PUT, &url, Some(&json!({"value": "v1"})), &eu_failover);
    assert_error(&r, 421, "misdirected_write", "a failover marker from a client, not the router");
    assert_eq!(d.value("eu-central", "credential", "eva:pw"), None);
    let r = put("eu-central", "credential", "eva:pw", "v1", &eu_failover);
    assert_eq!(r.status, 200, "a valid failover inside the EU: {r}");
    assert_eq!(r.body["region"], "eu-central", "{r}");
    d.wait_value(&["eu-west"], "credential", "eva:pw", Some(&json!("v1")), CONVERGE_TIMEOUT);
    // At home, no marker is needed.
    assert_eq!(put("eu-west", "credential", "eva:pw", "v2", &[]).status, 200);

    // Unknown subjects on personal types, at the node and through the router.
    let r = put("eu-west", "credential", "nobody:pw", "x", &[]);
    assert_error(&r, 422, "unknown_subject", "credential of an unknown subject");
    let r =
        d.direct(Method::POST, "eu-central", "/v1/records/cart/nobody:cart/ops", Some(&add), &[]);
    assert_error(&r, 422, "unknown_subject", "cart of an unknown subject");
    let r = d.put_routed("credential", "nobody:pw", "x", "eu-west");
    assert_error(&r, 422, "unknown_subject", "credential of an unknown subject via the router");
    assert_eq!(d.value("eu-west", "credential", "nobody:pw"), None);

    // Moves: inside the jurisdiction yes, out of it never.
    let subject_path = "/v1/subjects/fay";
    let to = |home: &str| json!({ "home_region": home });
    let r = d.routed(Method::PUT, subject_path, Some(&to("eu-central")), "eu-west");
    assert_eq!(r.status, 200, "move fay to eu-central: {r}");
    d.wait_subject_everywhere("fay", "eu-central");
    let r = d.routed(Method::GET, subject_path, None, "us-east");
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        (&r.body["home_region"], &r.body["jurisdiction"]),
        (&json!("eu-central"), &json!("EU"))
    );
    let r = d.routed(Method::PUT, subject_path, Some(&to("us-east")), "us-east");
    assert_error(&r, 409, "cross_jurisdiction_move", "move fay to us-east via the router");
    for region in ALL {
        let r = d.direct(Method::PUT, region, subject_path, Some(&to("us-east")), &[]);
        assert_error(
            &r,
            409,
            "cross_jurisdiction_move",
            &format!("move fay to us-east at {region}"),
        );
    }
    d.wait_subject_everywhere("fay", "eu-central");
    // After the move, pinned writes follow the new home.
    assert_eq!(put("eu-central", "credential", "fay:pw", "f1", &[]).status, 200);
    let r = put("eu-west", "credential", "fay:pw", "f2", &[]);
    assert_error(&r, 421, "misdirected_write", "pinned write at the old home");
    assert_eq!(r.body["error"]["home_region"], "eu-central", "{r}");
    let r = d.put_routed("credential", "fay:pw", "f3", "us-east");
    assert_routed(&r, 200, "eu-central", "home", "pinned write after the move");

    // A US subject cannot move to the EU either, and its data is refused there.
    let r = d.routed(Method::PUT, "/v1/subjects/gus", Some(&to("eu-west")), "eu-west");
    assert_error(&r, 409, "cross_jurisdiction_move", "move gus to eu-west");
    let r = put("eu-west", "credential", "gus:pw", "x", &[]);
    assert_error(&r, 403, "residency_violation", "US credential written at eu-west");
    assert_eq!(r.body["error"]["home_region"], "us-east", "{r}");
}

fn assert_error(r: &Answer, status: u16, code: &str, what: &str) {
    assert_eq!((r.status, r.code()), (status, code), "{what}: {r}");
}

/// The example deployment under `tandem up`, router included.
fn deployment() -> Builder {
    TANDEM.deployment().prefix("tandem-res-")
}
