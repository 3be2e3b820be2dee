//! Every kind of bad input to one region (DESIGN.md), against the real
//! `tandem node` binary running `eu-west` of the example deployment: wrong
//! merge types, unknown entities, malformed, array-shaped and oversized
//! bodies, bad ids, unknown paths and methods. A refused request must answer
//! the documented status and error code and must leave the stored state
//! exactly as it was (same digest, same log position, same watched records).
//! Each test runs its own node, so tests stay independent when cargo runs
//! them in parallel.

use serde_json::{json, Value};
use tandem_testkit::config::example_text;
use tandem_testkit::endpoint::{ops, rec, written};
use tandem_testkit::{Node, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));

#[test]
fn wrong_merge_type_is_refused_without_change() {
    let node = node();
    node.register("alice", "eu-west");
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
        node.refused(method, path, body.map(str::as_bytes), 409, "wrong_merge_type", &watched);
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
        node.refused(method, &path, body.map(str::as_bytes), 404, "unknown_entity", &watched);
    }
}

#[test]
fn malformed_bodies_are_400() {
    let node = node();
    node.register("al", "eu-west");
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
        node.refused(method, path, Some(body.as_bytes()), 400, "bad_request", &watched);
    }
    // Invalid UTF-8 inside a JSON string.
    node.refused("PUT", &put, Some(b"{\"value\":\"\xff\xfe\"}"), 400, "bad_request", &watched);
}

/// A JSON array is not the documented object, even when its elements line up
/// with the object's members (serde's derive accepts a struct as a sequence
/// unless told otherwise).
#[test]
fn array_bodies_are_400() {
    let node = node();
    node.register("al", "eu-west");
    ok_write(node.put(&rec("article", "arr"), &json!({"value": "keep"})));
    let watched = ["/v1/records/article/arr", "/v1/subjects/al"];
    for (method, path, body) in [
        ("PUT", rec("article", "arr"), r#"[1]"#),
        ("PATCH", rec("settings", "al:arr"), r#"[{"a":1}]"#),
        ("POST", ops("likes", "arr"), r#"["incr",1]"#),
        ("POST", ops("tags", "arr"), r#"["add",["x"]]"#),
        ("PUT", "/v1/subjects/al".to_owned(), r#"["eu-central"]"#),
    ] {
        node.refused(method, &path, Some(body.as_bytes()), 400, "bad_request", &watched);
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
            node.refused(method, &path, body, 400, "bad_request", &watched);
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
    node.refused("PUT", "/v1/records/article/", put, 404, "not_found", &watched);
    node.refused("GET", "/v1/records/article/", None, 404, "not_found", &watched);
    node.refused(
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
            node.refused(method, &path, body, 400, "bad_request", &watched);
        }
    }
    // A scan's `after` is an id too.
    node.refused(
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
    node.register("a", "eu-west");
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
        node.refused(method, &path, Some(body.as_slice()), 413, "payload_too_large", &watched);
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
        node.refused(method, path, None, 404, "not_found", &watched);
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
        let answer = node.refused(
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

fn node() -> Node {
    TANDEM.node(example_text(), "eu-west", &[])
}

/// A successful write at eu-west, and the shape of its answer.
#[track_caller]
fn ok_write(answer: (u16, Value)) -> Value {
    written(answer, "eu-west")
}

/// `{"value":"xxx…"}` of exactly `len` bytes.
fn put_body_of_len(len: usize) -> Vec<u8> {
    let overhead = r#"{"value":""}"#.len();
    let body = format!(r#"{{"value":"{}"}}"#, "x".repeat(len - overhead));
    assert_eq!(body.len(), len);
    body.into_bytes()
}
