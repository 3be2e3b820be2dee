//! Tests of the whole configuration: the built-in example, the defaults, the
//! lookups, and one test per refusal (each asserting the key is named).

use std::time::Duration;

use super::*;

/// The smallest valid deployment; refusal tests break one thing in it.
const MINIMAL: &str = r#"
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
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "test bug: {from:?} not in the config");
    text.replacen(from, to, 1)
}

/// The error of a config that must be refused; its message must name `key`
/// and contain `word` (what is wrong).
#[track_caller]
fn assert_refused(text: &str, key: &str, word: &str) -> ConfigError {
    let err = match Config::from_toml_str(text) {
        Ok(_) => panic!("accepted a config that should be refused for {key}"),
        Err(err) => err,
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
        "{}\n[data_classes.user_profile]\nmax_lag = \"90s\"\non_breach = \"warn\"\n",
        MINIMAL
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

// ---- refusals by validate() -------------------------------------------------

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
        "{}\n[data_classes.\"User Profile\"]\nmax_lag = \"1s\"\non_breach = \"warn\"\n",
        MINIMAL
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
        "{}\n[[transfers]]\nfrom = \"EU\"\nto = \"US\"\nlegal_basis = \"SCC 2021/914\"\nkey_env = \"TANDEM_TRANSFER_KEY_EU_US\"\n",
        EXAMPLE_TOML
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
