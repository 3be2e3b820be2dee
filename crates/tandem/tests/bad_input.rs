//! Bad input at the public surface, against a real deployment (`tandem up`
//! with the router, the example config): malformed, truncated, oversized and
//! type-confused requests to every endpoint of a node and of the router. Each
//! case checks the status, the error code of the JSON error object, and that
//! nothing stored changed anywhere: every region's digest, log position and
//! isolation, and the router's drain flags (the kit's `refusals`).
//! (`node_refusals.rs` covers the record endpoints of one node in more depth;
//! this file covers the rest of the surface and the same classes of input
//! through the router; `credentials.rs` covers calls without credentials or
//! with wrong ones.)

use serde_json::json;
use tandem_testkit::refusals::{case, run_cases, truncated_on_the_wire};
use tandem_testkit::{http, Deployment, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));
/// Admin token the deployments run with (`TANDEM_ADMIN_TOKEN`).
const ADMIN_TOKEN: &str = "bad-input-test-admin-token";
/// Shared replication secret (`TANDEM_REPLICATION_SECRET`).
const REPLICATION_SECRET: &str = "bad-input-test-secret";

#[test]
fn node_refuses_bad_input_and_changes_nothing() {
    let d = deployment();
    seed_data(&d);
    let n = d.url("eu-west").to_owned();
    let mut cases = Vec::new();
    // Every write endpoint, every bad body.
    for (method, path) in [
        ("PUT", "/v1/records/article/a1"),
        ("PATCH", "/v1/records/profile/anna:main"),
        ("POST", "/v1/records/likes/l1/ops"),
        ("POST", "/v1/records/cart/anna:c/ops"),
        ("PUT", "/v1/subjects/anna"),
    ] {
        for (what, body) in bad_bodies() {
            cases.push(case(
                &format!("{method} {path} with {what}"),
                method,
                format!("{n}{path}"),
                Some(&body),
                400,
                "bad_request",
            ));
        }
    }
    // Type confusion: the right shape of another endpoint, or the wrong types.
    let confused: &[(&str, &str, &str, u16, &str)] = &[
        ("PUT", "/v1/records/article/a1", r#"{"fields":{"a":1}}"#, 400, "bad_request"),
        ("PUT", "/v1/records/article/a1", r#"{"op":"incr","by":1}"#, 400, "bad_request"),
        ("PATCH", "/v1/records/profile/anna:main", r#"{"value":1}"#, 400, "bad_request"),
        ("PATCH", "/v1/records/profile/anna:main", r#"{"fields":"name"}"#, 400, "bad_request"),
        ("PATCH", "/v1/records/profile/anna:main", r#"{"fields":[["a",1]]}"#, 400, "bad_request"),
        ("POST", "/v1/records/likes/l1/ops", r#"{"op":"incr","by":"3"}"#, 400, "bad_request"),
        ("POST", "/v1/records/likes/l1/ops", r#"{"op":"incr","by":true}"#, 400, "bad_request"),
        ("POST", "/v1/records/likes/l1/ops", r#"{"op":"incr","by":-3}"#, 400, "bad_request"),
        ("POST", "/v1/records/likes/l1/ops", r#"{"op":"incr","by":1e3}"#, 400, "bad_request"),
        ("POST", "/v1/records/likes/l1/ops", r#"{"op":["incr"],"by":1}"#, 400, "bad_request"),
        (
            "POST",
            "/v1/records/likes/l1/ops",
            r#"{"op":"add","elements":["x"]}"#,
            409,
            "wrong_merge_type",
        ),
        (
            "POST",
            "/v1/records/page_views/p1/ops",
            r#"{"op":"decr","by":1}"#,
            409,
            "wrong_merge_type",
        ),
        (
            "POST",
            "/v1/records/tags/t1/ops",
            r#"{"op":"add","elements":[{"x":1}]}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/records/tags/t1/ops",
            r#"{"op":"remove","elements":null}"#,
            400,
            "bad_request",
        ),
        ("POST", "/v1/records/tags/t1/ops", r#"{"op":"incr","by":1}"#, 409, "wrong_merge_type"),
        ("PUT", "/v1/subjects/anna", r#"{"home_region":5}"#, 400, "bad_request"),
        ("PUT", "/v1/subjects/anna", r#"{"home_region":"mars"}"#, 400, "bad_request"),
        (
            "PUT",
            "/v1/subjects/anna",
            r#"{"home_region":"us-east"}"#,
            409,
            "cross_jurisdiction_move",
        ),
        ("PUT", "/v1/subjects/anna", r#"{"home_region":["eu-west"]}"#, 400, "bad_request"),
        ("PUT", "/v1/subjects/a:b", r#"{"home_region":"eu-west"}"#, 400, "bad_request"),
        ("DELETE", "/v1/records/likes/l1", "", 409, "wrong_merge_type"),
        ("PUT", "/v1/records/credential/bob:pw", r#"{"value":"x"}"#, 403, "residency_violation"),
        ("PUT", "/v1/records/credential/zed:pw", r#"{"value":"x"}"#, 422, "unknown_subject"),
        ("PUT", "/v1/records/nope/a1", r#"{"value":1}"#, 404, "unknown_entity"),
    ];
    for (method, path, body, status, code) in confused {
        cases.push(case(
            &format!("{method} {path} {body}"),
            method,
            format!("{n}{path}"),
            Some(body.as_bytes()),
            *status,
            code,
        ));
    }
    // Oversized: a body of one byte over the limit, an id over its limit.
    let big = vec![b' '; 1_048_577];
    for (method, path) in [
        ("PUT", "/v1/records/article/a1"),
        ("PATCH", "/v1/records/profile/anna:main"),
        ("POST", "/v1/records/likes/l1/ops"),
        ("PUT", "/v1/subjects/anna"),
        ("POST", "/v1/replication/forward"),
    ] {
        let mut c = case(
            &format!("{method} {path} 1 MiB + 1"),
            method,
            format!("{n}{path}"),
            Some(&big),
            413,
            "payload_too_large",
        );
        if path.contains("replication") {
            c = c
                .header("authorization", format!("Bearer {REPLICATION_SECRET}"))
                .header("x-tandem-peer", "us-east")
                .as_holder("us-east");
        }
        cases.push(c);
    }
    let long = "x".repeat(300);
    cases.push(case(
        "an id over 256 bytes",
        "PUT",
        format!("{n}/v1/records/article/{long}"),
        Some(br#"{"value":1}"#),
        400,
        "bad_request",
    ));
    cases.push(case(
        "a subject over 256 bytes",
        "PUT",
        format!("{n}/v1/subjects/{long}"),
        Some(br#"{"home_region":"eu-west"}"#),
        400,
        "bad_request",
    ));
    // Operations plane: bad queries.
    for (path, status, code) in [
        ("/v1/digest?entity=nope", 404, "unknown_entity"),
        ("/v1/digest?entity=article&extra=1", 400, "bad_request"),
        ("/v1/conflicts?limit=0", 400, "bad_request"),
        ("/v1/conflicts?limit=abc", 400, "bad_request"),
        ("/v1/conflicts?limit=99999999999999999999999", 400, "bad_request"),
        ("/v1/audit?after=-1", 400, "bad_request"),
        ("/v1/audit?limit=1001", 400, "bad_request"),
        ("/v1/audit?limit=1&limit=2", 400, "bad_request"),
        ("/v1/records/article?limit=0", 400, "bad_request"),
        ("/v1/records/article?after=%FF", 400, "bad_request"),
        ("/v1/records/article?bogus=1", 400, "bad_request"),
        ("/v1/subjects/nobody", 404, "not_found"),
        ("/v1/records/article/a%FF", 400, "bad_request"),
    ] {
        let c = case(&format!("GET {path}"), "GET", format!("{n}{path}"), None, status, code);
        // Conflicts and audit are the operator's: present its certificate.
        let admin = path.starts_with("/v1/conflicts") || path.starts_with("/v1/audit");
        cases.push(if admin { c.as_holder("operator") } else { c });
    }
    for (method, path) in [
        ("POST", "/v1/digest"),
        ("PUT", "/v1/audit"),
        ("DELETE", "/v1/subjects/anna"),
        ("GET", "/v1/admin/isolate"),
        ("POST", "/v1/replication/stream"),
        ("GET", "/v1/replication/forward"),
    ] {
        cases.push(case(
            &format!("{method} {path}"),
            method,
            format!("{n}{path}"),
            None,
            405,
            "method_not_allowed",
        ));
    }
    run_cases(&d, cases);
    // A body cut off on the wire (Content-Length promises more, then EOF).
    truncated_on_the_wire(&d, d.url("eu-west"), "/v1/records/article/a1", 400, "bad_request");
}

#[test]
fn router_refuses_bad_input_and_changes_nothing() {
    let d = deployment();
    seed_data(&d);
    let r = d.router().to_owned();
    let mut cases = Vec::new();
    // Bodies: the router relays them to the region that answers.
    for (method, path) in [
        ("PUT", "/v1/records/article/a1"),
        ("PATCH", "/v1/records/profile/anna:main"),
        ("POST", "/v1/records/likes/l1/ops"),
        ("POST", "/v1/records/cart/anna:c/ops"),
        ("PUT", "/v1/records/credential/anna:pw"),
    ] {
        for (what, body) in bad_bodies() {
            cases.push(case(
                &format!("{method} {path} with {what} via the router"),
                method,
                format!("{r}{path}"),
                Some(&body),
                400,
                "bad_request",
            ));
        }
    }
    let big = vec![b' '; 1_048_577];
    for (method, path) in [
        ("PUT", "/v1/records/article/a1"),
        ("PATCH", "/v1/records/profile/anna:main"),
        ("POST", "/v1/records/likes/l1/ops"),
        ("PUT", "/v1/subjects/anna"),
    ] {
        cases.push(case(
            &format!("{method} {path} 1 MiB + 1 via the router"),
            method,
            format!("{r}{path}"),
            Some(&big),
            413,
            "payload_too_large",
        ));
    }
    // Type confusion and refusals the router passes on.
    for (method, path, body, status, code) in [
        ("POST", "/v1/records/likes/l1/ops", r#"{"op":"incr","by":"1"}"#, 400, "bad_request"),
        ("POST", "/v1/records/tags/t1/ops", r#"{"op":"incr","by":1}"#, 409, "wrong_merge_type"),
        ("PUT", "/v1/records/nope/x", r#"{"value":1}"#, 404, "unknown_entity"),
        ("PUT", "/v1/records/credential/zed:pw", r#"{"value":1}"#, 422, "unknown_subject"),
        (
            "PUT",
            "/v1/subjects/anna",
            r#"{"home_region":"us-east"}"#,
            409,
            "cross_jurisdiction_move",
        ),
        ("PUT", "/v1/subjects/anna", r#"{"home_region":42}"#, 400, "bad_request"),
        ("PUT", "/v1/subjects/anna", "not json", 400, "bad_request"),
    ] {
        cases.push(case(
            &format!("{method} {path} {body} via the router"),
            method,
            format!("{r}{path}"),
            Some(body.as_bytes()),
            status,
            code,
        ));
    }
    // The caller's region header.
    for (what, value) in [
        ("an unknown region", b"mars".to_vec()),
        ("an empty one", Vec::new()),
        ("one that is not UTF-8", b"eu-\xffwest".to_vec()),
    ] {
        cases.push(
            case(
                &format!("X-Tandem-Client-Region {what}"),
                "GET",
                format!("{r}/v1/records/article/a1"),
                None,
                400,
                "bad_request",
            )
            .header("x-tandem-client-region", value.clone()),
        );
        cases.push(
            case(
                &format!("X-Tandem-Client-Region {what} on a write"),
                "PUT",
                format!("{r}/v1/records/article/a1"),
                Some(br#"{"value":2}"#),
                400,
                "bad_request",
            )
            .header("x-tandem-client-region", value),
        );
    }
    // Paths the router does not serve, and methods it does not take.
    for (method, path, status, code) in [
        ("GET", "/nope", 404, "not_found"),
        ("GET", "/v1/records", 404, "not_found"),
        ("GET", "/v1/records/article/a1/ops/x", 404, "not_found"),
        ("POST", "/v1/records/article/a1", 405, "method_not_allowed"),
        ("GET", "/v1/records/likes/l1/ops", 405, "method_not_allowed"),
    ] {
        cases.push(case(
            &format!("{method} {path} via the router"),
            method,
            format!("{r}{path}"),
            None,
            status,
            code,
        ));
    }
    run_cases(&d, cases);
}

/// The router answers errors like a node (DESIGN.md: `{"error": {"code",
/// "message"}}`): its own 405s, paths that are not valid UTF-8, ids without
/// their subject (400, not 422) and bodies cut off on the wire (400, not 413).
#[test]
fn router_error_answers_follow_the_contract() {
    let d = deployment();
    seed_data(&d);
    let r = d.router().to_owned();
    let mut cases = Vec::new();
    for (method, path, status, code) in [
        ("POST", "/healthz", 405, "method_not_allowed"),
        ("DELETE", "/v1/routes", 405, "method_not_allowed"),
        ("GET", "/v1/admin/regions/eu-west/drain", 405, "method_not_allowed"),
        ("GET", "/v1/records/article/a%FF", 400, "bad_request"),
        ("GET", "/v1/records/profile/anna%FF:main", 400, "bad_request"),
    ] {
        cases.push(case(
            &format!("{method} {path} via the router"),
            method,
            format!("{r}{path}"),
            None,
            status,
            code,
        ));
    }
    cases.push(case(
        "an id with an empty subject via the router",
        "PUT",
        format!("{r}/v1/records/credential/:noid"),
        Some(br#"{"value":1}"#),
        400,
        "bad_request",
    ));
    run_cases(&d, cases);
    truncated_on_the_wire(&d, d.router(), "/v1/records/article/a1", 400, "bad_request");
}

/// The example deployment under `tandem up`, router included.
fn deployment() -> Deployment {
    TANDEM
        .deployment()
        .prefix("tandem-bad-")
        .admin_token(ADMIN_TOKEN)
        .replication_secret(Some(REPLICATION_SECRET))
        .start()
}

/// Write a little of every type, so that a change would show in the digests.
fn seed_data(d: &Deployment) {
    d.register("anna", "eu-west");
    d.register("bob", "us-east");
    for (method, region, path, body) in [
        ("PUT", "eu-west", "/v1/records/article/a1", json!({"value": {"t": 1}})),
        ("PATCH", "eu-west", "/v1/records/profile/anna:main", json!({"fields": {"name": "A"}})),
        ("PATCH", "us-east", "/v1/records/profile/bob:main", json!({"fields": {"name": "B"}})),
        ("POST", "eu-central", "/v1/records/likes/l1/ops", json!({"op": "incr", "by": 3})),
        ("POST", "us-east", "/v1/records/page_views/p1/ops", json!({"op": "incr", "by": 2})),
        ("POST", "eu-west", "/v1/records/cart/anna:c/ops", json!({"op": "add", "elements": ["x"]})),
        ("POST", "eu-west", "/v1/records/tags/t1/ops", json!({"op": "add", "elements": ["y"]})),
        ("PUT", "eu-west", "/v1/records/credential/anna:pw", json!({"value": "h"})),
        ("POST", "eu-west", "/v1/records/balance/anna:b/ops", json!({"op": "incr", "by": 9})),
    ] {
        let r = d.direct(http::method(method), region, path, Some(&body), &[]);
        assert_eq!(r.status, 200, "{method} {path} at {region}: {r}");
    }
}

/// The malformed, truncated, oversized and type-confused bodies every write
/// endpoint gets, and the 400 they all earn.
fn bad_bodies() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty", b"".to_vec()),
        ("not JSON", b"hello".to_vec()),
        ("truncated JSON", br#"{"value": {"a": [1, 2"#.to_vec()),
        ("a JSON array", b"[1,2,3]".to_vec()),
        ("a JSON string", br#""value""#.to_vec()),
        ("null", b"null".to_vec()),
        ("invalid UTF-8", b"{\"value\":\"\xc3\x28\"}".to_vec()),
        ("NUL bytes", b"\0\0\0\0".to_vec()),
        ("an unknown member", br#"{"value":1,"op":"incr","fields":{},"by":1,"x":2}"#.to_vec()),
        ("nested too deep", format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes()),
    ]
}
