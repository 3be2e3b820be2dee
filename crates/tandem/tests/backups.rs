//! Encrypted, jurisdiction-bound backups, end to end against the real binary:
//! each test runs its own `tandem up` deployment (three regions plus the
//! router, every listen on a free loopback port, data and backup directories
//! in a temporary directory) built from the example config, whose backup
//! destinations are rewritten to `file:///<tmp>/backups/eu/` and
//! `file:///<tmp>/backups/us/`. The tests prove that `tandem backup` refuses a
//! destination of another jurisdiction before anything is read or written
//! (and the node's snapshot endpoint refuses it too, audited); that a
//! backup-wipe-restore round trip gives back the same `/v1/digest` and the
//! region rejoins replication; and that a tampered, truncated, foreign-key or
//! foreign-region backup is refused and leaves the region byte for byte as it
//! was.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tandem_testkit::config::ALL;
use tandem_testkit::search::{
    contains, dir_bytes, file_url, files_under, find_in_files, unique_tag,
};
use tandem_testkit::{Deployment, Limits, Method, Output, Tandem, CONVERGE_TIMEOUT};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));
/// Admin token the deployments run with (`TANDEM_ADMIN_TOKEN`).
const ADMIN_TOKEN: &str = "analytics-backup-test-admin-token";
/// The backup key (`TANDEM_BACKUP_KEY`, 64 hex digits).
const BACKUP_KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
/// Another valid key: what a backup was not encrypted with.
const OTHER_BACKUP_KEY: &str = "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5";
/// Pseudonym key variables of the example config: never inherited from the
/// test's environment, so `tandem up` generates the keys.
const PSEUDONYM_VARS: [&str; 2] = ["TANDEM_PSEUDONYM_KEY_EU", "TANDEM_PSEUDONYM_KEY_US"];

#[test]
fn backup_to_a_foreign_destination_is_refused_before_anything_is_written() {
    let d = deployment();
    let us = d.backup_url("us");
    let eu = d.backup_url("eu");
    let backup_kinds = |region: &str| -> Vec<Value> {
        d.audit(region)
            .into_iter()
            .filter(|e| e["kind"].as_str().is_some_and(|k| k.starts_with("backup")))
            .collect()
    };

    let out = backup(&d, "eu-west", &us, &[], &[]);
    assert_eq!(out.code, Some(2), "backup of eu-west to {us}: {out}");
    assert!(out.stderr.contains(&us), "the refusal names the destination: {out}");
    assert!(out.stderr.contains("EU"), "the refusal names the jurisdiction: {out}");
    assert!(
        backups_in(&d, "us").is_empty(),
        "nothing written to the US dir: {:?}",
        backups_in(&d, "us")
    );
    assert!(
        backups_in(&d, "eu").is_empty(),
        "nothing written anywhere: {:?}",
        backups_in(&d, "eu")
    );
    // The CLI refused on its own: the node saw no snapshot request.
    assert_eq!(backup_kinds("eu-west"), Vec::<Value>::new(), "eu-west audited a backup");

    // Refused before the node is contacted at all: even a dead URL or a missing
    // key gives the same refusal (not a connection or key error).
    let out = backup(
        &d,
        "eu-west",
        &us,
        &["--url", "http://127.0.0.1:9"],
        &[("TANDEM_BACKUP_KEY", None)],
    );
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("not a backup destination of EU"), "{out}");
    // A destination may not climb out of a declared prefix, however spelled:
    // URL parsing resolves encoded dots and backslashes and drops tabs.
    let climbs = [
        format!("{eu}../us/"),
        format!("{eu}%2e%2e/us/"),
        format!("{eu}.%2E/us/"),
        format!("{eu}..\\us\\eu-west.tbk"),
        format!("{eu}.\t./us/"),
    ];
    for climb in &climbs {
        let out = backup(&d, "eu-west", climb, &[], &[]);
        assert_eq!(out.code, Some(2), "backup to {climb:?}: {out}");
        assert!(out.stderr.contains("backup refused"), "{out}");
        assert!(backups_in(&d, "us").is_empty(), "{climb:?} wrote {:?}", backups_in(&d, "us"));
    }
    // The other way round: a US region may not back up into the EU dir.
    let out = backup(&d, "us-east", &eu, &[], &[]);
    assert_eq!(out.code, Some(2), "backup of us-east to {eu}: {out}");
    assert!(out.stderr.contains(&eu) && out.stderr.contains("US"), "{out}");
    assert!(backups_in(&d, "us").is_empty() && backups_in(&d, "eu").is_empty(), "nothing written");
    for region in ["eu-west", "us-east"] {
        assert_eq!(backup_kinds(region), Vec::<Value>::new(), "{region} audited a backup");
    }

    // The node's own check: the snapshot endpoint refuses the destination, audited.
    let snapshot = |dest: &str, token: Option<&str>| {
        let q: String = url::form_urlencoded::byte_serialize(dest.as_bytes()).collect();
        let url = format!("{}/v1/admin/snapshot?destination={q}", d.url("eu-west"));
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        // No operator certificate: the token is the only credential.
        d.anonymous_http().call(Method::GET, &url, None, &headers)
    };
    let r = snapshot(&us, None);
    assert_eq!(r.status, 401, "snapshot without the admin token: {r}");
    assert_eq!(backup_kinds("eu-west"), Vec::<Value>::new(), "an unauthorized call is not a flow");
    let r = snapshot(&us, Some(ADMIN_TOKEN));
    assert_eq!(r.status, 403, "snapshot for {us}: {r}");
    assert_eq!(r.body["error"]["code"], "backup_destination_refused", "{r}");
    let refused = backup_kinds("eu-west");
    assert_eq!(refused.len(), 1, "one audited refusal: {refused:?}");
    assert_eq!(refused[0]["kind"], "backup_refused", "{refused:?}");
    assert!(
        refused[0]["detail"].as_str().is_some_and(|t| t.contains(&us)),
        "the entry names {us}: {refused:?}"
    );
    let r = snapshot(&climbs[1], Some(ADMIN_TOKEN));
    assert_eq!(r.status, 403, "snapshot for {}: {r}", climbs[1]);
    assert_eq!(backup_kinds("eu-west").len(), 2, "both refusals audited");
    assert!(backups_in(&d, "us").is_empty(), "nothing written to the US dir");
}

