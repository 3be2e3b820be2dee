//! A node that cannot do its job does not start (DESIGN.md: nothing starts
//! half-configured): a region of a multi-region deployment without its
//! replication credential, or of a jurisdiction whose analytics projections
//! have no pseudonym key, exits 2 with a message that names what is missing
//! and every way to supply it. A single-region deployment needs no
//! replication credential.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_region_without_its_replication_secret_exits_2_naming_every_way_to_supply_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = node(
        dir.path(),
        tandem_config::EXAMPLE_TOML,
        &[("TANDEM_PSEUDONYM_KEY_EU", &"11".repeat(32))],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
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
    let out = node(dir.path(), tandem_config::EXAMPLE_TOML, &[("TANDEM_REPLICATION_SECRET", "s")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    for needle in ["TANDEM_PSEUDONYM_KEY_EU", "pseudonym_key_env", "subscription", "64 hex digits"]
    {
        assert!(text.contains(needle), "the refusal names {needle}: {text}");
    }
    let bad = node(
        dir.path(),
        tandem_config::EXAMPLE_TOML,
        &[("TANDEM_REPLICATION_SECRET", "s"), ("TANDEM_PSEUDONYM_KEY_EU", "not-hex")],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("not 64 hex digits"), "{}", stderr(&bad));
}

#[test]
fn a_single_region_deployment_starts_without_a_replication_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = single_region_config();
    let path = dir.path().join("tandem.toml");
    std::fs::write(&path, &config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["node", "--region", "eu-west", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("TANDEM_REPLICATION_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("listening on"), "a lone region starts: {line:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
}

/// Run `tandem node --region eu-west` of `config` to its exit, with only `env`
/// of the tandem variables set.
fn node(dir: &std::path::Path, config: &str, env: &[(&str, &str)]) -> Output {
    let path = dir.join("tandem.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
    cmd.args(["node", "--region", "eu-west", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.join("data"));
    for var in ["TANDEM_REPLICATION_SECRET", "TANDEM_PSEUDONYM_KEY_EU", "TANDEM_PSEUDONYM_KEY_US"] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the node started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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
