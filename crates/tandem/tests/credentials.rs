//! Who may call what, on a real deployment (`tandem up`, the example config):
//! admin calls need the admin token or the operator's certificate; the data
//! plane needs an API key; replication is served only to a region's
//! certificate, which names the peer (a header claiming another region is
//! refused with 403, counted and audited, and gets no byte of EU personal
//! data). Each refusal is a case of the kit's `refusals`: status, error code
//! and nothing stored changed. With `--insecure`, regions prove themselves
//! with the shared replication secret instead, and the same classes of wrong
//! credentials are refused.

use serde_json::json;
use tandem_engine::wire::{encode_message, ForwardRequest, WIRE_VERSION};
use tandem_testkit::refusals::{case, client, run_cases, stored, Case};
use tandem_testkit::search::{contains, unique_tag};
use tandem_testkit::tls::API_KEY;
use tandem_testkit::{metrics, Deployment, Method, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));
/// Admin token the deployments run with (`TANDEM_ADMIN_TOKEN`).
const ADMIN_TOKEN: &str = "credentials-test-admin-token";
/// Shared replication secret (`TANDEM_REPLICATION_SECRET`, `--insecure` only).
const REPLICATION_SECRET: &str = "credentials-test-secret";

#[test]
fn admin_calls_need_the_admin_token_or_the_operator_certificate() {
    let d = deployment(false);
    let n = d.url("eu-west").to_owned();
    let good_admin = format!("Bearer {ADMIN_TOKEN}");
    let mut cases = admin_cases(&d, &[("the API key", Some(format!("Bearer {API_KEY}")))]);
    // A certificate that is not the operator's is no admin credential.
    for holder in ["router", "eu-central"] {
        cases.push(
            case(
                &format!("isolate with {holder}'s certificate"),
                "POST",
                format!("{n}/v1/admin/isolate"),
                None,
                401,
                "unauthorized",
            )
            .as_holder(holder),
        );
    }
    // The right token with bad arguments.
    cases.push(
        case(
            "snapshot without a destination",
            "GET",
            format!("{n}/v1/admin/snapshot"),
            None,
            400,
            "bad_request",
        )
        .header("authorization", &good_admin),
    );
    for (what, action, region) in [
        ("drain of an unknown region", "drain", "mars"),
        ("an unknown router admin action", "explode", "eu-west"),
    ] {
        let url = format!("{}/v1/admin/regions/{region}/{action}", d.router());
        cases.push(
            case(what, "POST", url, None, 404, "not_found").header("authorization", &good_admin),
        );
    }
    // Values of records are operator data too.
    for path in ["/v1/conflicts", "/v1/audit?after=0"] {
        cases.push(case(
            &format!("GET {path} with the API key"),
            "GET",
            format!("{n}{path}"),
            None,
            401,
            "unauthorized",
        ));
    }
    run_cases(&d, cases);

    // The operator's certificate is an admin credential without the token.
    let operator = d.client_as(Some("operator"), None);
    for path in ["/v1/conflicts", "/v1/audit?after=0"] {
        let a = operator.call(Method::GET, &format!("{n}{path}"), None, &[]);
        assert_eq!(a.status, 200, "{path} with the operator certificate: {a}");
    }
    let a = operator.call(Method::POST, &format!("{n}/v1/admin/rejoin"), None, &[]);
    assert_eq!(a.status, 200, "rejoin with the operator certificate: {a}");
    let a = operator.call(
        Method::POST,
        &format!("{}/v1/admin/regions/mars/drain", d.router()),
        None,
        &[],
    );
    assert_eq!(a.status, 404, "the router takes the operator certificate as admin: {a}");
}

