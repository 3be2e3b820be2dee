//! Tests of the whole configuration: the built-in example, the defaults, the
//! lookups, and one test per refusal (each asserting the key is named):
//! refusals while parsing here, refusals by `validate()` in `validation`.

use std::time::Duration;

use super::*;

mod validation;

/// The smallest valid deployment; refusal tests break one thing in it.
pub(super) const MINIMAL: &str = r#"
[deployment]
name = "mini"

[[regions]]
name = "eu-west"
jurisdiction = "EU"
listen = "127.0.0.1:7201"

[[regions]]
name = "us-east"
jurisdiction = "US"
listen = "127.0.0.1:7202"

[router]
listen = "127.0.0.1:7200"

[entities.profile]
merge = "lww-fields"
data_class = "user_profile"
personal = true
writes = "home-region"
"#;

/// `text` with `from` replaced by `to`; `from` must occur.
pub(super) fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "test bug: {from:?} not in the config");
    text.replacen(from, to, 1)
}

/// The error of a config that must be refused; its message must name `key`
/// and contain `word` (what is wrong).
#[track_caller]
pub(super) fn assert_refused(text: &str, key: &str, word: &str) -> ConfigError {
    let Err(err) = Config::from_toml_str(text) else {
        panic!("accepted a config that should be refused for {key}")
    };
    let message = err.to_string();
    assert!(message.contains(key), "message does not name {key:?}: {message}");
    assert!(message.contains(word), "message does not say {word:?}: {message}");
    assert_eq!(err.key(), Some(key), "{message}");
    err
}

// ---- the built-in example -------------------------------------------------

#[test]
fn example_parses_and_validates() {
    let config = Config::from_toml_str(EXAMPLE_TOML).unwrap();
    config.validate().unwrap();
    assert_eq!(config, Config::example());
    assert_eq!(config.deployment.name, "example");
    assert_eq!(config.deployment.data_dir, std::path::PathBuf::from("./data"));
}

#[test]
fn example_regions_router_and_links() {
    let config = Config::example();
    let regions: Vec<(&str, &str, String)> = config
        .regions
        .iter()
        .map(|r| (r.name.as_str(), r.jurisdiction.as_str(), r.listen.to_string()))
        .collect();
    assert_eq!(
        regions,
        [
            ("eu-west", "EU", "127.0.0.1:7101".to_owned()),
            ("eu-central", "EU", "127.0.0.1:7102".to_owned()),
            ("us-east", "US", "127.0.0.1:7103".to_owned()),
        ]
    );
    assert_eq!(config.router.listen.to_string(), "127.0.0.1:7100");
    assert_eq!(config.router.default_region.as_deref(), Some("us-east"));
    assert_eq!(config.link_latency_ms("eu-west", "eu-central"), 10);
    assert_eq!(config.link_latency_ms("eu-west", "us-east"), 40);
    assert_eq!(config.link_latency_ms("eu-central", "us-east"), 45);
}

#[test]
fn example_has_every_merge_kind_and_every_on_breach() {
    let config = Config::example();
    for kind in MergeKind::ALL {
        assert!(config.entities.values().any(|e| e.merge == kind), "no {kind} entity");
    }
    for action in OnBreach::ALL {
        assert!(config.data_classes.values().any(|c| c.on_breach == action), "no {action} class");
    }
    // Pinned and unpinned, personal and not, all present.
    for (writes, personal) in [
        (WritePolicy::HomeRegion, true),
        (WritePolicy::HomeRegion, false),
        (WritePolicy::AnyRegion, true),
        (WritePolicy::AnyRegion, false),
    ] {
        assert!(config.entities.values().any(|e| e.writes == writes && e.personal == personal));
    }
}

#[test]
fn example_lag_table_is_the_reference_articles() {
    let config = Config::example();
    let table: Vec<(&str, Duration, OnBreach)> = config
        .data_classes
        .iter()
        .map(|(name, class)| (name.as_str(), class.max_lag, class.on_breach))
        .collect();
    assert_eq!(
        table,
        [
            ("analytics", Duration::from_secs(15 * 60), OnBreach::Warn),
            ("content", Duration::from_secs(5 * 60), OnBreach::Warn),
            ("credentials", Duration::from_secs(5), OnBreach::Alert),
            ("financial", Duration::from_secs(30), OnBreach::HaltCrossRegionReads),
            ("user_profile", Duration::from_secs(2 * 60), OnBreach::Alert),
        ]
    );
    assert_eq!(config.data_classes, reference_lag_budgets());
}

