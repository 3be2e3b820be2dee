//! The HTTP contract of one region (DESIGN.md), against the real `tandem node`
//! binary running `eu-west` of the example deployment: every record endpoint
//! and merge type, scans, the subject registry and the operations plane
//! (health, status, conflicts, metrics, digests), and a graceful stop.
//! `node_refusals.rs` covers every kind of bad input. Each test runs its own
//! node, so tests stay independent when cargo runs them in parallel.

use std::time::Duration;

use serde_json::{json, Value};
use tandem_testkit::config::example_text;
use tandem_testkit::endpoint::{ops, rec, written};
use tandem_testkit::{error_code, metrics, Node, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));

#[test]
fn lww_put_get_overwrite_delete() {
    let node = node();
    let path = rec("article", "a-1");
    assert_eq!(node.value("article", "a-1"), None);

    let w1 = ok_write(node.put(&path, &json!({"value": {"title": "hello", "n": 1}})));
    let (status, body) = node.get(&path);
    assert_eq!(status, 200);
    let obj = body.as_object().expect("a record is an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["entity", "hlc", "id", "origin", "value", "version"], "{body}");
    assert_eq!(body["entity"], "article");
    assert_eq!(body["id"], "a-1");
    assert_eq!(body["value"], json!({"title": "hello", "n": 1}));
    assert_eq!(body["origin"], "eu-west");
    assert_eq!(body["hlc"], w1["hlc"], "the record shows its write's HLC");
    assert_eq!(body["version"], w1["version"]);

    // Overwrite: the latest value wins, the HLC moves forward.
    let w2 = ok_write(node.put(&path, &json!({"value": [1, "two", null]})));
    assert_eq!(node.value("article", "a-1"), Some(json!([1, "two", null])));
    let hlc = |w: &Value| (w["hlc"]["wall_ms"].as_u64(), w["hlc"]["logical"].as_u64());
    assert!(hlc(&w2) > hlc(&w1), "{w1} then {w2}");

    // Scalars are values too.
    ok_write(node.put(&path, &json!({"value": "plain"})));
    assert_eq!(node.value("article", "a-1"), Some(json!("plain")));

    // Delete: the record is absent, with the documented error.
    ok_write(node.delete(&path));
    let (status, body) = node.get(&path);
    assert_eq!((status, error_code(&body)), (404, "not_found"), "{body}");

    // Writing after a delete brings it back.
    ok_write(node.put(&path, &json!({"value": 42})));
    assert_eq!(node.value("article", "a-1"), Some(json!(42)));
}

#[test]
fn lww_fields_patch_remove_field_and_delete() {
    let node = node();
    node.register("alice", "eu-west");
    node.register("bob", "eu-west");
    // `profile` is personal; `settings` is not, but both have subjects.
    for (entity, id) in [("profile", "alice:main"), ("settings", "alice:ui")] {
        let path = rec(entity, id);
        ok_write(
            node.patch(&path, &json!({"fields": {"name": "Alice", "email": "a@example.org"}})),
        );
        let (status, body) = node.get(&path);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["value"], json!({"name": "Alice", "email": "a@example.org"}));
        assert_eq!(body["entity"], entity);
        assert_eq!(body["id"], id);

        // A field set to null is removed; the others stay.
        ok_write(node.patch(&path, &json!({"fields": {"email": null}})));
        assert_eq!(node.value(entity, id), Some(json!({"name": "Alice"})));

        // Fields merge independently: a later patch of another field keeps `name`.
        ok_write(node.patch(&path, &json!({"fields": {"langs": ["en", "fr"]}})));
        assert_eq!(node.value(entity, id), Some(json!({"name": "Alice", "langs": ["en", "fr"]})));

        ok_write(node.delete(&path));
        assert_eq!(node.value(entity, id), None);

        // A patch after the delete starts from an empty object.
        ok_write(node.patch(&path, &json!({"fields": {"theme": "dark"}})));
        assert_eq!(node.value(entity, id), Some(json!({"theme": "dark"})));
    }
    // Removing the last field leaves an absent record.
    let path = rec("settings", "bob:x");
    ok_write(node.patch(&path, &json!({"fields": {"a": 1}})));
    ok_write(node.patch(&path, &json!({"fields": {"a": null}})));
    assert_eq!(node.value("settings", "bob:x"), None);
}

