//! Refusals by `validate()`: each breaks one thing in the minimal config and
//! checks that the message names the key.

use super::*;

#[test]
fn refuses_no_regions() {
    let text = "[deployment]\nname = \"x\"\n[router]\nlisten = \"127.0.0.1:7200\"\n";
    assert_refused(text, "regions", "at least one region");
}

#[test]
fn refuses_a_region_without_jurisdiction() {
    let missing = edit(MINIMAL, "jurisdiction = \"US\"\n", "");
    assert_refused(&missing, "regions[1].jurisdiction", "no jurisdiction");
    let empty = edit(MINIMAL, "jurisdiction = \"US\"", "jurisdiction = \"\"");
    assert_refused(&empty, "regions[1].jurisdiction", "no jurisdiction");
    let blank = edit(MINIMAL, "jurisdiction = \"EU\"", "jurisdiction = \"  \"");
    assert_refused(&blank, "regions[0].jurisdiction", "no jurisdiction");
}

#[test]
fn refuses_duplicate_region_names() {
    let text = edit(MINIMAL, "name = \"us-east\"", "name = \"eu-west\"");
    assert_refused(&text, "regions[1].name", "duplicate region name \"eu-west\"");
}

#[test]
fn refuses_bad_region_names() {
    for bad in ["EU-West", "eu_west", "", "eu west", &"a".repeat(33)] {
        let text = edit(MINIMAL, "name = \"us-east\"", &format!("name = \"{bad}\""));
        assert_refused(&text, "regions[1].name", "invalid region name");
    }
    let text = edit(MINIMAL, "name = \"us-east\"", &format!("name = \"{}\"", "a".repeat(32)));
    Config::from_toml_str(&text).unwrap();
}

#[test]
fn refuses_duplicate_listen_ports() {
    let same = edit(MINIMAL, "127.0.0.1:7202", "127.0.0.1:7201");
    assert_refused(&same, "regions[1].listen", "duplicate listen port 7201");
    let other_host = edit(MINIMAL, "127.0.0.1:7202", "0.0.0.0:7201");
    assert_refused(&other_host, "regions[1].listen", "duplicate listen port 7201");
    let router = edit(MINIMAL, "127.0.0.1:7200", "127.0.0.2:7202");
    let err = assert_refused(&router, "router.listen", "duplicate listen port 7202");
    assert!(err.to_string().contains("regions[1].listen"), "{err}");
    let zero = edit(MINIMAL, "127.0.0.1:7202", "127.0.0.1:0");
    assert_refused(&zero, "regions[1].listen", "port 0");
}

#[test]
fn refuses_an_unknown_default_region() {
    let text = edit(
        MINIMAL,
        "listen = \"127.0.0.1:7200\"",
        "listen = \"127.0.0.1:7200\"\ndefault_region = \"mars\"",
    );
    assert_refused(&text, "router.default_region", "unknown region \"mars\"");
}

#[test]
fn refuses_bad_links() {
    let link =
        |a: &str, b: &str| format!("\n[[links]]\nbetween = [\"{a}\", \"{b}\"]\nlatency_ms = 40\n");
    let unknown = format!("{MINIMAL}{}", link("eu-west", "mars"));
    assert_refused(&unknown, "links[0].between", "unknown region \"mars\"");
    let itself = format!("{MINIMAL}{}", link("eu-west", "eu-west"));
    assert_refused(&itself, "links[0].between", "to itself");
    let twice = format!("{MINIMAL}{}{}", link("eu-west", "us-east"), link("us-east", "eu-west"));
    assert_refused(&twice, "links[1].between", "duplicate link");
    let slow = edit(
        &format!("{MINIMAL}{}", link("eu-west", "us-east")),
        "latency_ms = 40",
        "latency_ms = 3600000",
    );
    assert_refused(&slow, "links[0].latency_ms", "maximum");
}

#[test]
fn refuses_a_zero_max_lag() {
    let text = edit(EXAMPLE_TOML, "max_lag = \"30s\"", "max_lag = \"0s\"");
    assert_refused(&text, "data_classes.financial.max_lag", "greater than zero");
}

#[test]
fn refuses_an_unknown_data_class() {
    let text = edit(MINIMAL, "data_class = \"user_profile\"", "data_class = \"x\"");
    let err = assert_refused(&text, "entities.profile.data_class", "unknown data class \"x\"");
    assert!(
        err.to_string().starts_with("entities.profile.data_class: unknown data class \"x\""),
        "{err}"
    );
}

#[test]
fn refuses_home_region_writes_without_subjects() {
    let text = edit(MINIMAL, "personal = true\n", "");
    assert_refused(&text, "entities.profile.writes", "subjects");
    let explicit = edit(MINIMAL, "personal = true", "subjects = false");
    assert_refused(&explicit, "entities.profile.writes", "home-region");
}