#[test]
fn example_entities_have_the_documented_policies() {
    let config = Config::example();
    let policy = |name: &str| {
        let e = config.entity(name).unwrap_or_else(|| panic!("no entity {name}"));
        (e.merge, e.data_class.as_str(), e.personal, e.subjects, e.writes, e.conflicts)
    };
    use ConflictPolicy::{Allow, Never};
    use MergeKind::*;
    use WritePolicy::{AnyRegion, HomeRegion};
    assert_eq!(policy("credential"), (Lww, "credentials", true, true, HomeRegion, Never));
    assert_eq!(policy("profile"), (LwwFields, "user_profile", true, true, HomeRegion, Never));
    assert_eq!(policy("balance"), (PnCounter, "financial", true, true, HomeRegion, Allow));
    assert_eq!(policy("page_views"), (GCounter, "analytics", false, false, AnyRegion, Allow));
    assert_eq!(policy("likes"), (PnCounter, "content", false, false, AnyRegion, Allow));
    assert_eq!(policy("cart"), (OrSet, "user_profile", true, true, AnyRegion, Allow));
    assert_eq!(policy("tags"), (OrSet, "content", false, false, AnyRegion, Allow));
    assert_eq!(policy("article"), (Lww, "content", false, false, AnyRegion, Allow));
    assert_eq!(policy("settings"), (LwwFields, "user_profile", false, true, HomeRegion, Allow));
}

#[test]
fn example_node_and_replication_sections_show_the_defaults() {
    let config = Config::example();
    assert_eq!(config.node, NodeConfig::default());
    assert_eq!(config.replication, ReplicationConfig::default());
    assert_eq!(config.audit, crate::AuditConfig::default());
    let minimal = Config::from_toml_str(MINIMAL).unwrap();
    assert_eq!(config.router.probe_interval, minimal.router.probe_interval);
    assert_eq!(
        (
            config.router.probe_failure_threshold,
            config.router.probe_timeout,
            config.router.home_cache_ttl
        ),
        (
            minimal.router.probe_failure_threshold,
            minimal.router.probe_timeout,
            minimal.router.home_cache_ttl
        )
    );
    assert_eq!(
        (config.router.upstream_timeout, config.router.max_body_bytes),
        (minimal.router.upstream_timeout, minimal.router.max_body_bytes)
    );
}

// ---- defaults, lookups, serialization ---------------------------------------

#[test]
fn defaults_apply_to_a_minimal_config() {
    let config = Config::from_toml_str(MINIMAL).unwrap();
    assert_eq!(config.deployment.data_dir, std::path::PathBuf::from("./data"));
    assert_eq!(config.router.default_region, None);
    assert_eq!(config.router.probe_interval, Duration::from_millis(200));
    assert_eq!(config.router.probe_failure_threshold, 3);
    assert_eq!(config.router.probe_timeout, Duration::from_millis(500));
    assert_eq!(config.router.home_cache_ttl, Duration::from_secs(5));
    assert_eq!(config.router.upstream_timeout, Duration::from_secs(5));
    assert_eq!(config.router.max_body_bytes, 1024 * 1024);
    assert!(config.links.is_empty());
    assert_eq!(config.data_classes, reference_lag_budgets());

    let node = &config.node;
    assert_eq!(
        (node.max_body_bytes, node.write_queue_len, node.commit_batch_max, node.max_connections),
        (1024 * 1024, 4096, 1024, 1024)
    );
    assert_eq!((node.id_len_max, node.scan_limit_max, node.conflicts_kept), (256, 1000, 1000));
    assert_eq!((node.max_clock_offset_ms, node.request_timeout), (500, Duration::from_secs(10)));

    let replication = &config.replication;
    assert_eq!(replication.poll_interval, Duration::from_millis(50));
    assert_eq!((replication.batch_max, replication.batch_bytes_max), (512, 4 * 1024 * 1024));
    assert_eq!(replication.backoff_max, Duration::from_secs(2));
    assert_eq!(replication.secret, None);
}