#[test]
fn backup_wipe_restore_round_trip_gives_the_same_digest() {
    let d = deployment();
    let tag = unique_tag();
    let (eu1, eu2, us1) =
        (format!("qzsubjeu{tag}"), format!("qzsubjec{tag}"), format!("qzsubjus{tag}"));
    d.register(&eu1, "eu-west");
    d.register(&eu2, "eu-central");
    d.register(&us1, "us-east");
    let markers = write_mixed(&d, &tag, &eu1, &eu2, &us1);
    wait_converged(&d, "after the writes");
    let before = d.store_digest("eu-west");
    assert!(before.1 > 20, "eu-west holds the writes: {before:?}");

    let eu = d.backup_url("eu");
    let out = backup(&d, "eu-west", &eu, &[], &[]);
    assert_eq!(out.code, Some(0), "backup of eu-west to {eu}: {out}");
    let files = backups_in(&d, "eu");
    assert_eq!(files.len(), 1, "one backup file: {files:?}");
    let file = files[0].clone();
    assert_eq!(file.extension().and_then(|e| e.to_str()), Some("tbk"), "{file:?}");
    assert!(backups_in(&d, "us").is_empty(), "nothing in the US dir");
    let bytes = std::fs::read(&file).expect("read the backup");
    assert!(bytes.starts_with(b"TNDMBK01"), "a tandem backup");
    let plain = find_in_files(std::slice::from_ref(&file), &markers);
    assert!(plain.is_empty(), "plaintext in the backup: {plain:?}");
    let audited: Vec<Value> =
        d.audit("eu-west").into_iter().filter(|e| e["kind"] == "backup").collect();
    assert_eq!(audited.len(), 1, "the backup is audited: {audited:?}");
    assert!(audited[0]["detail"].as_str().is_some_and(|t| t.contains(&eu)), "{audited:?}");

    // Writes after the backup: the restore takes eu-west back before them,
    // and its peers must hand them back once it rejoins.
    let profile = format!("{eu1}:main");
    d.direct_ok(
        Method::PUT,
        "eu-west",
        "/v1/records/article/after-backup",
        &json!({"value": "after the backup"}),
    );
    d.direct_ok(
        Method::POST,
        "eu-west",
        "/v1/records/page_views/home/ops",
        &json!({"op": "incr", "by": 7}),
    );
    d.direct_ok(
        Method::PATCH,
        "eu-west",
        &format!("/v1/records/profile/{profile}"),
        &json!({"fields": {"phone": "after the backup"}}),
    );
    wait_converged(&d, "after the post-backup writes");
    assert_ne!(d.store_digest("eu-west"), before, "the post-backup writes are in");

    // Wipe eu-west and restore it from the backup.
    d.stop_process("eu-west");
    std::fs::remove_dir_all(d.region_dir("eu-west")).expect("wipe eu-west");
    let out = restore(&d, "eu-west", &file_url(&file), &[]);
    assert_eq!(out.code, Some(0), "restore of eu-west: {out}");
    let verify =
        || d.cli(&["audit", "verify", "--config", d.config_arg(), "--region", "eu-west"], &[]);
    let out = verify();
    assert_eq!(out.code, Some(0), "audit verify after the restore: {out}");
    let audit_text =
        std::fs::read_to_string(d.region_dir("eu-west").join("audit.jsonl")).expect("audit file");
    let restore_entries: Vec<Value> = audit_text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"] == "restore")
        .collect();
    assert_eq!(restore_entries.len(), 1, "a restore entry: {audit_text}");
    assert!(!contains(audit_text.as_bytes(), markers[0].as_bytes()), "no values in the audit log");
    // Start it with its links cut, so that the digest shows exactly what was restored.
    d.cut("*", "eu-west");
    d.cut("eu-west", "*");
    d.start_region("eu-west");
    assert_eq!(d.store_digest("eu-west"), before, "eu-west after backup, wipe and restore");
    assert_eq!(d.value("eu-west", "article", "after-backup"), None, "restored to the backup");
    d.heal("*", "eu-west");
    d.heal("eu-west", "*");

    // The restored region rejoins replication in both directions.
    d.direct_ok(
        Method::PUT,
        "us-east",
        "/v1/records/article/after-restore-us",
        &json!({"value": "from us-east"}),
    );
    d.direct_ok(
        Method::PUT,
        "eu-west",
        "/v1/records/article/after-restore-eu",
        &json!({"value": "from eu-west"}),
    );
    d.direct_ok(
        Method::POST,
        "eu-west",
        "/v1/records/page_views/home/ops",
        &json!({"op": "incr", "by": 5}),
    );
    d.direct_ok(
        Method::PATCH,
        "eu-west",
        &format!("/v1/records/profile/{profile}"),
        &json!({"fields": {"city": "Porto"}}),
    );
    d.wait_present("eu-west", "article", "after-restore-us");
    for region in ["eu-central", "us-east"] {
        d.wait_present(region, "article", "after-restore-eu");
    }
    let moved = || d.value("eu-central", "profile", &profile).is_some_and(|v| v["city"] == "Porto");
    assert!(
        d.wait_until(CONVERGE_TIMEOUT, moved),
        "eu-west's new profile write never reached eu-central"
    );
    wait_converged(&d, "after the restored region rejoined");
    // 3 per region before the backup, 7 after it, 5 after the restore: the
    // post-backup increment came back from the peers, under its old actor.
    for region in ALL {
        assert_eq!(
            d.value(region, "page_views", "home"),
            Some(json!(21)),
            "page_views at {region}"
        );
        assert!(
            d.value(region, "article", "after-backup").is_some(),
            "the post-backup article at {region}"
        );
    }
    let p = d.value("eu-west", "profile", &profile).expect("the profile at eu-west");
    assert_eq!(
        (&p["phone"], &p["city"]),
        (&json!("after the backup"), &json!("Porto")),
        "eu-west's profile holds the post-backup and the post-restore writes: {p}"
    );
    assert_eq!(d.value("us-east", "profile", &profile), None, "EU profile never in us-east");
    assert_ne!(d.store_digest("eu-west"), before, "the new writes are in");

    // The audit chain the restore started continues intact under the running node.
    d.stop_process("eu-west");
    let out = verify();
    assert_eq!(out.code, Some(0), "audit verify after the region ran again: {out}");
    let audit_text =
        std::fs::read_to_string(d.region_dir("eu-west").join("audit.jsonl")).expect("audit file");
    assert!(audit_text.lines().count() > 1, "the node appended to the restored log: {audit_text}");
}