#[test]
fn refuses_a_personal_entity_without_subjects() {
    let text = edit(MINIMAL, "personal = true", "personal = true\nsubjects = false");
    assert_refused(&text, "entities.profile.subjects", "personal");
}

#[test]
fn refuses_bad_entity_names() {
    for (bad, key) in [
        ("Profile", "entities.Profile"),
        ("user-profile", "entities.user-profile"),
        ("my profile", "entities.\"my profile\""),
    ] {
        let text = edit(MINIMAL, "[entities.profile]", &format!("[entities.\"{bad}\"]"));
        assert_refused(&text, key, "invalid entity name");
    }
    let long = "e".repeat(65);
    let text = edit(MINIMAL, "[entities.profile]", &format!("[entities.{long}]"));
    assert_refused(&text, &format!("entities.{long}"), "invalid entity name");
    let text = edit(MINIMAL, "[entities.profile]", "[entities._subject]");
    assert_refused(&text, "entities._subject", "reserved");
}

#[test]
fn refuses_bad_data_class_names() {
    let text = format!(
        "{MINIMAL}\n[data_classes.\"User Profile\"]\nmax_lag = \"1s\"\non_breach = \"warn\"\n"
    );
    assert_refused(&text, "data_classes.\"User Profile\"", "invalid data class name");
}

#[test]
fn refuses_zero_limits() {
    let node_limits = [
        "max_body_bytes = 1048576",
        "write_queue_len = 4096",
        "commit_batch_max = 1024",
        "max_connections = 1024",
        "id_len_max = 256",
        "scan_limit_max = 1000",
        "conflicts_kept = 1000",
        "max_clock_offset_ms = 500",
    ];
    let node_section = EXAMPLE_TOML.find("[node]").unwrap();
    for limit in node_limits {
        let (name, _) = limit.split_once(" = ").unwrap();
        let (head, tail) = EXAMPLE_TOML.split_at(node_section);
        let text = format!("{head}{}", edit(tail, limit, &format!("{name} = 0")));
        assert_refused(&text, &format!("node.{name}"), "greater than zero");
    }
    let cases = [
        ("request_timeout = \"10s\"", "request_timeout = \"0s\"", "node.request_timeout"),
        ("batch_max = 512", "batch_max = 0", "replication.batch_max"),
        ("batch_bytes_max = 4194304", "batch_bytes_max = 0", "replication.batch_bytes_max"),
        ("poll_interval = \"50ms\"", "poll_interval = \"0ms\"", "replication.poll_interval"),
        ("backoff_max = \"2s\"", "backoff_max = \"0s\"", "replication.backoff_max"),
        ("probe_interval = \"200ms\"", "probe_interval = \"0s\"", "router.probe_interval"),
        (
            "probe_failure_threshold = 3",
            "probe_failure_threshold = 0",
            "router.probe_failure_threshold",
        ),
        ("probe_timeout = \"500ms\"", "probe_timeout = \"0s\"", "router.probe_timeout"),
        ("upstream_timeout = \"5s\"", "upstream_timeout = \"0s\"", "router.upstream_timeout"),
        ("max_body_bytes = 1048576       # 1 MiB", "max_body_bytes = 0", "router.max_body_bytes"),
    ];
    for (from, to, key) in cases {
        assert_refused(&edit(EXAMPLE_TOML, from, to), key, "greater than zero");
    }
    // Zero disables the home cache rather than breaking anything.
    Config::from_toml_str(&edit(
        EXAMPLE_TOML,
        "home_cache_ttl = \"5s\"",
        "home_cache_ttl = \"0s\"",
    ))
    .unwrap();
}

#[test]
fn a_write_ahead_log_checkpoint_under_64_kib_is_refused() {
    let from = "wal_checkpoint_bytes = 8388608";
    assert_refused(
        &edit(EXAMPLE_TOML, from, "wal_checkpoint_bytes = 65535"),
        "node.wal_checkpoint_bytes",
        "at least 65536",
    );
    let smallest = Config::from_toml_str(&edit(EXAMPLE_TOML, from, "wal_checkpoint_bytes = 65536"));
    assert_eq!(smallest.unwrap().node.wal_checkpoint_bytes, 65536);
    assert_eq!(Config::example().node.wal_checkpoint_bytes, 8 * 1024 * 1024);
}

#[test]
fn refuses_an_empty_secret_or_deployment_name() {
    let secret = edit(EXAMPLE_TOML, "# secret = \"change-me\"", "secret = \"\"");
    assert_refused(&secret, "replication.secret", "empty");
    let name = edit(MINIMAL, "name = \"mini\"", "name = \"\"");
    assert_refused(&name, "deployment.name", "empty");
}