#[test]
fn entity_defaults_and_subjects_follow_personal() {
    let text = edit(
        MINIMAL,
        "[entities.profile]",
        "[entities.hits]\nmerge = \"g-counter\"\ndata_class = \"analytics\"\n\n[entities.profile]",
    );
    let config = Config::from_toml_str(&text).unwrap();
    let hits = config.entity("hits").unwrap();
    assert!(!hits.personal && !hits.subjects);
    assert_eq!((hits.writes, hits.conflicts), (WritePolicy::AnyRegion, ConflictPolicy::Allow));
    let profile = config.entity("profile").unwrap();
    assert!(profile.personal && profile.subjects);
}

#[test]
fn a_data_classes_section_replaces_the_reference_table() {
    let text = format!(
        "{MINIMAL}\n[data_classes.user_profile]\nmax_lag = \"90s\"\non_breach = \"warn\"\n"
    );
    let config = Config::from_toml_str(&text).unwrap();
    assert_eq!(config.data_classes.len(), 1);
    assert_eq!(config.data_class_of("profile").unwrap().max_lag, Duration::from_secs(90));
}

#[test]
fn lookups() {
    let config = Config::example();
    assert_eq!(config.region("eu-central").unwrap().listen.port(), 7102);
    assert!(config.region("mars").is_none());
    assert_eq!(config.jurisdiction_of("us-east"), Some("US"));
    assert_eq!(config.jurisdiction_of("mars"), None);
    let eu: Vec<&str> = config.regions_in("EU").map(|r| r.name.as_str()).collect();
    assert_eq!(eu, ["eu-west", "eu-central"]);
    assert_eq!(config.regions_in("CN").count(), 0);
    assert_eq!(config.data_class_of("balance").unwrap().on_breach, OnBreach::HaltCrossRegionReads);
    assert!(config.data_class_of("nope").is_none());
    assert!(config.entity("nope").is_none());
}

#[test]
fn link_latency_is_symmetric_and_zero_without_a_link() {
    let config = Config::example();
    assert_eq!(config.link_latency_ms("us-east", "eu-west"), 40);
    assert_eq!(config.link_latency_ms("eu-west", "us-east"), 40);
    assert_eq!(config.link_latency_ms("eu-west", "eu-west"), 0);
    assert_eq!(config.link_latency_ms("eu-west", "mars"), 0);
    assert_eq!(Config::from_toml_str(MINIMAL).unwrap().link_latency_ms("eu-west", "us-east"), 0);
}

#[test]
fn serialized_config_parses_back_to_itself() {
    let mut config = Config::example();
    config.replication.secret = Some("s3cr3t-s3cr3t".to_owned());
    config.router.probe_interval = Duration::from_millis(1500);
    let text = toml::to_string(&config).unwrap();
    assert!(text.contains("max_lag = \"15m\""), "{text}");
    assert_eq!(Config::from_toml_str(&text).unwrap(), config);
}