#[test]
fn tampered_or_truncated_backups_are_refused_and_change_nothing() {
    let d = deployment();
    let tag = unique_tag();
    let subject = format!("qzsubj{tag}");
    d.register(&subject, "eu-west");
    let profile = format!("{subject}:main");
    d.routed_ok(
        Method::PATCH,
        &format!("/v1/records/profile/{profile}"),
        &json!({"fields": {"name": format!("QZNAME{tag}")}}),
        "eu-west",
    );
    d.direct_ok(Method::PUT, "eu-central", "/v1/records/article/a1", &json!({"value": "hello"}));
    d.wait_present("eu-west", "article", "a1");

    let eu = d.backup_url("eu");
    let out = backup(&d, "eu-west", &eu, &[], &[]);
    assert_eq!(out.code, Some(0), "backup: {out}");
    let files = backups_in(&d, "eu");
    assert_eq!(files.len(), 1, "{files:?}");
    let good = files[0].clone();
    let bytes = std::fs::read(&good).expect("read the backup");

    // A running region's store is not replaced under it.
    let before = d.store_digest("eu-west");
    let out = restore(&d, "eu-west", &file_url(&good), &[]);
    assert_ne!(out.code, Some(0), "restore into a running eu-west: {out}");
    assert!(out.stderr.contains("stop the region"), "says why: {out}");
    assert_eq!(d.store_digest("eu-west"), before, "a refused restore changes nothing");

    d.stop_process("eu-west");
    let on_disk = dir_bytes(&d.region_dir("eu-west"));
    assert!(!on_disk.is_empty(), "eu-west has files");

    let dir = d.root().join("damaged");
    std::fs::create_dir_all(&dir).expect("create the damaged dir");
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x01;
    let damaged = [
        ("flipped.tbk", flipped, &["integrity"][..], BACKUP_KEY),
        (
            "truncated.tbk",
            bytes[..bytes.len() - 10].to_vec(),
            &["integrity", "truncated"][..],
            BACKUP_KEY,
        ),
        ("other-key.tbk", bytes.clone(), &["integrity", "another key"][..], OTHER_BACKUP_KEY),
        (
            "garbage.tbk",
            b"this is not a backup at all, just text".to_vec(),
            &["not a tandem backup"][..],
            BACKUP_KEY,
        ),
        ("stub.tbk", bytes[..20].to_vec(), &["truncated"][..], BACKUP_KEY),
    ];
    for (name, content, expected, key) in &damaged {
        let path = dir.join(name);
        std::fs::write(&path, content).expect("write a damaged copy");
        let out = restore(&d, "eu-west", &file_url(&path), &[("TANDEM_BACKUP_KEY", Some(key))]);
        assert_eq!(out.code, Some(2), "restore of {name}: {out}");
        let err = out.stderr.to_lowercase();
        assert!(
            expected.iter().all(|e| err.contains(e)),
            "restore of {name} says {expected:?}: {out}"
        );
        assert!(
            err.contains("nothing was changed"),
            "restore of {name} says nothing changed: {out}"
        );
        assert_eq!(
            dir_bytes(&d.region_dir("eu-west")),
            on_disk,
            "restore of {name} changed eu-west's files"
        );
    }

    // A backup of eu-west is not a backup of eu-central (refused before its store is touched).
    let central_before = d.store_digest("eu-central");
    let out = restore(&d, "eu-central", &file_url(&good), &[]);
    assert_eq!(out.code, Some(2), "restore of eu-west's backup into eu-central: {out}");
    assert!(out.stderr.contains("eu-west") && out.stderr.contains("eu-central"), "{out}");
    assert_eq!(d.store_digest("eu-central"), central_before, "eu-central unchanged");
    assert_eq!(dir_bytes(&d.region_dir("eu-west")), on_disk, "eu-west's files unchanged");

    d.start_region("eu-west");
    assert_eq!(d.store_digest("eu-west"), before, "eu-west after the refused restores");
    let restores: Vec<Value> =
        d.audit("eu-west").into_iter().filter(|e| e["kind"] == "restore").collect();
    assert!(restores.is_empty(), "no restore was audited: {restores:?}");
    assert!(d.value("eu-west", "profile", &profile).is_some(), "the data is still served");
}