#[test]
fn the_data_plane_needs_an_api_key_at_the_node_and_at_the_router() {
    let d = deployment(false);
    d.register("anna", "eu-west");
    let mut cases: Vec<Case> = Vec::new();
    for base in [d.url("eu-west").to_owned(), d.router().to_owned()] {
        for (what, auth) in [
            ("no key", None),
            ("a wrong key", Some("Bearer not-a-key-of-this-deployment".to_owned())),
            ("the key with a suffix", Some(format!("Bearer {API_KEY}x"))),
            ("the admin token", Some(format!("Bearer {ADMIN_TOKEN}"))),
            ("the key as Basic", Some(format!("Basic {API_KEY}"))),
        ] {
            for (method, path, body) in [
                ("PUT", "/v1/records/article/k1", Some(br#"{"value":"x"}"#.as_slice())),
                ("GET", "/v1/records/article/a1", None),
                ("GET", "/v1/records/article?limit=10", None),
                ("POST", "/v1/records/likes/l1/ops", Some(br#"{"op":"incr","by":1}"#.as_slice())),
                ("PUT", "/v1/subjects/zed", Some(br#"{"home_region":"eu-west"}"#.as_slice())),
            ] {
                let mut c = case(
                    &format!("{method} {base}{path} with {what}"),
                    method,
                    format!("{base}{path}"),
                    body,
                    401,
                    "unauthorized",
                )
                // The operator's certificate is not a data-plane credential.
                .as_holder("operator");
                // The case client sends the kit's key unless told otherwise.
                c = c.header("authorization", auth.clone().unwrap_or_default());
                cases.push(c);
            }
        }
    }
    let node_before = refusals(&d, d.url("eu-west"), "tandem_auth_refusals_total");
    let router_before = refusals(&d, d.router(), "router_auth_refusals_total");
    run_cases(&d, cases);
    assert!(refusals(&d, d.url("eu-west"), "tandem_auth_refusals_total") >= node_before + 25.0);
    assert!(refusals(&d, d.router(), "router_auth_refusals_total") >= router_before + 25.0);
    // The key works, at the node and through the router.
    let put = |base: &str| {
        let url = format!("{base}/v1/records/article/k1");
        d.http().call(Method::PUT, &url, Some(&json!({"value": "with a key"})), &[])
    };
    assert_eq!(put(d.url("eu-west")).status, 200);
    assert_eq!(put(d.router()).status, 200);
}

#[test]
fn replication_is_served_to_region_certificates_only() {
    let d = deployment(false);
    let tag = unique_tag();
    d.register("anna", "eu-west");
    let marker = format!("EUVAL{tag}");
    let put = json!({"value": marker});
    d.direct_ok(Method::PUT, "eu-west", "/v1/records/credential/anna:pw", &put);
    let n = d.url("eu-west").to_owned();
    let forward =
        encode_message(&ForwardRequest { after: 0, have: Default::default(), limit: 1000 });
    let mut cases = Vec::new();
    on_replication_paths(&n, &forward, |mk| {
        cases.push(mk("no certificate", 401, "unauthorized").header("x-tandem-peer", "eu-central"));
        cases.push(mk("the operator's certificate", 401, "unauthorized").as_holder("operator"));
        cases.push(mk("the router's certificate", 401, "unauthorized").as_holder("router"));
        // The proven identity wins over the claimed one: a US region's valid
        // certificate presenting itself as an EU peer.
        cases.push(
            mk("us-east's certificate claiming eu-central", 403, "peer_identity_mismatch")
                .as_holder("us-east")
                .header("x-tandem-peer", "eu-central"),
        );
        cases.push(mk("itself as the peer", 400, "bad_request").as_holder("eu-west"));
        cases.push(
            mk("a peer name that is not UTF-8", 400, "bad_request")
                .as_holder("eu-central")
                .header("x-tandem-peer", b"\xffeu-central"),
        );
    });
    for q in [
        "",
        "?after=",
        "?after=-1",
        "?after=abc",
        "?after=1&extra=2",
        "?after=18446744073709551616",
    ] {
        let url = format!("{n}/v1/replication/stream{q}");
        cases.push(
            case(&format!("stream with query {q:?}"), "GET", url, None, 400, "bad_request")
                .as_holder("eu-central"),
        );
    }
    for (what, body) in bad_forward_bodies(&forward) {
        let url = format!("{n}/v1/replication/forward");
        cases.push(
            case(&format!("forward with {what}"), "POST", url, Some(&body), 400, "bad_request")
                .as_holder("eu-central"),
        );
    }
    let mismatches = || {
        metrics::sum(
            &d.metrics_at(&n),
            "residency_denials_total",
            &[("reason", "peer_identity_mismatch")],
        )
    };
    let mismatches_before = mismatches();
    run_cases(&d, cases);
    // One impersonation per replication endpoint.
    let endpoints = 5.0;
    assert_eq!(mismatches(), mismatches_before + endpoints, "each impersonation is counted");
    // Every impersonation is in eu-west's audit log, with both names.
    let refused: Vec<_> =
        d.audit("eu-west").into_iter().filter(|e| e["kind"] == "identity_refused").collect();
    assert_eq!(refused.len() as f64, endpoints, "{refused:#?}");
    for e in &refused {
        let text = e.to_string();
        assert!(text.contains("us-east") && text.contains("eu-central"), "{e}");
    }

    // The refused impersonation got no byte of the EU record. eu-west's own
    // stream, read until a public record written after it, carries the EU
    // value to eu-central (the positive control) and not to us-east.
    let public = format!("PUBVAL{tag}");
    d.direct_ok(
        Method::PUT,
        "eu-west",
        "/v1/records/article/after-anna",
        &json!({"value": public}),
    );
    let impersonation = d
        .client_as(Some("us-east"), None)
        .inner()
        .post(format!("{n}/v1/replication/forward"))
        .header("x-tandem-peer", "eu-central")
        .body(forward.clone())
        .send()
        .expect("forward");
    assert_eq!(impersonation.status().as_u16(), 403);
    let body = impersonation.bytes().expect("body").to_vec();
    assert!(!contains(&body, marker.as_bytes()), "the refused peer got the EU value");
    let stream_until_public = |holder: &str| {
        let url = format!("{n}/v1/replication/stream?after=0");
        let mut resp = d.client_as(Some(holder), None).inner().get(&url).send().expect("stream");
        assert_eq!(resp.status().as_u16(), 200, "stream as {holder}");
        let mut seen = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        while !contains(&seen, public.as_bytes()) {
            let n = std::io::Read::read(&mut resp, &mut buf)
                .unwrap_or_else(|e| panic!("stream as {holder} ended before {public}: {e}"));
            assert!(n > 0, "stream as {holder} ended before {public}");
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    };
    assert!(
        contains(&stream_until_public("eu-central"), marker.as_bytes()),
        "eu-central did not get the EU value"
    );
    assert!(
        !contains(&stream_until_public("us-east"), marker.as_bytes()),
        "us-east got the EU value under its own name"
    );
    assert!(d.log_text().matches(marker.as_str()).next().is_none(), "the value was logged");
}

#[test]
fn insecure_replication_needs_the_shared_secret() {
    let d = deployment(true);
    let n = d.url("eu-west").to_owned();
    let good_repl = format!("Bearer {REPLICATION_SECRET}");
    let mut cases = admin_cases(&d, &[("the replication secret", Some(good_repl.clone()))]);
    let forward = encode_message(&ForwardRequest { after: 0, have: Default::default(), limit: 10 });
    on_replication_paths(&n, &forward, |mk| {
        cases.push(mk("no credentials", 401, "unauthorized").header("x-tandem-peer", "us-east"));
        for (what, auth) in [
            ("a wrong secret", "Bearer nope".to_owned()),
            ("the admin token", format!("Bearer {ADMIN_TOKEN}")),
        ] {
            cases.push(
                mk(what, 401, "unauthorized")
                    .header("authorization", auth)
                    .header("x-tandem-peer", "us-east"),
            );
        }
        cases.push(mk("no X-Tandem-Peer", 400, "bad_request").header("authorization", &good_repl));
        for (what, peer) in [
            ("an unknown peer", b"mars".as_slice()),
            ("itself as the peer", b"eu-west"),
            ("a peer name that is not UTF-8", b"\xffus-east"),
        ] {
            cases.push(
                mk(what, 400, "bad_request")
                    .header("authorization", &good_repl)
                    .header("x-tandem-peer", peer),
            );
        }
    });
    for (what, body) in bad_forward_bodies(&forward) {
        let url = format!("{n}/v1/replication/forward");
        cases.push(
            case(&format!("forward with {what}"), "POST", url, Some(&body), 400, "bad_request")
                .header("authorization", &good_repl)
                .header("x-tandem-peer", "us-east"),
        );
    }
    run_cases(&d, cases);
    // The right credentials still work, and a forward request changes nothing.
    let http = client(&d);
    let before = stored(&d, &http);
    let r = http
        .inner()
        .post(format!("{n}/v1/replication/forward"))
        .header("authorization", &good_repl)
        .header("x-tandem-peer", "us-east")
        .body(forward)
        .send()
        .expect("forward");
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap_or_default());
    assert_eq!(stored(&d, &http), before);
}

/// Admin calls at a node and at the router with every wrong token, plus
/// the deployment's `extra` credentials that are not the admin token.
fn admin_cases(d: &Deployment, extra: &[(&str, Option<String>)]) -> Vec<Case> {
    let n = d.url("eu-west");
    let mut wrong: Vec<(&str, Option<String>)> = vec![
        ("no Authorization", None),
        ("an empty bearer", Some("Bearer ".into())),
        ("a wrong token", Some("Bearer not-the-token".into())),
        ("the token with a suffix", Some(format!("Bearer {ADMIN_TOKEN}x"))),
        (
            "a prefix of the token",
            Some(format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])),
        ),
        ("the token as Basic", Some(format!("Basic {ADMIN_TOKEN}"))),
        ("the token without a scheme", Some(ADMIN_TOKEN.to_string())),
        ("a lower-case scheme", Some(format!("bearer {ADMIN_TOKEN}"))),
    ];
    wrong.extend(extra.iter().cloned());
    let mut cases = Vec::new();
    for (what, auth) in &wrong {
        for (method, url) in [
            ("POST", format!("{n}/v1/admin/isolate")),
            ("POST", format!("{n}/v1/admin/rejoin")),
            ("GET", format!("{n}/v1/admin/snapshot?destination=file:///var/backups/tandem/eu/x")),
            ("POST", format!("{}/v1/admin/regions/eu-west/drain", d.router())),
            ("POST", format!("{}/v1/admin/regions/us-east/restore", d.router())),
        ] {
            let c = case(
                &format!("{method} {url} with {what}"),
                method,
                url,
                None,
                401,
                "unauthorized",
            );
            // An empty value overrides the case client's API key.
            cases.push(c.header("authorization", auth.clone().unwrap_or_default()));
        }
    }
    cases
}

/// Forward bodies that are not a forward request of this wire version.
fn bad_forward_bodies(forward: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut wrong_version = forward.to_vec();
    wrong_version[0] = WIRE_VERSION.wrapping_add(1);
    let mut truncated = forward.to_vec();
    truncated.truncate(forward.len() - 1);
    vec![
        ("an empty body", Vec::new()),
        ("garbage", b"\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec()),
        ("JSON", br#"{"after":0,"have":{},"limit":10}"#.to_vec()),
        ("another wire version", wrong_version),
        ("a truncated request", truncated),
        ("a huge map length", vec![WIRE_VERSION, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]),
    ]
}

fn refusals(d: &Deployment, base: &str, family: &str) -> f64 {
    metrics::sum(&d.metrics_at(base), family, &[])
}

/// The example deployment under `tandem up`, router included; `--insecure`
/// when asked.
fn deployment(insecure: bool) -> Deployment {
    let b = TANDEM
        .deployment()
        .prefix("tandem-cred-")
        .admin_token(ADMIN_TOKEN)
        .replication_secret(Some(REPLICATION_SECRET));
    if insecure { b.insecure() } else { b }.start()
}

/// Call `each` with a maker of cases for each replication endpoint of `n`
/// (the stream, and the forward, acknowledgement, digests and states
/// endpoints with `forward` as their body).
fn on_replication_paths(
    n: &str,
    forward: &[u8],
    mut each: impl FnMut(&dyn Fn(&str, u16, &'static str) -> Case),
) {
    for (path, method, body) in [
        ("/v1/replication/stream?after=0", "GET", None),
        ("/v1/replication/forward", "POST", Some(forward)),
        ("/v1/replication/ack", "POST", Some(forward)),
        ("/v1/replication/digests", "POST", Some(forward)),
        ("/v1/replication/states", "POST", Some(forward)),
    ] {
        let mk = |what: &str, status: u16, code: &'static str| {
            case(
                &format!("{method} {path}: {what}"),
                method,
                format!("{n}{path}"),
                body,
                status,
                code,
            )
        };
        each(&mk);
    }
}
