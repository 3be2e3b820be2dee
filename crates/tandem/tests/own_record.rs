//! DESIGN.md: the subject of a record is its id up to the first `:`, so an id
//! without `:` is the subject's own record: `profile/alice` is alice's
//! profile, stored in her jurisdiction under the same residency and pinning
//! rules as `profile/alice:main`, and refused (403) in a region of another
//! jurisdiction.

use serde_json::json;
use tandem_testkit::config::example_text;
use tandem_testkit::{error_code, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));

#[test]
fn a_record_whose_id_is_the_subject_is_the_subjects_own_record() {
    let eu = TANDEM.node(example_text(), "eu-west", &[]);
    let (status, body) = eu.put("/v1/subjects/alice", &json!({ "home_region": "eu-west" }));
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        eu.patch("/v1/records/profile/alice", &json!({ "fields": { "name": "Alice" } }));
    assert_eq!(status, 200, "{body}");
    let (status, rec) = eu.get("/v1/records/profile/alice");
    assert_eq!(status, 200, "{rec}");
    assert_eq!((rec["entity"].as_str(), rec["id"].as_str()), (Some("profile"), Some("alice")));
    assert_eq!(rec["value"], json!({ "name": "Alice" }));
    // Pinned like any of alice's records: another EU region needs a failover marker.
    let central = TANDEM.node(example_text(), "eu-central", &[]);
    central.put("/v1/subjects/alice", &json!({ "home_region": "eu-west" }));
    let (status, body) =
        central.patch("/v1/records/profile/alice", &json!({ "fields": { "x": 1 } }));
    assert_eq!((status, error_code(&body)), (421, "misdirected_write"), "{body}");

    // Outside her jurisdiction: refused, nothing stored.
    let us = TANDEM.node(example_text(), "us-east", &[]);
    let (status, _) = us.put("/v1/subjects/alice", &json!({ "home_region": "eu-west" }));
    assert_eq!(status, 200, "the registry is everywhere");
    let (status, body) =
        us.patch("/v1/records/profile/alice", &json!({ "fields": { "name": "x" } }));
    assert_eq!((status, error_code(&body)), (403, "residency_violation"), "{body}");
    let (status, _) = us.get("/v1/records/profile/alice");
    assert_eq!(status, 404, "nothing of alice's profile is in us-east");
    // An empty subject is still malformed.
    let (status, body) = eu.patch("/v1/records/profile/:alice", &json!({ "fields": { "a": 1 } }));
    assert_eq!((status, error_code(&body)), (400, "bad_request"), "{body}");
}