#[test]
fn secret_never_appears_in_debug_output() {
    let secret = "hunter2-very-secret-value";
    let text = edit(EXAMPLE_TOML, "# secret = \"change-me\"", &format!("secret = \"{secret}\""));
    let config = Config::from_toml_str(&text).unwrap();
    assert_eq!(config.replication.secret.as_deref(), Some(secret));
    let debug = format!("{config:?}");
    assert!(!debug.contains(secret), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
    let pretty = format!("{config:#?}");
    assert!(!pretty.contains(secret));
    assert!(!format!("{:?}", config.replication).contains(secret));
}

#[test]
fn parses_through_from_str() {
    let config: Config = MINIMAL.parse().unwrap();
    assert_eq!(config.deployment.name, "mini");
}

// ---- refusals while parsing -------------------------------------------------

#[test]
fn refuses_unknown_keys_naming_them() {
    assert_refused(&format!("bogus = 1\n{MINIMAL}"), "bogus", "unknown field");
    // After a table header, a key belongs to that table.
    assert_refused(&format!("{MINIMAL}\nbogus = 1\n"), "entities.profile.bogus", "unknown field");
    assert_refused(&format!("{MINIMAL}\n[bogus]\nx = 1\n"), "bogus", "unknown field");
    assert_refused(
        &edit(MINIMAL, "name = \"mini\"", "name = \"mini\"\nnmae = 1"),
        "deployment.nmae",
        "unknown field",
    );
    assert_refused(
        &edit(MINIMAL, "listen = \"127.0.0.1:7202\"", "listen = \"127.0.0.1:7202\"\nzone = \"a\""),
        "regions[1].zone",
        "unknown field",
    );
    assert_refused(
        &edit(MINIMAL, "personal = true", "personal = true\nsubject = true"),
        "entities.profile.subject",
        "unknown field",
    );
    assert_refused(
        &edit(EXAMPLE_TOML, "id_len_max = 256", "id_len_mx = 256"),
        "node.id_len_mx",
        "unknown field",
    );
    assert_refused(
        &edit(EXAMPLE_TOML, "batch_max = 512", "batch_max = 512\nfoo.bar = 1"),
        "replication.foo",
        "unknown field",
    );
    assert_refused(
        &edit(EXAMPLE_TOML, "latency_ms = 10", "latency_ms = 10\nfoo = 1"),
        "links[0].foo",
        "unknown field",
    );
    assert_refused(
        &edit(EXAMPLE_TOML, "max_lag = \"5s\"", "max_lag = \"5s\"\nmin_lag = \"1s\""),
        "data_classes.credentials.min_lag",
        "unknown field",
    );
}

#[test]
fn refuses_a_bad_duration_naming_the_key() {
    let err = assert_refused(
        &edit(EXAMPLE_TOML, "max_lag = \"5s\"", "max_lag = \"5 parsecs\""),
        "data_classes.credentials.max_lag",
        "invalid duration \"5 parsecs\"",
    );
    assert!(
        err.to_string().starts_with("data_classes.credentials.max_lag: invalid duration"),
        "{err}"
    );
    assert_refused(
        &edit(EXAMPLE_TOML, "request_timeout = \"10s\"", "request_timeout = 10"),
        "node.request_timeout",
        "duration",
    );
    assert_refused(
        &edit(EXAMPLE_TOML, "probe_interval = \"200ms\"", "probe_interval = \"fast\""),
        "router.probe_interval",
        "invalid duration",
    );
}

#[test]
fn refuses_an_unknown_merge_type_naming_the_key_and_value() {
    let err = assert_refused(
        &edit(MINIMAL, "merge = \"lww-fields\"", "merge = \"lwww\""),
        "entities.profile.merge",
        "unknown merge type `lwww`",
    );
    assert!(
        err.to_string()
            .starts_with("entities.profile.merge: unknown merge type `lwww` (expected one of"),
        "{err}"
    );
}

#[test]
fn refuses_other_bad_values_naming_the_key() {
    assert_refused(
        &edit(EXAMPLE_TOML, "on_breach = \"warn\"", "on_breach = \"page\""),
        "data_classes.content.on_breach",
        "unknown variant `page`",
    );
    assert_refused(
        &edit(MINIMAL, "writes = \"home-region\"", "writes = \"sideways\""),
        "entities.profile.writes",
        "unknown variant",
    );
    assert_refused(
        &edit(MINIMAL, "127.0.0.1:7202", "localhost:7202"),
        "regions[1].listen",
        "socket address",
    );
    assert_refused(
        &edit(EXAMPLE_TOML, "batch_max = 512", "batch_max = -1"),
        "replication.batch_max",
        "-1",
    );
    assert_refused(
        &edit(EXAMPLE_TOML, "between = [\"eu-west\", \"us-east\"]", "between = [\"eu-west\"]"),
        "links[1].between",
        "length",
    );
    assert_refused(&edit(MINIMAL, "name = \"mini\"\n", ""), "deployment.name", "missing field");
    assert_refused(
        &edit(MINIMAL, "merge = \"lww-fields\"\n", ""),
        "entities.profile.merge",
        "missing field",
    );
    assert_refused(
        &edit(MINIMAL, "listen = \"127.0.0.1:7200\"", "default_region = \"eu-west\""),
        "router.listen",
        "missing field",
    );
    assert_refused(
        &edit(MINIMAL, "[router]\nlisten = \"127.0.0.1:7200\"\n", ""),
        "router",
        "missing field",
    );
}

#[test]
fn a_syntax_error_gives_the_position() {
    let err =
        Config::from_toml_str(&edit(MINIMAL, "name = \"mini\"", "name = \"mini")).unwrap_err();
    let ConfigError::Parse { key, line, .. } = &err else { panic!("{err:?}") };
    assert_eq!((key.as_deref(), *line), (None, 3), "{err}");
    assert!(err.to_string().contains("line 3"), "{err}");
}
