//! The HTTP contract of one region (DESIGN.md), against the real `tandem node`
//! binary running `eu-west` of the example deployment: every record endpoint
//! and merge type, scans, the subject registry, the operations plane, and every
//! kind of bad input. A refused request must answer the documented status and
//! error code and must leave the stored state exactly as it was (same digest,
//! same log position, same watched records). Each test runs its own node, so
//! tests stay independent when cargo runs them in parallel.

use std::time::Duration;

use serde_json::{json, Value};
use tandem_testkit::config::example_text;
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
    register(&node, "alice", "eu-west");
    register(&node, "bob", "eu-west");
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
    refused(&node, "POST", &ops("page_views", "big"), Some(one), 400, "bad_request", &big);
    let min = format!(r#"{{"op":"decr","by":{}}}"#, i64::MAX);
    ok_write(node.raw("POST", &ops("likes", "small"), min.clone().into_bytes()));
    assert_eq!(node.value("likes", "small"), Some(json!(-i64::MAX)));
    let small = ["/v1/records/likes/small"];
    refused(
        &node,
        "POST",
        &ops("likes", "small"),
        Some(min.as_bytes()),
        400,
        "bad_request",
        &small,
    );
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
    register(&node, "alice", "eu-west");
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
        refused(&node, "GET", &format!("/v1/records/tags?{q}"), None, 400, "bad_request", &[]);
    }
    refused(&node, "GET", "/v1/records/nope?limit=5", None, 404, "unknown_entity", &[]);
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
    let answer = refused(
        &node,
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
        refused(&node, "PUT", path, Some(body), status, code, &watched);
    };
    bad("/v1/subjects/alice", br#"{"home_region":"mars-1"}"#, 400, "bad_request");
    bad("/v1/subjects/alice", br#"{"home_region":7}"#, 400, "bad_request");
    bad("/v1/subjects/alice", br#"{}"#, 400, "bad_request");
    bad("/v1/subjects/alice", br#"{"home_region":"eu-west","x":1}"#, 400, "bad_request");
    bad("/v1/subjects/alice", b"", 400, "bad_request");
    bad("/v1/subjects/alice", b"{", 400, "bad_request");
    bad("/v1/subjects/a:b", br#"{"home_region":"eu-west"}"#, 400, "bad_request");
    bad("/v1/subjects/a%20b", br#"{"home_region":"eu-west"}"#, 400, "bad_request");
    refused(&node, "GET", "/v1/subjects/a:b", None, 400, "bad_request", &watched);
    refused(&node, "DELETE", "/v1/subjects/alice", None, 405, "method_not_allowed", &watched);
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

    // Admin calls need the bearer token; this node has none, so all are refused.
    for path in ["/v1/admin/isolate", "/v1/admin/rejoin"] {
        refused(&node, "POST", path, None, 401, "unauthorized", &[]);
    }
    let (_, body) = node.get("/v1/status");
    assert_ne!(body["isolated"], json!(true), "{body}");

    let (status, body) = node.get("/v1/conflicts");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["conflicts"], json!([]), "a fresh node has no conflicts");
    let (status, body) = node.get("/v1/conflicts?limit=1");
    assert_eq!((status, &body["conflicts"]), (200, &json!([])));
    for q in ["limit=0", "limit=100000", "limit=x", "after=1"] {
        refused(&node, "GET", &format!("/v1/conflicts?{q}"), None, 400, "bad_request", &[]);
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
fn wrong_merge_type_is_refused_without_change() {
    let node = node();
    register(&node, "alice", "eu-west");
    ok_write(node.put(&rec("article", "w"), &json!({"value": "keep"})));
    ok_write(node.post(&ops("likes", "w"), &json!({"op": "incr", "by": 5})));
    ok_write(node.post(&ops("page_views", "w"), &json!({"op": "incr", "by": 5})));
    ok_write(node.post(&ops("tags", "w"), &json!({"op": "add", "elements": ["t"]})));
    ok_write(node.patch(&rec("profile", "alice:w"), &json!({"fields": {"f": 1}})));
    let watched = [
        "/v1/records/article/w",
        "/v1/records/likes/w",
        "/v1/records/page_views/w",
        "/v1/records/tags/w",
        "/v1/records/profile/alice:w",
    ];
    let cases: &[(&str, String, Option<&str>)] = &[
        // PUT is for lww only.
        ("PUT", rec("likes", "w"), Some(r#"{"value":1}"#)),
        ("PUT", rec("page_views", "w"), Some(r#"{"value":1}"#)),
        ("PUT", rec("tags", "w"), Some(r#"{"value":["x"]}"#)),
        ("PUT", rec("profile", "alice:w"), Some(r#"{"value":{"f":2}}"#)),
        // Counter operations on the wrong types.
        ("POST", ops("article", "w"), Some(r#"{"op":"incr","by":1}"#)),
        ("POST", ops("page_views", "w"), Some(r#"{"op":"decr","by":1}"#)),
        ("POST", ops("tags", "w"), Some(r#"{"op":"incr","by":1}"#)),
        ("POST", ops("profile", "alice:w"), Some(r#"{"op":"incr","by":1}"#)),
        // Set operations on the wrong types.
        ("POST", ops("likes", "w"), Some(r#"{"op":"add","elements":["x"]}"#)),
        ("POST", ops("article", "w"), Some(r#"{"op":"remove","elements":["x"]}"#)),
        // PATCH is for lww-fields only.
        ("PATCH", rec("article", "w"), Some(r#"{"fields":{"a":1}}"#)),
        ("PATCH", rec("likes", "w"), Some(r#"{"fields":{"a":1}}"#)),
        ("PATCH", rec("tags", "w"), Some(r#"{"fields":{"a":1}}"#)),
        // Counters cannot be deleted.
        ("DELETE", rec("likes", "w"), None),
        ("DELETE", rec("page_views", "w"), None),
        // ... not even when they do not exist yet.
        ("DELETE", rec("likes", "never-written"), None),
        ("POST", ops("article", "never-written"), Some(r#"{"op":"incr","by":1}"#)),
    ];
    for (method, path, body) in cases {
        refused(&node, method, path, body.map(str::as_bytes), 409, "wrong_merge_type", &watched);
    }
    assert_eq!(node.value("article", "w"), Some(json!("keep")));
    assert_eq!(node.value("likes", "w"), Some(json!(5)));
}

#[test]
fn unknown_entity_is_404() {
    let node = node();
    ok_write(node.put(&rec("article", "u"), &json!({"value": 1})));
    let watched = ["/v1/records/article/u"];
    for (method, path, body) in [
        ("GET", rec("nope", "u"), None),
        ("PUT", rec("nope", "u"), Some(r#"{"value":1}"#)),
        ("PATCH", rec("nope", "u"), Some(r#"{"fields":{"a":1}}"#)),
        ("DELETE", rec("nope", "u"), None),
        ("POST", ops("nope", "u"), Some(r#"{"op":"incr","by":1}"#)),
        ("GET", "/v1/records/nope".to_owned(), None),
        // The reserved subject registry is not a record entity.
        ("GET", rec("_subject", "alice"), None),
        ("PUT", rec("_subject", "alice"), Some(r#"{"value":{"home_region":"us-east"}}"#)),
        // Entity names are case-sensitive.
        ("GET", rec("Article", "u"), None),
    ] {
        refused(&node, method, &path, body.map(str::as_bytes), 404, "unknown_entity", &watched);
    }
}

#[test]
fn malformed_bodies_are_400() {
    let node = node();
    register(&node, "al", "eu-west");
    ok_write(node.put(&rec("article", "b"), &json!({"value": "keep"})));
    ok_write(node.post(&ops("likes", "b"), &json!({"op": "incr", "by": 5})));
    ok_write(node.post(&ops("tags", "b"), &json!({"op": "add", "elements": ["t"]})));
    ok_write(node.patch(&rec("settings", "al:b"), &json!({"fields": {"f": 1}})));
    let watched = [
        "/v1/records/article/b",
        "/v1/records/likes/b",
        "/v1/records/tags/b",
        "/v1/records/settings/al:b",
    ];
    let long_name = format!(r#"{{"fields":{{"{}":1}}}}"#, "f".repeat(1025));
    let long_element = format!(r#"{{"op":"add","elements":["{}"]}}"#, "e".repeat(1025));
    let many: Vec<String> = (0..1001).map(|i| format!("e{i}")).collect();
    let many_elements = json!({"op": "add", "elements": many}).to_string();
    let deep = format!(r#"{{"value":{}{}}}"#, "[".repeat(200), "]".repeat(200));
    let put = rec("article", "b");
    let patch = rec("settings", "al:b");
    let likes = ops("likes", "b");
    let tags = ops("tags", "b");
    let cases: Vec<(&str, &str, &str)> = vec![
        // Not JSON at all, truncated, empty.
        ("PUT", &put, "not json"),
        ("PUT", &put, r#"{"value":"#),
        ("PUT", &put, r#"{"value":1"#),
        ("PUT", &put, ""),
        ("PUT", &put, "   "),
        ("PUT", &put, "\u{0}"),
        // JSON of the wrong shape.
        ("PUT", &put, r#"{"value":1,"extra":2}"#),
        ("PUT", &put, r#"{}"#),
        ("PUT", &put, r#"1"#),
        ("PUT", &put, r#"{"Value":1}"#),
        ("PUT", &put, r#"{"value":1} trailing"#),
        ("PUT", &put, &deep),
        ("PATCH", &patch, r#"{"fields":{}}"#),
        ("PATCH", &patch, r#"{"fields":[]}"#),
        ("PATCH", &patch, r#"{"fields":{"a":1},"x":1}"#),
        ("PATCH", &patch, r#"{"fields":{"":1}}"#),
        ("PATCH", &patch, &long_name),
        ("PATCH", &patch, ""),
        ("POST", &likes, r#"{"op":"incr","by":"5"}"#),
        ("POST", &likes, r#"{"op":"incr","by":-1}"#),
        ("POST", &likes, r#"{"op":"incr","by":0}"#),
        ("POST", &likes, r#"{"op":"decr","by":0}"#),
        ("POST", &likes, r#"{"op":"incr","by":1.5}"#),
        ("POST", &likes, r#"{"op":"incr"}"#),
        ("POST", &likes, r#"{"op":"incr","by":9223372036854775808}"#),
        ("POST", &likes, r#"{"op":"incr","by":18446744073709551616}"#),
        ("POST", &likes, r#"{"op":"incr","by":1,"extra":true}"#),
        ("POST", &likes, r#"{"op":"explode"}"#),
        ("POST", &likes, r#"{"op":"INCR","by":1}"#),
        ("POST", &likes, r#"{"by":1}"#),
        ("POST", &likes, ""),
        ("POST", &tags, r#"{"op":"add","elements":[]}"#),
        ("POST", &tags, r#"{"op":"remove","elements":[]}"#),
        ("POST", &tags, r#"{"op":"add","elements":"x"}"#),
        ("POST", &tags, r#"{"op":"add","elements":[1]}"#),
        ("POST", &tags, r#"{"op":"add","elements":[""]}"#),
        ("POST", &tags, &long_element),
        ("POST", &tags, &many_elements),
        ("POST", &tags, r#"{"op":"add"}"#),
    ];
    for (method, path, body) in cases {
        refused(&node, method, path, Some(body.as_bytes()), 400, "bad_request", &watched);
    }
    // Invalid UTF-8 inside a JSON string.
    refused(&node, "PUT", &put, Some(b"{\"value\":\"\xff\xfe\"}"), 400, "bad_request", &watched);
}

/// A JSON array is not the documented object, even when its elements line up
/// with the object's members (serde's derive accepts a struct as a sequence
/// unless told otherwise).
#[test]
fn array_bodies_are_400() {
    let node = node();
    register(&node, "al", "eu-west");
    ok_write(node.put(&rec("article", "arr"), &json!({"value": "keep"})));
    let watched = ["/v1/records/article/arr", "/v1/subjects/al"];
    for (method, path, body) in [
        ("PUT", rec("article", "arr"), r#"[1]"#),
        ("PATCH", rec("settings", "al:arr"), r#"[{"a":1}]"#),
        ("POST", ops("likes", "arr"), r#"["incr",1]"#),
        ("POST", ops("tags", "arr"), r#"["add",["x"]]"#),
        ("PUT", "/v1/subjects/al".to_owned(), r#"["eu-central"]"#),
    ] {
        refused(&node, method, &path, Some(body.as_bytes()), 400, "bad_request", &watched);
    }
}

#[test]
fn bad_ids_are_refused() {
    let node = node();
    ok_write(node.put(&rec("article", "i"), &json!({"value": "keep"})));
    let watched = ["/v1/records/article/i"];
    let long = "x".repeat(257);
    let put = Some(r#"{"value":1}"#.as_bytes());
    for id in [
        "a%20b",     // space
        "a%2Fb",     // an encoded '/'
        "caf%C3%A9", // non-ASCII
        "a%FFb",     // not UTF-8 once decoded
        "a%00b",     // NUL
        "a%3Fb",     // an encoded '?'
        long.as_str(),
    ] {
        for (method, path, body) in [
            ("PUT", rec("article", id), put),
            ("GET", rec("article", id), None),
            ("DELETE", rec("article", id), None),
            ("POST", ops("likes", id), Some(r#"{"op":"incr","by":1}"#.as_bytes())),
        ] {
            refused(&node, method, &path, body, 400, "bad_request", &watched);
        }
    }
    // 256 bytes is the limit and is accepted.
    let max = "y".repeat(256);
    ok_write(node.put(&rec("article", &max), &json!({"value": 1})));
    assert_eq!(node.value("article", &max), Some(json!(1)));
    // Every allowed character.
    let odd = "Az09-_.:@";
    ok_write(node.put(&rec("article", odd), &json!({"value": 2})));
    assert_eq!(node.value("article", odd), Some(json!(2)));

    // An empty id: no route matches a path ending in `/` (the JSON 404 of
    // unknown paths), while an empty segment before `/ops` does match the ops
    // route and the id check refuses it.
    refused(&node, "PUT", "/v1/records/article/", put, 404, "not_found", &watched);
    refused(&node, "GET", "/v1/records/article/", None, 404, "not_found", &watched);
    refused(
        &node,
        "POST",
        "/v1/records/likes//ops",
        Some(br#"{"op":"incr","by":1}"#),
        400,
        "bad_request",
        &watched,
    );

    // Records with subjects need a subject before the first `:` (an id
    // without `:` is the subject's own record).
    let patch = Some(br#"{"fields":{"a":1}}"#.as_slice());
    let add = Some(br#"{"op":"add","elements":["a"]}"#.as_slice());
    for id in [":", ":main"] {
        for (method, path, body) in [
            ("PATCH", rec("profile", id), patch),
            ("GET", rec("profile", id), None),
            ("PATCH", rec("settings", id), patch),
            ("POST", ops("cart", id), add),
        ] {
            refused(&node, method, &path, body, 400, "bad_request", &watched);
        }
    }
    // A scan's `after` is an id too.
    refused(
        &node,
        "GET",
        &format!("/v1/records/article?after={long}"),
        None,
        400,
        "bad_request",
        &watched,
    );
}

#[test]
fn oversized_body_is_413() {
    let node = node();
    register(&node, "a", "eu-west");
    ok_write(node.put(&rec("article", "big"), &json!({"value": "keep"})));
    let watched = ["/v1/records/article/big"];
    const LIMIT: usize = 1_048_576;
    // A valid JSON body of exactly the limit is accepted...
    let exact = put_body_of_len(LIMIT);
    let (status, body) = node.raw("PUT", &rec("article", "big"), exact.clone());
    assert_eq!(status, 200, "{body}");
    let (_, stored) = node.get(&rec("article", "big"));
    assert_eq!(stored["value"].as_str().map(str::len), Some(LIMIT - 12));
    // ... and one byte more is refused, whatever the body.
    let over = put_body_of_len(LIMIT + 1);
    let junk = vec![b'x'; LIMIT + 1];
    for (method, path, body) in [
        ("PUT", rec("article", "big"), &over),
        ("PUT", rec("article", "big"), &junk),
        ("PATCH", rec("profile", "a:big"), &junk),
        ("POST", ops("likes", "big"), &junk),
        ("PUT", "/v1/subjects/big".to_owned(), &junk),
    ] {
        refused(&node, method, &path, Some(body.as_slice()), 413, "payload_too_large", &watched);
    }
}

#[test]
fn unknown_paths_and_methods_are_json_errors() {
    let node = node();
    ok_write(node.put(&rec("article", "p"), &json!({"value": 1})));
    let watched = ["/v1/records/article/p"];
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/nope"),
        ("GET", "/v2/records/article/p"),
        ("GET", "/v1/records"),
        ("GET", "/v1/records/article/p/extra"),
        ("GET", "/v1/records/article/p/ops/more"),
        ("PUT", "/v1/nope/article/p"),
        ("GET", "/healthz/"),
        ("GET", "/v1/subjects"),
    ] {
        refused(&node, method, path, None, 404, "not_found", &watched);
    }
    for (method, path, body) in [
        ("POST", "/v1/records/article/p", Some(r#"{"value":2}"#)),
        ("GET", "/v1/records/article/p/ops", None),
        ("PUT", "/v1/records/article/p/ops", Some(r#"{"value":2}"#)),
        ("DELETE", "/v1/records/article", None),
        ("POST", "/v1/records/article", Some(r#"{"value":2}"#)),
        ("POST", "/healthz", None),
        ("DELETE", "/metrics", None),
        ("PUT", "/v1/digest", None),
        ("POST", "/v1/status", None),
        ("DELETE", "/v1/conflicts", None),
    ] {
        let answer = refused(
            &node,
            method,
            path,
            body.map(str::as_bytes),
            405,
            "method_not_allowed",
            &watched,
        );
        assert!(answer["error"]["message"].is_string());
    }
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

/// Assert a successful write and the shape of its answer.
#[track_caller]
fn ok_write(answer: (u16, Value)) -> Value {
    let (status, body) = answer;
    assert_eq!(status, 200, "write refused: {body}");
    assert_eq!(body["region"], "eu-west", "{body}");
    assert!(body["hlc"]["wall_ms"].as_u64().is_some(), "{body}");
    assert!(body["version"]["eu-west"].as_u64().is_some(), "{body}");
    body
}

/// Register `subject` with its home region before writing its records.
fn register(node: &Node, subject: &str, home_region: &str) {
    ok_write(node.put(&format!("/v1/subjects/{subject}"), &json!({"home_region": home_region})));
}

fn rec(entity: &str, id: &str) -> String {
    format!("/v1/records/{entity}/{id}")
}

fn ops(entity: &str, id: &str) -> String {
    format!("/v1/records/{entity}/{id}/ops")
}

/// What a refused request must not change: the digest of all state, the
/// replication log position and the raw answers for some records.
#[derive(Debug, PartialEq)]
struct Snapshot {
    digest: String,
    last_seq: u64,
    records: Vec<(String, u16, Value)>,
}

fn snapshot(node: &Node, watched: &[&str]) -> Snapshot {
    Snapshot {
        digest: node.digest(),
        last_seq: node.last_seq(),
        records: watched
            .iter()
            .map(|p| {
                let (s, b) = node.get(p);
                ((*p).to_owned(), s, b)
            })
            .collect(),
    }
}

/// Send a request that must be refused with `status` and `code`, and check that
/// nothing observable changed.
#[track_caller]
fn refused(
    node: &Node,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    status: u16,
    code: &str,
    watched: &[&str],
) -> Value {
    let before = snapshot(node, watched);
    let (got, answer) = match body {
        Some(b) => node.raw(method, path, b.to_vec()),
        None => node.request(method, path, None),
    };
    let shown = String::from_utf8_lossy(body.unwrap_or_default());
    let shown: String = shown.chars().take(120).collect();
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (status, Some(code)),
        "{method} {path} with body {shown:?}: {answer}"
    );
    error_code(&answer);
    let after = snapshot(node, watched);
    assert_eq!(before, after, "{method} {path} with body {shown:?} was refused but changed state");
    answer
}

#[track_caller]
fn ok_write_any(answer: (u16, Value)) {
    assert_eq!(answer.0, 200, "write refused: {}", answer.1);
}

/// `{"value":"xxx…"}` of exactly `len` bytes.
fn put_body_of_len(len: usize) -> Vec<u8> {
    let overhead = r#"{"value":""}"#.len();
    let body = format!(r#"{{"value":"{}"}}"#, "x".repeat(len - overhead));
    assert_eq!(body.len(), len);
    body.into_bytes()
}