#[test]
fn counters_sum_exactly() {
    let node = node();
    let mut expect = 0i64;
    for by in [1u64, 2, 3, 10, 1000] {
        ok_write(node.post(&ops("page_views", "home"), &json!({"op": "incr", "by": by})));
        expect += by as i64;
    }
    assert_eq!(node.value("page_views", "home"), Some(json!(expect)));

    let mut likes = 0i64;
    for (op, by) in [("incr", 5u64), ("decr", 2), ("incr", 7), ("decr", 20), ("incr", 1)] {
        ok_write(node.post(&ops("likes", "post-1"), &json!({"op": op, "by": by})));
        likes += if op == "incr" { by as i64 } else { -(by as i64) };
    }
    assert_eq!(likes, -9);
    assert_eq!(node.value("likes", "post-1"), Some(json!(likes)), "a pn-counter may go negative");

    // Counters at zero still exist once written.
    ok_write(node.post(&ops("likes", "zero"), &json!({"op": "incr", "by": 3})));
    ok_write(node.post(&ops("likes", "zero"), &json!({"op": "decr", "by": 3})));
    assert_eq!(node.value("likes", "zero"), Some(json!(0)));

    // The largest allowed step.
    ok_write(node.post(&ops("page_views", "big"), &json!({"op": "incr", "by": i64::MAX})));
    assert_eq!(node.value("page_views", "big"), Some(json!(i64::MAX)));
    // Going past the integer range is refused and changes nothing.
    let big = ["/v1/records/page_views/big"];
    let one = br#"{"op":"incr","by":1}"#;
    node.refused("POST", &ops("page_views", "big"), Some(one), 400, "bad_request", &big);
    let min = format!(r#"{{"op":"decr","by":{}}}"#, i64::MAX);
    ok_write(node.raw("POST", &ops("likes", "small"), min.clone().into_bytes()));
    assert_eq!(node.value("likes", "small"), Some(json!(-i64::MAX)));
    let small = ["/v1/records/likes/small"];
    node.refused("POST", &ops("likes", "small"), Some(min.as_bytes()), 400, "bad_request", &small);
}

#[test]
fn or_set_add_remove_and_empty_is_absent() {
    let node = node();
    let path = ops("tags", "post-1");
    ok_write(node.post(&path, &json!({"op": "add", "elements": ["rust", "db", "crdt"]})));
    assert_eq!(node.value("tags", "post-1"), Some(json!(["crdt", "db", "rust"])));
    // Adding an element twice keeps one copy.
    ok_write(node.post(&path, &json!({"op": "add", "elements": ["db", "zeta", "alpha"]})));
    assert_eq!(node.value("tags", "post-1"), Some(json!(["alpha", "crdt", "db", "rust", "zeta"])));
    ok_write(node.post(&path, &json!({"op": "remove", "elements": ["db", "zeta"]})));
    assert_eq!(node.value("tags", "post-1"), Some(json!(["alpha", "crdt", "rust"])));
    // Removing an element that is not there is accepted and changes nothing.
    ok_write(node.post(&path, &json!({"op": "remove", "elements": ["nope"]})));
    assert_eq!(node.value("tags", "post-1"), Some(json!(["alpha", "crdt", "rust"])));

    // Removing every element makes the record absent (documented: an empty set
    // and a deleted set are the same thing).
    ok_write(node.post(&path, &json!({"op": "remove", "elements": ["alpha", "crdt", "rust"]})));
    let (status, body) = node.get(&rec("tags", "post-1"));
    assert_eq!((status, error_code(&body)), (404, "not_found"), "{body}");

    // Add again after emptying, then DELETE.
    ok_write(node.post(&path, &json!({"op": "add", "elements": ["back"]})));
    assert_eq!(node.value("tags", "post-1"), Some(json!(["back"])));
    ok_write(node.delete(&rec("tags", "post-1")));
    assert_eq!(node.value("tags", "post-1"), None);

    // `cart` is a personal or-set: ids carry a subject.
    node.register("alice", "eu-west");
    ok_write(
        node.post(&ops("cart", "alice:c1"), &json!({"op": "add", "elements": ["sku-2", "sku-1"]})),
    );
    assert_eq!(node.value("cart", "alice:c1"), Some(json!(["sku-1", "sku-2"])));
}

#[test]
fn scan_pages_in_id_order() {
    let node = node();
    // 25 ids inserted out of order; the scan returns byte order.
    let mut ids: Vec<String> = (0..25).map(|i| format!("t{}", (i * 7) % 25)).collect();
    for id in &ids {
        ok_write(node.post(&ops("tags", id), &json!({"op": "add", "elements": [id]})));
    }
    // Records of another entity must not show up.
    ok_write(node.put(&rec("article", "t3"), &json!({"value": 1})));
    ids.sort();

    for limit in [1usize, 5, 7, 25, 1000] {
        let mut seen: Vec<String> = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let q = match &after {
                Some(a) => format!("/v1/records/tags?after={a}&limit={limit}"),
                None => format!("/v1/records/tags?limit={limit}"),
            };
            let (status, body) = node.get(&q);
            assert_eq!(status, 200, "{q}: {body}");
            let records = body["records"].as_array().expect("records");
            assert!(records.len() <= limit, "{q}: {body}");
            for r in records {
                assert_eq!(r["entity"], "tags");
                let id = r["id"].as_str().expect("id").to_owned();
                assert_eq!(r["value"], json!([id]), "{r}");
                seen.push(id);
            }
            pages += 1;
            assert!(pages <= 30, "the scan does not end: {body}");
            match &body["next"] {
                Value::Null => break,
                Value::String(n) => {
                    assert_eq!(Some(n), seen.last(), "next is the last id of the page");
                    after = Some(n.clone());
                }
                other => panic!("next must be a string or null, got {other}"),
            }
        }
        assert_eq!(seen, ids, "limit {limit}: every id once, in order");
    }

    // Without a limit the default page holds all 25.
    let (status, body) = node.get("/v1/records/tags");
    assert_eq!(status, 200);
    assert_eq!(body["records"].as_array().map(Vec::len), Some(25));
    assert_eq!(body["next"], Value::Null);

    // After the last id: empty page, no next.
    let (status, body) = node.get("/v1/records/tags?after=t9");
    assert_eq!(status, 200);
    assert_eq!(body, json!({"records": [], "next": null}));

    // An entity with no records.
    let (status, body) = node.get("/v1/records/likes");
    assert_eq!((status, body), (200, json!({"records": [], "next": null})));
}