/// Writes of every kind of entity type, in every region, some through the
/// router; `tag` makes the values markers. Returns the plaintext markers.
fn write_mixed(
    d: &Deployment,
    tag: &str,
    eu_subject: &str,
    eu2_subject: &str,
    us_subject: &str,
) -> Vec<String> {
    let name = format!("QZPROFILE{tag}");
    let article = format!("QZARTICLE{tag}");
    let password = format!("QZPASSWORD{tag}");
    for (subject, home) in
        [(eu_subject, "eu-west"), (eu2_subject, "eu-central"), (us_subject, "us-east")]
    {
        let rec = |entity: &str, rest: &str| format!("/v1/records/{entity}/{subject}:{rest}");
        d.routed_ok(
            Method::PATCH,
            &rec("profile", "main"),
            &json!({"fields": {"name": format!("{name}{home}"), "city": "Lyon"}}),
            home,
        );
        d.routed_ok(
            Method::PUT,
            &rec("credential", "pw"),
            &json!({"value": format!("{password}{home}")}),
            home,
        );
        d.routed_ok(
            Method::POST,
            &rec("balance", "eur/ops"),
            &json!({"op": "incr", "by": 100}),
            home,
        );
        d.routed_ok(
            Method::POST,
            &rec("balance", "eur/ops"),
            &json!({"op": "decr", "by": 30}),
            home,
        );
        d.routed_ok(
            Method::POST,
            &rec("cart", "now/ops"),
            &json!({"op": "add", "elements": ["book", "pen"]}),
            home,
        );
        d.routed_ok(
            Method::PATCH,
            &rec("settings", "ui"),
            &json!({"fields": {"theme": "dark"}}),
            home,
        );
        d.routed_ok(
            Method::PATCH,
            &rec("subscription", "main"),
            &json!({"fields": {"plan": "pro", "country": "DE", "name": format!("{name}{home}")}}),
            home,
        );
    }
    for region in ALL {
        d.direct_ok(
            Method::POST,
            region,
            "/v1/records/page_views/home/ops",
            &json!({"op": "incr", "by": 3}),
        );
        d.direct_ok(
            Method::POST,
            region,
            "/v1/records/likes/post-1/ops",
            &json!({"op": "incr", "by": 2}),
        );
        d.direct_ok(
            Method::POST,
            region,
            "/v1/records/tags/post-1/ops",
            &json!({"op": "add", "elements": [region]}),
        );
        d.direct_ok(
            Method::PUT,
            region,
            &format!("/v1/records/article/{region}"),
            &json!({"value": {"title": format!("{article}{region}")}}),
        );
    }
    d.direct_ok(
        Method::POST,
        "us-east",
        "/v1/records/likes/post-1/ops",
        &json!({"op": "decr", "by": 1}),
    );
    d.direct_ok(
        Method::POST,
        "eu-central",
        "/v1/records/tags/post-1/ops",
        &json!({"op": "remove", "elements": ["us-east"]}),
    );
    vec![name, article, password, eu_subject.to_owned()]
}

