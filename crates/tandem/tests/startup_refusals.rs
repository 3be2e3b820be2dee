//! A node that cannot do its job does not start (DESIGN.md: nothing starts
//! half-configured): a region of a multi-region deployment without its
//! replication credential, or of a jurisdiction whose analytics projections
//! have no pseudonym key, exits 2 with a message that names what is missing
//! and every way to supply it. TLS is the default: without the deployment's
//! certificates and without `--insecure` a node exits 2 naming both ways
//! out; with certificates its identity is its credential, so no replication
//! secret is needed. With `--insecure` the replication secret is the
//! credential, except on a single-region deployment.

use std::time::{Duration, Instant};

use tandem_testkit::process::{run_logged, Proc};
use tandem_testkit::{Output, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));
/// How long a refusing node may take to exit, and a starting one to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn a_region_without_its_replication_secret_exits_2_naming_every_way_to_supply_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = node(
        dir.path(),
        tandem_config::EXAMPLE_TOML,
        &[("TANDEM_PSEUDONYM_KEY_EU", &"11".repeat(32))],
        &["--insecure"],
    );
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let text = out.stderr;
    for needle in [
        "eu-west",
        "replication secret",
        "[replication] secret",
        "TANDEM_REPLICATION_SECRET",
        "replication.secret",
    ] {
        assert!(text.contains(needle), "the refusal names {needle}: {text}");
    }
    assert!(!dir.path().join("data/eu-west/tandem.redb").exists(), "nothing was opened");
}

#[test]
fn a_jurisdiction_without_its_pseudonym_key_exits_2_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = node(
        dir.path(),
        tandem_config::EXAMPLE_TOML,
        &[("TANDEM_REPLICATION_SECRET", "s")],
        &["--insecure"],
    );
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let text = out.stderr;
    for needle in ["TANDEM_PSEUDONYM_KEY_EU", "pseudonym_key_env", "subscription", "64 hex digits"]
    {
        assert!(text.contains(needle), "the refusal names {needle}: {text}");
    }
    let bad = node(
        dir.path(),
        tandem_config::EXAMPLE_TOML,
        &[("TANDEM_REPLICATION_SECRET", "s"), ("TANDEM_PSEUDONYM_KEY_EU", "not-hex")],
        &["--insecure"],
    );
    assert_eq!(bad.code, Some(2));
    assert!(bad.stderr.contains("not 64 hex digits"), "{}", bad.stderr);
}

#[test]
fn a_single_region_deployment_starts_without_a_replication_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = single_region_config();
    let path = dir.path().join("tandem.toml");
    std::fs::write(&path, &config).unwrap();
    let mut cmd = TANDEM.command();
    cmd.args(["node", "--region", "eu-west", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--insecure")
        .env_remove("TANDEM_REPLICATION_SECRET");
    let started = Instant::now();
    let (out, err) = (dir.path().join("stdout.log"), dir.path().join("stderr.log"));
    let mut node = Proc::spawn(cmd, &out, &err);
    let line = node.first_line(START_TIMEOUT).unwrap_or_else(|why| panic!("the node {why}"));
    assert!(line.contains("listening on http://"), "a lone region starts: {line:?}");
    assert!(started.elapsed() < START_TIMEOUT);
    let warned = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(warned.contains("WARNING: --insecure"), "--insecure says so at start: {warned}");
    node.kill9();
}

#[test]
fn without_certificates_or_insecure_a_node_exits_2_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let keys = [("TANDEM_PSEUDONYM_KEY_EU", &*"11".repeat(32))];
    let out = node(dir.path(), tandem_config::EXAMPLE_TOML, &keys, &[]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let certs = dir.path().join("data/certs");
    for needle in ["eu-west", "tandem certs init", "--insecure", &certs.display().to_string()] {
        assert!(out.stderr.contains(needle), "the refusal names {needle}: {}", out.stderr);
    }
    assert!(!dir.path().join("data/eu-west/tandem.redb").exists(), "nothing was opened");
}

#[test]
fn with_certificates_a_region_needs_no_replication_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tandem.toml");
    std::fs::write(&path, tandem_config::EXAMPLE_TOML).unwrap();
    tandem_testkit::tls::init_certs(&TANDEM, &path, &dir.path().join("data/certs"));
    tandem_testkit::tls::write_api_keys(&dir.path().join("data/api-keys"));
    let mut cmd = TANDEM.command();
    cmd.args(["node", "--region", "eu-west", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("TANDEM_REPLICATION_SECRET")
        .env("TANDEM_PSEUDONYM_KEY_EU", "11".repeat(32));
    let (out, err) = (dir.path().join("stdout.log"), dir.path().join("stderr.log"));
    let mut node = Proc::spawn(cmd, &out, &err);
    let line = node.first_line(START_TIMEOUT).unwrap_or_else(|why| panic!("the node {why}"));
    assert!(
        line.contains("listening on https://"),
        "a region with its certificate starts: {line:?}"
    );
    node.kill9();
}

/// Run `tandem node --region eu-west` of `config` with `args` to its exit,
/// with only `env` of the tandem variables set.
fn node(dir: &std::path::Path, config: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let path = dir.join("tandem.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = TANDEM.command();
    cmd.args(["node", "--region", "eu-west", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(args);
    for var in ["TANDEM_REPLICATION_SECRET", "TANDEM_PSEUDONYM_KEY_EU", "TANDEM_PSEUDONYM_KEY_US"] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    // A node that starts instead of refusing does not finish: the run panics.
    run_logged(cmd, &dir.join("stdout.log"), &dir.join("stderr.log"), START_TIMEOUT)
}

/// The example with eu-west alone, and without analytics projections.
fn single_region_config() -> String {
    let mut c = tandem_config::Config::example();
    c.regions.retain(|r| r.name == "eu-west");
    c.links.clear();
    c.transfers.clear();
    c.router.default_region = None;
    for e in c.entities.values_mut() {
        e.analytics = None;
    }
    c.entities.retain(|name, _| name != "subscription_stats");
    c.jurisdictions.retain(|j, _| j == "EU");
    let text = toml::to_string(&c).expect("the config serializes");
    tandem_config::Config::from_toml_str(&text).expect("a valid single-region config");
    text
}