#[test]
fn scan_bad_queries_are_refused() {
    let node = node();
    ok_write(node.post(&ops("tags", "x"), &json!({"op": "add", "elements": ["a"]})));
    for q in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=abc",
        "limit=99999999999999999999999",
        "after=a%20b",
        "after=",
        "colour=red",
    ] {
        node.refused("GET", &format!("/v1/records/tags?{q}"), None, 400, "bad_request", &[]);
    }
    node.refused("GET", "/v1/records/nope?limit=5", None, 404, "unknown_entity", &[]);
    // The largest allowed limit works.
    let (status, _) = node.get("/v1/records/tags?limit=1000");
    assert_eq!(status, 200);
}

#[test]
fn subjects_register_move_and_refuse_cross_jurisdiction() {
    let node = node();
    let (status, body) = node.get("/v1/subjects/alice");
    assert_eq!((status, error_code(&body)), (404, "not_found"), "{body}");

    ok_write(node.put("/v1/subjects/alice", &json!({"home_region": "eu-west"})));
    let (status, body) = node.get("/v1/subjects/alice");
    assert_eq!(status, 200);
    assert_eq!(body, json!({"subject": "alice", "home_region": "eu-west", "jurisdiction": "EU"}));

    // A move inside the jurisdiction is allowed.
    ok_write(node.put("/v1/subjects/alice", &json!({"home_region": "eu-central"})));
    let (_, body) = node.get("/v1/subjects/alice");
    assert_eq!(
        body,
        json!({"subject": "alice", "home_region": "eu-central", "jurisdiction": "EU"})
    );

    // A move out of it is refused, and nothing changes.
    let answer = node.refused(
        "PUT",
        "/v1/subjects/alice",
        Some(br#"{"home_region":"us-east"}"#),
        409,
        "cross_jurisdiction_move",
        &["/v1/subjects/alice"],
    );
    assert_eq!(answer["error"]["home_region"], "eu-central", "{answer}");
    let (_, body) = node.get("/v1/subjects/alice");
    assert_eq!(body["home_region"], "eu-central");

    // A new subject may start anywhere.
    ok_write(node.put("/v1/subjects/bob", &json!({"home_region": "us-east"})));
    let (_, body) = node.get("/v1/subjects/bob");
    assert_eq!(body, json!({"subject": "bob", "home_region": "us-east", "jurisdiction": "US"}));

    // Bad subject requests.
    let watched = ["/v1/subjects/alice", "/v1/subjects/bob"];
    let bad = |path: &str, body: &[u8], status: u16, code: &str| {
        node.refused("PUT", path, Some(body), status, code, &watched);
    };
    bad("/v1/subjects/alice", br#"{"home_region":"mars-1"}"#, 400, "bad_request");
    bad("/v1/subjects/alice", br#"{"home_region":7}"#, 400, "bad_request");
    bad("/v1/subjects/alice", br#"{}"#, 400, "bad_request");
    bad("/v1/subjects/alice", br#"{"home_region":"eu-west","x":1}"#, 400, "bad_request");
    bad("/v1/subjects/alice", b"", 400, "bad_request");
    bad("/v1/subjects/alice", b"{", 400, "bad_request");
    bad("/v1/subjects/a:b", br#"{"home_region":"eu-west"}"#, 400, "bad_request");
    bad("/v1/subjects/a%20b", br#"{"home_region":"eu-west"}"#, 400, "bad_request");
    node.refused("GET", "/v1/subjects/a:b", None, 400, "bad_request", &watched);
    node.refused("DELETE", "/v1/subjects/alice", None, 405, "method_not_allowed", &watched);
}

#[test]
fn ops_plane_health_status_conflicts() {
    let node = node();
    let (status, body) = node.get("/healthz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");

    let (status, body) = node.get("/v1/status");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["region"], "eu-west");
    assert_eq!(body["jurisdiction"], "EU");
    let seq0 = body["log"]["last_seq"].as_u64().expect("log.last_seq");
    assert!(body["peers"].is_array(), "{body}");

    // Every accepted write appends one log entry.
    for i in 0..3 {
        ok_write(node.put(&rec("article", "s"), &json!({"value": i})));
    }
    ok_write(node.post(&ops("likes", "s"), &json!({"op": "incr", "by": 1})));
    assert_eq!(node.last_seq(), seq0 + 4);

    // Admin calls need the bearer token or the operator's certificate; this
    // node has no token, so a client without the certificate is refused.
    let anonymous = node.anonymous();
    for path in ["/v1/admin/isolate", "/v1/admin/rejoin"] {
        anonymous.refused("POST", path, None, 401, "unauthorized", &[]);
    }
    let (_, body) = node.get("/v1/status");
    assert_ne!(body["isolated"], json!(true), "{body}");

    let (status, body) = node.get("/v1/conflicts");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["conflicts"], json!([]), "a fresh node has no conflicts");
    let (status, body) = node.get("/v1/conflicts?limit=1");
    assert_eq!((status, &body["conflicts"]), (200, &json!([])));
    for q in ["limit=0", "limit=100000", "limit=x", "after=1"] {
        node.refused("GET", &format!("/v1/conflicts?{q}"), None, 400, "bad_request", &[]);
    }
}

#[test]
fn metrics_count_writes_and_declare_contract_families() {
    let node = node();
    for i in 0..7 {
        ok_write(node.put(&rec("article", &format!("m{}", i % 3)), &json!({"value": i})));
    }
    for _ in 0..4 {
        ok_write(node.post(&ops("likes", "m"), &json!({"op": "incr", "by": 2})));
    }
    // Refused writes are not counted.
    let (status, _) = node.post(&ops("article", "m0"), &json!({"op": "incr", "by": 1}));
    assert_eq!(status, 409);
    let (status, _) = node.raw("PUT", &rec("article", "m0"), b"{".to_vec());
    assert_eq!(status, 400);

    let res = node.answer("/metrics");
    assert_eq!(res.status, 200);
    let ctype = res.header("content-type").unwrap_or_default().to_owned();
    assert!(
        ctype.starts_with("application/openmetrics-text") || ctype.starts_with("text/plain"),
        "{ctype}"
    );
    let text = res.body.as_str().expect("metrics text").to_owned();
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics ends with # EOF");

    assert_eq!(
        metrics::first(&text, "replication_writes_total", &[("entity_type", "article")]),
        Some(7.0),
        "{text}"
    );
    assert_eq!(
        metrics::first(&text, "replication_writes_total", &[("entity_type", "likes")]),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        metrics::first(
            &text,
            "replication_writes_total",
            &[("entity_type", "article"), ("region", "eu-west")]
        ),
        Some(7.0),
        "every sample carries the region label: {text}"
    );
    for (family, kind) in [
        ("replication_writes", "counter"),
        ("replication_conflicts", "counter"),
        ("replication_conflict_age_seconds", "histogram"),
        ("replication_invariant_violations", "counter"),
        ("replication_lag_seconds", "gauge"),
        ("replication_queue_depth", "gauge"),
        ("replication_lag_budget_breached", "gauge"),
        ("residency_denials", "counter"),
    ] {
        let decl = format!("# TYPE {family} {kind}");
        assert!(text.lines().any(|l| l == decl), "missing `{decl}` in:\n{text}");
    }
    // The conflict-age histogram has the contract's buckets.
    for le in ["0.1", "1.0", "10.0", "60.0", "300.0", "3600.0", "+Inf"] {
        assert!(
            metrics::first(&text, "replication_conflict_age_seconds_bucket", &[("le", le)])
                .is_some(),
            "no bucket {le}: {text}"
        );
    }
}

#[test]
fn digest_tracks_materialized_state() {
    let node = node();
    let (status, body) = node.get("/v1/digest");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["records"], 0);
    let empty = node.digest();
    assert_eq!(empty.len(), 64, "{empty}");
    assert!(empty.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));

    ok_write(node.put(&rec("article", "d"), &json!({"value": "one"})));
    let one = node.digest();
    assert_ne!(one, empty, "a write changes the digest");
    ok_write(node.put(&rec("article", "d"), &json!({"value": "two"})));
    let two = node.digest();
    assert_ne!(two, one, "a new value changes the digest");
    // The digest is of materialized values, not of history.
    ok_write(node.put(&rec("article", "d"), &json!({"value": "one"})));
    assert_eq!(node.digest(), one);
    ok_write(node.delete(&rec("article", "d")));
    assert_eq!(node.digest(), empty, "a deleted record hashes like none");

    // Refused writes leave it alone.
    ok_write(node.put(&rec("article", "d"), &json!({"value": "one"})));
    let before = node.digest();
    let (status, _) = node.post(&ops("article", "d"), &json!({"op": "incr", "by": 1}));
    assert_eq!(status, 409);
    let (status, _) = node.raw("PUT", &rec("article", "d"), b"{\"value\":".to_vec());
    assert_eq!(status, 400);
    assert_eq!(node.digest(), before);

    // Per-entity digests.
    ok_write(node.post(&ops("likes", "d"), &json!({"op": "incr", "by": 1})));
    let (status, body) = node.get("/v1/digest?entity=article");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["records"], 1);
    assert_eq!(body["entity"], "article");
    let article = body["digest"].as_str().expect("digest").to_owned();
    assert_ne!(article, node.digest());
    ok_write(node.post(&ops("likes", "d"), &json!({"op": "incr", "by": 1})));
    let (_, body) = node.get("/v1/digest?entity=article");
    assert_eq!(body["digest"], article.as_str(), "other entities do not count");
    let (status, body) = node.get("/v1/digest?entity=nope");
    assert_eq!((status, error_code(&body)), (404, "unknown_entity"), "{body}");
    let (status, body) = node.get("/v1/digest?colour=red");
    assert_eq!((status, error_code(&body)), (400, "bad_request"), "{body}");
}

#[test]
fn digest_is_equal_for_two_regions_given_the_same_writes() {
    let a = TANDEM.node(example_text(), "eu-west", &[]);
    let b = TANDEM.node(example_text(), "eu-central", &[]);
    for n in [&a, &b] {
        ok_write_any(n.put("/v1/subjects/al", &json!({"home_region": "eu-west"})));
        ok_write_any(n.put(&rec("article", "x"), &json!({"value": {"b": 1, "a": [2]}})));
        ok_write_any(n.post(&ops("likes", "x"), &json!({"op": "incr", "by": 3})));
        ok_write_any(n.post(&ops("tags", "x"), &json!({"op": "add", "elements": ["q", "p"]})));
        ok_write_any(n.post(&ops("cart", "al:x"), &json!({"op": "add", "elements": ["k"]})));
    }
    assert_eq!(a.digest(), b.digest());
    ok_write_any(b.post(&ops("likes", "x"), &json!({"op": "incr", "by": 1})));
    assert_ne!(a.digest(), b.digest());
}

#[test]
fn sigterm_exits_cleanly_and_keeps_acknowledged_writes() {
    let mut node = node();
    for i in 0..20 {
        ok_write(node.post(&ops("likes", "g"), &json!({"op": "incr", "by": 1})));
        ok_write(node.put(&rec("article", "g"), &json!({"value": i})));
    }
    let digest = node.digest();
    let (exit, took) = node.terminate(Duration::from_secs(10));
    assert_eq!(exit.code(), Some(0), "exit {exit}; stderr:\n{}", node.stderr());
    assert!(took < Duration::from_secs(10), "{took:?}");
    eprintln!("SIGTERM to exit: {took:?}");
    node.restart();
    assert_eq!(node.value("likes", "g"), Some(json!(20)));
    assert_eq!(node.value("article", "g"), Some(json!(19)));
    assert_eq!(node.digest(), digest);
    // And a second graceful stop works as well.
    let (exit, _) = node.terminate(Duration::from_secs(10));
    assert_eq!(exit.code(), Some(0));
}

/// The harness runs nodes on `tandem_config::EXAMPLE_TOML`; it is exactly what
/// `tandem config example` prints.
#[test]
fn config_example_is_the_built_in_deployment() {
    let out = TANDEM.run(&["config", "example"]);
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, example_text());
}

fn node() -> Node {
    TANDEM.node(example_text(), "eu-west", &[])
}

/// A successful write at eu-west, and the shape of its answer.
#[track_caller]
fn ok_write(answer: (u16, Value)) -> Value {
    written(answer, "eu-west")
}

#[track_caller]
fn ok_write_any(answer: (u16, Value)) {
    assert_eq!(answer.0, 200, "write refused: {}", answer.1);
}