/// The example deployment under `tandem up` with the router, its backup
/// destinations under `<root>/backups/{eu,us}/`, the backup key in every
/// process's environment and no pseudonym key inherited.
fn deployment() -> Deployment {
    let mut b = TANDEM
        .deployment()
        .prefix("tandem-backup-")
        .admin_token(ADMIN_TOKEN)
        // `start` answers once the region is healthy: allow for a slow machine.
        .limits(Limits { control: Duration::from_secs(90), ..Limits::default() })
        .backup_dirs()
        .env("TANDEM_BACKUP_KEY", BACKUP_KEY);
    for var in PSEUDONYM_VARS {
        b = b.env_remove(var);
    }
    b.start()
}

/// Wait until every region allowed to hold a record holds the same state.
fn wait_converged(d: &Deployment, what: &str) {
    let ok = d.wait_until(CONVERGE_TIMEOUT, || d.convergence().is_ok());
    assert!(ok, "{what}: no convergence within {CONVERGE_TIMEOUT:?}: {:?}", d.convergence());
}

/// `tandem backup --config F --region R --to URL`.
fn backup(
    d: &Deployment,
    region: &str,
    to: &str,
    extra: &[&str],
    env: &[(&str, Option<&str>)],
) -> Output {
    let mut args = vec!["backup", "--config", d.config_arg(), "--region", region, "--to", to];
    args.extend_from_slice(extra);
    d.cli(&args, env)
}

/// `tandem restore --config F --region R --from URL`.
fn restore(d: &Deployment, region: &str, from: &str, env: &[(&str, Option<&str>)]) -> Output {
    d.cli(&["restore", "--config", d.config_arg(), "--region", region, "--from", from], env)
}

/// The `.tbk` files in a backup directory.
fn backups_in(d: &Deployment, j: &str) -> Vec<PathBuf> {
    files_under(&d.backup_dir(j))
}