#[test]
fn transfers_are_checked() {
    let base = Config::example();
    let ok = format!(
        "{EXAMPLE_TOML}\n[[transfers]]\nfrom = \"EU\"\nto = \"US\"\nlegal_basis = \"SCC 2021/914\"\nkey_env = \"TANDEM_TRANSFER_KEY_EU_US\"\n"
    );
    let c = Config::from_toml_str(&ok).unwrap();
    assert_eq!(c.transfer("EU", "US").unwrap().legal_basis, "SCC 2021/914");
    assert!(c.transfer("US", "EU").is_none());
    assert!(base.transfers.is_empty());
    assert_refused(&ok.replace("to = \"US\"", "to = \"APAC\""), "transfers[0].to", "jurisdiction");
    assert_refused(&ok.replace("to = \"US\"", "to = \"EU\""), "transfers[0].to", "another");
    assert_refused(
        &ok.replace("\"SCC 2021/914\"", "\"\""),
        "transfers[0].legal_basis",
        "legal basis",
    );
    assert_refused(
        &ok.replace("key_env = \"TANDEM_TRANSFER_KEY_EU_US\"", "key_env = \"\""),
        "transfers[0].key_env",
        "environment",
    );
}

#[test]
fn analytics_projections_and_jurisdictions_are_checked() {
    let c = Config::example();
    let a = c.entity("subscription").unwrap().analytics.as_ref().unwrap();
    assert_eq!(a.into, "subscription_stats");
    assert_eq!(a.keep, vec!["plan".to_string(), "country".to_string()]);
    assert!(c.jurisdictions["EU"].backup_destinations[0].starts_with("file:///"));
    let bad = EXAMPLE_TOML.replace("into = \"subscription_stats\"", "into = \"nope\"");
    assert_refused(&bad, "entities.subscription.analytics.into", "unknown");
    let bad = EXAMPLE_TOML.replace("into = \"subscription_stats\"", "into = \"credential\"");
    assert_refused(&bad, "entities.subscription.analytics.into", "non-personal");
    let bad = EXAMPLE_TOML.replace("keep = [\"plan\", \"country\"]", "keep = [\"plan\", \"name\"]");
    assert_refused(&bad, "entities.subscription.analytics.drop", "both");
    let bad = EXAMPLE_TOML.replace("pseudonym_key_env = \"TANDEM_PSEUDONYM_KEY_US\"", "");
    assert_refused(&bad, "jurisdictions.US.pseudonym_key_env", "pseudonym key");
    let bad = EXAMPLE_TOML.replace("[jurisdictions.US]", "[jurisdictions.APAC]");
    assert_refused(&bad, "jurisdictions.APAC", "no region");
    let bad = EXAMPLE_TOML.replace("\"s3://tandem-backups-us/\"", "\"ftp://x\"");
    assert_refused(&bad, "jurisdictions.US.backup_destinations[1]", "URL prefix");
}

#[test]
fn audit_segments_under_4_kib_and_an_export_without_destinations_are_refused() {
    let from = "segment_bytes = 16777216";
    assert_refused(
        &edit(EXAMPLE_TOML, from, "segment_bytes = 4095"),
        "audit.segment_bytes",
        "at least 4096",
    );
    assert_refused(
        &edit(EXAMPLE_TOML, "retention = \"30days\"", "retention = \"0s\""),
        "audit.retention",
        "",
    );
    let exporting = edit(EXAMPLE_TOML, "export = false", "export = true");
    assert!(Config::from_toml_str(&exporting).unwrap().audit.export);
    let eu =
        "backup_destinations = [\"file:///var/backups/tandem/eu/\", \"s3://tandem-backups-eu/\"]";
    assert_refused(
        &edit(&exporting, eu, "backup_destinations = []"),
        "audit.export",
        "eu-west is in EU, which declares no backup destinations",
    );
}

#[test]
fn a_zero_peer_retention_is_refused_and_the_default_is_a_day() {
    assert_refused(
        &edit(EXAMPLE_TOML, "peer_retention = \"1day\"", "peer_retention = \"0s\""),
        "replication.peer_retention",
        "",
    );
    let config = Config::example();
    assert_eq!(config.replication.peer_retention, std::time::Duration::from_secs(24 * 3600));
}

#[test]
fn refuses_resp_defaults_of_another_merge_type_or_unknown_and_a_taken_resp_port() {
    let example = crate::EXAMPLE_TOML;
    let sets_lww = edit(example, "sets = \"set\"", "sets = \"article\"");
    assert_refused(&sets_lww, "resp.sets", "merges as `lww`");
    let unknown = edit(example, "hashes = \"hash\"", "hashes = \"nope\"");
    assert_refused(&unknown, "resp.hashes", "no entity type \"nope\"");
    let taken =
        edit(example, "resp_listen = \"127.0.0.1:7112\"", "resp_listen = \"127.0.0.1:7101\"");
    assert_refused(&taken, "regions[1].resp_listen", "duplicate listen port 7101");
    let cfg = crate::Config::example();
    assert_eq!(cfg.region("eu-west").and_then(|r| r.resp_listen).map(|a| a.port()), Some(7111));
    assert_eq!(cfg.resp.counters.as_deref(), Some("counter"));
}
